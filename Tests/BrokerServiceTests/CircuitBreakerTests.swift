import Testing

@testable import BrokerService

/// The breaker as a pure state machine, with the clock passed in.
@Suite("Circuit breaker", .timeLimit(.minutes(1)))
struct CircuitBreakerTests {
    let start = ContinuousClock.now

    @Test func staysClosedBelowTheThresholdAndASuccessResetsTheCount() {
        var breaker = CircuitBreaker(failureThreshold: 3, cooldown: .seconds(30))
        breaker.recordFailure(now: start)
        breaker.recordFailure(now: start)
        #expect(breaker.state == .closed(consecutiveFailures: 2))
        #expect(admit(&breaker, start))
        breaker.recordSuccess()
        breaker.recordFailure(now: start)
        breaker.recordFailure(now: start)
        #expect(breaker.state == .closed(consecutiveFailures: 2))
        #expect(admit(&breaker, start))
    }

    @Test func opensAtTheThresholdAndRefusesUntilTheCooldownEnds() {
        var breaker = CircuitBreaker(failureThreshold: 3, cooldown: .seconds(30))
        for _ in 0..<3 { breaker.recordFailure(now: start) }
        #expect(breaker.state == .open(until: start + .seconds(30)))
        #expect(!admit(&breaker, start))
        #expect(!admit(&breaker, start + .seconds(29)))
        #expect(breaker.isOpen)
    }

    @Test func afterTheCooldownExactlyOneProbeIsAdmitted() {
        var breaker = CircuitBreaker(failureThreshold: 1, cooldown: .seconds(30))
        breaker.recordFailure(now: start)
        #expect(admit(&breaker, start + .seconds(30)))
        #expect(breaker.state == .halfOpen(probeInFlight: true))
        #expect(!admit(&breaker, start + .seconds(31)))
        #expect(!admit(&breaker, start + .seconds(300)))
    }

    @Test func aSuccessfulProbeClosesTheBreaker() {
        var breaker = CircuitBreaker(failureThreshold: 2, cooldown: .seconds(30))
        breaker.recordFailure(now: start)
        breaker.recordFailure(now: start)
        #expect(admit(&breaker, start + .seconds(30)))
        breaker.recordSuccess()
        #expect(breaker.state == .closed(consecutiveFailures: 0))
        #expect(admit(&breaker, start + .seconds(30)))
        #expect(admit(&breaker, start + .seconds(30)))
    }

    @Test func aFailedProbeReopensForAnotherFullCooldown() {
        var breaker = CircuitBreaker(failureThreshold: 2, cooldown: .seconds(30))
        breaker.recordFailure(now: start)
        breaker.recordFailure(now: start)
        let probeTime = start + .seconds(31)
        #expect(admit(&breaker, probeTime))
        breaker.recordFailure(now: probeTime)
        #expect(breaker.state == .open(until: probeTime + .seconds(30)))
        #expect(!admit(&breaker, probeTime + .seconds(29)))
        #expect(admit(&breaker, probeTime + .seconds(30)))
    }

    @Test func anAbandonedProbeLetsTheNextCallProbe() {
        var breaker = CircuitBreaker(failureThreshold: 1, cooldown: .seconds(1))
        breaker.recordFailure(now: start)
        #expect(admit(&breaker, start + .seconds(1)))
        breaker.recordAbandoned()
        #expect(admit(&breaker, start + .seconds(1)))
        #expect(!admit(&breaker, start + .seconds(1)))
    }

    @Test func aLateFailureWhileOpenDoesNotExtendTheCooldown() {
        var breaker = CircuitBreaker(failureThreshold: 1, cooldown: .seconds(10))
        breaker.recordFailure(now: start)
        breaker.recordFailure(now: start + .seconds(5))
        #expect(breaker.state == .open(until: start + .seconds(10)))
    }
}

/// `admit` is mutating, which `#expect` cannot call on a captured value.
private func admit(_ breaker: inout CircuitBreaker, _ now: ContinuousClock.Instant) -> Bool {
    breaker.admit(now: now)
}

/// A deterministic "random" source: cycles through the given 64-bit values.
struct SequenceGenerator: RandomNumberGenerator {
    var values: [UInt64]
    var index = 0
    mutating func next() -> UInt64 {
        defer { index = (index + 1) % values.count }
        return values[index]
    }
}

/// Full-jitter exponential backoff: uniform in [0, min(maximum, base · 2^(n-1))].
@Suite("Retry backoff", .timeLimit(.minutes(1)))
struct BackoffTests {
    @Test func everyDelayLiesWithinTheExponentialCeilingAndTheCap() {
        var generator = SequenceGenerator(values: [0, .max, .max / 2, 12_345_678_901, .max / 3 * 2])
        let base = Duration.milliseconds(100)
        let maximum = Duration.seconds(2)
        for attempt in 1...12 {
            let ceiling = min(maximum, base * (1 << min(attempt - 1, 20)))
            for _ in 0..<5 {
                let delay = ProviderHTTP.backoff(beforeRetry: attempt, base: base, maximum: maximum, using: &generator)
                #expect(delay >= .zero)
                #expect(delay <= ceiling + .nanoseconds(1))
            }
        }
    }

    @Test func theExtremesOfTheRandomSourceReachZeroAndTheCeiling() {
        var low = SequenceGenerator(values: [0])
        #expect(ProviderHTTP.backoff(beforeRetry: 3, base: .milliseconds(100), maximum: .seconds(2), using: &low) == .zero)
        var high = SequenceGenerator(values: [.max])
        let top = ProviderHTTP.backoff(beforeRetry: 3, base: .milliseconds(100), maximum: .seconds(2), using: &high)
        // 100 ms · 2² = 400 ms, within a microsecond of rounding.
        #expect(top > .milliseconds(399) && top <= .milliseconds(400))
        var capped = SequenceGenerator(values: [.max])
        let late = ProviderHTTP.backoff(beforeRetry: 10, base: .milliseconds(100), maximum: .seconds(2), using: &capped)
        #expect(late > .milliseconds(1999) && late <= .seconds(2))
    }

    @Test func theSameRandomSourceGivesTheSameDelays() {
        var first = SequenceGenerator(values: [7, 99_999_999_999, .max / 5])
        var second = first
        for attempt in 1...4 {
            #expect(
                ProviderHTTP.backoff(beforeRetry: attempt, base: .milliseconds(50), maximum: .seconds(1), using: &first)
                    == ProviderHTTP.backoff(beforeRetry: attempt, base: .milliseconds(50), maximum: .seconds(1), using: &second)
            )
        }
    }

    @Test func aZeroBaseNeverWaits() {
        var generator = SequenceGenerator(values: [.max])
        #expect(ProviderHTTP.backoff(beforeRetry: 2, base: .zero, maximum: .seconds(1), using: &generator) == .zero)
    }
}
