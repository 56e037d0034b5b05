import Crypto

/// The generic cell rate algorithm, in integer microseconds.
///
/// This is the single definition of the algorithm in Swift; the Lua script in
/// ``RedisRateLimiter`` is a line-by-line transcription of ``decide(now:storedTAT:limit:window:)``
/// (see `RedisRateLimiter.script`), and the tests check both give the same decisions.
///
/// State per key: one timestamp, the theoretical arrival time (TAT). With
/// `T = ceil(window / limit)` (the emission interval), a request at `now` is allowed
/// iff `max(TAT, now) - now <= T * (limit - 1)`; when allowed, `TAT := max(TAT, now) + T`.
/// A fresh key therefore allows `limit` requests at once, then one every `T`;
/// denied requests leave TAT untouched (they do not consume budget).
enum GCRA {
    /// The result of one decision plus the new state to store (if any).
    struct Outcome: Equatable {
        var allowed: Bool
        var remaining: Int
        /// Microseconds until fully replenished.
        var resetAfter: Int64
        /// Microseconds until one request is allowed (0 when allowed).
        var retryAfter: Int64
        /// New TAT to store when allowed; `nil` when denied (state unchanged).
        var newTAT: Int64?
    }

    /// Limits are clamped to `1...2^30` and windows to `1 µs...2^50 µs` (~35 years), so every
    /// intermediate value stays exact in a Lua double (< 2^53) and no Swift arithmetic can overflow.
    static let maximumLimit = 1 << 30
    static let maximumWindowMicros: Int64 = 1 << 50

    static func clampedLimit(_ limit: Int) -> Int { min(max(1, limit), maximumLimit) }
    static func clampedWindow(_ windowMicros: Int64) -> Int64 { min(max(1, windowMicros), maximumWindowMicros) }

    /// Emission interval in microseconds: `ceil(window / limit)`, at least 1.
    static func emissionInterval(limit: Int, windowMicros: Int64) -> Int64 {
        let limit = Int64(clampedLimit(limit))
        let window = clampedWindow(windowMicros)
        return max(1, (window + limit - 1) / limit)
    }

    /// One decision.
    /// - Parameters:
    ///   - now: current time, microseconds (any origin, monotonic).
    ///   - storedTAT: stored theoretical arrival time, or `nil` for an unknown/expired key.
    static func decide(now: Int64, storedTAT: Int64?, limit: Int, windowMicros: Int64) -> Outcome {
        let limit = clampedLimit(limit)
        let t = emissionInterval(limit: limit, windowMicros: windowMicros)
        let capacity = t * Int64(limit)  // time-span of a full budget
        let burst = capacity - t  // = T * (limit - 1)
        var tat = max(storedTAT ?? now, now)
        // A TAT further ahead than a full budget can only come from a clock step back
        // or a rule change; clamp so a key is never blocked longer than one window.
        if tat - now > capacity { tat = now + capacity }
        let ahead = tat - now
        if ahead > burst {
            return Outcome(allowed: false, remaining: 0, resetAfter: ahead, retryAfter: ahead - burst, newTAT: nil)
        }
        let newTAT = tat + t
        let newAhead = newTAT - now
        // remaining = limit - ceil(newAhead / T)
        let used = (newAhead + t - 1) / t
        let remaining = max(0, Int64(limit) - used)
        return Outcome(allowed: true, remaining: Int(remaining), resetAfter: newAhead, retryAfter: 0, newTAT: newTAT)
    }
}

extension Duration {
    /// Whole microseconds, rounded up (a window of 1 ns counts as 1 µs).
    var ceilMicroseconds: Int64 {
        let (seconds, attoseconds) = self.components
        let micros = attoseconds / 1_000_000_000_000
        let rest = attoseconds % 1_000_000_000_000
        let (whole, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000)
        if overflow { return seconds < 0 ? Int64.min / 2 : Int64.max / 4 }
        return whole + micros + (rest > 0 ? 1 : 0)
    }
}

extension RateLimitDecision {
    init(_ outcome: GCRA.Outcome, limit: Int) {
        let limit = GCRA.clampedLimit(limit)
        self.init(
            allowed: outcome.allowed,
            limit: limit,
            remaining: outcome.remaining,
            resetAfter: .microseconds(outcome.resetAfter),
            retryAfter: outcome.allowed ? nil : .microseconds(outcome.retryAfter)
        )
    }
}

/// Storage keys shared by both backends.
enum RateLimitKey {
    /// Client keys longer than this (in UTF-8 bytes) are replaced by `"sha256:" + hex(SHA-256(key))`,
    /// so storage keys stay bounded whatever a client sends (and long identifiers are not stored verbatim).
    static let maximumRawKeyLength = 128

    /// `rule.name + ":" + key`, with the key capped as described above.
    static func storageKey(rule: RateLimitRule, key: String) -> String {
        rule.name + ":" + cappedKey(key)
    }

    static func cappedKey(_ key: String) -> String {
        let utf8 = key.utf8
        if utf8.count <= maximumRawKeyLength { return key }
        return "sha256:" + SHA256.hexDigest(Array(utf8))
    }
}
