import HTTPTypes
import Hummingbird
import NIOCore
import Synchronization

/// The edge's request pipeline. A request meets the stages in this order (each may refuse it):
///
/// 1. `AccessLogStage`: gives the request its id and client address, and wraps everything after
///    it: whatever the answer (a refusal of any later stage included) it gets the error shape
///    the common headers, one access-log line and the request metrics (C-17).
/// 2. `AdmissionStage`: URI length (414), the route match, the in-flight bound (503, R-16).
/// 3. `ClientAddressStage`: the admin-managed blocklist (403, R-4).
/// 4. `RequestLimitsStage`: header bytes (431, R-18), then no route (404) or method (405).
/// 5. `AuthenticationStage`: access token or API key, revocation, admin checks (C-2, C-6, C-8).
/// 6. `RateLimitStage`: per client and category (429, C-9, R-15).
/// 7. `RouteStage`: the owner check (C-7) and the route's handler (one RPC).
///
/// Bodies are read by handlers, within the admission limits (`readBody`: 413, 408).
enum EdgePipeline {
    @MiddlewareFixedTypeBuilder<Request, Response, EdgeRequestContext>
    static func stages(state: EdgeApplicationState, isTLS: Bool, trustedProxies: Set<String>?) -> some MiddlewareProtocol<Request, Response, EdgeRequestContext> {
        AccessLogStage(state: state, isTLS: isTLS, trustedProxies: trustedProxies)
        AdmissionStage(state: state)
        ClientAddressStage(blocklist: state.blocklist)
        RequestLimitsStage(configuration: state.configuration)
        AuthenticationStage(state: state)
        RateLimitStage(state: state)
    }

    /// The responder every API listener serves, bound here or handed over by systemd.
    /// `isTLS`: HTTPS listener (HSTS on every response); `trustedProxies`: behind nginx.
    static func responder(state: EdgeApplicationState, isTLS: Bool, trustedProxies: Set<String>?) -> some HTTPResponder<EdgeRequestContext> {
        EdgeResponder(stages: stages(state: state, isTLS: isTLS, trustedProxies: trustedProxies), route: RouteStage(state: state))
    }
}

/// The stages, ending in the route.
struct EdgeResponder<Stages: MiddlewareProtocol<Request, Response, EdgeRequestContext>>: HTTPResponder {
    typealias Context = EdgeRequestContext
    let stages: Stages
    let route: RouteStage

    func respond(to request: Request, context: EdgeRequestContext) async throws -> Response {
        try await stages.handle(request, context: context) { request, context in
            try await route.respond(to: request, context: context)
        }
    }
}

/// The request context: Hummingbird's core storage, the TCP peer address, and what the stages
/// have established so far (each field is set by the stage named beside it).
public struct EdgeRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    /// The TCP peer; settable so the in-memory tests can play a client.
    public internal(set) var peerIP: String?
    /// `AccessLogStage`.
    var requestID = ""
    var clientIP = "-"
    /// Tells the access-log stage, which wraps the others, what they learnt.
    let exchange = ExchangeRecord()
    /// `AdmissionStage`.
    var lookup: RouteTable.Lookup = .notFound
    /// `RequestLimitsStage`.
    var route: Route?
    var parameters: [String: String] = [:]
    /// `AuthenticationStage`: the verified caller (nil on public routes) and the bearer token as
    /// presented (logout forwards it to auth; never logged).
    var caller: AccessClaims?
    var bearerToken: String?

    public init(source: ApplicationRequestContextSource) {
        self.coreContext = CoreRequestContextStorage(source: source)
        self.peerIP = source.channel.remoteAddress?.ipAddress
    }

    /// Liveness and readiness stay observable under load: no admission, no blocklist.
    var exemptFromAdmission: Bool {
        if case .found(let route, _) = lookup { route.exemptFromAdmission } else { false }
    }

    /// The matched route, for the stages after `RequestLimitsStage`.
    func matchedRoute() throws -> Route {
        guard let route else { throw EdgeError.internalError }
        return route
    }
}

/// What inner stages report outwards: the route template and the caller's id (for the access
/// log and metrics) and the `X-RateLimit-*` headers (added to whatever response the request ends
/// with, errors included).
final class ExchangeRecord: Sendable {
    let rateHeaders = RateLimitHeaders()
    private let noted = Mutex<(route: String?, userID: String?)>((nil, nil))

    var route: String? { noted.withLock { $0.route } }
    var userID: String? { noted.withLock { $0.userID } }
    func note(route: String) { noted.withLock { $0.route = route } }
    func note(userID: String?) { noted.withLock { $0.userID = userID } }
}
