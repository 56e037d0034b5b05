import Synchronization

/// A monotonic clock for ``InProcessRateLimiter``; inject a manual one in tests.
public protocol RateLimiterClock: Sendable {
    /// Monotonic time elapsed since an arbitrary, fixed origin.
    func now() -> Duration
}

/// The default clock: `ContinuousClock` (monotonic, keeps counting while the machine sleeps).
public struct ContinuousRateLimiterClock: RateLimiterClock {
    private let origin: ContinuousClock.Instant

    /// Creates the clock; its origin is the moment of creation.
    public init() { self.origin = ContinuousClock.now }

    public func now() -> Duration { origin.duration(to: ContinuousClock.now) }
}

/// A rate limiter for a single edge: GCRA state in this process's memory.
///
/// - Thread-safe: one `Mutex` around the state; each decision is O(1) (a hash lookup plus
///   constant work on an intrusive LRU list).
/// - Bounded memory: at most `maximumKeys` keys are stored (each one timestamp plus its key,
///   keys capped to 128 bytes, see the module README). Keys whose budget is fully replenished are
///   dropped as they reach the old end of the LRU list (a key that is fully replenished is
///   indistinguishable from an unknown key, so dropping it changes no decision). When the table is
///   full and a new key arrives, the least recently *used* key is evicted even if its budget is not
///   replenished: that client's budget resets early. Size `maximumKeys` so that this does not happen
///   in normal operation (each entry is ~100–250 bytes); ``evictions`` counts it happening.
public final class InProcessRateLimiter: RateLimiter, Sendable {
    private let clock: any RateLimiterClock
    private let store: Mutex<LRUStore>
    /// The most keys kept in memory.
    public let maximumKeys: Int

    /// Creates a limiter.
    /// - Parameters:
    ///   - clock: monotonic time source; defaults to ``ContinuousRateLimiterClock``.
    ///   - maximumKeys: the most keys kept in memory (>= 1); default 100 000.
    public init(clock: any RateLimiterClock = ContinuousRateLimiterClock(), maximumKeys: Int = 100_000) {
        precondition(maximumKeys >= 1, "maximumKeys must be >= 1")
        self.clock = clock
        self.maximumKeys = maximumKeys
        self.store = Mutex(LRUStore())
    }

    public func check(_ rule: RateLimitRule, key: String) async throws -> RateLimitDecision {
        self.checkSync(rule, key: key)
    }

    /// The synchronous core of ``check(_:key:)``.
    public func checkSync(_ rule: RateLimitRule, key: String) -> RateLimitDecision {
        let storageKey = RateLimitKey.storageKey(rule: rule, key: key)
        let windowMicros = rule.window.ceilMicroseconds
        let maximumKeys = self.maximumKeys
        return self.store.withLock { store in
            // Read the clock under the lock so decisions are ordered by time.
            let now = self.clock.now().floorMicroseconds
            store.dropReplenished(now: now, budget: 2)
            if let slot = store.slot(for: storageKey) {
                let outcome = GCRA.decide(now: now, storedTAT: store.tat(at: slot), limit: rule.limit, windowMicros: windowMicros)
                if let newTAT = outcome.newTAT { store.setTAT(newTAT, at: slot) }
                store.touch(slot)
                return RateLimitDecision(outcome, limit: rule.limit)
            }
            let outcome = GCRA.decide(now: now, storedTAT: nil, limit: rule.limit, windowMicros: windowMicros)
            if let newTAT = outcome.newTAT {
                if store.count >= maximumKeys { store.evictLeastRecentlyUsed() }
                store.insert(storageKey, tat: newTAT)
            }
            return RateLimitDecision(outcome, limit: rule.limit)
        }
    }

    /// Number of keys currently stored.
    public var keyCount: Int { store.withLock { $0.count } }

    /// How many keys were evicted before their budget was replenished because the table was full.
    public var evictions: Int { store.withLock { $0.evictions } }
}

extension Duration {
    /// Whole microseconds, rounded down.
    var floorMicroseconds: Int64 {
        let (seconds, attoseconds) = self.components
        var micros = attoseconds / 1_000_000_000_000
        if attoseconds < 0, attoseconds % 1_000_000_000_000 != 0 { micros -= 1 }
        return seconds &* 1_000_000 &+ micros
    }
}

/// Key → TAT table with an intrusive doubly-linked LRU list over array slots; all operations O(1).
struct LRUStore {
    private struct Node {
        var key: String
        var tat: Int64
        var prev: Int
        var next: Int
    }

    private var index: [String: Int] = [:]
    private var nodes: [Node] = []
    private var freeSlots: [Int] = []
    /// Least recently used end.
    private var head = -1
    /// Most recently used end.
    private var tail = -1
    private(set) var evictions = 0

    var count: Int { index.count }

    func slot(for key: String) -> Int? { index[key] }
    func tat(at slot: Int) -> Int64 { nodes[slot].tat }
    mutating func setTAT(_ tat: Int64, at slot: Int) { nodes[slot].tat = tat }

    mutating func touch(_ slot: Int) {
        guard slot != tail else { return }
        unlink(slot)
        append(slot)
    }

    mutating func insert(_ key: String, tat: Int64) {
        let slot: Int
        if let free = freeSlots.popLast() {
            slot = free
            nodes[slot] = Node(key: key, tat: tat, prev: -1, next: -1)
        } else {
            slot = nodes.count
            nodes.append(Node(key: key, tat: tat, prev: -1, next: -1))
        }
        index[key] = slot
        append(slot)
    }

    /// Removes up to `budget` fully replenished keys from the least recently used end.
    mutating func dropReplenished(now: Int64, budget: Int) {
        var left = budget
        while left > 0, head >= 0, nodes[head].tat <= now {
            remove(head)
            left -= 1
        }
    }

    mutating func evictLeastRecentlyUsed() {
        guard head >= 0 else { return }
        evictions += 1
        remove(head)
    }

    private mutating func remove(_ slot: Int) {
        unlink(slot)
        index.removeValue(forKey: nodes[slot].key)
        nodes[slot].key = ""
        freeSlots.append(slot)
    }

    private mutating func unlink(_ slot: Int) {
        let prev = nodes[slot].prev
        let next = nodes[slot].next
        if prev >= 0 { nodes[prev].next = next } else { head = next }
        if next >= 0 { nodes[next].prev = prev } else { tail = prev }
        nodes[slot].prev = -1
        nodes[slot].next = -1
    }

    private mutating func append(_ slot: Int) {
        nodes[slot].prev = tail
        nodes[slot].next = -1
        if tail >= 0 { nodes[tail].next = slot } else { head = slot }
        tail = slot
    }
}
