import Foundation
import Testing

@testable import AuthService

@Suite("Account lockout (C-4, X-6)", .timeLimit(.minutes(5)))
struct AccountLockoutTests {
    let lockout = AccountLockout()
    let t0 = Date(timeIntervalSince1970: 1_700_000_000)

    func fail(_ times: Int, from state: AccountLockoutState = .initial, start: Date, spacing: TimeInterval = 1)
        -> (state: AccountLockoutState, lockedOn: [Int])
    {
        var state = state
        var lockedOn: [Int] = []
        for i in 0..<times {
            let outcome = lockout.recordFailure(state, now: start.addingTimeInterval(Double(i) * spacing))
            state = outcome.state
            if outcome.justLocked { lockedOn.append(i + 1) }
        }
        return (state, lockedOn)
    }

    @Test func lockoutAfterFiveFailures_C4() {
        let four = fail(4, start: t0)
        #expect(four.lockedOn.isEmpty)
        #expect(!lockout.isLocked(four.state, now: t0.addingTimeInterval(4)))
        let five = fail(5, start: t0)
        #expect(five.lockedOn == [5])
        #expect(lockout.isLocked(five.state, now: t0.addingTimeInterval(5)))
        #expect(five.state.lockedUntil == t0.addingTimeInterval(4 + 15 * 60))
    }

    @Test func lockExpiresAfterFifteenMinutes_C4() throws {
        let state = fail(5, start: t0).state
        let until = try #require(state.lockedUntil)
        #expect(lockout.isLocked(state, now: until.addingTimeInterval(-0.001)))
        #expect(!lockout.isLocked(state, now: until))
    }

    @Test func failuresDuringLockDoNotExtendIt_C4() {
        let locked = fail(5, start: t0).state
        let during = fail(10, from: locked, start: t0.addingTimeInterval(60), spacing: 60)
        #expect(during.lockedOn.isEmpty)
        #expect(during.state.lockedUntil == locked.lockedUntil)
    }

    @Test func countStartsAfreshOnceLockExpired_C4() throws {
        let locked = fail(5, start: t0).state
        let after = try #require(locked.lockedUntil)
        let one = fail(1, from: locked, start: after)
        #expect(one.lockedOn.isEmpty)
        #expect(one.state.failureCount == 1)
        #expect(!lockout.isLocked(one.state, now: after.addingTimeInterval(1)))
        #expect(fail(5, from: locked, start: after).lockedOn == [5])
    }

    @Test func oldFailuresAreForgotten_C4() {
        let four = fail(4, start: t0).state
        let later = fail(1, from: four, start: t0.addingTimeInterval(25 * 3_600))
        #expect(later.state.failureCount == 1)
        #expect(later.lockedOn.isEmpty)
    }

    @Test func successResetsAndNotifiesAfterThreeFailures_X6() {
        let three = fail(3, start: t0).state
        let outcome = lockout.recordSuccess(three, now: t0.addingTimeInterval(10))
        #expect(outcome.notifyUser)
        #expect(outcome.failuresBeforeSuccess == 3)
        #expect(outcome.state == .initial)

        let two = fail(2, start: t0).state
        #expect(!lockout.recordSuccess(two, now: t0.addingTimeInterval(10)).notifyUser)
        #expect(!lockout.recordSuccess(.initial, now: t0).notifyUser)
    }

    @Test func successAfterLockExpiryNotifies_X6() throws {
        let locked = fail(5, start: t0).state
        let until = try #require(locked.lockedUntil)
        #expect(!lockout.isLocked(locked, now: until))
        let outcome = lockout.recordSuccess(locked, now: until)
        #expect(outcome.notifyUser)
        #expect(outcome.failuresBeforeSuccess == 5)
    }

    @Test func forgottenFailuresDoNotNotify_X6() {
        let three = fail(3, start: t0).state
        #expect(!lockout.recordSuccess(three, now: t0.addingTimeInterval(2 * 86_400)).notifyUser)
    }

    @Test func nanClockFailsClosed_C4() {
        let locked = fail(5, start: t0).state
        // Evaluated outside #expect: describing a NaN Date traps inside Foundation.
        let isLocked = lockout.isLocked(locked, now: Date(timeIntervalSince1970: .nan))
        #expect(isLocked)
    }

    @Test func customPolicy_C4() {
        let strict = AccountLockout(policy: AccountLockoutPolicy(maxFailures: 3, lockoutDuration: 3_600))
        var state = AccountLockoutState.initial
        var locked = false
        for i in 0..<3 {
            let outcome = strict.recordFailure(state, now: t0.addingTimeInterval(Double(i)))
            state = outcome.state
            locked = outcome.justLocked
        }
        #expect(locked)
        #expect(strict.isLocked(state, now: t0.addingTimeInterval(3_601)))
        #expect(!strict.isLocked(state, now: t0.addingTimeInterval(3_602)))
    }
}
