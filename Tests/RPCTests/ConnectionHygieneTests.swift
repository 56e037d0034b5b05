import Foundation
import NIOCore
@testable import RPC
import TestSupport
import Testing

/// Connection hygiene of the Unix socket server (SPEC §2, docs/rpc.md "Connections"): a peer
/// cannot hold connections with half a frame, by idling, or by opening more than its share.
/// Raw sockets, as a hostile peer would use them.
@Suite("Unix socket server: connection hygiene", .timeLimit(.minutes(5)))
struct ConnectionHygieneTests {
    func withServer(router: RPCRouter = Echo.router(), policy: RPCAccessPolicy = Echo.openPolicy(), configure: (inout UnixSocketServer.Configuration) -> Void, _ body: (String) async throws -> Void) async throws {
        let directory = try makeSocketDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var configuration = UnixSocketServer.Configuration(path: directory + "/hygiene.sock")
        configure(&configuration)
        let server = UnixSocketServer(configuration: configuration, core: RPCServerCore(router: router, accessPolicy: policy, logger: testLogger), logger: testLogger)
        let run = Task { try await server.run() }
        defer { run.cancel() }
        await server.waitUntilListening()
        try await body(configuration.path)
        run.cancel()
        _ = await run.result
    }

    func echoFrame(_ callID: UInt64, _ text: String, delayMillis: UInt64 = 0) throws -> [UInt8] {
        var frame = RPCWireFrame()
        frame.callID = callID
        frame.request.method = Echo.echo.fullName
        frame.request.payload = try Echo.request(text, delayMillis: delayMillis).serializedData()
        return frameBytes(try frame.serializedBytes())
    }

    /// Reads exactly one reply frame, nil at end of stream (blocking reads, off the cooperative
    /// pool; the socket's 5 s receive timeout bounds each read).
    func readReply(_ raw: RawConnection) async throws -> RPCWireFrame? {
        let fd = raw.fd
        return try await offThePool {
            func readExactly(_ count: Int) -> [UInt8]? {
                var bytes = [UInt8](repeating: 0, count: count)
                var filled = 0
                while filled < count {
                    let n = bytes.withUnsafeMutableBytes { read(fd, $0.baseAddress! + filled, count - filled) }
                    guard n > 0 else { return nil }
                    filled += n
                }
                return bytes
            }
            guard let header = readExactly(4) else { return nil }
            let length = Int(header[0]) << 24 | Int(header[1]) << 16 | Int(header[2]) << 8 | Int(header[3])
            guard let body = readExactly(length) else { return nil }
            return try RPCWireFrame(serializedBytes: body)
        }
    }

    @Test func halfAFrameIsClosedAfterTheFrameReadTimeout() async throws {
        try await withServer(configure: { $0.frameReadTimeout = .milliseconds(300); $0.idleTimeout = nil }) { path in
            let stalled = try RawConnection(path: path)
            defer { stalled.close() }
            let healthy = try RawConnection(path: path)
            defer { healthy.close() }
            stalled.send([0, 0, 0, 40, 1, 2])
            #expect(try await offThePool { stalled.serverClosed() }, "a connection stalled mid-frame is closed (receive timeout is 5 s)")
            // A peer that completes its frames is served, before and after.
            healthy.send(try echoFrame(1, "whole"))
            let reply = try #require(try await readReply(healthy))
            #expect(reply.callID == 1)
            #expect(try RPCWireEchoResponse(serializedBytes: reply.response.payload).text == "whole")
        }
    }

    @Test func anIdleConnectionIsClosedButOneWithACallInFlightIsNot() async throws {
        try await withServer(configure: { $0.idleTimeout = .milliseconds(300) }) { path in
            let idle = try RawConnection(path: path)
            defer { idle.close() }
            idle.send(try echoFrame(1, "then nothing"))
            #expect(try await readReply(idle)?.callID == 1)
            #expect(try await offThePool { idle.serverClosed() }, "closed once idle past the timeout")

            // A call that runs three idle periods long still gets its reply.
            let busy = try RawConnection(path: path)
            defer { busy.close() }
            busy.send(try echoFrame(7, "slow", delayMillis: 1000))
            let reply = try await readReply(busy)
            #expect(reply?.callID == 7, "the reply of a call in flight outlives the idle timeout")
        }
    }

    @Test func onePeerUidCannotHoldMoreThanItsConnections() async throws {
        try await withServer(configure: { $0.maximumConnectionsPerPeerUID = 3 }) { path in
            let admitted = try (0..<3).map { _ in try RawConnection(path: path) }
            // admitted[0] is closed below; closing a descriptor twice could close one that the
            // in-process server has since been given for a new connection.
            defer { for connection in admitted.dropFirst() { connection.close() } }
            // Each of the three is served (which also proves the server has taken them up).
            for (index, connection) in admitted.enumerated() {
                connection.send(try echoFrame(UInt64(index + 1), "in"))
                #expect(try await readReply(connection)?.callID == UInt64(index + 1))
            }
            let fourth = try RawConnection(path: path)
            defer { fourth.close() }
            #expect(try await offThePool { fourth.serverClosed() }, "the fourth connection of one uid is closed at once")

            // Closing one frees its slot (the server notices the close asynchronously: retry
            // until a new connection is served, bounded by the suite's limit and 50 tries).
            admitted[0].close()
            var served = false
            for attempt in 0..<50 where !served {
                let next = try RawConnection(path: path)
                defer { next.close() }
                next.send(try echoFrame(100 + UInt64(attempt), "again"))
                served = try await readReply(next) != nil
            }
            #expect(served, "a slot freed by a close is given to the next connection")
        }
    }

    /// After its deadline a call gets no reply, however the timing falls (docs/rpc.md, Calls 4):
    /// twenty calls with a 1 µs budget, then a call without one that must be the only reply.
    @Test func callsPastTheirDeadlineNeverGetAReply() async throws {
        try await withServer(configure: { _ in }) { path in
            let raw = try RawConnection(path: path)
            defer { raw.close() }
            for id in 1...20 {
                var frame = RPCWireFrame()
                frame.callID = UInt64(id)
                frame.request.method = Echo.echo.fullName
                frame.request.timeoutMicros = 1
                frame.request.payload = try Echo.request("late").serializedData()
                raw.send(frameBytes(try frame.serializedBytes()))
            }
            // Sent after the twenty, and slower: any reply to them would come before this one.
            raw.send(try echoFrame(99, "on time", delayMillis: 200))
            var received: [UInt64] = []
            while let reply = try await readReply(raw) {
                received.append(reply.callID)
                if reply.callID == 99 { break }
            }
            #expect(received == [99], "replies after the deadline: \(received.filter { $0 != 99 })")
        }
    }

    /// The client written from docs/rpc.md alone (Python, no code of this repo) sees the same
    /// rules: a reply over the frame limit comes back as RESOURCE_EXHAUSTED on a connection that
    /// goes on serving, and an idle connection is closed by the server.
    @Test func aClientWrittenFromTheDocsSeesOversizedRepliesRefusedAndIdleConnectionsClosed() async throws {
        let (amplify, router, policy) = (Echo.amplify, Echo.amplifyingRouter(), Echo.amplifyingPolicy())
        let script = try copyFixtureToWorldReadableDirectory("rpc_call.py")
        // 2 s idle: long enough that a slow start of python3 on a loaded machine never idles out
        // between its calls (500 ms did once, with three compilers running), short enough to wait for.
        try await withServer(router: router, policy: policy, configure: { $0.idleTimeout = .seconds(2) }) { path in
            var oversized = RPCWireEchoRequest()
            oversized.delayMillis = 2 << 20
            let hex = { (message: RPCWireEchoRequest) in try message.serializedData().map { String(format: "%02x", $0) }.joined() }
            let output = try await Shell.run("/usr/bin/python3", [script, "--wait-close", path,
                                                                 amplify.fullName, try hex(oversized),
                                                                 Echo.echo.fullName, try hex(Echo.request("after"))])
            let lines = try output.split(separator: "\n").map { try #require(JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]) }
            try #require(lines.count == 3, "\(output)")
            #expect(lines[0]["code"] as? Int == Int(RPCError.Code.resourceExhausted.rawValue), "\(lines[0])")
            #expect(lines[1]["code"] as? Int == 0, "the same connection serves the next call: \(lines[1])")
            #expect(lines[2]["closed_by_server"] as? Bool == true, "idle connection closed: \(lines[2])")
        }
    }
}
