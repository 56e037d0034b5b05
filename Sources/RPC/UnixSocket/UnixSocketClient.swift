import Foundation
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import Synchronization

/// A client for one Unix-socket RPC server: one connection, many calls in flight on it, replies
/// matched by call id. It is a `Service`: `run()` keeps the connection up and reconnects with
/// exponential backoff after the server restarts. Calls made while it is down fail at once with
/// UNAVAILABLE rather than queueing.
public final class UnixSocketClient: ClientTransport, Service, Sendable {
    public struct Configuration: Sendable {
        public var path: String
        /// Largest reply frame accepted. Default 1 MiB.
        public var maximumFrameLength: Int = 1 << 20
        /// First reconnect delay, doubled after each failed attempt up to `maximumBackoff`.
        public var initialBackoff: Duration = .milliseconds(20)
        public var maximumBackoff: Duration = .seconds(2)
        /// How long one connection attempt may take.
        public var connectTimeout: Duration = .seconds(1)

        public init(path: String) { self.path = path }
    }

    private struct Pending {
        var continuation: CheckedContinuation<Data, any Error>
        var timeout: Scheduled<Void>?
    }

    private struct State {
        var channel: (any Channel)?
        var nextCallID: UInt64 = 1
        var pending: [UInt64: Pending] = [:]
        var connectedWaiters: [CheckedContinuation<Void, Never>] = []
    }

    public let configuration: Configuration
    private let eventLoopGroup: any EventLoopGroup
    private let logger: Logger
    private let state = Mutex(State())

    public init(configuration: Configuration, eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton, logger: Logger) {
        self.configuration = configuration
        self.eventLoopGroup = eventLoopGroup
        self.logger = logger
    }

    public var isConnected: Bool { state.withLock { $0.channel != nil } }

    /// Returns once a connection is up (for start-up ordering and tests).
    public func waitUntilConnected() async {
        await withCheckedContinuation { continuation in
            let connected = state.withLock { state -> Bool in
                if state.channel != nil { return true }
                state.connectedWaiters.append(continuation)
                return false
            }
            if connected { continuation.resume() }
        }
    }

    public func run() async throws {
        var backoff = configuration.initialBackoff
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            do {
                let channel = try await connect()
                backoff = configuration.initialBackoff
                let waiters = state.withLock { state in
                    state.channel = channel
                    defer { state.connectedWaiters = [] }
                    return state.connectedWaiters
                }
                for waiter in waiters { waiter.resume() }
                logger.debug("rpc client connected", metadata: ["socket": "\(configuration.path)"])
                await withGracefulShutdownHandler {
                    await withTaskCancellationHandler {
                        try? await channel.closeFuture.get()
                    } onCancel: {
                        channel.close(promise: nil)
                    }
                } onGracefulShutdown: {
                    channel.close(promise: nil)
                }
                connectionLost(channel)
            } catch {
                logger.debug("rpc client connect failed", metadata: ["socket": "\(configuration.path)", "error": "\(error)"])
            }
            if Task.isCancelled || Task.isShuttingDownGracefully { break }
            try? await Task.sleep(for: backoff)
            backoff = min(backoff * 2, configuration.maximumBackoff)
        }
    }

    private func connect() async throws -> any Channel {
        let maximumFrameLength = configuration.maximumFrameLength
        let timeout = configuration.connectTimeout.components
        return try await ClientBootstrap(group: eventLoopGroup)
            .connectTimeout(.milliseconds(timeout.seconds * 1000 + timeout.attoseconds / 1_000_000_000_000_000))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addRPCFraming(maximumFrameLength: maximumFrameLength)
                    try channel.pipeline.syncOperations.addHandler(ReplyHandler(client: self))
                }
            }
            .connect(unixDomainSocketPath: configuration.path)
            .get()
    }

    public func unary(method: String, payload: Data, metadata: [String: String], deadline: ContinuousClock.Instant?) async throws -> Data {
        var request = RPCWireRequest()
        request.method = method
        request.payload = payload
        request.metadata = metadata
        if let deadline {
            guard deadline > .now else { throw RPCError(code: .deadlineExceeded, message: "deadline exceeded") }
            request.timeoutMicros = deadline.remainingMicros
        }
        let callID = state.withLock { state in
            defer { state.nextCallID &+= 1 }
            return state.nextCallID
        }
        var frame = RPCWireFrame()
        frame.callID = callID
        frame.request = request
        let bytes: [UInt8]
        do { bytes = try frame.serializedBytes() } catch {
            throw RPCError(code: .invalidArgument, message: "request could not be serialized")
        }
        guard bytes.count <= configuration.maximumFrameLength else {
            throw RPCError(code: .resourceExhausted, message: "request of \(bytes.count) bytes exceeds the maximum frame size")
        }

        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Data, any Error>) in
                let channel = state.withLock { state -> (any Channel)? in
                    guard let channel = state.channel else { return nil }
                    state.pending[callID] = Pending(continuation: continuation, timeout: nil)
                    return channel
                }
                guard let channel else {
                    continuation.resume(throwing: RPCError(code: .unavailable, message: "service unavailable"))
                    return
                }
                if Task.isCancelled {
                    finish(callID, with: .failure(RPCError(code: .cancelled, message: "call cancelled")), sendCancel: false)
                    return
                }
                if let deadline {
                    let timeout = channel.eventLoop.scheduleTask(in: .microseconds(Int64(deadline.remainingMicros))) {
                        self.finish(callID, with: .failure(RPCError(code: .deadlineExceeded, message: "deadline exceeded")), sendCancel: true)
                    }
                    state.withLock { $0.pending[callID]?.timeout = timeout }
                }
                channel.writeAndFlush(ByteBuffer(bytes: bytes)).whenFailure { _ in
                    self.finish(callID, with: .failure(RPCError(code: .unavailable, message: "service unavailable")), sendCancel: false)
                }
            }
        } onCancel: {
            finish(callID, with: .failure(RPCError(code: .cancelled, message: "call cancelled")), sendCancel: true)
        }
    }

    /// Completes a call exactly once; later completions (a reply after the deadline) are ignored.
    private func finish(_ callID: UInt64, with result: Result<Data, RPCError>, sendCancel: Bool) {
        let (pending, channel) = state.withLock { state in
            (state.pending.removeValue(forKey: callID), state.channel)
        }
        guard let pending else { return }
        pending.timeout?.cancel()
        pending.continuation.resume(with: result.mapError { $0 as any Error })
        if sendCancel, let channel {
            var frame = RPCWireFrame()
            frame.callID = callID
            frame.cancel = RPCWireCancel()
            if let bytes: [UInt8] = try? frame.serializedBytes() {
                channel.writeAndFlush(ByteBuffer(bytes: bytes), promise: nil)
            }
        }
    }

    fileprivate func received(_ frame: RPCWireFrame) throws {
        guard case .response(let response) = frame.kind else {
            throw RPCFrameError.protocolViolation("unexpected frame from server")
        }
        if response.status.code == RPCError.Code.ok.rawValue {
            finish(frame.callID, with: .success(response.payload), sendCancel: false)
        } else {
            finish(frame.callID, with: .failure(response.status.rpcError), sendCancel: false)
        }
    }

    fileprivate func connectionLost(_ channel: any Channel) {
        let orphans = state.withLock { state -> [Pending] in
            guard let current = state.channel, current === channel else { return [] }
            state.channel = nil
            defer { state.pending = [:] }
            return Array(state.pending.values)
        }
        for pending in orphans {
            pending.timeout?.cancel()
            pending.continuation.resume(throwing: RPCError(code: .unavailable, message: "connection to service lost"))
        }
    }
}

/// Decodes reply frames and hands them to the client; a malformed reply closes the connection,
/// which fails the calls in flight with UNAVAILABLE.
private final class ReplyHandler: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer

    let client: UnixSocketClient

    init(client: UnixSocketClient) { self.client = client }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        do {
            let frame = try RPCWireFrame(serializedBytes: Array(buffer.readableBytesView))
            try client.received(frame)
        } catch {
            context.close(promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        client.connectionLost(context.channel)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}
