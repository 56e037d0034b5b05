import Crypto
import Testing

@testable import RateLimiting

@Suite("In-process rate limiter", .timeLimit(.minutes(5)))
struct InProcessRateLimiterTests {
    let rule = RateLimitRule(name: "test", limit: 5, window: .seconds(60))  // T = 12 s

    @Test func limitIsExact_C9() async throws {
        let clock = ManualClock()
        let limiter = InProcessRateLimiter(clock: clock)
        var decisions: [RateLimitDecision] = []
        for _ in 0..<6 { decisions.append(try await limiter.check(rule, key: "client-1")) }
        #expect(decisions.prefix(5).allSatisfy { $0.allowed })
        #expect(decisions.prefix(5).map(\.remaining) == [4, 3, 2, 1, 0])
        #expect(decisions.prefix(5).allSatisfy { $0.retryAfter == nil && $0.limit == 5 })
        let denied = decisions[5]
        #expect(!denied.allowed)
        #expect(denied.remaining == 0)
        #expect(denied.retryAfter == .seconds(12))
        #expect(denied.resetAfter == .seconds(60))
    }

    @Test func specCategoriesAllowExactlyTheirLimit_C9() async throws {
        let rules: [RateLimitRule] = [.read, .write, .sensitive, .highRisk, .login, .register, .refresh]
        #expect(rules.map(\.limit) == [60, 30, 10, 5, 5, 3, 20])
        #expect(rules.map(\.window) == [.seconds(60), .seconds(60), .seconds(60), .seconds(60), .seconds(300), .seconds(3600), .seconds(60)])
        let limiter = InProcessRateLimiter(clock: ManualClock())
        for rule in rules {
            var allowed = 0
            for _ in 0..<(rule.limit * 2) where try await limiter.check(rule, key: "ip+account").allowed { allowed += 1 }
            #expect(allowed == rule.limit, "rule \(rule.name)")
            let denied = try await limiter.check(rule, key: "ip+account")
            #expect(denied.retryAfter == rule.window / rule.limit, "rule \(rule.name)")
        }
    }

    @Test func replenishesWithTime_C9() async throws {
        let clock = ManualClock()
        let limiter = InProcessRateLimiter(clock: clock)
        for _ in 0..<5 { #expect(try await limiter.check(rule, key: "k").allowed) }
        #expect(try await !limiter.check(rule, key: "k").allowed)

        clock.advance(by: .seconds(11))
        let early = try await limiter.check(rule, key: "k")
        #expect(!early.allowed)
        #expect(early.retryAfter == .seconds(1))

        clock.advance(by: .seconds(1))
        let one = try await limiter.check(rule, key: "k")
        #expect(one.allowed)
        #expect(one.remaining == 0)
        #expect(try await !limiter.check(rule, key: "k").allowed)

        // After a full window the whole budget is back.
        clock.advance(by: .seconds(60))
        var allowed = 0
        for _ in 0..<10 where try await limiter.check(rule, key: "k").allowed { allowed += 1 }
        #expect(allowed == 5)
    }

    @Test func deniedRequestsDoNotConsumeBudget_C9() async throws {
        let clock = ManualClock()
        let limiter = InProcessRateLimiter(clock: clock)
        for _ in 0..<5 { _ = try await limiter.check(rule, key: "k") }
        for _ in 0..<100 {
            let decision = try await limiter.check(rule, key: "k")
            #expect(!decision.allowed)
            #expect(decision.retryAfter == .seconds(12))
        }
        clock.advance(by: .seconds(12))
        #expect(try await limiter.check(rule, key: "k").allowed)
        #expect(try await !limiter.check(rule, key: "k").allowed)
    }

    @Test func keysAndRulesAreIndependent_C9() async throws {
        let limiter = InProcessRateLimiter(clock: ManualClock())
        let other = RateLimitRule(name: "other", limit: 5, window: .seconds(60))
        for _ in 0..<5 { _ = try await limiter.check(rule, key: "a") }
        #expect(try await !limiter.check(rule, key: "a").allowed)
        #expect(try await limiter.check(rule, key: "b").allowed)
        #expect(try await limiter.check(other, key: "a").allowed)
        #expect(try await limiter.check(other, key: "a").remaining == 3)
    }

    @Test func remainingAndResetValues() async throws {
        let clock = ManualClock()
        let limiter = InProcessRateLimiter(clock: clock)
        let first = try await limiter.check(rule, key: "k")
        #expect(first == RateLimitDecision(allowed: true, limit: 5, remaining: 4, resetAfter: .seconds(12), retryAfter: nil))
        let second = try await limiter.check(rule, key: "k")
        #expect(second.remaining == 3)
        #expect(second.resetAfter == .seconds(24))
        clock.advance(by: .seconds(6))
        let third = try await limiter.check(rule, key: "k")
        // 24 - 6 + 12 = 30 s of budget used → ceil(30/12) = 3 used.
        #expect(third.resetAfter == .seconds(30))
        #expect(third.remaining == 2)
        clock.advance(by: .seconds(30))
        let fresh = try await limiter.check(rule, key: "k")
        #expect(fresh.remaining == 4)
        #expect(fresh.resetAfter == .seconds(12))
    }

    @Test func memoryIsBoundedAndReplenishedKeysAreDropped() async throws {
        let clock = ManualClock()
        let limiter = InProcessRateLimiter(clock: clock, maximumKeys: 100)
        for i in 0..<1000 { _ = try await limiter.check(rule, key: "client-\(i)") }
        #expect(limiter.keyCount == 100)
        #expect(limiter.evictions == 900)
        // The most recently used keys are the ones kept.
        #expect(try await limiter.check(rule, key: "client-999").remaining == 3)
        #expect(try await limiter.check(rule, key: "client-0").remaining == 4)

        // Once budgets are replenished, keys are dropped as new decisions happen.
        clock.advance(by: .seconds(61))
        for _ in 0..<60 { _ = try await limiter.check(rule, key: "new") }
        #expect(limiter.keyCount == 1)
        #expect(limiter.evictions == 901)  // 900 + client-0 coming back into a full table
    }

    @Test func concurrentChecksAllowExactlyTheLimit_C9() async throws {
        let limiter = InProcessRateLimiter(clock: ManualClock())
        let rule = RateLimitRule(name: "write", limit: 30, window: .seconds(60))
        let allowed = try await withThrowingTaskGroup(of: Bool.self) { group in
            for _ in 0..<1000 { group.addTask { try await limiter.check(rule, key: "same-client").allowed } }
            var count = 0
            for try await allowed in group where allowed { count += 1 }
            return count
        }
        #expect(allowed == 30)
    }

    @Test func realClockWorks() async throws {
        let limiter = InProcessRateLimiter()
        let rule = RateLimitRule(name: "fast", limit: 2, window: .milliseconds(200))
        #expect(try await limiter.check(rule, key: "k").allowed)
        #expect(try await limiter.check(rule, key: "k").allowed)
        let denied = try await limiter.check(rule, key: "k")
        #expect(!denied.allowed)
        try await Task.sleep(for: denied.retryAfter! + .milliseconds(5))
        #expect(try await limiter.check(rule, key: "k").allowed)
    }

    @Test func longKeysAreCappedByHashing() async throws {
        let long = String(repeating: "x", count: 10_000)
        let stored = RateLimitKey.storageKey(rule: rule, key: long)
        #expect(stored.utf8.count == "test:sha256:".utf8.count + 64)
        #expect(RateLimitKey.storageKey(rule: rule, key: long + "y") != stored)
        #expect(RateLimitKey.storageKey(rule: rule, key: "1.2.3.4|alice") == "test:1.2.3.4|alice")
        let exact = String(repeating: "z", count: RateLimitKey.maximumRawKeyLength)
        #expect(RateLimitKey.storageKey(rule: rule, key: exact) == "test:" + exact)

        let limiter = InProcessRateLimiter(clock: ManualClock())
        for _ in 0..<5 { _ = try await limiter.check(rule, key: long) }
        #expect(try await !limiter.check(rule, key: long).allowed)
        #expect(try await limiter.check(rule, key: long + "y").allowed)
    }

    @Test func sha256MatchesStandardVectors() {
        #expect(SHA256.hexDigest([]) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        #expect(SHA256.hexDigest(Array("abc".utf8)) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        #expect(
            SHA256.hexDigest(Array("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8))
                == "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
        #expect(
            SHA256.hexDigest(Array(repeating: UInt8(ascii: "a"), count: 1_000_000))
                == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0")
    }

    @Test func extremeRulesDoNotOverflow() async throws {
        let limiter = InProcessRateLimiter(clock: ManualClock())
        var huge = RateLimitRule(name: "huge", limit: 1, window: .seconds(1))
        huge.limit = Int.max
        huge.window = .seconds(Int64.max / 2)
        let decision = try await limiter.check(huge, key: "k")
        #expect(decision.allowed)
        #expect(decision.limit == GCRA.maximumLimit)
        var tiny = RateLimitRule(name: "tiny", limit: 1, window: .seconds(1))
        tiny.limit = 0
        tiny.window = .nanoseconds(1)
        #expect(try await limiter.check(tiny, key: "k").allowed)
    }

    @Test func emissionIntervalRoundsUp() {
        // 60 s / 7 is not whole: T rounds up, so the sustained rate never exceeds limit/window.
        let t = GCRA.emissionInterval(limit: 7, windowMicros: 60_000_000)
        #expect(t == 8_571_429)
        var tat: Int64? = nil
        var allowed = 0
        for _ in 0..<20 {
            let o = GCRA.decide(now: 0, storedTAT: tat, limit: 7, windowMicros: 60_000_000)
            if let n = o.newTAT { tat = n; allowed += 1 }
        }
        #expect(allowed == 7)
    }
}
