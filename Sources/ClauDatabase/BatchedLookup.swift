import Synchronization

/// Coalesces concurrent point reads by key into one query per batch.
///
/// A read that finds fewer than `maximumBatchesInFlight` queries running starts one at once, for
/// itself and whoever joins before it leaves: idle, nothing waits and nothing is added to the
/// latency. Under load, reads that arrive while the queries are running wait for the next one,
/// so batches grow with the load and PostgreSQL sees one round trip for many callers instead of
/// one each. Every batch starts after each of its readers arrived, so a reader never gets a row
/// older than its own call (read-your-writes holds as for a direct query).
///
/// A failed query fails exactly the reads of its batch. A reader whose task is cancelled while it
/// still waits for a batch leaves at once; one whose query is already running waits for it (the
/// query is shared, so it is not cancelled for one reader).
public final class BatchedLookup<Key: Hashable & Sendable, Value: Sendable>: Sendable {
    /// Reads the rows for a batch of distinct keys; keys without a row are simply absent.
    public typealias Fetch = @Sendable ([Key]) async throws -> [Key: Value]

    private struct Waiter {
        var id: UInt64
        var continuation: CheckedContinuation<Value?, any Error>
    }

    private struct State {
        var waiting: [Key: [Waiter]] = [:]
        var batchesInFlight = 0
    }

    public let maximumBatchesInFlight: Int
    public let maximumBatchSize: Int
    private let fetch: Fetch
    private let state = Mutex(State())
    private let nextWaiterID = Atomic<UInt64>(0)

    /// - Parameters:
    ///   - maximumBatchesInFlight: queries running at once; more readers wait for the next batch.
    ///   - maximumBatchSize: distinct keys per query (bounds the statement's array parameter).
    public init(maximumBatchesInFlight: Int = 2, maximumBatchSize: Int = 128, fetch: @escaping Fetch) {
        precondition(maximumBatchesInFlight >= 1 && maximumBatchSize >= 1)
        self.maximumBatchesInFlight = maximumBatchesInFlight
        self.maximumBatchSize = maximumBatchSize
        self.fetch = fetch
    }

    /// Readers waiting for a query slot (a gauge; tests wait on it instead of sleeping).
    public var waitingReaders: Int {
        state.withLock { $0.waiting.values.reduce(0) { $0 + $1.count } }
    }

    /// The value for `key`, or nil when there is none.
    public func load(_ key: Key) async throws -> Value? {
        let waiterID = nextWaiterID.wrappingAdd(1, ordering: .relaxed).newValue
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                if Task.isCancelled {
                    continuation.resume(throwing: CancellationError())
                    return
                }
                let batch = state.withLock { state -> [Key: [Waiter]]? in
                    state.waiting[key, default: []].append(Waiter(id: waiterID, continuation: continuation))
                    return Self.takeBatchIfAllowed(&state, maximumBatchesInFlight: maximumBatchesInFlight, maximumBatchSize: maximumBatchSize)
                }
                if let batch { start(batch) }
            }
        } onCancel: {
            let waiter = state.withLock { state -> Waiter? in
                guard var waiters = state.waiting[key], let index = waiters.firstIndex(where: { $0.id == waiterID }) else { return nil }
                let waiter = waiters.remove(at: index)
                state.waiting[key] = waiters.isEmpty ? nil : waiters
                return waiter
            }
            waiter?.continuation.resume(throwing: CancellationError())
        }
    }

    private static func takeBatchIfAllowed(_ state: inout State, maximumBatchesInFlight: Int, maximumBatchSize: Int) -> [Key: [Waiter]]? {
        guard !state.waiting.isEmpty, state.batchesInFlight < maximumBatchesInFlight else { return nil }
        state.batchesInFlight += 1
        guard state.waiting.count > maximumBatchSize else {
            defer { state.waiting = [:] }
            return state.waiting
        }
        var batch: [Key: [Waiter]] = [:]
        for key in state.waiting.keys.prefix(maximumBatchSize) { batch[key] = state.waiting.removeValue(forKey: key) }
        return batch
    }

    /// Runs one batch in its own task: the query serves many readers, so no single reader's
    /// cancellation may stop it. When it ends, the readers that queued meanwhile go next.
    private func start(_ batch: [Key: [Waiter]]) {
        Task {
            var batch = batch
            while true {
                let result: Result<[Key: Value], any Error>
                do { result = .success(try await fetch(Array(batch.keys))) } catch { result = .failure(error) }
                for (key, waiters) in batch {
                    for waiter in waiters {
                        waiter.continuation.resume(with: result.map { $0[key] })
                    }
                }
                let next = state.withLock { state -> [Key: [Waiter]]? in
                    state.batchesInFlight -= 1
                    return Self.takeBatchIfAllowed(&state, maximumBatchesInFlight: maximumBatchesInFlight, maximumBatchSize: maximumBatchSize)
                }
                guard let next else { return }
                batch = next
            }
        }
    }
}
