import ClauDatabase
import Synchronization
import Testing

/// A fetch that records each batch and holds it until released, so tests decide when a
/// "query" ends.
private final class GatedFetch: Sendable {
    private struct State {
        var batches: [[Int]] = []
        var gates: [CheckedContinuation<Void, Never>] = []
        var failNext = false
    }
    private let state = Mutex(State())

    var batches: [[Int]] { state.withLock { $0.batches } }
    var heldQueries: Int { state.withLock { $0.gates.count } }

    func failNextQuery() { state.withLock { $0.failNext = true } }

    func fetch(_ keys: [Int]) async throws -> [Int: String] {
        await withCheckedContinuation { gate in
            state.withLock { $0.batches.append(keys.sorted()); $0.gates.append(gate) }
        }
        if state.withLock({ state in defer { state.failNext = false }; return state.failNext }) {
            throw FetchFailed()
        }
        // Odd keys have a row, even keys none.
        return Dictionary(uniqueKeysWithValues: keys.filter { $0 % 2 == 1 }.map { ($0, "row \($0)") })
    }

    func releaseOne() {
        let gate = state.withLock { $0.gates.isEmpty ? nil : $0.gates.removeFirst() }
        gate?.resume()
    }

    func waitForHeldQueries(_ count: Int) async {
        while heldQueries < count { await Task.yield(); try? await Task.sleep(for: .milliseconds(1)) }
    }
}

private struct FetchFailed: Error {}

/// Readers queue on their own tasks: wait until they have (at most 10 s), rather than sleep and
/// hope.
private func waitUntil(_ condition: () -> Bool) async {
    let deadline = ContinuousClock.now + .seconds(10)
    while !condition() && ContinuousClock.now < deadline { await Task.yield(); try? await Task.sleep(for: .milliseconds(1)) }
}

@Suite("BatchedLookup: concurrent point reads share one query", .timeLimit(.minutes(5)))
struct BatchedLookupTests {
    @Test func aLoneReadRunsItsQueryAtOnce() async throws {
        let fetch = GatedFetch()
        let lookup = BatchedLookup<Int, String>(maximumBatchesInFlight: 1) { try await fetch.fetch($0) }
        async let value = lookup.load(7)
        await fetch.waitForHeldQueries(1)
        fetch.releaseOne()
        #expect(try await value == "row 7")
        #expect(fetch.batches == [[7]])
    }

    @Test func readsArrivingDuringAQueryShareTheNextOneAndEachGetsItsOwnRow() async throws {
        let fetch = GatedFetch()
        let lookup = BatchedLookup<Int, String>(maximumBatchesInFlight: 1) { try await fetch.fetch($0) }
        try await withThrowingTaskGroup(of: (Int, String?).self) { group in
            group.addTask { (1, try await lookup.load(1)) }
            await fetch.waitForHeldQueries(1)
            // Nine more readers (key 3 twice) queue behind the running query.
            for key in [2, 3, 3, 4, 5, 6, 7, 8, 9] {
                group.addTask { (key, try await lookup.load(key)) }
            }
            await waitUntil { lookup.waitingReaders == 9 }
            #expect(fetch.heldQueries == 1, "nobody else may start a query while the limit is reached")
            fetch.releaseOne()
            await fetch.waitForHeldQueries(1)
            fetch.releaseOne()
            var results: [(Int, String?)] = []
            for try await result in group { results.append(result) }
            #expect(results.count == 10)
            for (key, value) in results {
                #expect(value == (key % 2 == 1 ? "row \(key)" : nil), "key \(key)")
            }
        }
        #expect(fetch.batches == [[1], [2, 3, 4, 5, 6, 7, 8, 9]], "distinct keys, two queries for ten reads")
    }

    @Test func batchesAreCappedAtTheMaximumSize() async throws {
        let fetch = GatedFetch()
        let lookup = BatchedLookup<Int, String>(maximumBatchesInFlight: 1, maximumBatchSize: 3) { try await fetch.fetch($0) }
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { _ = try await lookup.load(100) }
            await fetch.waitForHeldQueries(1)
            for key in 1...7 { group.addTask { _ = try await lookup.load(key) } }
            await waitUntil { lookup.waitingReaders == 7 }
            for _ in 0..<4 {
                await fetch.waitForHeldQueries(1)
                fetch.releaseOne()
            }
            try await group.waitForAll()
        }
        #expect(fetch.batches.map(\.count) == [1, 3, 3, 1])
        #expect(Set(fetch.batches.dropFirst().joined()) == Set(1...7))
    }

    @Test func aFailedQueryFailsOnlyItsOwnBatch() async throws {
        let fetch = GatedFetch()
        let lookup = BatchedLookup<Int, String>(maximumBatchesInFlight: 1) { try await fetch.fetch($0) }
        fetch.failNextQuery()
        let failing = Task { try await lookup.load(1) }
        await fetch.waitForHeldQueries(1)
        async let queued = lookup.load(3)
        await waitUntil { lookup.waitingReaders == 1 }
        fetch.releaseOne()
        await #expect(throws: FetchFailed.self) { try await failing.value }
        await fetch.waitForHeldQueries(1)
        fetch.releaseOne()
        #expect(try await queued == "row 3")
    }

    @Test func aCancelledWaitingReaderLeavesAtOnceAndTheOthersStillGetTheirRows() async throws {
        let fetch = GatedFetch()
        let lookup = BatchedLookup<Int, String>(maximumBatchesInFlight: 1) { try await fetch.fetch($0) }
        async let first = lookup.load(1)
        await fetch.waitForHeldQueries(1)
        let cancelled = Task { try await lookup.load(5) }
        let other = Task { try await lookup.load(7) }
        await waitUntil { lookup.waitingReaders == 2 }
        cancelled.cancel()
        await #expect(throws: CancellationError.self) { try await cancelled.value }
        fetch.releaseOne()
        #expect(try await first == "row 1")
        await fetch.waitForHeldQueries(1)
        fetch.releaseOne()
        #expect(try await other.value == "row 7")
        #expect(fetch.batches == [[1], [7]], "the cancelled key is not queried")
    }
}
