import Foundation
import Logging
import NIOCore
import NIOPosix
import Synchronization
import Testing
import TestSupport

@testable import RateLimiting

/// A manual clock for the in-process limiter.
final class ManualClock: RateLimiterClock {
    private let current = Mutex<Duration>(.seconds(1000))
    func now() -> Duration { current.withLock { $0 } }
    func advance(by duration: Duration) { current.withLock { $0 += duration } }
}

/// A real `redis-server` in a temp dir, on a Unix socket (and optionally a TCP port on 127.0.0.1).
/// Started per test, killed at the end (`withRedisServer`).
final class RedisServer: @unchecked Sendable {
    let directory: URL
    let socketPath: String
    let tcpPort: Int?
    let extraArguments: [String]
    private let process = Mutex<SpawnedProcess?>(nil)

    init(tcpPort: Int? = nil, extraArguments: [String] = []) throws {
        let directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("rl-redis-\(UUID().uuidString.prefix(8))", isDirectory: true)
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        self.directory = directory
        self.socketPath = directory.appendingPathComponent("redis.sock").path
        self.tcpPort = tcpPort
        self.extraArguments = extraArguments
    }

    static var executable: String? {
        for path in ["/usr/bin/redis-server", "/usr/local/bin/redis-server", "/opt/homebrew/bin/redis-server"]
        where FileManager.default.isExecutableFile(atPath: path) {
            return path
        }
        return nil
    }

    func start() async throws {
        guard let executable = Self.executable else {
            throw HarnessError("redis-server not found: install it (apt-get install -y redis-server)")
        }
        try? FileManager.default.removeItem(atPath: socketPath)
        // TestSupport's spawn, not Foundation's Process: its waitUntilExit once spun a core for
        // minutes on a child that had already exited.
        let process = try SpawnedProcess.start(executable, [
            "--port", String(tcpPort ?? 0),
            "--bind", "127.0.0.1",
            "--unixsocket", socketPath,
            "--unixsocketperm", "700",
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--dir", directory.path,
            "--logfile", directory.appendingPathComponent("redis.log").path,
        ] + extraArguments, outputPath: directory.appendingPathComponent("redis.out").path)
        self.process.withLock { $0 = process }
        let deadline = ContinuousClock.now + .seconds(10)
        while !FileManager.default.fileExists(atPath: socketPath) {
            guard ContinuousClock.now < deadline, !process.hasExited else {
                throw HarnessError("redis-server did not start (is it installed? see scripts/)")
            }
            try await Task.sleep(for: .milliseconds(10))
        }
    }

    /// SIGKILL, as a crash would; the child is reaped at once.
    func kill() {
        let process = self.process.withLock { process in
            defer { process = nil }
            return process
        }
        process?.kill()
    }

    func cleanUp() {
        kill()
        try? FileManager.default.removeItem(at: directory)
    }

    var unixConfiguration: RedisConfiguration {
        var configuration = RedisConfiguration(address: .unixSocket(path: socketPath))
        configuration.minimumBackoff = .milliseconds(20)
        configuration.maximumBackoff = .milliseconds(200)
        // Generous: the test machine is small and busy; the timeout test sets its own.
        configuration.commandTimeout = .seconds(3)
        return configuration
    }
}

/// Runs `body` with a fresh redis-server, killing it afterwards whatever happens.
func withRedisServer<T: Sendable>(
    tcpPort: Int? = nil,
    extraArguments: [String] = [],
    _ body: (RedisServer) async throws -> T
) async throws -> T {
    let server = try RedisServer(tcpPort: tcpPort, extraArguments: extraArguments)
    defer { server.cleanUp() }
    try await server.start()
    return try await body(server)
}

let testLogger: Logger = {
    var logger = Logger(label: "ratelimit-tests")
    logger.logLevel = .critical
    return logger
}()

/// Polls `condition` until true or the timeout passes.
func waitUntil(
    timeout: Duration = .seconds(10),
    _ condition: @Sendable () async -> Bool
) async throws {
    let deadline = ContinuousClock.now + timeout
    while !(await condition()) {
        guard ContinuousClock.now < deadline else { throw HarnessError("condition not met in time") }
        try await Task.sleep(for: .milliseconds(10))
    }
}

/// Runs a `RedisClient` (its `run()` in a child task) for the duration of `body`.
func withRunningClient<T: Sendable>(
    _ configuration: RedisConfiguration,
    logger: Logger = testLogger,
    waitForConnection: Bool = true,
    _ body: @Sendable (RedisClient) async throws -> T
) async throws -> T {
    let client = RedisClient(configuration: configuration, logger: logger)
    return try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask { try await client.run() }
        do {
            if waitForConnection { try await waitUntil { client.isConnected } }
            let result = try await body(client)
            group.cancelAll()
            try await group.waitForAll()
            return result
        } catch {
            group.cancelAll()
            try? await group.waitForAll()
            throw error
        }
    }
}

/// Counts allowed decisions.
func allowedCount(_ decisions: [RateLimitDecision]) -> Int { decisions.filter(\.allowed).count }

/// A log handler that records every rendered message and metadata, to check that keys never appear.
final class RecordingLogHandler: LogHandler, @unchecked Sendable {
    final class Storage: @unchecked Sendable {
        let lock = NSLock()
        var lines: [String] = []
        func append(_ line: String) { lock.withLock { lines.append(line) } }
        var all: [String] { lock.withLock { lines } }
    }

    let storage: Storage
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .trace

    init(storage: Storage) { self.storage = storage }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        let merged = metadata.merging(event.metadata ?? [:]) { $1 }
        storage.append("\(event.level) \(event.message) \(merged)")
    }
}
