import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import Synchronization

/// Where and how ``RedisClient`` connects.
public struct RedisConfiguration: Sendable {
    /// The server address.
    public enum Address: Sendable, Hashable {
        /// TCP; the client sets `TCP_NODELAY`.
        case tcp(host: String, port: Int)
        /// A Unix domain socket path.
        case unixSocket(path: String)
    }

    /// The server address.
    public var address: Address
    /// `AUTH` username (Redis 6 ACL); `nil` for the default user.
    public var username: String?
    /// `AUTH` password; `nil` to skip `AUTH`.
    public var password: String?
    /// How long one command may wait for its reply. On timeout the command fails with
    /// ``RateLimiterUnavailable`` (`.timeout`) and the connection is closed and re-established,
    /// since a pipelined stream with an unanswered command cannot be trusted.
    public var commandTimeout: Duration = .milliseconds(250)
    /// How long establishing a connection may take.
    public var connectTimeout: Duration = .seconds(1)
    /// First delay before reconnecting; doubles on every failed attempt (with jitter) up to `maximumBackoff`.
    public var minimumBackoff: Duration = .milliseconds(50)
    /// Longest delay between reconnection attempts.
    public var maximumBackoff: Duration = .seconds(2)
    /// Most commands in flight at once; further commands fail at once with `.overloaded`.
    public var maximumPendingCommands: Int = 4096
    /// Parser limits for replies.
    public var limits: RESPLimits = RESPLimits()

    /// Creates a configuration.
    public init(address: Address, username: String? = nil, password: String? = nil) {
        self.address = address
        self.username = username
        self.password = password
    }
}

/// An error reply from Redis (`-ERR ...`).
public struct RedisServerError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The message, e.g. `"NOSCRIPT No matching script. Please use EVAL."`.
    public var message: String

    /// Creates the error.
    public init(message: String) { self.message = message }

    /// Whether this is the `NOSCRIPT` error of `EVALSHA` for a script not in the server's cache.
    public var isNoScript: Bool { message.hasPrefix("NOSCRIPT") }

    public var description: String {
        // The first word only: the rest may echo arguments.
        "RedisServerError(\(message.split(separator: " ", maxSplits: 1).first.map(String.init) ?? ""))"
    }
}

/// A small pipelined RESP2 client for Redis on SwiftNIO, limited to what the rate limiter needs:
/// `AUTH`, `PING`, `SCRIPT LOAD`, `EVALSHA` and `EVAL`.
///
/// One connection; any number of commands in flight on it, replies matched in order. It is a
/// `Service`: ``run()`` establishes the connection, re-establishes it with exponential backoff
/// whenever it breaks, and returns on task cancellation or graceful shutdown (closing the
/// connection). While not connected, every command fails at once with ``RateLimiterUnavailable``.
///
/// Logging never includes command arguments (keys may contain user ids or IP addresses).
public final class RedisClient: Service, Sendable {
    private enum State {
        case idle
        case connecting
        case connected(any Channel)
        case shutDown
    }

    /// The configuration.
    public let configuration: RedisConfiguration
    private let group: any EventLoopGroup
    private let logger: Logger
    private let state = Mutex<State>(.idle)
    private let inFlight = Atomic<Int>(0)

    /// Creates a client; nothing happens until ``run()``.
    public init(
        configuration: RedisConfiguration,
        eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        logger: Logger
    ) {
        self.configuration = configuration
        self.group = eventLoopGroup
        var logger = logger
        logger[metadataKey: "redis.address"] = "\(configuration.address.logDescription)"
        self.logger = logger
    }

    // MARK: Service

    /// Keeps the connection up until cancelled or gracefully shut down, then closes it.
    public func run() async throws {
        await withTaskCancellationOrGracefulShutdownHandler {
            await self.connectionLoop()
        } onCancelOrGracefulShutdown: {
            self.shutdown()
        }
    }

    /// Closes the connection and stops reconnecting; pending and later commands fail.
    public func shutdown() {
        let channel: (any Channel)? = state.withLock { state in
            defer { state = .shutDown }
            if case .connected(let channel) = state { return channel }
            return nil
        }
        channel?.close(promise: nil)
    }

    /// Whether a connection is established right now.
    public var isConnected: Bool {
        state.withLock { if case .connected = $0 { return true } else { return false } }
    }

    private func connectionLoop() async {
        var backoff = configuration.minimumBackoff
        while true {
            let proceed = state.withLock { state -> Bool in
                if case .shutDown = state { return false }
                state = .connecting
                return true
            }
            guard proceed else { return }
            do {
                let channel = try await connect()
                do {
                    try await handshake(on: channel)
                } catch {
                    channel.close(promise: nil)
                    throw error
                }
                let published = state.withLock { state -> Bool in
                    if case .shutDown = state { return false }
                    state = .connected(channel)
                    return true
                }
                guard published else {
                    try? await channel.close()
                    return
                }
                logger.info("redis connected")
                backoff = configuration.minimumBackoff
                try? await channel.closeFuture.get()
                logger.warning("redis connection closed")
            } catch {
                logger.warning("redis connect failed", metadata: ["error": "\(Self.describe(error))"])
            }
            let stop = state.withLock { state -> Bool in
                if case .shutDown = state { return true }
                state = .idle
                return false
            }
            if stop { return }
            // Exponential backoff with jitter in [backoff/2, backoff].
            let ms = max(1, backoff.ceilMicroseconds / 1000)
            let delay = Duration.milliseconds(Int64.random(in: (ms / 2)...ms))
            do {
                try await Task.sleep(for: delay)
            } catch {
                return  // cancelled
            }
            backoff = min(backoff * 2, configuration.maximumBackoff)
        }
    }

    private func connect() async throws -> any Channel {
        let limits = configuration.limits
        let logger = self.logger
        var bootstrap = ClientBootstrap(group: group)
            .connectTimeout(TimeAmount(configuration.connectTimeout))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandlers([
                        ByteToMessageHandler(RESPDecoder(limits: limits)),
                        MessageToByteHandler(RESPCommandEncoder()),
                        RedisCommandHandler(logger: logger),
                    ])
                }
            }
        switch configuration.address {
        case .tcp(let host, let port):
            bootstrap = bootstrap.channelOption(.tcpOption(.tcp_nodelay), value: 1)
            return try await bootstrap.connect(host: host, port: port).get()
        case .unixSocket(let path):
            return try await bootstrap.connect(unixDomainSocketPath: path).get()
        }
    }

    private func handshake(on channel: any Channel) async throws {
        if let password = configuration.password {
            var arguments = ["AUTH"]
            if let username = configuration.username { arguments.append(username) }
            arguments.append(password)
            let reply = try await execute(RESPCommand(strings: arguments), on: channel)
            if case .error(let message) = reply { throw RedisServerError(message: message) }
        }
        let reply = try await execute(RESPCommand("PING"), on: channel)
        guard case .simpleString("PONG") = reply else {
            if case .error(let message) = reply { throw RedisServerError(message: message) }
            throw RateLimiterUnavailable(.protocolError, detail: "unexpected PING reply")
        }
    }

    // MARK: Commands

    /// Sends one command and returns its reply; a Redis error reply is returned as `.error`, not thrown.
    ///
    /// Internal: the public surface is limited to the commands the rate limiter uses; tests use this
    /// (through `@testable import`) for inspection commands such as `PTTL` and `SCRIPT FLUSH`.
    /// - Throws: ``RateLimiterUnavailable`` when not connected, overloaded, on timeout or connection loss.
    func send(_ command: RESPCommand) async throws -> RESPValue {
        let channel: any Channel = try state.withLock { state in
            switch state {
            case .connected(let channel): return channel
            case .shutDown: throw RateLimiterUnavailable(.notConnected, detail: "client shut down")
            case .idle, .connecting: throw RateLimiterUnavailable(.notConnected)
            }
        }
        let previous = inFlight.add(1, ordering: .relaxed).oldValue
        defer { inFlight.subtract(1, ordering: .relaxed) }
        guard previous < configuration.maximumPendingCommands else {
            throw RateLimiterUnavailable(.overloaded)
        }
        return try await execute(command, on: channel)
    }

    private func execute(_ command: RESPCommand, on channel: any Channel) async throws -> RESPValue {
        let promise = channel.eventLoop.makePromise(of: RESPValue.self)
        let timeout = channel.eventLoop.scheduleTask(in: TimeAmount(configuration.commandTimeout)) {
            promise.fail(RateLimiterUnavailable(.timeout))
            channel.close(promise: nil)
        }
        promise.futureResult.whenComplete { _ in timeout.cancel() }
        let writePromise = channel.eventLoop.makePromise(of: Void.self)
        writePromise.futureResult.whenFailure { _ in
            promise.fail(RateLimiterUnavailable(.connectionClosed))
        }
        channel.writeAndFlush(RedisRequest(command: command, promise: promise), promise: writePromise)
        return try await promise.futureResult.get()
    }

    /// `PING`; succeeds when the server answers `PONG`.
    public func ping() async throws {
        let reply = try await send(RESPCommand("PING"))
        guard case .simpleString("PONG") = reply else {
            throw try Self.unexpected(reply)
        }
    }

    /// `SCRIPT LOAD script`; returns the script's SHA1.
    public func scriptLoad(_ script: String) async throws -> String {
        let reply = try await send(RESPCommand("SCRIPT", "LOAD", script))
        guard case .bulkString(.some(let sha)) = reply else { throw try Self.unexpected(reply) }
        return String(buffer: sha)
    }

    /// `EVALSHA sha numkeys keys... args...`.
    /// - Throws: ``RedisServerError`` for an error reply (check ``RedisServerError/isNoScript``).
    public func evalSHA(_ sha: String, keys: [String], arguments: [String]) async throws -> RESPValue {
        try Self.throwingServerError(await send(RESPCommand(strings: ["EVALSHA", sha, String(keys.count)] + keys + arguments)))
    }

    /// `EVAL script numkeys keys... args...` (also caches the script on the server).
    /// - Throws: ``RedisServerError`` for an error reply.
    public func eval(_ script: String, keys: [String], arguments: [String]) async throws -> RESPValue {
        try Self.throwingServerError(await send(RESPCommand(strings: ["EVAL", script, String(keys.count)] + keys + arguments)))
    }

    private static func throwingServerError(_ reply: RESPValue) throws -> RESPValue {
        if case .error(let message) = reply { throw RedisServerError(message: message) }
        return reply
    }

    private static func unexpected(_ reply: RESPValue) throws -> any Error {
        if case .error(let message) = reply { return RedisServerError(message: message) }
        return RateLimiterUnavailable(.protocolError, detail: "unexpected reply")
    }

    static func describe(_ error: any Error) -> String {
        switch error {
        case let error as RateLimiterUnavailable: return error.description
        case let error as RedisServerError: return error.description
        case let error as RESPParseError: return error.description
        default: return String(describing: type(of: error)) + ": \(error)"
        }
    }
}

extension RedisConfiguration.Address {
    var logDescription: String {
        switch self {
        case .tcp(let host, let port): return "\(host):\(port)"
        case .unixSocket(let path): return "unix:\(path)"
        }
    }
}

/// A command and the promise for its reply, written into the channel.
struct RedisRequest: Sendable {
    var command: RESPCommand
    var promise: EventLoopPromise<RESPValue>
}

/// Matches replies to commands in order. Any decode error or unexpected reply closes the
/// connection; on close every pending command fails with ``RateLimiterUnavailable``.
final class RedisCommandHandler: ChannelDuplexHandler {
    typealias InboundIn = RESPValue
    typealias OutboundIn = RedisRequest
    typealias OutboundOut = RESPCommand

    private var pending = CircularBuffer<EventLoopPromise<RESPValue>>(initialCapacity: 16)
    private let logger: Logger

    init(logger: Logger) { self.logger = logger }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let request = Self.unwrapOutboundIn(data)
        pending.append(request.promise)
        context.write(Self.wrapOutboundOut(request.command), promise: promise)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let value = Self.unwrapInboundIn(data)
        guard let promise = pending.popFirst() else {
            logger.error("redis sent a reply nobody asked for; closing connection")
            context.close(promise: nil)
            return
        }
        promise.succeed(value)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        let reason: RateLimiterUnavailable.Reason = error is RESPParseError ? .protocolError : .connectionClosed
        logger.error("redis connection error; closing", metadata: ["error": "\(RedisClient.describe(error))"])
        failAll(RateLimiterUnavailable(reason, detail: RedisClient.describe(error)))
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        failAll(RateLimiterUnavailable(.connectionClosed))
        context.fireChannelInactive()
    }

    private func failAll(_ error: RateLimiterUnavailable) {
        while let promise = pending.popFirst() { promise.fail(error) }
    }
}
