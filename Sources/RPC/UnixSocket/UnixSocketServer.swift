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
/// On graceful shutdown it stops accepting and reading, lets the calls in flight finish, then closes.
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
        let server = try await ServerBootstrap(group: eventLoopGroup)
            .serverChannelOption(.backlog, value: 256)
            .bind(unixDomainSocketPath: temporaryPath) { channel in
                channel.peerCredentials().flatMapThrowing { peer in
                    try channel.pipeline.syncOperations.addRPCFraming(maximumFrameLength: maximumFrameLength)
                    // Close-on-deinit on purpose: a connection accepted while the server is being
                    // cancelled may never reach the accept loop, and must then be closed, not
                    // trap (`wrappingChannelSynchronously` preconditions on an unclosed drop).
                    let asyncChannel = try NIOAsyncChannel<ByteBuffer, ByteBuffer>(synchronouslyWrapping: channel)
                    return (asyncChannel, peer)
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

        // Graceful shutdown closes the listener, which ends the accept loop. (Wrapping the loop in
        // `cancelOnGracefulShutdown()` could drop an accepted connection unclosed, which NIO
        // traps on.) The group then waits for each connection to drain its calls.
        try await withGracefulShutdownHandler {
            try await withThrowingDiscardingTaskGroup { group in
                try await server.executeThenClose { connections in
                    for try await (connection, peer) in connections {
                        group.addTask {
                            await self.serve(connection, peer: peer)
                        }
                    }
                }
            }
        } onGracefulShutdown: {
            server.channel.close(promise: nil)
        }
        logger.info("rpc server stopped", metadata: ["socket": "\(path)"])
    }

    private func serve(_ connection: NIOAsyncChannel<ByteBuffer, ByteBuffer>, peer: PeerCredentials) async {
        // Every error of one connection ends here: it must never reach the accept loop's group.
        do {
            try await connection.executeThenClose { inbound, outbound in
                let calls = CallsInFlight()
                try await withThrowingDiscardingTaskGroup { group in
                    for try await buffer in inbound.cancelOnGracefulShutdown() {
                        let frame: RPCWireFrame
                        do {
                            frame = try RPCWireFrame(serializedBytes: Array(buffer.readableBytesView))
                        } catch {
                            throw RPCFrameError.malformedFrame
                        }
                        let callID = frame.callID
                        switch frame.kind {
                        case .request(let request):
                            guard calls.count < configuration.maximumConcurrentCallsPerConnection else {
                                let busy = RPCWireResponse.failure(RPCError(code: .resourceExhausted, message: "too many calls in flight on this connection"))
                                try await outbound.write(Self.encode(callID: callID, response: busy))
                                continue
                            }
                            // The call's own task writes its reply (one hand-off fewer than
                            // returning it to the group child); a call cancelled by the client
                            // (Cancel frame or deadline) gets no reply.
                            let task = Task {
                                let response = await core.handle(request, peer: peer)
                                if !Task.isCancelled {
                                    try? await outbound.write(Self.encode(callID: callID, response: response))
                                }
                            }
                            guard calls.insert(callID, task) else {
                                task.cancel()
                                throw RPCFrameError.protocolViolation("call id \(callID) already in flight")
                            }
                            // The deadline cancels the call's task from a NIO timer: cheap, and
                            // never a reply after the caller has given up.
                            let deadlineTimer = RPCServerCore.deadline(of: request).map { deadline in
                                connection.channel.eventLoop.scheduleTask(in: .nanoseconds(max(0, deadline.remainingNanoseconds))) { task.cancel() }
                            }
                            // The group child keeps the call inside this connection's lifetime and
                            // removes it from the registry once it is done (always after insert).
                            group.addTask {
                                await withTaskCancellationHandler {
                                    await task.value
                                } onCancel: {
                                    task.cancel()
                                }
                                deadlineTimer?.cancel()
                                calls.remove(callID)
                            }
                        case .cancel:
                            calls.cancel(callID)
                        case .response, .none:
                            throw RPCFrameError.protocolViolation("unexpected frame from client")
                        }
                    }
                }
            }
        } catch {
            logger.notice("rpc connection closed", metadata: ["reason": "\(error)", "peer_uid": "\(peer.uid)", "peer_pid": "\(peer.pid)"])
        }
    }

    static func encode(callID: UInt64, response: RPCWireResponse) -> ByteBuffer {
        var frame = RPCWireFrame()
        frame.callID = callID
        frame.response = response
        // Serializing a message we built cannot fail (no required fields, no Any).
        let bytes: [UInt8] = (try? frame.serializedBytes()) ?? []
        return ByteBuffer(bytes: bytes)
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

/// Calls running on one connection, so a Cancel frame can reach the right one.
private final class CallsInFlight: Sendable {
    private let tasks = Mutex<[UInt64: Task<Void, Never>]>([:])

    var count: Int { tasks.withLock { $0.count } }

    func insert(_ id: UInt64, _ task: Task<Void, Never>) -> Bool {
        tasks.withLock { tasks in
            guard tasks[id] == nil else { return false }
            tasks[id] = task
            return true
        }
    }

    func remove(_ id: UInt64) {
        _ = tasks.withLock { $0.removeValue(forKey: id) }
    }

    func cancel(_ id: UInt64) {
        tasks.withLock { $0.removeValue(forKey: id) }?.cancel()
    }
}
