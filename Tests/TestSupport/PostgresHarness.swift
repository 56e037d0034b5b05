import ClauDatabase
import ClauSupport
import Foundation
import Logging
import NIOPosix
import PostgresNIO
import Synchronization

/// Where the repository is, for scripts and migrations (tests run from any directory).
public let repositoryRoot: String = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path

/// A real, throwaway PostgreSQL 15 cluster for the tests of one test process (no mocked database
/// anywhere). Started on first use by `scripts/pg-harness` (initdb in a temp dir, Unix socket
/// only, run as the `postgres` user when we are root), migrated once, and removed at exit. Each
/// test gets its own database cloned from the migrated template, so tests never share rows.
public actor PostgresHarness {
    public static let shared = PostgresHarness()

    public struct Cluster: Sendable {
        public let socketDirectory: String
        public let port: Int
        public var socketPath: String { "\(socketDirectory)/.s.PGSQL.\(port)" }

        public init(socketDirectory: String, port: Int) {
            self.socketDirectory = socketDirectory
            self.port = port
        }
    }

    /// A second cluster of its own (roles, empty schemas and database `clau` as `scripts/pg-harness`
    /// makes them; not migrated), for tests that move data between clusters (restore). Stopped and
    /// removed after `body`.
    public static func withSeparateCluster<T: Sendable>(_ body: @Sendable (Cluster) async throws -> T) async throws -> T {
        let directory = "/tmp/clau-pg2-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let output = try await Shell.run(repositoryRoot + "/scripts/pg-harness", ["start", directory])
        let stop: @Sendable () async -> Void = { _ = try? await Shell.run(repositoryRoot + "/scripts/pg-harness", ["stop", directory]) }
        guard let port = output.split(separator: "\n").first(where: { $0.hasPrefix("PGPORT=") }).flatMap({ Int($0.dropFirst(7)) }) else {
            await stop()
            throw HarnessError("pg-harness printed no port: \(output)")
        }
        do {
            let result = try await body(Cluster(socketDirectory: directory, port: port))
            await stop()
            return result
        } catch {
            await stop()
            throw error
        }
    }

    private var starting: Task<Cluster, any Error>?
    private var databaseCounter = 0
    private let logger = Logger(label: "pg-harness")

    /// Starts the cluster once per test process; concurrent callers share the same start.
    public func start() async throws -> Cluster {
        if let starting { return try await starting.value }
        let task = Task { try await Self.startCluster() }
        starting = task
        return try await task.value
    }

    private static func startCluster() async throws -> Cluster {
        let directory = "/tmp/clau-pg-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let output = try await Shell.run(repositoryRoot + "/scripts/pg-harness", ["start", directory])
        var port = 0
        for line in output.split(separator: "\n") where line.hasPrefix("PGPORT=") {
            port = Int(line.dropFirst(7)) ?? 0
        }
        guard port > 0 else { throw HarnessError("pg-harness printed no port: \(output)") }
        harnessDirectoryToRemoveAtExit = directory
        atexit {
            if let directory = harnessDirectoryToRemoveAtExit {
                _ = try? Shell.run(repositoryRoot + "/scripts/pg-harness", ["stop", directory]) as String
            }
        }
        let cluster = Cluster(socketDirectory: directory, port: port)
        try await migrate(database: "clau", cluster: cluster)
        return cluster
    }

    /// A new database with every schema migrated, for one test.
    public func freshDatabase() async throws -> TestDatabase {
        let cluster = try await start()
        databaseCounter += 1
        let name = "test_\(databaseCounter)"
        let admin = try await Self.connect(cluster: cluster, role: "postgres", database: "postgres")
        defer { Task { try? await admin.close() } }
        try await admin.query(PostgresQuery(unsafeSQL: "CREATE DATABASE \(name) TEMPLATE clau"), logger: logger)
        try await admin.query(PostgresQuery(unsafeSQL: "REVOKE ALL ON DATABASE \(name) FROM PUBLIC"), logger: logger)
        try await admin.query(PostgresQuery(unsafeSQL: "GRANT CONNECT ON DATABASE \(name) TO clau_auth, clau_broker"), logger: logger)
        return TestDatabase(cluster: cluster, name: name)
    }

    private static func migrate(database: String, cluster: Cluster) async throws {
        for (schema, role) in [("auth", "clau_auth"), ("broker", "clau_broker")] {
            let migrations = try Migration.load(directory: repositoryRoot + "/migrations/\(schema)")
            let connection = try await connect(cluster: cluster, role: role, database: database)
            do {
                try await MigrationRunner(schema: schema).migrate(migrations, on: connection, logger: Logger(label: "pg-harness"))
                try await connection.close()
            } catch {
                try? await connection.close()
                throw error
            }
        }
    }

    static func connect(cluster: Cluster, role: String, database: String) async throws -> PostgresConnection {
        try await PostgresConnection.connect(
            configuration: .init(unixSocketPath: cluster.socketPath, username: role, password: nil, database: database),
            id: Int.random(in: 0...Int.max),
            logger: Logger(label: "pg-harness")
        )
    }
}

/// One test's database. Connect as the role a service would use.
public struct TestDatabase: Sendable {
    public let cluster: PostgresHarness.Cluster
    public let name: String

    public init(cluster: PostgresHarness.Cluster, name: String) {
        self.cluster = cluster
        self.name = name
    }

    public func clientConfiguration(role: String) -> PostgresClient.Configuration {
        PostgresClient.Configuration(unixSocketPath: cluster.socketPath, username: role, password: nil, database: name)
    }

    public func connect(role: String, logger: Logger = Logger(label: "test-db")) async throws -> PostgresConnection {
        try await PostgresConnection.connect(
            configuration: .init(unixSocketPath: cluster.socketPath, username: role, password: nil, database: name),
            id: Int.random(in: 0...Int.max),
            logger: logger
        )
    }
}

nonisolated(unsafe) private var harnessDirectoryToRemoveAtExit: String?

public struct HarnessError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// Runs a command to completion; throws with its stderr when it fails.
public enum Shell {
    /// The async form runs the blocking wait on its own thread: blocking one of the two
    /// cooperative-pool threads here would starve the servers under test.
    @discardableResult
    public static func run(_ executable: String, _ arguments: [String], environment: [String: String]? = nil) async throws -> String {
        try await offThePool { try run(executable, arguments, environment: environment) as String }
    }

    /// posix_spawn + waitpid with output in temp files. Not Foundation's Process: a daemon the
    /// command starts (pg_ctl's postgres) inherits descriptors Foundation leaves open, and its
    /// Process then never reports the exit of the command.
    @discardableResult
    public static func run(_ executable: String, _ arguments: [String], environment: [String: String]? = nil) throws -> String {
        let outputPath = NSTemporaryDirectory() + "shell-\(UUID().uuidString).out"
        let errorPath = outputPath + ".err"
        defer {
            unlink(outputPath)
            unlink(errorPath)
        }
        let pid = try spawn(executable, arguments, environment: environment ?? ProcessInfo.processInfo.environment, outputPath: outputPath, errorPath: errorPath)
        let status: ChildProcess.Status
        do { status = try ChildProcess.wait(pid, executable: executable) } catch { throw HarnessError(error.description) }
        let stdout = (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? ""
        guard status.succeeded else {
            let stderr = (try? String(contentsOfFile: errorPath, encoding: .utf8)) ?? ""
            throw HarnessError("\(executable) \(arguments.joined(separator: " ")) failed (status \(status)): \(stderr)")
        }
        return stdout
    }
}

/// Copies `Tests/Fixtures/<name>` into a fresh world-readable directory, so a process running as
/// another user (setpriv) can read it.
public func copyFixtureToWorldReadableDirectory(_ name: String) throws -> String {
    let directory = try makeWorldReadableTemporaryDirectory()
    let destination = directory + "/" + name
    try FileManager.default.copyItem(atPath: repositoryRoot + "/Tests/Fixtures/" + name, toPath: destination)
    chmod(destination, 0o755)
    return destination
}

/// A new directory under /tmp with mode 0755 (short enough for Unix socket paths).
public func makeWorldReadableTemporaryDirectory(prefix: String = "clau-test") throws -> String {
    var template = Array("/tmp/\(prefix)-XXXXXX".utf8CString)
    guard let result = mkdtemp(&template) else { throw HarnessError("mkdtemp failed") }
    let path = String(cString: result)
    chmod(path, 0o755)
    return path
}

/// Runs blocking work (a child process, a blocking socket read) on a fresh thread, so that the
/// Swift concurrency pool stays free for the code under test.
public func offThePool<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        Thread.detachNewThread {
            continuation.resume(with: Result { try work() })
        }
    }
}

/// A long-running child process (a service under test) with its output in files.
public final class SpawnedProcess: Sendable {
    public let pid: pid_t
    public let outputPath: String
    /// The exit status once the child is reaped. Its pid may then belong to another process,
    /// which a late `signal` (a test's `defer`) must not hit.
    private let exitStatus = Mutex<Int32?>(nil)

    private init(pid: pid_t, outputPath: String) {
        self.pid = pid
        self.outputPath = outputPath
    }

    /// Starts `executable`; stdout and stderr both go to `outputPath`.
    public static func start(_ executable: String, _ arguments: [String], outputPath: String, environment: [String: String] = [:]) throws -> SpawnedProcess {
        var merged = ProcessInfo.processInfo.environment
        merged.merge(environment) { _, new in new }
        let pid = try spawn(executable, arguments, environment: merged, outputPath: outputPath, errorPath: nil)
        return SpawnedProcess(pid: pid, outputPath: outputPath)
    }

    /// Starts `executable` as system user `user` (its own group, no new privileges), the way the
    /// systemd units run each service.
    public static func start(as user: String, _ executable: String, _ arguments: [String], outputPath: String, environment: [String: String] = [:]) throws -> SpawnedProcess {
        try start("/usr/bin/setpriv", ["--reuid=\(user)", "--regid=\(user)", "--init-groups", "--no-new-privs", executable] + arguments,
                  outputPath: outputPath, environment: environment)
    }

    /// A copy of the freshly built `product` in `directory` that every user may run.
    public static func installBuiltProduct(_ product: String, in directory: String) throws -> String {
        let binary = directory + "/" + product
        try FileManager.default.copyItem(atPath: repositoryRoot + "/.build/debug/" + product, toPath: binary)
        chmod(binary, 0o755)
        return binary
    }

    public var output: String { (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? "" }

    public func signal(_ signal: Int32) {
        exitStatus.withLock { exitStatus in
            if exitStatus == nil { Glibc.kill(pid, signal) }
        }
    }

    /// Waits up to `timeout` for the process to exit; returns its exit status, or nil if it is
    /// still running (it is then killed).
    public func waitForExit(timeout: Duration = .seconds(10)) async throws -> Int32? {
        try await offThePool { [self] in
            let deadline = ContinuousClock.now + timeout
            while ContinuousClock.now < deadline {
                if let status = reap(options: WNOHANG) { return status }
                usleep(20_000)
            }
            kill()
            return nil
        }
    }

    /// Whether the process has exited (it is reaped if so). Never blocks.
    public var hasExited: Bool { reap(options: WNOHANG) != nil }

    /// Kills the process and reaps it (for a test's `defer`).
    public func kill() {
        signal(SIGKILL)
        _ = reap(options: 0)
    }

    /// The exit status (128 + signal when killed), reaping the child the first time.
    private func reap(options: Int32) -> Int32? {
        exitStatus.withLock { exitStatus in
            if let exitStatus { return exitStatus }
            var status: Int32 = 0
            var waited: pid_t
            repeat { waited = waitpid(pid, &status, options) } while waited < 0 && errno == EINTR
            guard waited == pid else { return nil }
            exitStatus = status & 0x7f == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
            return exitStatus
        }
    }
}

/// A system user's ids, as /etc/passwd lists them.
public struct SystemUser: Sendable, Equatable {
    public var uid: uid_t
    public var gid: gid_t
}

/// Looks `name` up in /etc/passwd itself, the file useradd writes. Not getpwnam: it returns a
/// static buffer that parallel suites overwrite, and it answers through NSS.
public func systemUser(_ name: String) -> SystemUser? {
    userDatabaseLock.withLock { _ in passwdEntry(name) }
}

private func passwdEntry(_ name: String) -> SystemUser? {
    guard let passwd = try? String(contentsOfFile: "/etc/passwd", encoding: .utf8) else { return nil }
    for line in passwd.split(separator: "\n") {
        let fields = line.split(separator: ":", omittingEmptySubsequences: false)
        guard fields.count >= 4, fields[0] == name, let uid = uid_t(fields[2]), let gid = gid_t(fields[3]) else { continue }
        return SystemUser(uid: uid, gid: gid)
    }
    return nil
}

/// Creates a system user for privilege-separation tests (root only) and returns its ids.
/// Suites run in parallel and useradd/userdel refuse to run while another holds the lock on
/// /etc/passwd, so the calls of this process take turns and a refused one is retried (unless the
/// user exists by then: an attempt may have succeeded without our seeing its status).
@discardableResult
public func ensureSystemUser(_ name: String) throws -> SystemUser {
    try userDatabaseLock.withLock { _ in
        if let user = passwdEntry(name) { return user }
        var output = ""
        try retryingWhileLocked {
            guard passwdEntry(name) == nil else { return }
            output = try Shell.run("/usr/sbin/useradd", ["--system", "--no-create-home", "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", "--user-group", name])
        }
        for _ in 0..<20 {
            if let user = passwdEntry(name) { return user }
            usleep(50_000)
        }
        throw HarnessError("useradd \(name) succeeded but /etc/passwd has no such user (useradd said: \(output))")
    }
}

public func removeSystemUser(_ name: String) {
    userDatabaseLock.withLock { _ in
        guard passwdEntry(name) != nil else { return }
        try? retryingWhileLocked { _ = try Shell.run("/usr/sbin/userdel", [name]) as String }
    }
}

private let userDatabaseLock = Mutex(())

private func retryingWhileLocked(_ command: () throws -> Void) throws {
    var attempt = 0
    while true {
        do {
            try command()
            return
        } catch {
            attempt += 1
            guard attempt < 20 else { throw error }
            usleep(100_000)
        }
    }
}

/// Waits until `path` exists.
public func waitForFile(_ path: String, timeout: Duration = .seconds(10)) async throws {
    let deadline = ContinuousClock.now + timeout
    while !FileManager.default.fileExists(atPath: path) {
        guard ContinuousClock.now < deadline else { throw HarnessError("\(path) did not appear within \(timeout)") }
        try await Task.sleep(for: .milliseconds(20))
    }
}

/// posix_spawn with stdin from /dev/null and stdout (and stderr, or into stdout when `errorPath`
/// is nil) written to files.
func spawn(_ executable: String, _ arguments: [String], environment: [String: String], outputPath: String, errorPath: String?) throws -> pid_t {
    // The same spawn the services use for their own children (ClauSupport's ChildProcess): no
    // descriptor past stderr reaches the child (a daemon that lives for the whole run would keep
    // it open, e.g. a script another test is writing, which then cannot be executed: ETXTBSY),
    // and an empty signal mask with default dispositions (the test process's threads block most
    // signals; without this a daemon never sees the SIGTERM that ends it).
    func open(_ path: String) throws -> Int32 {
        let descriptor = Glibc.open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else { throw HarnessError("cannot open \(path): \(String(cString: strerror(errno)))") }
        return descriptor
    }
    let output = try open(outputPath)
    defer { close(output) }
    let errors = try errorPath.map(open)
    defer { errors.map { _ = close($0) } }
    do {
        return try ChildProcess.spawn(executable, arguments, environment: environment.map { "\($0.key)=\($0.value)" },
                                      stdout: output, stderr: errors ?? output)
    } catch {
        throw HarnessError("cannot start \(executable): \(error.reason)")
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago, for a server a test starts as a separate
/// process. Taken from below the kernel's ephemeral range: a port from that range (bind to port
/// 0) can be handed to any of the parallel suites' outgoing connections before the server binds it.
public func freeLoopbackPort() throws -> Int {
    let ephemeralStart = (try? String(contentsOfFile: "/proc/sys/net/ipv4/ip_local_port_range", encoding: .utf8))
        .flatMap { $0.split(whereSeparator: \.isWhitespace).first.flatMap { Int($0) } } ?? 32768
    let candidates = 10_000..<max(ephemeralStart, 10_001)
    for _ in 0..<200 {
        let port = Int.random(in: candidates)
        if canBindLoopback(port: port) { return port }
    }
    throw HarnessError("no free loopback port in \(candidates)")
}

private func canBindLoopback(port: Int) -> Bool {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return false }
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = UInt16(port).bigEndian
    return withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    } == 0
}
