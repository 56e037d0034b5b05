import ClauSupport
import Foundation
import Hummingbird
import HummingbirdCore
import HummingbirdTLS
import Logging
import NIOCore
import NIOPosix
import RPC
import ServiceLifecycle
import Synchronization

/// Bound ports, known once the listeners run (port 0 in tests).
public struct EdgePorts: Sendable, Equatable {
    /// HTTPS, or the plain listener behind nginx.
    public var api: Int
    /// The redirect-only plain-HTTP listener, when configured.
    public var redirect: Int?
    /// The loopback-only metrics listener, when configured (C-17).
    public var metrics: Int?
}

/// Builds the edge: the auth (and, when configured, broker) RPC clients, the JWKS warm-up, the API listener, (HTTPS mode) the
/// redirect listener and (when `metricsPort` is set) the loopback metrics listener, as one `Service`. `clau-edge` and the tests both call this.
/// `dependencies` (e.g. the `RedisClient` behind a `RedisRateLimiter`) run before the listeners
/// and stop after them.
public func buildApplication(configuration: EdgeConfiguration, logger: Logger, accessLogger: Logger? = nil, dependencies: [any Service] = []) throws -> EdgeService {
    try configuration.validate()
    let client = UnixSocketClient(configuration: .init(path: configuration.authSocketPath), logger: logger)
    let brokerClient = configuration.brokerSocketPath.map { UnixSocketClient(configuration: .init(path: $0), logger: logger) }
    let state = EdgeApplicationState(configuration: configuration, auth: RPCClient(transport: client), broker: brokerClient, logger: logger, accessLogger: accessLogger ?? logger)
    let inherited = configuration.inheritedSockets?.descriptors ?? [:]
    let redirectPort: Int? = if case .https(_, _, _, let port) = configuration.listener { port } else { nil }
    let serveRedirect = inherited[.redirect] != nil || redirectPort != nil
    let serveMetrics = inherited[.metrics] != nil || configuration.metricsPort != nil
    let ports = PortRegistry(expectRedirect: serveRedirect, expectMetrics: serveMetrics)
    let http1 = HTTP1Channel.Configuration(
        additionalChannelHandlers: [NoDelayHandler()],
        idleTimeout: .nanoseconds(Int64(configuration.idleTimeout.components.seconds) * 1_000_000_000),
        httpDecoderConfiguration: .init(maxHeaderFieldSize: 64 * 1024, maxHeaderListSize: 64 * 1024, maxHeaderFieldCount: 200)
    )
    /// One listener: on the inherited socket for `role` when systemd passed one, else bound here.
    func listener<Responder: HTTPResponder>(
        _ role: InheritedSockets.Role, _ responder: Responder, host: String, port: Int, tls: TLSConfiguration?,
        onRunning: @escaping @Sendable (Int?) -> Void
    ) throws -> any Service where Responder.Context == EdgeRequestContext {
        if let descriptor = inherited[role] {
            return try inheritedListener(responder, descriptor: descriptor, http1: http1, tls: tls, onServerRunning: { onRunning($0.localAddress?.port) }, logger: logger)
        }
        let server = try tls.map { try HTTPServerBuilder.tls(.http1(configuration: http1), tlsConfiguration: $0) } ?? .http1(configuration: http1)
        return Application(
            responder: responder, server: server,
            configuration: ApplicationConfiguration(address: .hostname(host, port: port), serverName: nil),
            onServerRunning: { onRunning($0.localAddress?.port) },
            logger: logger
        )
    }
    var services: [any Service] = []
    var certificates: TLSCertificateStore?
    switch configuration.listener {
    case .https(let host, let port, let tls, let redirectPort):
        let store = try TLSCertificateStore(tls)
        certificates = store
        services.append(try listener(.api, EdgePipeline.responder(state: state, isTLS: true, trustedProxies: nil), host: host, port: port,
                                     tls: try tls.serverConfiguration(certificates: store), onRunning: { ports.set(api: $0) }))
        if serveRedirect {
            services.append(try listener(.redirect, RedirectResponder(baseURL: configuration.publicBaseURL), host: host, port: redirectPort ?? 0,
                                         tls: nil, onRunning: { ports.set(redirect: $0) }))
        }
    case .behindProxy(let host, let port, let trusted):
        let responder = EdgePipeline.responder(state: state, isTLS: false, trustedProxies: Set(trusted.compactMap(IPAddress.canonical)))
        services.append(try listener(.api, responder, host: host, port: port, tls: nil, onRunning: { ports.set(api: $0) }))
    }
    // C-17: /metrics only here — plain HTTP on a loopback address (checked by validate(), and for
    // an inherited socket by InheritedSockets.check()), never on the public listeners (their route
    // table has no /metrics: 404).
    if serveMetrics {
        services.append(try listener(.metrics, MetricsResponder(metrics: state.metrics), host: configuration.metricsHost, port: configuration.metricsPort ?? 0,
                                     tls: nil, onRunning: { ports.set(metrics: $0) }))
    }
    return EdgeService(client: client, brokerClient: brokerClient, state: state, dependencies: dependencies, listeners: services, ports: ports, certificates: certificates, logger: logger)
}

/// The running edge. `run()` runs the RPC client first and the listeners after it, so a graceful
/// shutdown stops the listeners (finishing requests in flight) before the RPC client.
public struct EdgeService: Service {
    public let client: UnixSocketClient
    /// The broker's RPC connection, when a broker socket is configured.
    public let brokerClient: UnixSocketClient?
    public let state: EdgeApplicationState
    let dependencies: [any Service]
    let listeners: [any Service]
    let ports: PortRegistry
    let certificates: TLSCertificateStore?
    let logger: Logger

    /// Replaces the TLS certificate and key for new connections; open connections keep theirs
    /// (`clau-edge` calls this on SIGHUP). Throws, keeping the old pair, when the new one does not
    /// parse or does not match, or when the edge is not serving HTTPS itself.
    public func reloadTLS(_ material: EdgeConfiguration.TLSMaterial) throws {
        guard let certificates else { throw StartupError("this edge does not terminate TLS (behind-proxy mode)") }
        try certificates.replace(with: material)
    }

    public func run() async throws {
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = [.init(service: client)] + dependencies.map { .init(service: $0) }
        // The broker client keeps (re)connecting on its own: the edge serves auth routes while the
        // broker is down, and broker routes answer 503 until it is back.
        if let brokerClient { services.append(.init(service: brokerClient)) }
        services.append(.init(service: JWKSWarmUp(client: client, cache: state.jwks, logger: logger), successTerminationBehavior: .ignore))
        services.append(.init(service: IPBlocklistPoller(blocklist: state.blocklist, interval: state.configuration.ipBlocklistRefreshInterval)))
        services += listeners.map { .init(service: $0) }
        var configuration = ServiceGroupConfiguration(services: services, logger: logger)
        // Past this, a drain that is stuck (a client that never finishes) is cancelled; by then the
        // listeners are closed and no accepted connection is still waiting to be served.
        configuration.maximumGracefulShutdownDuration = state.configuration.idleTimeout + .seconds(5)
        let group = ServiceGroup(configuration: configuration)
        // Cancelling Hummingbird's accept loop while an accepted connection is still buffered drops
        // that connection's NIOAsyncChannel unfinished, which NIO traps on (apple/swift-nio#3481).
        // So cancelling the edge asks for a graceful shutdown instead: the listeners close, every
        // buffered connection is served or closed, requests in flight finish. The group runs in an
        // unstructured task because a child task would be cancelled with us; it still inherits
        // the parent's graceful shutdown (a task local).
        let running = Task { try await group.run() }
        try await withTaskCancellationHandler {
            try await running.value
        } onCancel: {
            Task { await group.triggerGracefulShutdown() }
        }
    }

    /// The bound ports once every listener is up.
    public func waitUntilListening() async -> EdgePorts {
        await ports.wait()
    }
}

/// Loads the JWKS once auth is reachable, retrying until it has keys.
struct JWKSWarmUp: Service {
    let client: UnixSocketClient
    let cache: JWKSCache
    let logger: Logger

    func run() async throws {
        await client.waitUntilConnectedOrCancelled()
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            await cache.refresh(requestID: "startup", force: true)
            if cache.keyCount > 0 { return }
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: .seconds(2)) }
        }
    }
}

extension UnixSocketClient {
    func waitUntilConnectedOrCancelled() async {
        while !isConnected && !Task.isCancelled && !Task.isShuttingDownGracefully {
            try? await Task.sleep(for: .milliseconds(20))
        }
    }
}

final class PortRegistry: Sendable {
    private struct State {
        var api: Int?
        var redirect: Int?
        var metrics: Int?
        var waiters: [CheckedContinuation<EdgePorts, Never>] = []
    }
    private let expectRedirect: Bool
    private let expectMetrics: Bool
    private let state = Mutex(State())

    init(expectRedirect: Bool, expectMetrics: Bool = false) {
        self.expectRedirect = expectRedirect
        self.expectMetrics = expectMetrics
    }

    func set(api: Int? = nil, redirect: Int? = nil, metrics: Int? = nil) {
        let (ready, waiters) = state.withLock { state -> (EdgePorts?, [CheckedContinuation<EdgePorts, Never>]) in
            if let api { state.api = api }
            if let redirect { state.redirect = redirect }
            if let metrics { state.metrics = metrics }
            guard let ports = Self.ready(state, expectRedirect: expectRedirect, expectMetrics: expectMetrics) else { return (nil, []) }
            defer { state.waiters = [] }
            return (ports, state.waiters)
        }
        if let ready { for waiter in waiters { waiter.resume(returning: ready) } }
    }

    func wait() async -> EdgePorts {
        await withCheckedContinuation { continuation in
            let ready = state.withLock { state -> EdgePorts? in
                if let ports = Self.ready(state, expectRedirect: expectRedirect, expectMetrics: expectMetrics) { return ports }
                state.waiters.append(continuation)
                return nil
            }
            if let ready { continuation.resume(returning: ready) }
        }
    }

    private static func ready(_ state: State, expectRedirect: Bool, expectMetrics: Bool) -> EdgePorts? {
        guard let api = state.api else { return nil }
        if expectRedirect && state.redirect == nil { return nil }
        if expectMetrics && state.metrics == nil { return nil }
        return EdgePorts(api: api, redirect: state.redirect, metrics: state.metrics)
    }
}

/// The plain-HTTP listener of HTTPS mode: 301 to the configured HTTPS origin, no body (C-10).
/// The target comes from configuration, never from `Host` (no open redirect).
struct RedirectResponder: HTTPResponder {
    typealias Context = EdgeRequestContext
    let baseURL: String

    func respond(to request: Request, context: EdgeRequestContext) async throws -> Response {
        var target = request.head.path ?? "/"
        if !target.hasPrefix("/") || target.utf8.count > 8192 { target = "/" }
        var headers = HTTPFields()
        headers[.location] = baseURL + target
        headers[.cacheControl] = "no-store"
        return Response(status: .movedPermanently, headers: headers, body: ResponseBody())
    }
}

/// TCP_NODELAY on every accepted connection (Nagle + delayed ACK cost 40 ms per response).
final class NoDelayHandler: ChannelInboundHandler, RemovableChannelHandler, Sendable {
    // Forwards parts untouched, whatever their type.
    typealias InboundIn = Any

    func handlerAdded(context: ChannelHandlerContext) {
        try? context.channel.syncOptions?.setOption(ChannelOptions.tcpOption(.tcp_nodelay), value: 1)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        context.fireChannelRead(data)
    }
}

enum OpenAPIDocument {
    /// The document compiled into the binary (scripts/gen-openapi.py writes both copies).
    static let data = Data(openAPIDocumentText.utf8)
}
