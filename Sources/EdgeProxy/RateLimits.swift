import Foundation
import HTTPTypes
import Logging
import RPC
import RateLimiting
import ServiceLifecycle
import Synchronization

/// The rules per category (C-9, R-15). `.spec` is the specification; tests may loosen it.
public struct RateLimitRules: Sendable {
    public var read: RateLimitRule = .read
    public var write: RateLimitRule = .write
    public var sensitive: RateLimitRule = .sensitive
    public var highRisk: RateLimitRule = .highRisk
    public var login: RateLimitRule = .login
    public var register: RateLimitRule = .register
    public var refresh: RateLimitRule = .refresh
    public var webhook: RateLimitRule = .webhook

    public static let spec = RateLimitRules()

    /// Every rule passed through `change` (one list of the categories for such edits).
    public func mapRules(_ change: (RateLimitRule) -> RateLimitRule) -> RateLimitRules {
        var rules = self
        for keyPath: WritableKeyPath<RateLimitRules, RateLimitRule> in [\.read, \.write, \.sensitive, \.highRisk, \.login, \.register, \.refresh, \.webhook] {
            rules[keyPath: keyPath] = change(rules[keyPath: keyPath])
        }
        return rules
    }

    public init() {}

    /// Every limit times `factor` (load tests, staging).
    public func multiplied(by factor: Int) -> RateLimitRules {
        mapRules { RateLimitRule(name: $0.name, limit: $0.limit * max(1, factor), window: $0.window) }
    }

    func rule(for category: RateCategory) -> RateLimitRule? {
        switch category {
        case .none: nil
        case .read: read
        case .write: write
        case .sensitive: sensitive
        case .highRisk: highRisk
        case .login: login
        case .register: register
        case .refresh: refresh
        case .webhook: webhook
        }
    }

    /// Reads, writes and webhooks (whose signature the broker checks) stay available when the
    /// shared backend is down; every other category fails closed (503).
    static func failsOpen(_ category: RateCategory) -> Bool { category == .read || category == .write || category == .webhook }
}

/// The `X-RateLimit-*` headers of one request, filled by the check and added to whatever
/// response the request ends with.
final class RateLimitHeaders: Sendable {
    private let fields = Mutex<[(HTTPField.Name, String)]>([])
    var all: [(HTTPField.Name, String)] { fields.withLock { $0 } }
    func set(_ decision: RateLimitDecision) {
        fields.withLock { $0 = [
            (.rateLimitLimit, "\(decision.limit)"),
            (.rateLimitRemaining, "\(decision.remaining)"),
            (.rateLimitReset, "\(Self.ceilSeconds(decision.resetAfter))"),
        ] }
    }

    static func ceilSeconds(_ duration: Duration) -> Int64 {
        let (seconds, attoseconds) = duration.components
        return max(0, seconds + (attoseconds > 0 ? 1 : 0))
    }
}

extension EdgeApplicationState {
    /// One decision for `key` under the category's rule; 429 + Retry-After when denied.
    func enforce(_ category: RateCategory, key: String, headers: RateLimitHeaders, requestID: String) async throws {
        guard let rule = configuration.rateLimitRules.rule(for: category) else { return }
        let decision: RateLimitDecision
        do {
            decision = try await rateLimiter.check(rule, key: key)
        } catch {
            if RateLimitRules.failsOpen(category) {
                logger.warning("rate limiter unavailable; allowing", metadata: ["rule": "\(rule.name)", "request_id": "\(requestID)"])
                return
            }
            logger.warning("rate limiter unavailable; refusing", metadata: ["rule": "\(rule.name)", "request_id": "\(requestID)"])
            throw EdgeError.serviceUnavailable()
        }
        headers.set(decision)
        guard decision.allowed else {
            // keys (ids, IPs) stay out of the log; the rule and request id identify it.
            metrics.rateLimited(category)
            logger.notice("rate limit exceeded", metadata: ["event": "rate_limit_exceeded", "risk": "medium", "rule": "\(rule.name)", "request_id": "\(requestID)"])
            let retry = max(1, RateLimitHeaders.ceilSeconds(decision.retryAfter ?? .seconds(1)))
            throw EdgeError(.tooManyRequests, code: "rate_limited", message: "too many requests, retry in \(retry) s", headers: [(.retryAfter, "\(retry)")])
        }
    }
}

/// The admin-managed IP blocklist: auth stores it, every edge polls `ListIPBlocks` and
/// refuses blocked client addresses with 403. If auth cannot answer, the last list stays.
final class IPBlocklist: Sendable {
    private let blocks = Mutex<[String: Int64]>([:])
    private let auth: AuthGateway
    private let logger: Logger

    init(auth: AuthGateway, logger: Logger) {
        self.auth = auth
        self.logger = logger
    }

    func isBlocked(_ ip: String) -> Bool {
        let now = Int64(Date().timeIntervalSince1970)
        return blocks.withLock { ($0[ip] ?? 0) > now }
    }

    func refresh(requestID: String) async {
        do {
            let response = try await auth.call(AuthAPI.listIPBlocks, AuthListIPBlocksRequest(), requestID: requestID)
            // Keyed by canonical address, as client addresses are (auth stores `::ffff:a.b.c.d`
            // for a mapped address, which the edge sees as `a.b.c.d`).
            let table = Dictionary(response.blocks.map { (IPAddress.canonical($0.ip) ?? $0.ip, $0.blockedUntil) }, uniquingKeysWith: max)
            blocks.withLock { $0 = table }
        } catch {
            logger.debug("ip blocklist refresh failed", metadata: ["error": "\(error)"])
        }
    }
}

/// Polls the blocklist every `interval`.
struct IPBlocklistPoller: Service {
    let blocklist: IPBlocklist
    let interval: Duration

    func run() async throws {
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            await blocklist.refresh(requestID: "blocklist-poll")
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: interval) }
        }
    }
}
