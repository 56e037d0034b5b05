import ClauDatabase
import Logging
import PostgresNIO
import RPC
import Synchronization
import TestSupport
import Testing

/// A gate a test opens when it chooses: holds a leased connection for as long as the test needs.
private final class Gate: Sendable {
    private let state = Mutex<(open: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, []))
    private let entered = Atomic<Int>(0)

    var entries: Int { entered.load(ordering: .acquiring) }

    func pass() async {
        entered.add(1, ordering: .releasing)
        await withCheckedContinuation { continuation in
            let open = state.withLock { state in
                if !state.open { state.waiters.append(continuation) }
                return state.open
            }
            if open { continuation.resume() }
        }
    }

    func open() {
        let waiters = state.withLock { state in
            state.open = true
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in waiters { waiter.resume() }
    }
}

@Suite("Bounded wait for a PostgreSQL connection (R-16)", .timeLimit(.minutes(3)))
struct BoundedPostgresClientTests {
    let logger = Logger(label: "test-db")

    /// Runs `body` with a running one-connection pool to `configuration`.
    private func withPool<T: Sendable>(_ configuration: PostgresClient.Configuration, connectionWait: Duration,
                                       _ body: (BoundedPostgresClient) async throws -> T) async throws -> T {
        var configuration = configuration
        configuration.useFixedLocalPool(connections: 1)
        let client = PostgresClient(configuration: configuration, backgroundLogger: Logger(label: "pool", factory: { _ in SwiftLogNoOpLogHandler() }))
        return try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await client.run() }
            defer { group.cancelAll() }
            return try await body(BoundedPostgresClient(client, connectionWait: connectionWait))
        }
    }

    /// PostgreSQL down (here: nothing listens on the socket). postgres-nio's pool would keep the
    /// request queued while it retries; the bounded client gives up after its wait, as
    /// UNAVAILABLE, well within a 5 s RPC deadline.
    @Test func aDatabaseThatIsDownFailsUnavailableAfterTheWait_R16() async throws {
        let directory = try makeWorldReadableTemporaryDirectory(prefix: "clau-no-pg")
        let configuration = PostgresClient.Configuration(unixSocketPath: directory + "/.s.PGSQL.5432", username: "clau_auth", password: nil, database: "nothing")
        try await withPool(configuration, connectionWait: .milliseconds(300)) { database in
            for statement in ["query", "transaction"] {
                let started = ContinuousClock.now
                let error = await #expect(throws: DatabaseUnavailable.self, "\(statement)") {
                    if statement == "query" {
                        try await database.query("SELECT 1", logger: logger)
                    } else {
                        try await database.withTransaction(logger: logger) { connection in
                            try await connection.query("SELECT 1", logger: Logger(label: "t"))
                        }
                    }
                }
                let elapsed = ContinuousClock.now - started
                #expect(error?.rpcError.code == .unavailable)
                // Not the pool's own giving up (a different error, after 15 s of failures), and
                // seconds sooner even when a loaded test run delays every timer.
                #expect(elapsed >= .milliseconds(300) && elapsed < .seconds(10), "\(statement) gave up after \(elapsed)")
            }
        }
    }

    /// Every connection busy past the wait: the next request fails UNAVAILABLE; the busy one,
    /// which holds its connection longer than the wait, is never cut short, and once it ends the
    /// pool serves again.
    @Test func aSaturatedPoolRefusesAfterTheWaitButNeverCutsALeasedTransaction_R16() async throws {
        let testDatabase = try await PostgresHarness.shared.freshDatabase()
        try await withPool(testDatabase.clientConfiguration(role: "clau_auth"), connectionWait: .milliseconds(200)) { database in
            // The pool's first connection can take longer than the wait on a loaded machine:
            // until it is up, there is no progress to measure against.
            var warm = false
            for _ in 0..<100 where !warm {
                warm = (try? await database.query("SELECT 1", logger: logger)) != nil
            }
            try #require(warm, "the pool never connected")
            try await database.query("CREATE TABLE auth.bounded_probe (id int)", logger: logger)
            let gate = Gate()
            let holder = Task {
                try await database.withTransaction(logger: logger) { connection in
                    try await connection.query("INSERT INTO auth.bounded_probe VALUES (1)", logger: Logger(label: "t"))
                    await gate.pass()
                    try await connection.query("INSERT INTO auth.bounded_probe VALUES (2)", logger: Logger(label: "t"))
                }
            }
            while gate.entries == 0 { try await Task.sleep(for: .milliseconds(5)) }

            let error = await #expect(throws: DatabaseUnavailable.self) {
                try await database.query("SELECT count(*) FROM auth.bounded_probe", logger: logger)
            }
            #expect(error?.rpcError == RPCError(code: .unavailable, message: "database_unavailable"))

            // The holder has had its connection for longer than the wait; it still commits whole.
            gate.open()
            try await holder.value
            let rows = try await database.query("SELECT count(*) FROM auth.bounded_probe", logger: logger)
            var count: Int64 = -1
            for try await value in rows.decode(Int64.self) { count = value }
            #expect(count == 2)
        }
    }
}
