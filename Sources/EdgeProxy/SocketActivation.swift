import ClauSupport
import Foundation
import Hummingbird
import HummingbirdCore
import HummingbirdTLS
import Logging
import NIOCore
import NIOExtras
import NIOHTTP1
import NIOPosix
import ServiceLifecycle
import Synchronization

/// Listening sockets handed over by systemd (`clau-edge.socket`), so the edge itself needs no
/// network address family at all (`RestrictAddressFamilies=AF_UNIX`) and never binds a port.
/// The protocol is sd_listen_fds(3): descriptors 3… , `LISTEN_FDS` of them, meant for this process
/// only when `LISTEN_PID` is our pid, named by `LISTEN_FDNAMES` (`FileDescriptorName=` in the
/// socket unit: `api`, `redirect`, `metrics`).
public struct InheritedSockets: Sendable, Equatable {
    /// The roles a socket may be named for.
    public enum Role: String, Sendable, CaseIterable {
        /// HTTPS (or the plain listener behind nginx).
        case api
        /// The plain-HTTP redirect listener of HTTPS mode.
        case redirect
        /// The loopback `/metrics` listener.
        case metrics
    }

    public var descriptors: [Role: CInt]

    public init(descriptors: [Role: CInt]) {
        self.descriptors = descriptors
    }

    /// systemd's first passed descriptor.
    static let firstDescriptor: CInt = 3
    /// Far more than the three roles; a larger count is a misconfiguration, not sockets to adopt.
    static let maximumCount = 16

    /// The sockets passed to process `pid`, or nil when none are (no `LISTEN_FDS`, or they were
    /// meant for another process: a `LISTEN_PID` that is not ours is ignored, as sd_listen_fds does).
    public static func parse(environment: [String: String], pid: pid_t) throws(StartupError) -> InheritedSockets? {
        guard let countText = environment["LISTEN_FDS"] else { return nil }
        guard let pidText = environment["LISTEN_PID"], let listenPID = pid_t(pidText), listenPID == pid else { return nil }
        guard let count = Int(countText), (1...maximumCount).contains(count) else {
            throw StartupError("LISTEN_FDS=\(countText.prefix(16)) is not a count of 1-\(maximumCount) sockets")
        }
        let names = (environment["LISTEN_FDNAMES"] ?? "").split(separator: ":", omittingEmptySubsequences: false).map(String.init)
        guard names.count == count else {
            throw StartupError("LISTEN_FDNAMES names \(names.count) sockets but LISTEN_FDS is \(count): name each with FileDescriptorName= (api, redirect, metrics)")
        }
        var descriptors: [Role: CInt] = [:]
        for (index, name) in names.enumerated() {
            guard let role = Role(rawValue: name) else {
                throw StartupError("inherited socket \(index + 1) is named \"\(name.prefix(64))\": expected one of \(Role.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            guard descriptors[role] == nil else { throw StartupError("two inherited sockets are named \(name)") }
            descriptors[role] = firstDescriptor + CInt(index)
        }
        return InheritedSockets(descriptors: descriptors)
    }

    /// Refuses a descriptor that is not a listening TCP socket, and a `metrics` socket that is not
    /// on a loopback address (C-17: /metrics is never public).
    public func check() throws(StartupError) {
        for (role, descriptor) in descriptors {
            var type: CInt = 0
            var listening: CInt = 0
            var length = socklen_t(MemoryLayout<CInt>.size)
            guard getsockopt(descriptor, SOL_SOCKET, SO_TYPE, &type, &length) == 0 else {
                throw StartupError("inherited \(role.rawValue) socket (fd \(descriptor)) is not a socket")
            }
            length = socklen_t(MemoryLayout<CInt>.size)
            guard type == CInt(SOCK_STREAM.rawValue), getsockopt(descriptor, SOL_SOCKET, SO_ACCEPTCONN, &listening, &length) == 0, listening == 1 else {
                throw StartupError("inherited \(role.rawValue) socket (fd \(descriptor)) is not a listening stream socket (ListenStream=)")
            }
            guard let address = localIPAddress(of: descriptor) else {
                throw StartupError("inherited \(role.rawValue) socket (fd \(descriptor)) is not a TCP socket")
            }
            if role == .metrics, !EdgeConfiguration.isLoopback(address.ip) {
                throw StartupError("inherited metrics socket listens on \(address.ip): /metrics must stay on a loopback address (C-17)")
            }
        }
    }
}

/// getsockname(2) of a descriptor we do not own as a NIO channel yet: its family and IP literal.
func localIPAddress(of descriptor: CInt) -> (family: sa_family_t, ip: String)? {
    var storage = sockaddr_storage()
    var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
    let result = withUnsafeMutablePointer(to: &storage) { pointer in
        pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(descriptor, $0, &length) }
    }
    guard result == 0 else { return nil }
    var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
    let family = storage.ss_family
    let converted: UnsafePointer<CChar>? = withUnsafePointer(to: &storage) { pointer in
        switch Int32(family) {
        case AF_INET:
            pointer.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { address in
                var ip = address.pointee.sin_addr
                return inet_ntop(AF_INET, &ip, &text, socklen_t(text.count))
            }
        case AF_INET6:
            pointer.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { address in
                var ip = address.pointee.sin6_addr
                return inet_ntop(AF_INET6, &ip, &text, socklen_t(text.count))
            }
        default:
            nil
        }
    }
    guard converted != nil else { return nil }
    return (family, String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
}

/// Serves an `HTTPResponder` on an inherited listening socket, the way Hummingbird's `Application`
/// serves it on a socket it binds (Hummingbird 2 can only bind): same child-channel pipeline (HTTP/1
/// and optionally TLS), same request context, same 500 for an unknown error, a `Date` header, and a
/// graceful shutdown that stops accepting and lets requests in flight finish.
struct InheritedListener<ChildChannel: ServerChildChannel>: Service {
    let descriptor: CInt
    let childChannel: ChildChannel
    let onServerRunning: @Sendable (any Channel) async -> Void
    let logger: Logger

    func run() async throws {
        let quiescing = ServerQuiescingHelper(group: MultiThreadedEventLoopGroup.singleton)
        let childChannel = self.childChannel
        let logger = self.logger
        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(quiescing.makeServerChannelHandler(channel: channel))
                }
            }
            .childChannelOption(ChannelOptions.allowRemoteHalfClosure, value: true)
            .bind(descriptor) { channel in childChannel.setup(channel: channel, logger: logger) }
        logger.info("serving an inherited socket", metadata: ["fd": "\(descriptor)", "address": "\(server.channel.localAddress.map { "\($0)" } ?? "?")"])
        await withGracefulShutdownHandler {
            await onServerRunning(server.channel)
            await withDiscardingTaskGroup { group in
                do {
                    try await server.executeThenClose { inbound in
                        for try await connection in inbound {
                            group.addTask { await childChannel.handle(value: connection, logger: logger) }
                        }
                    }
                } catch {
                    logger.error("inherited listener stopped accepting", metadata: ["error": "\(error)"])
                }
            }
        } onGracefulShutdown: {
            // Closes the listener and asks each connection to finish its request and close.
            quiescing.initiateShutdown(promise: nil)
        }
    }
}

/// The listener for `responder` on an inherited `descriptor`: HTTP/1, inside TLS when `tls` is given.
func inheritedListener<Responder: HTTPResponder>(
    _ responder: Responder, descriptor: CInt, http1: HTTP1Channel.Configuration, tls: TLSConfiguration?,
    onServerRunning: @escaping @Sendable (any Channel) async -> Void, logger: Logger
) throws -> any Service where Responder.Context == EdgeRequestContext {
    let http = HTTP1Channel(responder: HTTPResponderAdapter(responder: responder, logger: logger).handler, configuration: http1)
    if let tls {
        return InheritedListener(descriptor: descriptor, childChannel: try TLSChannel(http, tlsConfiguration: tls), onServerRunning: onServerRunning, logger: logger)
    }
    return InheritedListener(descriptor: descriptor, childChannel: http, onServerRunning: onServerRunning, logger: logger)
}

/// What Hummingbird's `Application.run` wraps around a responder, for listeners it does not run.
struct HTTPResponderAdapter<Responder: HTTPResponder>: Sendable where Responder.Context == EdgeRequestContext {
    let responder: Responder
    let logger: Logger
    let dates = HTTPDate()

    var handler: HTTPChannelHandler.Responder {
        { [responder, logger, dates] request, writer, channel in
            let context = EdgeRequestContext(source: ApplicationRequestContextSource(channel: channel, logger: logger))
            var response: Response
            do {
                response = try await responder.respond(to: request, context: context)
            } catch let error as HTTPParserError {
                throw error
            } catch {
                response = Response(status: .internalServerError)
            }
            response.headers[.date] = dates.now
            do {
                try await writer.write(response: response.head, body: response.body)
            } catch is HTTPParserError {
                // Not the parser error itself: that would make the channel write a second response.
                throw ResponseWriteFailed()
            }
        }
    }

    struct ResponseWriteFailed: Error {}
}

/// The `Date` header value (RFC 9110 IMF-fixdate), formatted once per second.
final class HTTPDate: Sendable {
    private let cache = Mutex<(second: Int, text: String)>((-1, ""))

    var now: String {
        let seconds = Int(Date().timeIntervalSince1970)
        return cache.withLock { cache in
            if cache.second != seconds { cache = (seconds, Self.format(seconds)) }
            return cache.text
        }
    }

    static func format(_ seconds: Int) -> String {
        var time = time_t(seconds)
        var parts = tm()
        gmtime_r(&time, &parts)
        let days = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
        let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        func two(_ value: Int32) -> String { value < 10 ? "0\(value)" : "\(value)" }
        return "\(days[Int(parts.tm_wday)]), \(two(parts.tm_mday)) \(months[Int(parts.tm_mon)]) \(parts.tm_year + 1900) \(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec)) GMT"
    }
}
