import Foundation

public struct AccountLockoutPolicy: Sendable, Hashable {
    /// C-4: this many consecutive failures lock the account.
    public var maxFailures: Int
    /// C-4: for this long.
    public var lockoutDuration: TimeInterval
    /// a successful login after at least this many failures e-mails the user.
    public var notifyAfterFailures: Int
    /// Failures older than this (since the last one) are forgotten, so a few typos spread
    /// over months never add up to a lockout.
    public var failureMemory: TimeInterval

    public init(
        maxFailures: Int = 5,
        lockoutDuration: TimeInterval = 15 * 60,
        notifyAfterFailures: Int = 3,
        failureMemory: TimeInterval = 24 * 3_600
    ) {
        self.maxFailures = max(1, maxFailures)
        self.lockoutDuration = lockoutDuration
        self.notifyAfterFailures = max(1, notifyAfterFailures)
        self.failureMemory = failureMemory
    }
}

/// Per-account failed-login state, as stored with the user row.
public struct AccountLockoutState: Sendable, Hashable {
    public var failureCount: Int
    public var lockedUntil: Date?
    public var lastFailureAt: Date?

    public init(failureCount: Int = 0, lockedUntil: Date? = nil, lastFailureAt: Date? = nil) {
        self.failureCount = failureCount
        self.lockedUntil = lockedUntil
        self.lastFailureAt = lastFailureAt
    }

    public static let initial = AccountLockoutState()
}

/// Time-based account lockout (C-4) and the "several failures, then success" notice.
///
/// Use: before checking the password, `isLocked(state, now:)` → refuse with the same
/// response as a wrong password. After a wrong password, `recordFailure`; after a
/// right one, `recordSuccess`. A password reset (C-5) may clear the state with `.initial`.
public struct AccountLockout: Sendable {
    public struct FailureOutcome: Sendable, Hashable {
        public var state: AccountLockoutState
        /// This failure locked the account: audit-log a lockout event.
        public var justLocked: Bool
    }

    public struct SuccessOutcome: Sendable, Hashable {
        public var state: AccountLockoutState
        /// tell the user by e-mail that someone got the password wrong several times.
        public var notifyUser: Bool
        public var failuresBeforeSuccess: Int
    }

    public var policy: AccountLockoutPolicy

    public init(policy: AccountLockoutPolicy = AccountLockoutPolicy()) {
        self.policy = policy
    }

    /// Locked while `now < lockedUntil`; released at exactly `lockedUntil`. A NaN date
    /// counts as locked (fail closed).
    public func isLocked(_ state: AccountLockoutState, now: Date) -> Bool {
        guard let until = state.lockedUntil else { return false }
        // Compared as Doubles: Date's derived `>=` is `!(<)`, which is true for NaN.
        return !(until.timeIntervalSince(now) <= 0)
    }

    public func recordFailure(_ state: AccountLockoutState, now: Date) -> FailureOutcome {
        if isLocked(state, now: now) {
            // Attempts during the lock do not extend it: otherwise anyone could keep a
            // victim locked out forever by sending one bad login every 15 minutes.
            var unchanged = state
            unchanged.lastFailureAt = now
            return FailureOutcome(state: unchanged, justLocked: false)
        }
        var next = state
        let lockExpired = state.lockedUntil != nil  // was locked, and isLocked said no more
        let forgotten = state.lastFailureAt.map { !(now.timeIntervalSince($0) < policy.failureMemory) } ?? true
        if lockExpired || forgotten {
            // A served lockout or a long quiet spell starts a fresh count.
            next.failureCount = 0
            next.lockedUntil = nil
        }
        next.failureCount += 1
        next.lastFailureAt = now
        if next.failureCount >= policy.maxFailures {
            next.lockedUntil = now.addingTimeInterval(policy.lockoutDuration)
            return FailureOutcome(state: next, justLocked: true)
        }
        return FailureOutcome(state: next, justLocked: false)
    }

    /// Resets the state. Call only after `isLocked` returned false and the password was right.
    /// Failures older than `failureMemory` do not count towards the notice.
    public func recordSuccess(_ state: AccountLockoutState, now: Date) -> SuccessOutcome {
        let remembered = state.lastFailureAt.map { now.timeIntervalSince($0) < policy.failureMemory } ?? false
        let failures = remembered ? state.failureCount : 0
        return SuccessOutcome(
            state: .initial,
            notifyUser: failures >= policy.notifyAfterFailures,
            failuresBeforeSuccess: failures)
    }
}
