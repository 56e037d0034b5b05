import Foundation
import Logging
import RPC
import RateLimiting
import Synchronization

/// State shared by every request of one edge process.
public final class EdgeApplicationState: Sendable {
    public let configuration: EdgeConfiguration
    /// Every call to auth goes through here (deadline, request id, failure metrics, fail-closed checks).
    let auth: AuthGateway
    /// nil when no broker socket is configured (its routes answer 503).
    let broker: RPCClient?
    /// The broker connection itself, for `/readyz` (a connection-level check: the broker has no
    /// method that is both cheap and open to every edge caller without meaning something).
    let brokerTransport: UnixSocketClient?
    let jwks: JWKSCache
    let verifier: EdgeTokenVerifier
    let routes: RouteTable
    let logger: Logger
    let accessLogger: Logger
    let rateLimiter: any RateLimiter
    let blocklist: IPBlocklist
    let revocations: RevocationCache
    let inFlight = Atomic<Int>(0)
    /// Prometheus counters (C-17), served only by the loopback metrics listener.
    let metrics = EdgeMetrics()

    /// `auth` is any client of auth: the Unix socket in production, an in-process server in tests.
    init(configuration: EdgeConfiguration, auth: RPCClient, broker: UnixSocketClient? = nil, logger: Logger, accessLogger: Logger) {
        self.configuration = configuration
        let gateway = AuthGateway(client: auth, timeout: configuration.rpcTimeout, metrics: metrics, logger: logger)
        self.auth = gateway
        self.brokerTransport = broker
        self.broker = broker.map { RPCClient(transport: $0) }
        self.jwks = JWKSCache(auth: gateway, issuer: configuration.issuer, audience: configuration.audience, leeway: configuration.tokenLeewaySeconds,
                              minimumRefreshInterval: configuration.jwksRefreshMinimumInterval, logger: logger)
        self.verifier = EdgeTokenVerifier(cache: jwks, auth: gateway)
        self.routes = .clau()
        self.logger = logger
        self.accessLogger = accessLogger
        self.rateLimiter = configuration.rateLimiter ?? InProcessRateLimiter()
        self.blocklist = IPBlocklist(auth: gateway, logger: logger)
        self.revocations = RevocationCache(ttl: configuration.revocationCacheTTL)
    }
}
