import Dispatch
import Foundation
import ClauSupport
import Logging
import NIOPosix
import RPC
import Synchronization

/// RPC round-trip benchmark: the Unix-socket transport against a raw Unix-socket ping-pong of the
/// same bytes (the floor), side by side in one run. Usage: rpc-bench [--seconds N]
/// Build in release: swift build -c release --product rpc-bench && .build/release/rpc-bench
@main
struct RPCBenchmark {
    static let echo = MethodDescriptor<RPCWireEchoRequest, RPCWireEchoResponse>(service: "clau.bench.Echo", method: "Echo")

    /// Swift Concurrency on NIO's event loops, as in the services (`EventLoopConcurrency`).
    @MainActor static func main() async throws {
        EventLoopConcurrency.install()
        try await run()
    }

    static func run() async throws {
        let arguments = CommandLine.arguments
        let seconds = arguments.firstIndex(of: "--seconds").flatMap { Double(arguments[$0 + 1]) } ?? 2.0
        var logger = Logger(label: "rpc-bench")
        logger.logLevel = .critical

        let directory = "/tmp/clau-bench-\(getpid())"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }

        var router = RPCRouter()
        router.register(echo) { request, _ in
            var response = RPCWireEchoResponse()
            response.payload = request.payload
            return response
        }
        var policy = RPCAccessPolicy()
        policy.allow(echo.fullName, uids: [getuid()])
        let core = RPCServerCore(router: router, accessPolicy: policy, logger: logger)
        let server = UnixSocketServer(configuration: .init(path: directory + "/bench.sock"), core: core, logger: logger)
        let floorPath = directory + "/floor.sock"
        let floor = try RawEchoServer(path: floorPath)

        print("| scenario | payload | calls/s | p50 µs | p99 µs | floor calls/s | floor p50 µs | RPC/floor throughput |")
        print("|---|---|---|---|---|---|---|---|")
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await server.run() }
            await server.waitUntilListening()
            var clients: [UnixSocketClient] = []
            for _ in 0..<4 {
                let client = UnixSocketClient(configuration: .init(path: server.configuration.path), logger: logger)
                clients.append(client)
                group.addTask { try await client.run() }
                await client.waitUntilConnected()
            }
            for size in [200, 64 * 1024] {
                var request = RPCWireEchoRequest()
                request.payload = Data((0..<size).map { UInt8($0 & 0xFF) })
                // Frame size the raw floor echoes: the same request bytes the RPC sends.
                let wireSize = size + 40
                // Same calls through the in-process transport: serialization, policy and dispatch
                // without sockets or event-loop hops — separates protocol cost from transport cost.
                let inProcess = RPCClient(transport: InProcessTransport(server: core))
                let inProcessMessage = request
                let local = try await measure(seconds: seconds, connections: 1, inFlight: 1) { _ in
                    _ = try await inProcess.call(echo, inProcessMessage)
                }
                print("| sequential, in-process transport (no socket) | \(size == 200 ? "200 B" : "64 KiB") | \(Int(local.rate)) | \(local.p50) | \(local.p99) | – | – | – |")
                for (name, connections, inFlight) in [("sequential, 1 connection", 1, 1), ("64 in flight, 1 connection", 1, 64), ("64 in flight, 4 connections", 4, 16)] {
                    let rpcClients = clients.map { RPCClient(transport: $0) }
                    let message = request
                    let rpc = try await measure(seconds: seconds, connections: connections, inFlight: inFlight) { connection in
                        _ = try await rpcClients[connection].call(echo, message)
                    }
                    let raw = try RawEchoClient.measure(path: floorPath, frameSize: wireSize, seconds: seconds, connections: connections, inFlight: inFlight)
                    let label = size == 200 ? "200 B" : "64 KiB"
                    print("| \(name) | \(label) | \(Int(rpc.rate)) | \(rpc.p50) | \(rpc.p99) | \(Int(raw.rate)) | \(raw.p50) | \(String(format: "%.2f", rpc.rate / raw.rate)) |")
                }
            }
            group.cancelAll()
        }
        floor.stop()
    }

    struct Result { var rate: Double; var p50: Int; var p99: Int }

    /// Runs `connections × inFlight` loops of calls for `seconds`, recording each call's latency.
    static func measure(seconds: Double, connections: Int, inFlight: Int, call: @escaping @Sendable (Int) async throws -> Void) async throws -> Result {
        // Warm-up.
        for _ in 0..<200 { try await call(0) }
        let clock = ContinuousClock()
        let end = clock.now + .milliseconds(Int(seconds * 1000))
        let start = clock.now
        let latencies = try await withThrowingTaskGroup(of: [Int].self) { group in
            for worker in 0..<(connections * inFlight) {
                group.addTask {
                    var samples: [Int] = []
                    samples.reserveCapacity(100_000)
                    while clock.now < end {
                        let t0 = clock.now
                        try await call(worker % connections)
                        samples.append(micros(clock.now - t0))
                    }
                    return samples
                }
            }
            var all: [Int] = []
            for try await samples in group { all += samples }
            return all
        }
        let elapsed = clock.now - start
        return summarize(latencies, elapsed: elapsed)
    }

    static func micros(_ d: Duration) -> Int {
        Int(d.components.seconds * 1_000_000 + d.components.attoseconds / 1_000_000_000_000)
    }

    static func summarize(_ latencies: [Int], elapsed: Duration) -> Result {
        let sorted = latencies.sorted()
        let seconds = Double(micros(elapsed)) / 1e6
        return Result(
            rate: Double(sorted.count) / seconds,
            p50: sorted.isEmpty ? 0 : sorted[sorted.count / 2],
            p99: sorted.isEmpty ? 0 : sorted[min(sorted.count - 1, sorted.count * 99 / 100)]
        )
    }
}

/// The floor: a thread per connection that echoes length-prefixed frames with blocking syscalls.
final class RawEchoServer: @unchecked Sendable {
    let fd: Int32
    let path: String

    init(path: String) throws {
        self.path = path
        fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_un.forPath(path)
        let bound = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }
        guard bound == 0, listen(fd, 64) == 0 else { throw POSIXError(.EADDRINUSE) }
        let listener = fd
        Thread.detachNewThread {
            while true {
                let connection = accept(listener, nil, nil)
                if connection < 0 { return }
                Thread.detachNewThread {
                    var header = [UInt8](repeating: 0, count: 4)
                    var body = [UInt8](repeating: 0, count: 1 << 20)
                    while readFully(connection, &header, 4) {
                        let length = Int(UInt32(header[0]) << 24 | UInt32(header[1]) << 16 | UInt32(header[2]) << 8 | UInt32(header[3]))
                        guard readFully(connection, &body, length) else { break }
                        writeFully(connection, header, 4)
                        writeFully(connection, body, length)
                    }
                    close(connection)
                }
            }
        }
    }

    func stop() {
        shutdown(fd, Int32(SHUT_RDWR))
        close(fd)
        unlink(path)
    }
}

enum RawEchoClient {
    /// Per connection, a writer thread keeps `inFlight` frames outstanding (a semaphore of
    /// permits) and a reader thread takes the replies, so large frames cannot deadlock on full
    /// socket buffers.
    static func measure(path: String, frameSize: Int, seconds: Double, connections: Int, inFlight: Int) throws -> RPCBenchmark.Result {
        let results = Mutex<[Int]>([])
        let finished = DispatchSemaphore(value: 0)
        let start = ContinuousClock.now
        let end = start + .milliseconds(Int(seconds * 1000))
        for _ in 0..<connections {
            let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
            var address = sockaddr_un.forPath(path)
            _ = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }
            let frame = withUnsafeBytes(of: UInt32(frameSize).bigEndian, Array.init) + [UInt8](repeating: 7, count: frameSize)
            let permits = DispatchSemaphore(value: inFlight)
            let sentAt = Mutex<[ContinuousClock.Instant]>([])
            let sentCount = Mutex(0)
            Thread.detachNewThread {
                while ContinuousClock.now < end {
                    permits.wait()
                    sentAt.withLock { $0.append(.now) }
                    writeFully(fd, frame, frame.count)
                    sentCount.withLock { $0 += 1 }
                }
                shutdown(fd, Int32(SHUT_WR))
            }
            Thread.detachNewThread {
                var reply = [UInt8](repeating: 0, count: frame.count)
                var latencies: [Int] = []
                var received = 0
                while readFully(fd, &reply, frame.count) {
                    let sent = sentAt.withLock { $0[received] }
                    latencies.append(RPCBenchmark.micros(.now - sent))
                    received += 1
                    permits.signal()
                }
                close(fd)
                results.withLock { $0 += latencies }
                finished.signal()
            }
        }
        for _ in 0..<connections { finished.wait() }
        return RPCBenchmark.summarize(results.withLock { $0 }, elapsed: ContinuousClock.now - start)
    }
}

extension sockaddr_un {
    static func forPath(_ path: String) -> sockaddr_un {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: Array(path.utf8).prefix(raw.count - 1))
        }
        return address
    }
}

@discardableResult
func readFully(_ fd: Int32, _ buffer: inout [UInt8], _ count: Int) -> Bool {
    var done = 0
    while done < count {
        let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress! + done, count - done) }
        if n <= 0 { return false }
        done += n
    }
    return true
}

func writeFully(_ fd: Int32, _ buffer: [UInt8], _ count: Int) {
    var done = 0
    while done < count {
        let n = buffer.withUnsafeBytes { write(fd, $0.baseAddress! + done, count - done) }
        if n <= 0 { return }
        done += n
    }
}
