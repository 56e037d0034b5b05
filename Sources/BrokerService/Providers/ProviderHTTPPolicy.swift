import AsyncHTTPClient
import NIOCore

/// Outbound hygiene for one provider (one instance for Alpaca, one for Stripe). The defaults are
/// the production values; tests shrink the breaker threshold, cooldown and backoff.
public struct ProviderHTTPPolicy: Sendable {
    /// TCP + TLS setup. Applied through `httpClientConfiguration` (AsyncHTTPClient sets the
    /// connect timeout per client, not per request).
    public var connectTimeout: Duration = .seconds(5)
    /// One attempt, from sending the request to the last byte of the response body.
    public var requestTimeout: Duration = .seconds(15)
    /// Attempts in all (first + retries). Only idempotent requests are retried.
    public var maximumAttempts: Int = 3
    /// Full jitter: a retry waits a uniform random time in [0, min(maximumBackoff, baseBackoff · 2^(n-1))].
    public var baseBackoff: Duration = .milliseconds(100)
    public var maximumBackoff: Duration = .seconds(2)
    /// Requests in flight to this provider at once; more wait in a bounded queue rather than
    /// without bound (R-16's rule, applied outbound).
    public var maximumConcurrentRequests: Int = 32
    /// Requests that may wait (oldest first) for one of those slots; one more fails
    /// RESOURCE_EXHAUSTED at once. A waiting request leaves the queue when its caller's deadline
    /// cancels it, so the wait is bounded by the RPC deadline too.
    public var maximumQueuedRequests: Int = 256
    /// Consecutive failures (5xx, 429, transport, timeout) that open the breaker.
    public var breakerFailureThreshold: Int = 5
    /// How long an open breaker refuses calls before one probe is let through.
    public var breakerCooldown: Duration = .seconds(30)
    /// The largest response body read; a longer one is a provider failure (UNAVAILABLE).
    public var maximumResponseBytes: Int = 1 << 20

    public init() {}

    /// The configuration for the shared `HTTPClient` the providers use: the connect timeout of
    /// this policy, and no redirects (a provider API never redirects; following one could carry
    /// the bearer token to another host).
    public var httpClientConfiguration: HTTPClient.Configuration {
        var configuration = HTTPClient.Configuration()
        configuration.timeout = .init(connect: TimeAmount(connectTimeout), read: TimeAmount(requestTimeout))
        configuration.redirectConfiguration = .disallow
        configuration.decompression = .disabled
        return configuration
    }
}

extension Duration {
    /// Seconds as a Double (for jitter arithmetic and log lines).
    var secondsDouble: Double {
        let (seconds, attoseconds) = components
        return Double(seconds) + Double(attoseconds) / 1e18
    }
}
