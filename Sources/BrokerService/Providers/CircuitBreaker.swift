/// A per-provider circuit breaker as a pure state machine: no I/O, the clock passed in, so every
/// transition is tested directly (`CircuitBreakerTests`).
///
/// - closed: calls go through; `failureThreshold` consecutive failures open it.
/// - open(until): every call is refused at once, without reaching the provider, until `until`.
/// - halfOpen: the first `admit` after the cooldown lets exactly one probe through; its success
///   closes the breaker, its failure opens it for another cooldown. Other calls are refused while
///   the probe is in flight.
public struct CircuitBreaker: Sendable {
    public enum State: Sendable, Hashable {
        case closed(consecutiveFailures: Int)
        case open(until: ContinuousClock.Instant)
        case halfOpen(probeInFlight: Bool)
    }

    public let failureThreshold: Int
    public let cooldown: Duration
    public private(set) var state: State = .closed(consecutiveFailures: 0)

    public init(failureThreshold: Int, cooldown: Duration) {
        self.failureThreshold = max(1, failureThreshold)
        self.cooldown = cooldown
    }

    /// Whether a call may go to the provider now. Moves open → half-open once the cooldown is over
    /// and takes the single probe slot.
    public mutating func admit(now: ContinuousClock.Instant) -> Bool {
        switch state {
        case .closed:
            return true
        case .open(let until):
            guard now >= until else { return false }
            state = .halfOpen(probeInFlight: true)
            return true
        case .halfOpen(let probeInFlight):
            guard !probeInFlight else { return false }
            state = .halfOpen(probeInFlight: true)
            return true
        }
    }

    /// The provider answered (any status that is not a provider failure).
    public mutating func recordSuccess() {
        state = .closed(consecutiveFailures: 0)
    }

    /// A 5xx, 429, transport error or timeout.
    public mutating func recordFailure(now: ContinuousClock.Instant) {
        switch state {
        case .closed(let failures):
            let failures = failures + 1
            state = failures >= failureThreshold ? .open(until: now + cooldown) : .closed(consecutiveFailures: failures)
        case .halfOpen:
            state = .open(until: now + cooldown)
        case .open:
            // A call admitted before the breaker opened failed late: the breaker stays open with
            // its current deadline.
            break
        }
    }

    /// An admitted call ended without an answer either way (the caller cancelled it): a probe slot
    /// it held is given back, so the next call can probe.
    public mutating func recordAbandoned() {
        if case .halfOpen(true) = state { state = .halfOpen(probeInFlight: false) }
    }

    public var isOpen: Bool {
        if case .open = state { return true }
        return false
    }
}
