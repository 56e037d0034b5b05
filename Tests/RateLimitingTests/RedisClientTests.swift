import Foundation
import NIOCore
import NIOPosix
import Testing

@testable import RateLimiting

@Suite("Redis client", .serialized, .timeLimit(.minutes(5)))
struct RedisClientTests {
    @Test func pipelinedRepliesMatchTheirCommands() async throws {
        try await withRedisServer { server in
            try await withRunningClient(server.unixConfiguration) { client in
                // 500 commands in flight on ONE connection; each reply must be its own.
                let mismatches = try await withThrowingTaskGroup(of: Bool.self) { group in
                    for i in 0..<500 {
                        group.addTask {
                            let reply = try await client.eval("return ARGV[1]", keys: [], arguments: ["n\(i)"])
                            return reply.string == "n\(i)"
                        }
                    }
                    var bad = 0
                    for try await ok in group where !ok { bad += 1 }
                    return bad
                }
                #expect(mismatches == 0)
                let clients = try await client.send(RESPCommand("CLIENT", "LIST"))
                // Only this client's connection exists: everything went over one connection.
                #expect(clients.string?.split(separator: "\n").count == 1)
            }
        }
    }

    @Test func hostileServerReplyIsAProtocolErrorAndTheClientReconnects() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("rl-hostile-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("hostile.sock").path
        let connections = ConnectionCounter()
        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { channel in
                connections.increment()
                return channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(HostileRedisHandler())
                }
            }
            .bind(unixDomainSocketPath: path).get()
        defer { server.close(promise: nil) }

        var configuration = RedisConfiguration(address: .unixSocket(path: path))
        configuration.minimumBackoff = .milliseconds(10)
        configuration.maximumBackoff = .milliseconds(50)
        configuration.commandTimeout = .seconds(3)
        try await withRunningClient(configuration) { client in
            let limiter = RedisRateLimiter(client: client, logger: testLogger)
            do {
                _ = try await limiter.check(.read, key: "k")
                Issue.record("expected an error")
            } catch let error as RateLimiterUnavailable {
                #expect(error.reason == .protocolError)
            }
            // The connection was dropped and re-established.
            try await waitUntil { connections.value >= 2 && client.isConnected }
        }
    }
}

final class ConnectionCounter: @unchecked Sendable {
    private let lock = NSLock()
    private var count = 0
    func increment() { lock.withLock { count += 1 } }
    var value: Int { lock.withLock { count } }
}

/// Answers the handshake PING properly, then announces a 2 GB bulk string.
final class HostileRedisHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    private var reads = 0

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        reads += 1
        let reply = reads == 1 ? "+PONG\r\n" : "$2000000000\r\n"
        context.writeAndFlush(Self.wrapOutboundOut(ByteBuffer(string: reply)), promise: nil)
    }
}
