import ClauSupport
import Logging
import PostgresNIO
import RPC
import Synchronization

/// A `PostgresClient` whose callers stop waiting for a pooled connection once the pool has made no
/// progress for `connectionWait`.
///
/// While PostgreSQL is down, postgres-nio's pool keeps every request in its queue and retries
/// connecting (its circuit breaker opens only after 15 s of failures). A request that arrives then
/// would wait past the caller's RPC deadline, and the edge would answer 504 instead of 503.
/// Here a request still without a connection leaves the queue and fails with
/// ``DatabaseUnavailable`` (UNAVAILABLE) when no request of this client has been handed a
/// connection (or finished its work) for `connectionWait`: the database is down or stuck. A pool
/// that is merely busy (64 refreshes of one token queue on its row lock) keeps handing out
/// connections, and its waiters wait on. Only the wait for a connection is bounded: once a
/// connection is leased, the work on it runs to its end (a transaction is never cut in half).
public struct BoundedPostgresClient: Sendable {
    public let client: PostgresClient
    /// How long a request may wait for a connection from the pool.
    public let connectionWait: Duration
    private let progress = PoolProgress()

    public init(_ client: PostgresClient, connectionWait: Duration = .seconds(2)) {
        self.client = client
        self.connectionWait = connectionWait
    }

    /// `--db-connection-wait-ms`, checked: between 10 ms and 10 s.
    public static func connectionWait(milliseconds: Int) throws -> Duration {
        guard (10...10_000).contains(milliseconds) else { throw StartupError("--db-connection-wait-ms must be between 10 and 10000") }
        return .milliseconds(milliseconds)
    }

    @discardableResult
    public func query(_ query: PostgresQuery, logger: Logger, file: String = #fileID, line: Int = #line) async throws -> PostgresRowSequence {
        // Cancelling `client.query` interrupts only its wait for a lease: once a connection is
        // leased the query is written and awaited without regard to cancellation.
        try await bounded { leased in
            let rows = try await client.query(query, logger: logger, file: file, line: line)
            leased()
            return Rows(sequence: rows)
        }.sequence
    }

    public func execute<Statement: PostgresPreparedStatement, Row>(
        _ statement: Statement, logger: Logger, file: String = #fileID, line: Int = #line
    ) async throws -> AsyncThrowingMapSequence<PostgresRowSequence, Row> where Row == Statement.Row {
        let rows = try await bounded { leased in
            let rows = try await client.execute(statement, logger: logger, file: file, line: line)
            leased()
            return Rows(sequence: rows)
        }
        return rows.sequence
    }

    public func withConnection<Result: Sendable>(_ body: @escaping @Sendable (PostgresConnection) async throws -> Result) async throws -> Result {
        try await bounded { leased in
            try await client.withConnection { connection in
                leased()
                return try await body(connection)
            }
        }
    }

    public func withTransaction<Result: Sendable>(
        logger: Logger, file: String = #file, line: Int = #line, _ body: @escaping @Sendable (PostgresConnection) async throws -> Result
    ) async throws -> Result {
        try await bounded { leased in
            try await client.withConnection { connection in
                leased()
                return try await connection.withTransaction(logger: logger, file: file, line: line) { try await body($0) }
            }
        }
    }

    /// Runs `operation` in a child task and a timer beside it. When the timer finds the operation
    /// still without a connection and the pool without progress for `connectionWait`, the
    /// operation is cancelled, which takes its lease request out of the pool's queue. `operation`
    /// calls `leased` once it holds a connection (or its query has answered); from then on it is
    /// never cancelled by the timer.
    private func bounded<Result: Sendable>(_ operation: @escaping @Sendable (_ leased: @escaping @Sendable () -> Void) async throws -> Result) async throws -> Result {
        let lease = LeaseWait()
        let wait = connectionWait
        let progress = self.progress
        return try await withThrowingTaskGroup(of: Outcome<Result>.self) { group in
            group.addTask {
                do {
                    let result = try await operation {
                        lease.hasConnection.store(true, ordering: .releasing)
                        progress.record()
                    }
                    // A finished transaction is progress too: on a busy pool the next lease can
                    // be a while coming, but work is being done.
                    progress.record()
                    return .finished(result)
                } catch where lease.timedOut.load(ordering: .acquiring) {
                    // Cancelled by the timer: out of the pool's queue (`queryCancelled`), or,
                    // in a lost race, right after the lease, before any statement ran.
                    throw DatabaseUnavailable()
                }
            }
            group.addTask {
                // Rings once the pool has been still for `wait` (cancelled: the operation ended).
                var sleep = wait
                while (try? await Task.sleep(for: sleep)) != nil, !lease.hasConnection.load(ordering: .acquiring) {
                    let still = progress.stillFor()
                    if still >= wait { break }
                    sleep = wait - still
                }
                return .timerRang
            }
            while let next = try await group.next() {
                switch next {
                case .finished(let result):
                    group.cancelAll()
                    return result
                case .timerRang where !lease.hasConnection.load(ordering: .acquiring):
                    lease.timedOut.store(true, ordering: .releasing)
                    group.cancelAll()
                case .timerRang:
                    continue
                }
            }
            throw DatabaseUnavailable()
        }
    }
}

/// When a request of this client last got a connection: the pool's sign of life.
private final class PoolProgress: Sendable {
    private let start = ContinuousClock.now
    /// Nanoseconds from `start`.
    private let last = Atomic<Int64>(0)

    func record() {
        last.store(Self.nanoseconds(ContinuousClock.now - start), ordering: .relaxed)
    }

    /// How long since the last progress (or since this client was made).
    func stillFor() -> Duration {
        (ContinuousClock.now - start) - .nanoseconds(last.load(ordering: .relaxed))
    }

    private static func nanoseconds(_ duration: Duration) -> Int64 {
        duration.components.seconds * 1_000_000_000 + duration.components.attoseconds / 1_000_000_000
    }
}

private final class LeaseWait: Sendable {
    let hasConnection = Atomic<Bool>(false)
    let timedOut = Atomic<Bool>(false)
}

private enum Outcome<Result: Sendable>: Sendable {
    case finished(Result)
    case timerRang
}

/// A row sequence handed out of the child task that ran the query. Not `Sendable` in postgres-nio,
/// but it moves from one task to another only here: the child returns it and ends, and only the
/// caller consumes it.
private struct Rows<Sequence: AsyncSequence>: @unchecked Sendable {
    let sequence: Sequence
}

/// No PostgreSQL connection within the bounded wait: the database is down or saturated. A
/// dependency being down, so UNAVAILABLE (the edge answers 503 and clients retry).
public struct DatabaseUnavailable: Error, RPCErrorConvertible, CustomStringConvertible {
    public init() {}
    public var rpcError: RPCError { RPCError(code: .unavailable, message: "database_unavailable") }
    public var description: String { "no PostgreSQL connection within the bounded wait" }
}
