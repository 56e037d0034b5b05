import Foundation
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import Synchronization

/// A client for one Unix-socket RPC server: one connection per event loop of its group, many calls
/// in flight on each, replies matched by call id. A call made on an event loop goes out on that
/// loop's connection, so its request, its reply and the caller's continuation stay on one thread
/// (no cross-thread wake-ups), and the load spreads over the server's loops too. It is a
/// `Service`: `run()` keeps the connections up and reconnects each with exponential backoff after
/// the server restarts. Calls made while every connection is down fail at once with UNAVAILABLE
/// rather than queueing; a call whose own loop's connection is down uses another one.
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
        var deadline: NIODeadline?
        /// Index of the connection (= event loop) the call went out on.
        var connection: Int
    }

    /// The live connection and the writer that batches its flushes.
    private struct Connection {
        var channel: any Channel
        var writer: CoalescingFrameWriter
    }

    private struct State {
        /// One slot per event loop, nil while that connection is down.
        var connections: [Connection?]
        var pending: [UInt64: Pending] = [:]
        /// Rings at the earliest deadline of the pending calls.
        var deadlineAlarm: DeadlineAlarm
        var connectedWaiters: [CheckedContinuation<Void, Never>] = []
    }

    public let configuration: Configuration
    private let eventLoops: [any EventLoop]
    private let logger: Logger
    private let state: Mutex<State>
    private let nextCallID = Atomic<UInt64>(0)

    public init(configuration: Configuration, eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton, logger: Logger) {
        self.configuration = configuration
        self.eventLoops = Array(eventLoopGroup.makeIterator())
        self.logger = logger
        self.state = Mutex(State(connections: Array(repeating: nil, count: eventLoops.count), deadlineAlarm: DeadlineAlarm(eventLoop: eventLoops[0])))
    }

    /// True while at least one connection is up.
    public var isConnected: Bool { state.withLock { $0.connections.contains { $0 != nil } } }

    /// Returns once a connection is up (for start-up ordering and tests).
    public func waitUntilConnected() async {
        await withCheckedContinuation { continuation in
            let connected = state.withLock { state -> Bool in
                if state.connections.contains(where: { $0 != nil }) { return true }
                state.connectedWaiters.append(continuation)
                return false
            }
            if connected { continuation.resume() }
        }
    }

    public func run() async throws {
        await withDiscardingTaskGroup { group in
            for index in eventLoops.indices {
                group.addTask { await self.keepConnected(index) }
            }
        }
    }

    /// Keeps connection `index` (on event loop `index`) up until cancelled or shut down.
    private func keepConnected(_ index: Int) async {
        var backoff = configuration.initialBackoff
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            do {
                let channel = try await connect(on: eventLoops[index])
                backoff = configuration.initialBackoff
                let waiters = state.withLock { state in
                    state.connections[index] = Connection(channel: channel, writer: CoalescingFrameWriter(channel: channel))
                    defer { state.connectedWaiters = [] }
                    return state.connectedWaiters
                }
                for waiter in waiters { waiter.resume() }
                logger.debug("rpc client connected", metadata: ["socket": "\(configuration.path)", "connection": "\(index)"])
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

    private func connect(on eventLoop: any EventLoop) async throws -> any Channel {
        let maximumFrameLength = configuration.maximumFrameLength
        let timeout = configuration.connectTimeout.components
        return try await ClientBootstrap(group: eventLoop)
            .connectTimeout(.milliseconds(timeout.seconds * 1000 + timeout.attoseconds / 1_000_000_000_000_000))
            .channelOption(.recvAllocator, value: AdaptiveRecvByteBufferAllocator.rpcFrames)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addRPCFraming(maximumFrameLength: maximumFrameLength)
                    try channel.pipeline.syncOperations.addHandler(ReplyHandler(client: self))
                }
            }
            .connect(unixDomainSocketPath: configuration.path)
            .get()
    }

    public func unary(method: String, payload: Data, requestID: String?, deadline: ContinuousClock.Instant?) async throws -> Data {
        var request = RPCWireRequest()
        request.method = method
        request.payload = payload
        if let requestID { request.requestID = requestID }
        if let deadline {
            guard deadline > .now else { throw RPCError(code: .deadlineExceeded, message: "deadline exceeded") }
            request.timeoutMicros = deadline.remainingMicros
        }
        let nioDeadline = deadline.map(NIODeadline.init)
        let callID = nextCallID.wrappingAdd(1, ordering: .relaxed).newValue
        var frame = RPCWireFrame()
        frame.callID = callID
        frame.request = request
        let encoded: ByteBuffer
        do { encoded = try ByteBuffer(rpcFrame: frame) } catch {
            throw RPCError(code: .invalidArgument, message: "request could not be serialized")
        }
        let frameLength = encoded.readableBytes - 4
        guard frameLength <= configuration.maximumFrameLength else {
            throw RPCError(code: .resourceExhausted, message: "request of \(frameLength) bytes exceeds the maximum frame size")
        }

        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Data, any Error>) in
                let preferred = currentEventLoopIndex()
                let connection = state.withLock { state -> Connection? in
                    guard let index = Self.connectionIndex(in: state.connections, preferring: preferred, callID: callID) else { return nil }
                    state.pending[callID] = Pending(continuation: continuation, deadline: nioDeadline, connection: index)
                    if let nioDeadline { state.deadlineAlarm.ensureRings(by: nioDeadline) { self.expireDueCalls() } }
                    return state.connections[index]
                }
                guard let connection else {
                    continuation.resume(throwing: RPCError(code: .unavailable, message: "service unavailable"))
                    return
                }
                if Task.isCancelled {
                    finish(callID, with: .failure(RPCError(code: .cancelled, message: "call cancelled")), sendCancel: false)
                    return
                }
                // No per-write promise: if the connection fails, `connectionLost` fails every call
                // registered on it (registration and that sweep share the lock).
                connection.writer.write(encoded)
            }
        } onCancel: {
            finish(callID, with: .failure(RPCError(code: .cancelled, message: "call cancelled")), sendCancel: true)
        }
    }

    /// The index of the event loop this code runs on, if it is one of ours.
    private func currentEventLoopIndex() -> Int? {
        guard let current = MultiThreadedEventLoopGroup.currentEventLoop else { return nil }
        return eventLoops.firstIndex { $0 === current }
    }

    /// The caller's own loop's connection if it is up, else any live one (spread by call id).
    private static func connectionIndex(in connections: [Connection?], preferring preferred: Int?, callID: UInt64) -> Int? {
        if let preferred, connections[preferred] != nil { return preferred }
        let count = connections.count
        let start = Int(callID % UInt64(count))
        for offset in 0..<count where connections[(start + offset) % count] != nil {
            return (start + offset) % count
        }
        return nil
    }

    /// Completes a call exactly once; later completions (a reply after the deadline) are ignored.
    private func finish(_ callID: UInt64, with result: Result<Data, RPCError>, sendCancel: Bool) {
        let (pending, connection) = state.withLock { state -> (Pending?, Connection?) in
            guard let pending = state.pending.removeValue(forKey: callID) else { return (nil, nil) }
            return (pending, state.connections[pending.connection])
        }
        guard let pending else { return }
        pending.continuation.resume(with: result.mapError { $0 as any Error })
        if sendCancel, let connection {
            var frame = RPCWireFrame()
            frame.callID = callID
            frame.cancel = RPCWireCancel()
            if let encoded = try? ByteBuffer(rpcFrame: frame) {
                connection.writer.write(encoded)
            }
        }
    }

    /// The deadline alarm rang: calls past their deadline fail with DEADLINE_EXCEEDED (and the
    /// server is told to stop working on them).
    private func expireDueCalls() {
        let due = state.withLock { state in
            let (due, next) = DeadlineAlarm.sweep(state.pending.lazy.map { ($0.key, $0.value.deadline) }, now: .now())
            state.deadlineAlarm.rang(next: next) { self.expireDueCalls() }
            return due
        }
        for callID in due {
            finish(callID, with: .failure(RPCError(code: .deadlineExceeded, message: "deadline exceeded")), sendCancel: true)
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
            guard let index = state.connections.firstIndex(where: { $0?.channel === channel }) else { return [] }
            state.connections[index] = nil
            var orphans: [Pending] = []
            state.pending = state.pending.filter { _, pending in
                guard pending.connection == index else { return true }
                orphans.append(pending)
                return false
            }
            return orphans
        }
        for pending in orphans {
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
            let frame = try RPCWireFrame(frameBody: buffer)
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
