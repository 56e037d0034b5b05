import Foundation
import NIOCore
import RPC
import TestSupport
import ServiceLifecycle
import Testing

@Suite("Unix-socket transport", .serialized, .timeLimit(.minutes(5)))
struct UnixSocketTransportTests {
    @Test func roundTripCarriesPayloadPeerAndRequestID() async throws {
        try await withServerAndClient { _, client, _ in
            let rpc = RPCClient(transport: client)
            let payload = Data((0..<200).map { UInt8($0 % 251) })
            let reply = try await rpc.call(Echo.echo, Echo.request("hello", payload: payload), options: CallOptions(requestID: "req-123", timeout: .seconds(5)))
            #expect(reply.text == "hello")
            #expect(reply.payload == payload)
            #expect(reply.peerUid == getuid(), "server must see our uid via SO_PEERCRED")
            #expect(reply.requestID == "req-123", "request id must cross the hop")
        }
    }

    @Test func thousandConcurrentCallsOnOneConnectionGetTheirOwnReplies() async throws {
        try await withServerAndClient { _, client, _ in
            let rpc = RPCClient(transport: client)
            let mismatches = try await withThrowingTaskGroup(of: Bool.self) { group in
                for i in 0..<1000 {
                    group.addTask {
                        // Varying delays so replies come back out of order.
                        let reply = try await rpc.call(Echo.echo, Echo.request("call-\(i)", delayMillis: UInt64(i % 7)))
                        return reply.text == "call-\(i)"
                    }
                }
                var bad = 0
                for try await ok in group where !ok { bad += 1 }
                return bad
            }
            #expect(mismatches == 0)
        }
    }

    @Test func callPastItsDeadlineFailsWithDeadlineExceeded() async throws {
        let cancelled = Flag()
        try await withServerAndClient(router: Echo.router(onCancel: { cancelled.set() })) { _, client, _ in
            let rpc = RPCClient(transport: client)
            let start = ContinuousClock.now
            let error = await #expect(throws: RPCError.self) {
                _ = try await rpc.call(Echo.echo, Echo.request("slow", delayMillis: 20_000), options: CallOptions(timeout: .milliseconds(150)))
            }
            #expect(error?.code == .deadlineExceeded)
            // Bound far from both ends (150 ms deadline, 20 s handler) so a loaded machine cannot flake it.
            #expect(ContinuousClock.now - start < .seconds(8))
            // The server gave up on the handler too (it received the deadline with the call).
            try await waitUntil { cancelled.isSet }
            // The connection is still good.
            _ = try await rpc.call(Echo.echo, Echo.request("after"))
        }
    }

    @Test func aShortDeadlineAfterALongOneStillEndsOnTime() async throws {
        // Both ends keep one timer per connection for the earliest deadline: a call with a shorter
        // timeout than the ones already in flight must move it.
        let cancelled = Flag()
        try await withServerAndClient(router: Echo.router(onCancel: { cancelled.set() })) { _, client, _ in
            let rpc = RPCClient(transport: client)
            let long = Task { try await rpc.call(Echo.echo, Echo.request("long", delayMillis: 3000), options: CallOptions(timeout: .seconds(6))) }
            try await Task.sleep(for: .milliseconds(50))
            let start = ContinuousClock.now
            let error = await #expect(throws: RPCError.self) {
                _ = try await rpc.call(Echo.echo, Echo.request("short", delayMillis: 8000), options: CallOptions(timeout: .milliseconds(200)))
            }
            #expect(error?.code == .deadlineExceeded)
            #expect(ContinuousClock.now - start < .seconds(4), "the short call waited for the long call's deadline (6 s)")
            try await waitUntil { cancelled.isSet }
            #expect(try await long.value.text == "long", "the long call is unaffected")
        }
    }

    @Test func serverCancelsAShortDeadlineAfterALongOneWithoutACancelFrame() async throws {
        // A raw client that never sends Cancel: only the server's own deadline alarm can stop the
        // short call, and it must not wait for the long call's deadline.
        let cancelled = Flag()
        try await withServerAndClient(router: Echo.router(onCancel: { cancelled.set() })) { _, _, path in
            let raw = try RawConnection(path: path)
            defer { raw.close() }
            func request(_ callID: UInt64, _ text: String, delayMillis: UInt64, timeoutMicros: UInt64) throws -> [UInt8] {
                var frame = RPCWireFrame()
                frame.callID = callID
                frame.request.method = Echo.echo.fullName
                frame.request.timeoutMicros = timeoutMicros
                frame.request.payload = try Echo.request(text, delayMillis: delayMillis).serializedData()
                return frameBytes(try frame.serializedBytes())
            }
            raw.send(try request(1, "long", delayMillis: 3000, timeoutMicros: 6_000_000))
            try await Task.sleep(for: .milliseconds(50))
            let start = ContinuousClock.now
            raw.send(try request(2, "short", delayMillis: 8000, timeoutMicros: 200_000))
            try await waitUntil(timeout: .seconds(5)) { cancelled.isSet }
            #expect(ContinuousClock.now - start < .seconds(4), "the short call ran until the long call's deadline (6 s)")
        }
    }

    @Test func cancellingTheCallerCancelsTheServerHandler() async throws {
        let cancelled = Flag()
        try await withServerAndClient(router: Echo.router(onCancel: { cancelled.set() })) { _, client, _ in
            let rpc = RPCClient(transport: client)
            let call = Task { try await rpc.call(Echo.echo, Echo.request("slow", delayMillis: 5000)) }
            try await Task.sleep(for: .milliseconds(100))
            call.cancel()
            let result = await call.result
            #expect((try? result.get()) == nil)
            if case .failure(let error as RPCError) = result { #expect(error.code == .cancelled) }
            try await waitUntil { cancelled.isSet }
        }
    }

    @Test func clientReportsUnavailableThenRecoversAfterServerRestart() async throws {
        let directory = try makeSocketDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/restart.sock"
        func makeServer() -> UnixSocketServer {
            UnixSocketServer(configuration: .init(path: path), core: RPCServerCore(router: Echo.router(), accessPolicy: Echo.openPolicy(), logger: testLogger), logger: testLogger)
        }
        var clientConfiguration = UnixSocketClient.Configuration(path: path)
        clientConfiguration.maximumBackoff = .milliseconds(100)
        let client = UnixSocketClient(configuration: clientConfiguration, logger: testLogger)
        let rpc = RPCClient(transport: client)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await client.run() }
            let first = makeServer()
            let firstRun = Task { try await first.run() }
            await first.waitUntilListening()
            await client.waitUntilConnected()
            #expect(try await rpc.call(Echo.echo, Echo.request("one")).text == "one")

            firstRun.cancel()
            _ = await firstRun.result
            try await waitUntil { !client.isConnected }
            let error = await #expect(throws: RPCError.self) { try await rpc.call(Echo.echo, Echo.request("down")) }
            #expect(error?.code == .unavailable)

            let second = makeServer()
            group.addTask { try await second.run() }
            await second.waitUntilListening()
            await client.waitUntilConnected()
            #expect(try await rpc.call(Echo.echo, Echo.request("two")).text == "two")
            group.cancelAll()
        }
    }

    /// A connection the server accepted is closed when the server stops, even one its accept loop
    /// had not yet taken up: such a connection already serves calls, so leaving it open would keep
    /// a stopped server answering (seen in CI: the client stayed connected after `run()` ended).
    @Test func stoppingTheServerClosesEveryAcceptedConnection() async throws {
        let directory = try makeSocketDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/stop.sock"
        let server = UnixSocketServer(configuration: .init(path: path), core: RPCServerCore(router: Echo.router(), accessPolicy: Echo.openPolicy(), logger: testLogger), logger: testLogger)
        let run = Task { try await server.run() }
        await server.waitUntilListening()
        // Many connections at once, so some are still queued for the accept loop when it stops.
        let connections = try (0..<200).map { _ in try RawConnection(path: path) }
        defer { for connection in connections { connection.close() } }
        run.cancel()
        _ = await run.result
        let stillOpen = connections.indices.first { !connections[$0].serverClosed() }
        #expect(stillOpen == nil, "connection \(stillOpen ?? -1) of 200 outlived the server")
    }

    @Test(arguments: BadInput.allCases)
    func badInputClosesOnlyThatConnection(_ input: BadInput) async throws {
        try await withServerAndClient(configure: { $0.maximumFrameLength = 64 * 1024 }) { _, client, path in
            let rpc = RPCClient(transport: client)
            let raw = try RawConnection(path: path)
            defer { raw.close() }
            switch input {
            case .oversizedFrame:
                // Declares 2 MiB; the server must refuse on the header alone, before buffering.
                raw.send(withUnsafeBytes(of: UInt32(2 << 20).bigEndian, Array.init) + [1, 2, 3])
            case .truncatedFrame:
                raw.send(withUnsafeBytes(of: UInt32(100).bigEndian, Array.init) + [UInt8](repeating: 7, count: 10))
                raw.shutdownWrite()
            case .randomBytes:
                var generator = SystemRandomNumberGenerator()
                raw.send((0..<4096).map { _ in UInt8.random(in: 0...255, using: &generator) })
            case .garbageProtobuf:
                raw.send(frameBytes([0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F, 0x12, 0x99]))
            case .responseFrameFromClient:
                raw.send(frameBytes([0x08, 0x01, 0x1A, 0x00]))
            }
            let closed = try await offThePool { raw.serverClosed() }
            #expect(closed, "server must close a connection that sent \(input)")
            // Everyone else is still served.
            #expect(try await rpc.call(Echo.echo, Echo.request("still here")).text == "still here")
            let fresh = try RawConnection(path: path)
            fresh.close()
        }
    }

    enum BadInput: String, CaseIterable, CustomTestStringConvertible {
        case oversizedFrame, truncatedFrame, randomBytes, garbageProtobuf, responseFrameFromClient
        var testDescription: String { rawValue }
    }

    @Test func socketFileGetsTheConfiguredMode() async throws {
        try await withServerAndClient(configure: { $0.socketMode = 0o600 }) { _, _, path in
            var info = stat()
            #expect(stat(path, &info) == 0)
            #expect(info.st_mode & 0o777 == 0o600)
            #expect(info.st_mode & S_IFMT == S_IFSOCK)
        }
    }

    @Test func refusesToReplaceARegularFileAtTheSocketPath() async throws {
        let directory = try makeSocketDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/not-a-socket"
        try Data("keep me".utf8).write(to: URL(fileURLWithPath: path))
        let server = UnixSocketServer(configuration: .init(path: path), core: RPCServerCore(router: Echo.router(), accessPolicy: Echo.openPolicy(), logger: testLogger), logger: testLogger)
        await #expect(throws: SocketSetupError.self) { try await server.run() }
        #expect(FileManager.default.contents(atPath: path) == Data("keep me".utf8))
    }

    @Test func gracefulShutdownDrainsCallsInFlight() async throws {
        let directory = try makeSocketDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/drain.sock"
        let slowCallStarted = Flag()
        let router = Echo.router(onStart: { slowCallStarted.set() })
        let server = UnixSocketServer(configuration: .init(path: path), core: RPCServerCore(router: router, accessPolicy: Echo.openPolicy(), logger: testLogger), logger: testLogger)
        let client = UnixSocketClient(configuration: .init(path: path), logger: testLogger)
        let serverGroup = ServiceGroup(configuration: .init(services: [server], logger: testLogger))
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await serverGroup.run() }
            await server.waitUntilListening()
            group.addTask { try await client.run() }
            await client.waitUntilConnected()
            let rpc = RPCClient(transport: client)
            // Only calls in flight are drained: the shutdown starts once the slow call is in its
            // handler.
            let slow = Task { try await rpc.call(Echo.echo, Echo.request("drained", delayMillis: 3000)) }
            try await waitUntil { slowCallStarted.isSet }
            await serverGroup.triggerGracefulShutdown()
            // Idle connections close at once; the one still draining refuses a new call outright
            // instead of leaving it unanswered until the connection closes. A call answered before
            // the shutdown took effect is fine: try again until one is refused.
            var refusal: RPCError?
            let deadline = ContinuousClock.now + .seconds(10)
            while refusal == nil && ContinuousClock.now < deadline {
                let start = ContinuousClock.now
                do {
                    _ = try await rpc.call(Echo.echo, Echo.request("too late"), options: CallOptions(timeout: .seconds(10)))
                    try await Task.sleep(for: .milliseconds(20))
                } catch let error as RPCError {
                    refusal = error
                    #expect(ContinuousClock.now - start < .seconds(3), "a call to a draining server waited (its timeout is 10 s)")
                }
            }
            #expect(refusal?.code == .unavailable)
            #expect(try await slow.value.text == "drained")
            group.cancelAll()
        }
        #expect(!FileManager.default.fileExists(atPath: path), "socket file removed on shutdown")
    }

    @Test func handlerErrorsNeverLeakInternals_R14() async throws {
        try await withServerAndClient { _, client, _ in
            let rpc = RPCClient(transport: client)
            let error = await #expect(throws: RPCError.self) { try await rpc.call(Echo.fail, Echo.request("x")) }
            #expect(error?.code == .internalError)
            #expect(error?.message == "internal error")
            let unknown = await #expect(throws: RPCError.self) { try await rpc.call(Echo.unregistered, Echo.request("x")) }
            #expect(unknown?.code == .unimplemented)
        }
    }

    /// No frame over the limit, ever: a reply that would exceed the peer's 1 MiB frame limit is
    /// answered RESOURCE_EXHAUSTED instead, and the connection (with every other call on it)
    /// survives. Sizes at random around the limit: each call is either answered in full or
    /// refused so, never by a dropped connection (UNAVAILABLE).
    @Test func repliesOverTheFrameLimitAreRefusedNotSent() async throws {
        let (amplify, router, policy) = (Echo.amplify, Echo.amplifyingRouter(), Echo.amplifyingPolicy())
        try await withServerAndClient(router: router, policy: policy) { (_, client, _) async throws -> Void in
            let rpc = RPCClient(transport: client)
            func size(_ bytes: Int) -> RPCWireEchoRequest {
                var request = RPCWireEchoRequest()
                request.delayMillis = UInt64(bytes)
                return request
            }
            let tooBig = await #expect(throws: RPCError.self) { try await rpc.call(amplify, size(2 << 20)) }
            #expect(tooBig?.code == .resourceExhausted)
            #expect(try await rpc.call(Echo.echo, Echo.request("after")).text == "after", "the connection survived")

            var rng = SplitMix64(seed: 0xF4A3E)
            var answered = 0, refused = 0
            for _ in 0..<24 {
                let bytes = (1 << 20) + Int.random(in: -96...32, using: &rng)
                do {
                    #expect(try await rpc.call(amplify, size(bytes)).payload.count == bytes)
                    answered += 1
                } catch let error as RPCError {
                    #expect(error.code == .resourceExhausted, "\(bytes) bytes: \(error)")
                    refused += 1
                }
            }
            #expect(refused > 0, "sizes over the limit were tried")
            #expect(try await rpc.call(Echo.echo, Echo.request("still")).text == "still")
        }
    }

    @Test func requestLargerThanTheFrameLimitIsRefusedByTheClient() async throws {
        try await withServerAndClient { _, client, _ in
            let rpc = RPCClient(transport: client)
            let error = await #expect(throws: RPCError.self) {
                try await rpc.call(Echo.echo, Echo.request("big", payload: Data(count: 2 << 20)))
            }
            #expect(error?.code == .resourceExhausted)
            let after = try await rpc.call(Echo.echo, Echo.request("ok"))
            #expect(after.text == "ok")
        }
    }
}

final class Flag: Sendable {
    private let value = Mutex(false)
    func set() { value.withLock { $0 = true } }
    var isSet: Bool { value.withLock { $0 } }
}

import Synchronization

func waitUntil(timeout: Duration = .seconds(5), _ condition: @Sendable () -> Bool) async throws {
    let deadline = ContinuousClock.now + timeout
    while !condition() {
        guard ContinuousClock.now < deadline else {
            Issue.record("condition not met within \(timeout)")
            return
        }
        try await Task.sleep(for: .milliseconds(10))
    }
}
