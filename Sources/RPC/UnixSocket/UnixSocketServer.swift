import Foundation
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Serves an `RPCServerCore` on a Unix stream socket (SPEC §2).
///
/// One child task per connection, one task per call, so a slow call never blocks the others on
/// its connection and a bad connection (oversized, truncated or garbage frames) is closed alone.
/// A call's task starts on the connection's event loop within the read that brought the request,
/// so a handler that does not suspend is answered with no thread or task-queue hop. Replies that
/// are ready in the same event-loop tick share one flush.
/// On graceful shutdown it stops accepting, answers new requests UNAVAILABLE, lets the calls in
/// flight finish and reply, then closes.
public final class UnixSocketServer: Service, Sendable {
    public struct Configuration: Sendable {
        /// Socket path, e.g. /run/clau/vault.sock. A stale socket file there is replaced; any
        /// other kind of file is left alone and the server refuses to start.
        public var path: String
        /// File mode of the socket; callers need write permission to connect. Default 0660.
        public var socketMode: mode_t = 0o660
        /// Group that owns the socket file (the group listing the allowed callers); nil keeps ours.
        public var socketGroup: gid_t?
        /// Largest frame accepted; a larger one closes that connection. Default 1 MiB.
        public var maximumFrameLength: Int = 1 << 20
        /// Calls in flight per connection before new ones are refused with RESOURCE_EXHAUSTED.
        public var maximumConcurrentCallsPerConnection: Int = 4096
        /// A frame, once begun, must arrive in full within this time or the connection is closed:
        /// a peer cannot hold a connection (and its buffer) by sending half a frame. Default 10 s.
        public var frameReadTimeout: Duration = .seconds(10)
        /// A connection with no call in flight that has sent no frame for this long is closed
        /// (clients reconnect on their next call). Nil: never. Default 10 minutes.
        public var idleTimeout: Duration? = .seconds(600)
        /// Connections one peer uid may hold open at once; past it a new connection is closed as
        /// soon as it is accepted (logged). Also bounds the listen backlog. Default 128.
        public var maximumConnectionsPerPeerUID: Int = 128

        public init(path: String) { self.path = path }
    }

    public let configuration: Configuration
    private let core: RPCServerCore
    private let eventLoopGroup: any EventLoopGroup
    private let logger: Logger
    private let listening: Mutex<[CheckedContinuation<Void, Never>]?> = Mutex([])

    public init(configuration: Configuration, core: RPCServerCore, eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton, logger: Logger) {
        self.configuration = configuration
        self.core = core
        self.eventLoopGroup = eventLoopGroup
        self.logger = logger
    }

    /// Returns once the socket accepts connections (for tests and start-up ordering).
    public func waitUntilListening() async {
        await withCheckedContinuation { continuation in
            let alreadyListening = listening.withLock { waiters -> Bool in
                guard waiters != nil else { return true }
                waiters!.append(continuation)
                return false
            }
            if alreadyListening { continuation.resume() }
        }
    }

    public func run() async throws {
        let path = configuration.path
        try Self.removeStaleSocket(at: path)
        // Bind under a temporary name, fix mode and group, then rename into place, so the socket
        // is never reachable at its real path with the process umask's permissions.
        let temporaryPath = path + ".\(getpid()).tmp"
        try? FileManager.default.removeItem(atPath: temporaryPath)
        let maximumFrameLength = configuration.maximumFrameLength
        let core = self.core
        let maximumConcurrentCalls = configuration.maximumConcurrentCallsPerConnection
        let frameReadTimeout = TimeAmount(configuration.frameReadTimeout)
        let idleTimeout = configuration.idleTimeout.map(TimeAmount.init)
        let open = OpenConnections(maximumPerPeerUID: configuration.maximumConnectionsPerPeerUID)
        let logger = self.logger
        let server = try await ServerBootstrap(group: eventLoopGroup)
            .serverChannelOption(.backlog, value: Int32(clamping: min(max(configuration.maximumConnectionsPerPeerUID, 1), 4096)))
            .childChannelOption(.recvAllocator, value: AdaptiveRecvByteBufferAllocator.rpcFrames)
            .bind(unixDomainSocketPath: temporaryPath) { channel in
                channel.peerCredentials().flatMapThrowing { peer in
                    let connection = RPCServerConnection(channel: channel, peer: peer, core: core, maximumConcurrentCalls: maximumConcurrentCalls, maximumFrameLength: maximumFrameLength)
                    if let idleTimeout {
                        try channel.pipeline.syncOperations.addHandler(IdleStateHandler(readTimeout: idleTimeout))
                    }
                    try channel.pipeline.syncOperations.addRPCFraming(maximumFrameLength: maximumFrameLength, frameReadTimeout: frameReadTimeout)
                    try channel.pipeline.syncOperations.addHandler(CallReader(connection: connection))
                    if !open.insert(connection) {
                        logger.warning("rpc connection refused: too many open connections from this uid", metadata: [
                            "event": "connection_limit", "peer_uid": "\(peer.uid)", "peer_pid": "\(peer.pid)",
                        ])
                    }
                    return connection
                }
            }
        do {
            if chmod(temporaryPath, configuration.socketMode) != 0 { throw SocketSetupError(path: path, step: "chmod", errno: errno) }
            if let group = configuration.socketGroup, chown(temporaryPath, getuid(), group) != 0 {
                throw SocketSetupError(path: path, step: "chown", errno: errno)
            }
            if rename(temporaryPath, path) != 0 { throw SocketSetupError(path: path, step: "rename", errno: errno) }
        } catch {
            try? await server.channel.close()
            unlink(temporaryPath)
            throw error
        }
        defer { unlink(path) }
        logger.info("rpc server listening", metadata: ["socket": "\(path)", "methods": "\(core.router.methodNames.count)"])
        let waiters = listening.withLock { waiters in
            defer { waiters = nil }
            return waiters ?? []
        }
        for waiter in waiters { waiter.resume() }

        // Graceful shutdown closes the listener, which ends the accept loop; each connection then
        // refuses new calls, lets its calls in flight reply, and closes.
        // A connection serves calls from the moment it is accepted (its frames are handled on the
        // event loop), but the accept loop may not have taken it up yet when the server stops; on
        // cancellation NIO drops those unread. `open` closes whatever is left, so a stopped server
        // never goes on answering.
        defer { open.closeAll() }
        try await withGracefulShutdownHandler {
            try await withThrowingDiscardingTaskGroup { group in
                try await server.executeThenClose { connections in
                    for try await connection in connections {
                        group.addTask {
                            await self.serve(connection)
                        }
                    }
                }
            }
        } onGracefulShutdown: {
            server.channel.close(promise: nil)
            open.startDrainingAll()
        }
        logger.info("rpc server stopped", metadata: ["socket": "\(path)"])
    }

    /// The task of one connection: it lives until the connection closes (peer gone, bad frame,
    /// cancellation) or, on graceful shutdown, until the calls in flight have replied.
    private func serve(_ connection: RPCServerConnection) async {
        let channel = connection.channel
        await withTaskCancellationHandler {
            await connection.waitUntilClosedOrDraining()
            if connection.isDraining, channel.isActive {
                await connection.calls.waitUntilEmpty()
                await connection.replies.flush()
                try? await channel.close()
            }
        } onCancel: {
            channel.close(promise: nil)
        }
        await connection.calls.waitUntilEmpty()
        connection.calls.close()
        if let reason = connection.closeReason {
            logger.notice("rpc connection closed", metadata: ["reason": "\(reason)", "peer_uid": "\(connection.peer.uid)", "peer_pid": "\(connection.peer.pid)"])
        }
    }

    /// The reply frame. A reply larger than `maximumFrameLength` (the peer reads with the same
    /// limit and would close the connection, failing every call on it) is replaced by
    /// RESOURCE_EXHAUSTED: no frame over the limit ever leaves this server.
    static func encode(callID: UInt64, response: RPCWireResponse, maximumFrameLength: Int = 1 << 20) -> ByteBuffer {
        var frame = RPCWireFrame()
        frame.callID = callID
        frame.response = response
        // Serializing a message we built cannot fail (no required fields, no Any).
        if let encoded = try? ByteBuffer(rpcFrame: frame), encoded.readableBytes - 4 <= maximumFrameLength {
            return encoded
        }
        frame.response = .failure(RPCError(code: .resourceExhausted, message: "reply exceeds the frame limit"))
        return (try? ByteBuffer(rpcFrame: frame)) ?? ByteBuffer(rpcFrame: [])
    }

    private static func removeStaleSocket(at path: String) throws {
        var info = stat()
        guard lstat(path, &info) == 0 else { return }
        guard (info.st_mode & S_IFMT) == S_IFSOCK else {
            throw SocketSetupError(path: path, step: "refusing to replace a file that is not a socket", errno: EEXIST)
        }
        unlink(path)
    }
}

public struct SocketSetupError: Error, CustomStringConvertible {
    public var path: String
    public var step: String
    public var errno: Int32
    public var description: String { "\(path): \(step) failed: \(String(cString: strerror(errno)))" }
}

/// The connections accepted and not yet closed, so the server can drain or end every one of
/// them, including those its accept loop has not taken up yet.
private final class OpenConnections: Sendable {
    private enum Phase { case serving, draining, closed }

    private struct State {
        var connections: [ObjectIdentifier: RPCServerConnection] = [:]
        var openPerUID: [uid_t: Int] = [:]
        var phase = Phase.serving
    }

    private let state = Mutex(State())
    private let maximumPerPeerUID: Int

    init(maximumPerPeerUID: Int) {
        self.maximumPerPeerUID = maximumPerPeerUID
    }

    /// A connection accepted after graceful shutdown started drains at once; one whose set-up
    /// finishes after the server stopped, or whose uid already holds its maximum, is closed at
    /// once (false in the latter case).
    @discardableResult
    func insert(_ connection: RPCServerConnection) -> Bool {
        let key = ObjectIdentifier(connection)
        let uid = connection.peer.uid
        let (phase, admitted) = state.withLock { state -> (Phase, Bool) in
            guard state.phase != .closed else { return (state.phase, true) }
            guard state.openPerUID[uid, default: 0] < maximumPerPeerUID else { return (state.phase, false) }
            state.connections[key] = connection
            state.openPerUID[uid, default: 0] += 1
            return (state.phase, true)
        }
        guard phase != .closed, admitted else {
            connection.channel.close(promise: nil)
            return admitted
        }
        connection.channel.closeFuture.whenComplete { _ in
            self.state.withLock { state in
                guard state.connections.removeValue(forKey: key) != nil else { return }
                state.openPerUID[uid, default: 1] -= 1
                if state.openPerUID[uid] == 0 { state.openPerUID[uid] = nil }
            }
        }
        if phase == .draining { connection.startDraining() }
        return true
    }

    func startDrainingAll() {
        let connections = state.withLock { state in
            if state.phase == .serving { state.phase = .draining }
            return Array(state.connections.values)
        }
        for connection in connections { connection.startDraining() }
    }

    func closeAll() {
        let connections = state.withLock { state in
            state.phase = .closed
            defer { state.connections = [:]; state.openPerUID = [:] }
            return Array(state.connections.values)
        }
        for connection in connections { connection.channel.close(promise: nil) }
    }
}

/// One accepted connection: its peer, its calls, and the writer its replies share. Frames are
/// handled on the channel's loop as they are decoded (``CallReader``); each request becomes a task.
final class RPCServerConnection: Sendable {
    let channel: any Channel
    let peer: PeerCredentials
    let calls: CallsInFlight
    let replies: CoalescingFrameWriter
    private let core: RPCServerCore
    private let maximumConcurrentCalls: Int
    private let maximumFrameLength: Int
    /// Whether any rule admits the peer, decided (and, if not, audited) once at accept.
    private let peerAdmitted: Bool
    private let draining = Atomic<Bool>(false)
    /// Completed when the channel closes or graceful shutdown starts (whichever comes first).
    private let closedOrDraining: EventLoopPromise<Void>
    /// Why the connection was closed from this side (a bad frame), for the log.
    private let failure = Mutex<(any Error)?>(nil)

    init(channel: any Channel, peer: PeerCredentials, core: RPCServerCore, maximumConcurrentCalls: Int, maximumFrameLength: Int) {
        self.channel = channel
        self.maximumFrameLength = maximumFrameLength
        self.peer = peer
        self.core = core
        self.maximumConcurrentCalls = maximumConcurrentCalls
        self.peerAdmitted = core.admits(peer)
        if !peerAdmitted { core.auditRefusedPeer(peer, logger: core.connectionLogger) }
        self.calls = CallsInFlight(eventLoop: channel.eventLoop)
        self.replies = CoalescingFrameWriter(channel: channel)
        let closedOrDraining = channel.eventLoop.makePromise(of: Void.self)
        channel.closeFuture.whenComplete { _ in closedOrDraining.succeed(()) }
        self.closedOrDraining = closedOrDraining
    }

    var isDraining: Bool { draining.load(ordering: .relaxed) }
    var closeReason: (any Error)? { failure.withLock { $0 } }

    /// Graceful shutdown: new requests are refused with UNAVAILABLE; the calls in flight go on.
    func startDraining() {
        guard !draining.exchange(true, ordering: .relaxed) else { return }
        closedOrDraining.succeed(())
    }

    func waitUntilClosedOrDraining() async {
        try? await closedOrDraining.futureResult.get()
    }

    /// Records why this side closes the connection; false if it already did.
    func fail(_ error: any Error) -> Bool {
        failure.withLock { failure in
            guard failure == nil else { return false }
            failure = error
            return true
        }
    }

    /// Handles one inbound frame, on the channel's loop. Throws for a frame that ends the connection.
    func received(_ buffer: ByteBuffer) throws {
        guard closeReason == nil else { return }
        let frame: RPCWireFrame
        do {
            frame = try RPCWireFrame(frameBody: buffer)
        } catch {
            throw RPCFrameError.malformedFrame
        }
        let callID = frame.callID
        switch frame.kind {
        case .request(let request):
            guard peerAdmitted else {
                // Refused first, on the loop, without a task: whatever the method name.
                replies.write(UnixSocketServer.encode(callID: callID, response: RPCServerCore.peerRefused))
                return
            }
            if isDraining {
                replies.write(UnixSocketServer.encode(callID: callID, response: .failure(RPCError(code: .unavailable, message: "service is shutting down"))))
                return
            }
            guard calls.count < maximumConcurrentCalls else {
                let busy = RPCWireResponse.failure(RPCError(code: .resourceExhausted, message: "too many calls in flight on this connection"))
                replies.write(UnixSocketServer.encode(callID: callID, response: busy))
                return
            }
            // The deadline cancels the call (the connection's deadline alarm): never a reply
            // after the caller has given up.
            let deadline = RPCServerCore.deadline(of: request)
            guard calls.register(callID, deadline: deadline.map(NIODeadline.init)) else {
                throw RPCFrameError.protocolViolation("call id \(callID) already in flight")
            }
            // One task per call, so a slow call never holds up the others; it writes its own
            // reply and leaves the registry. A call cancelled by the client (Cancel frame or
            // deadline) gets no reply.
            let call: @Sendable () async -> Void = { [core, peer, replies, calls, maximumFrameLength] in
                let response = await core.handle(request, peer: peer, deadline: deadline, refusalAudited: true)
                // After its deadline a call gets no reply, whichever of the alarm and the
                // handler got there first: one behaviour, whatever the timing.
                if !Task.isCancelled, deadline.map({ ContinuousClock.now < $0 }) ?? true {
                    replies.write(UnixSocketServer.encode(callID: callID, response: response, maximumFrameLength: maximumFrameLength))
                }
                calls.finish(callID)
            }
            // The task starts here, on the channel's loop, and runs up to its first suspension
            // before this returns: a handler that does not suspend is decoded, run and answered
            // within this read, with no hop to another thread or a later tick. One that suspends
            // resumes on the global executor like any task.
            if #available(macOS 26, *) {
                calls.attach(callID, Task.immediate(operation: call))
            } else {
                calls.attach(callID, Task(operation: call))
            }
        case .cancel:
            calls.cancel(callID)
        case .response, .none:
            throw RPCFrameError.protocolViolation("unexpected frame from client")
        }
    }
}

/// Hands each decoded frame to its connection. A frame the connection refuses closes it, and a
/// closed connection's calls are cancelled: nobody is left to read their replies.
final class CallReader: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer

    let connection: RPCServerConnection

    init(connection: RPCServerConnection) { self.connection = connection }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        do {
            try connection.received(unwrapInboundIn(data))
        } catch {
            if connection.fail(error) { context.close(promise: nil) }
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        connection.calls.cancelAll()
        context.fireChannelInactive()
    }

    /// No frame for the idle timeout: closed unless a call is still running (its reply is
    /// awaited; the next idle period decides again).
    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let idle = event as? IdleStateHandler.IdleStateEvent, idle == .read {
            if connection.calls.count == 0, connection.fail(RPCConnectionClosed.idle) {
                // The last call may have queued its reply just before it left the registry.
                connection.replies.drainOnLoop()
                context.close(promise: nil)
            }
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // From the frame decoder: an oversized or truncated frame.
        if connection.fail(error) { context.close(promise: nil) }
    }
}

/// Why the server closed a connection that broke no rule.
enum RPCConnectionClosed: Error, CustomStringConvertible {
    case idle
    var description: String { "idle past the idle timeout" }
}

/// Calls running on one connection: a Cancel frame or deadline reaches the right one, and the
/// connection waits for all of them before it closes.
///
/// A call is registered before its task starts and given its task once started: a task that
/// starts immediately may finish (and deregister) before `Task.immediate` returns, and the lock is
/// not held while it runs. A cancellation that comes before the task is attached is remembered
/// and delivered on attach.
final class CallsInFlight: Sendable {
    private struct Call {
        /// Nil until the call's task is attached.
        var task: Task<Void, Never>?
        /// Cancelled before its task was attached.
        var cancelled = false
        /// Nil once the call was cancelled at its deadline (or had none).
        var deadline: NIODeadline?

        /// The task to cancel now, or nil (none yet: cancelled on attach).
        mutating func cancel() -> Task<Void, Never>? {
            guard let task else {
                cancelled = true
                return nil
            }
            return task
        }
    }

    private struct State {
        var calls: [UInt64: Call] = [:]
        var emptyWaiters: [CheckedContinuation<Void, Never>] = []
        /// Rings at the earliest deadline of the calls.
        var deadlineAlarm: DeadlineAlarm
    }

    private let state: Mutex<State>

    init(eventLoop: any EventLoop) {
        self.state = Mutex(State(deadlineAlarm: DeadlineAlarm(eventLoop: eventLoop)))
    }

    var count: Int { state.withLock { $0.calls.count } }

    /// Registers a call about to start; false if the id is already in flight.
    func register(_ id: UInt64, deadline: NIODeadline?) -> Bool {
        state.withLock { state in
            guard state.calls[id] == nil else { return false }
            state.calls[id] = Call(deadline: deadline)
            if let deadline { state.deadlineAlarm.ensureRings(by: deadline) { self.cancelDueCalls() } }
            return true
        }
    }

    /// Gives a registered call its task (unless it already finished), cancelling it at once if
    /// it was cancelled meanwhile.
    func attach(_ id: UInt64, _ task: Task<Void, Never>) {
        let cancelNow = state.withLock { state -> Bool in
            guard state.calls[id] != nil else { return false }
            state.calls[id]!.task = task
            return state.calls[id]!.cancelled
        }
        if cancelNow { task.cancel() }
    }

    /// The deadline alarm rang: calls past their deadline are cancelled.
    private func cancelDueCalls() {
        let due = state.withLock { state -> [Task<Void, Never>] in
            let (due, next) = DeadlineAlarm.sweep(state.calls.lazy.map { ($0.key, $0.value.deadline) }, now: .now())
            state.deadlineAlarm.rang(next: next) { self.cancelDueCalls() }
            return due.compactMap { id in
                state.calls[id]?.deadline = nil
                return state.calls[id]?.cancel()
            }
        }
        for task in due { task.cancel() }
    }

    /// Stops the deadline alarm once the connection is done.
    func close() {
        state.withLock { $0.deadlineAlarm.disarm() }
    }

    /// Called by the call's task as its last step.
    func finish(_ id: UInt64) {
        let waiters = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            state.calls.removeValue(forKey: id)
            guard state.calls.isEmpty else { return [] }
            defer { state.emptyWaiters = [] }
            return state.emptyWaiters
        }
        for waiter in waiters { waiter.resume() }
    }

    /// Cancels a call; it stays registered until its task has ended.
    func cancel(_ id: UInt64) {
        state.withLock { $0.calls[id]?.cancel() }?.cancel()
    }

    func cancelAll() {
        let tasks = state.withLock { state in
            state.calls.keys.compactMap { state.calls[$0]!.cancel() }
        }
        for task in tasks { task.cancel() }
    }

    func waitUntilEmpty() async {
        await withCheckedContinuation { continuation in
            let isEmpty = state.withLock { state -> Bool in
                guard !state.calls.isEmpty else { return true }
                state.emptyWaiters.append(continuation)
                return false
            }
            if isEmpty { continuation.resume() }
        }
    }
}
