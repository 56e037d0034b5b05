import Logging
import Synchronization

/// A rate limiter whose state lives in Redis, so several edges share one budget per key.
///
/// One `EVALSHA` per decision (falls back to `EVAL` on `NOSCRIPT`, e.g. after a Redis restart or
/// `SCRIPT FLUSH`). The script runs atomically, takes the time from Redis `TIME` (so edges with
/// skewed clocks agree) and sets a `PX` expiry equal to the time until the key's budget is fully
/// replenished, so idle keys vanish on their own.
///
/// Storage key: `keyPrefix + rule.name + ":" + key`, where a `key` longer than 128 UTF-8 bytes
/// is replaced by `"sha256:" + hex(SHA-256(key))`.
///
/// Any failure (not connected, timeout, unexpected reply, Redis error) is thrown as
/// ``RateLimiterUnavailable``; the caller chooses fail-closed or fail-open.
public final class RedisRateLimiter: RateLimiter, Sendable {
    /// The Lua script; a transcription of the Swift GCRA (`GCRA.decide`).
    ///
    /// `KEYS[1]` storage key; `ARGV[1]` emission interval T in µs; `ARGV[2]` limit;
    /// `ARGV[3]` (tests only) a fixed "now" in µs instead of `TIME`.
    /// Returns `{allowed (0|1), remaining, resetAfter µs, retryAfter µs}`.
    public static let script = """
        local t = tonumber(ARGV[1])
        local limit = tonumber(ARGV[2])
        local now
        if ARGV[3] then
          now = tonumber(ARGV[3])
        else
          local time = redis.call('TIME')
          now = tonumber(time[1]) * 1000000 + tonumber(time[2])
        end
        local capacity = t * limit
        local burst = capacity - t
        local tat = now
        local stored = tonumber(redis.call('GET', KEYS[1]) or '')
        if stored and stored > now then tat = stored end
        if tat - now > capacity then tat = now + capacity end
        local ahead = tat - now
        if ahead > burst then
          return {0, 0, ahead, ahead - burst}
        end
        local newtat = tat + t
        local newahead = newtat - now
        local remaining = limit - math.floor((newahead + t - 1) / t)
        if remaining < 0 then remaining = 0 end
        redis.call('SET', KEYS[1], string.format('%.0f', newtat), 'PX', math.ceil(newahead / 1000))
        return {1, remaining, newahead, 0}
        """

    private let client: RedisClient
    /// Prefix of every storage key.
    public let keyPrefix: String
    private let logger: Logger
    private let scriptSHA = Mutex<String?>(nil)

    /// Creates a limiter on `client` (which must be running, see ``RedisClient/run()``).
    public init(client: RedisClient, keyPrefix: String = "ratelimit:", logger: Logger) {
        self.client = client
        self.keyPrefix = keyPrefix
        self.logger = logger
    }

    public func check(_ rule: RateLimitRule, key: String) async throws -> RateLimitDecision {
        try await check(rule, key: key, nowMicros: nil)
    }

    /// The storage key used for `key` under `rule`.
    public func storageKey(_ rule: RateLimitRule, key: String) -> String {
        keyPrefix + RateLimitKey.storageKey(rule: rule, key: key)
    }

    /// `nowMicros` replaces Redis `TIME`; tests only (to compare exactly with the in-process backend).
    func check(_ rule: RateLimitRule, key: String, nowMicros: Int64?) async throws -> RateLimitDecision {
        let limit = GCRA.clampedLimit(rule.limit)
        let t = GCRA.emissionInterval(limit: limit, windowMicros: rule.window.ceilMicroseconds)
        var arguments = [String(t), String(limit)]
        if let nowMicros { arguments.append(String(nowMicros)) }
        let reply: RESPValue
        do {
            reply = try await evaluate(keys: [storageKey(rule, key: key)], arguments: arguments)
        } catch let error as RateLimiterUnavailable {
            logger.warning("rate limiter unavailable", metadata: ["rule": "\(rule.name)", "error": "\(error)"])
            throw error
        } catch {
            logger.warning(
                "rate limiter unavailable",
                metadata: ["rule": "\(rule.name)", "error": "\(RedisClient.describe(error))"]
            )
            throw RateLimiterUnavailable(.serverError, detail: RedisClient.describe(error))
        }
        guard case .array(.some(let values)) = reply, values.count == 4,
            case .integer(let allowed) = values[0], case .integer(let remaining) = values[1],
            case .integer(let resetAfter) = values[2], case .integer(let retryAfter) = values[3]
        else {
            logger.error("unexpected rate limit script reply", metadata: ["rule": "\(rule.name)"])
            throw RateLimiterUnavailable(.protocolError, detail: "unexpected script reply")
        }
        let outcome = GCRA.Outcome(
            allowed: allowed == 1,
            remaining: Int(clamping: max(0, remaining)),
            resetAfter: max(0, resetAfter),
            retryAfter: max(0, retryAfter),
            newTAT: nil
        )
        return RateLimitDecision(outcome, limit: limit)
    }

    /// Loads the script (`SCRIPT LOAD`) so the first decision needs no extra round trip. Optional.
    public func prepare() async throws {
        let sha = try await client.scriptLoad(Self.script)
        scriptSHA.withLock { $0 = sha }
    }

    private func evaluate(keys: [String], arguments: [String]) async throws -> RESPValue {
        var sha = scriptSHA.withLock { $0 }
        if sha == nil {
            let loaded = try await client.scriptLoad(Self.script)
            scriptSHA.withLock { $0 = loaded }
            sha = loaded
        }
        do {
            return try await client.evalSHA(sha!, keys: keys, arguments: arguments)
        } catch let error as RedisServerError where error.isNoScript {
            // Script cache flushed (restart, failover, SCRIPT FLUSH): EVAL runs and re-caches it.
            logger.notice("rate limit script missing on server; using EVAL")
            return try await client.eval(Self.script, keys: keys, arguments: arguments)
        }
    }
}
