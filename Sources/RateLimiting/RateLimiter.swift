/// A rate-limit category: how many requests a client may make per window.
///
/// The `name` is part of the storage key, so two rules with the same name share
/// state: give every category its own name (`"read"`, `"write"`, `"login"`, ...).
public struct RateLimitRule: Sendable, Hashable {
    /// The category, part of the storage key, e.g. `"read"`, `"login"`.
    public var name: String
    /// Requests allowed per window (>= 1).
    public var limit: Int
    /// The window, e.g. `.seconds(60)`. Must be positive.
    public var window: Duration

    /// Creates a rule. `limit` must be at least 1 and `window` positive.
    public init(name: String, limit: Int, window: Duration) {
        precondition(limit >= 1, "RateLimitRule.limit must be >= 1")
        precondition(window > .zero, "RateLimitRule.window must be positive")
        self.name = name
        self.limit = limit
        self.window = window
    }
}

extension RateLimitRule {
    /// SPEC C-9 categories, per client.
    /// Reads: 60 per minute.
    public static let read = RateLimitRule(name: "read", limit: 60, window: .seconds(60))
    /// Writes: 30 per minute.
    public static let write = RateLimitRule(name: "write", limit: 30, window: .seconds(60))
    /// Sensitive operations: 10 per minute.
    public static let sensitive = RateLimitRule(name: "sensitive", limit: 10, window: .seconds(60))
    /// High-risk operations: 5 per minute.
    public static let highRisk = RateLimitRule(name: "high-risk", limit: 5, window: .seconds(60))
    /// Login: 5 per 5 minutes, keyed by IP + account.
    public static let login = RateLimitRule(name: "login", limit: 5, window: .seconds(300))
    /// Registration: 3 per hour, keyed by IP.
    public static let register = RateLimitRule(name: "register", limit: 3, window: .seconds(3600))
    /// Token refresh: 20 per minute.
    public static let refresh = RateLimitRule(name: "refresh", limit: 20, window: .seconds(60))
    /// Provider webhooks: 600 per minute per sending address. Stripe delivers bursts from a few
    /// addresses (and retries what is refused), so the users' `write` budget of 30 would drop
    /// genuine events; the signature, checked by the broker, is what authenticates them.
    public static let webhook = RateLimitRule(name: "webhook", limit: 600, window: .seconds(60))
}

/// The outcome of one `RateLimiter.check`.
public struct RateLimitDecision: Sendable, Equatable {
    /// Whether the request may proceed. When `true` the request was counted.
    public var allowed: Bool
    /// The rule's limit (`X-RateLimit-Limit`).
    public var limit: Int
    /// Requests still allowed right now after this one, `>= 0` (`X-RateLimit-Remaining`).
    public var remaining: Int
    /// Time until the budget is fully replenished (`X-RateLimit-Reset`).
    public var resetAfter: Duration
    /// When denied: time until one request will be allowed (`Retry-After`); `nil` when allowed.
    public var retryAfter: Duration?

    /// Creates a decision.
    public init(allowed: Bool, limit: Int, remaining: Int, resetAfter: Duration, retryAfter: Duration?) {
        self.allowed = allowed
        self.limit = limit
        self.remaining = remaining
        self.resetAfter = resetAfter
        self.retryAfter = retryAfter
    }
}

/// A rate limiter: decides for one request of one client under one rule.
///
/// Implementations: ``InProcessRateLimiter`` (single edge) and ``RedisRateLimiter``
/// (several edges share one budget). Both implement the same GCRA and give the same
/// decisions for the same inputs.
public protocol RateLimiter: Sendable {
    /// One decision for one request of `key` under `rule`; counts the request when allowed.
    ///
    /// Denied requests do not consume budget.
    /// - Throws: ``RateLimiterUnavailable`` when the backend could not decide.
    func check(_ rule: RateLimitRule, key: String) async throws -> RateLimitDecision
}

/// The backend could not decide (Redis down, timeout, protocol error).
///
/// The caller chooses what to do; for a fintech edge the recommended policy is
/// fail-closed (answer 503 / 429) for sensitive and high-risk categories.
public struct RateLimiterUnavailable: Error, Sendable, CustomStringConvertible {
    /// Why the backend could not decide.
    public enum Reason: Sendable, Equatable {
        /// No connection to the backend (not yet connected, reconnecting, shut down).
        case notConnected
        /// The backend did not answer in time.
        case timeout
        /// Too many commands are already waiting for a reply.
        case overloaded
        /// The connection broke while the command was in flight.
        case connectionClosed
        /// The backend answered something the client does not understand.
        case protocolError
        /// The backend answered with an error.
        case serverError
    }

    /// Why the backend could not decide.
    public var reason: Reason
    /// A human-readable detail; never contains the rate-limit key.
    public var detail: String

    /// Creates the error.
    public init(_ reason: Reason, detail: String = "") {
        self.reason = reason
        self.detail = detail
    }

    public var description: String {
        detail.isEmpty ? "RateLimiterUnavailable(\(reason))" : "RateLimiterUnavailable(\(reason): \(detail))"
    }
}
