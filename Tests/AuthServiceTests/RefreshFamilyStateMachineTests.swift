import Foundation
import Testing

@testable import AuthService

@Suite("Refresh-token families (C-2, R-1, X-6)", .timeLimit(.minutes(5)))
struct RefreshFamilyStateMachineTests {
    let machine = RefreshFamilyStateMachine()
    let familyID = UUID()
    let successorID = UUID()
    let created = Date(timeIntervalSince1970: 1_700_000_000)
    let day: TimeInterval = 86_400

    func family(lastUsed: Date? = nil, revokedAt: Date? = nil) -> RefreshFamily {
        RefreshFamily(id: familyID, createdAt: created, lastUsedAt: lastUsed ?? created, revokedAt: revokedAt)
    }

    func token(_ state: RefreshTokenState) -> RefreshTokenRecord {
        RefreshTokenRecord(id: UUID(), familyID: familyID, state: state)
    }

    @Test func activeTokenRotates_C2_R1() {
        let now = created.addingTimeInterval(60)
        #expect(machine.decide(token: token(.active), family: family(), now: now) == .rotate)
    }

    @Test func unknownTokenIsRejected_C2() {
        let now = created.addingTimeInterval(60)
        #expect(machine.decide(token: nil, family: family(), now: now) == .reject(.unknownToken))
        #expect(machine.decide(token: token(.active), family: nil, now: now) == .reject(.unknownToken))
        let foreign = RefreshTokenRecord(id: UUID(), familyID: UUID(), state: .active)
        #expect(machine.decide(token: foreign, family: family(), now: now) == .reject(.unknownToken))
    }

    @Test(arguments: [0.0, 0.001, 2.5, 4.999])
    func reuseInsideGraceReturnsSameSuccessor_C2_R1(_ elapsed: TimeInterval) {
        let rotatedAt = created.addingTimeInterval(3_600)
        let decision = machine.decide(
            token: token(.rotated(at: rotatedAt, successorID: successorID)),
            family: family(lastUsed: rotatedAt),
            now: rotatedAt.addingTimeInterval(elapsed))
        #expect(decision == .returnExistingSuccessor(successorID: successorID))
    }

    /// The grace window is [rotatedAt, rotatedAt + 5 s): at exactly 5 s it has closed.
    @Test func reuseAtExactlyGraceBoundaryRevokesFamily_C2_R1() {
        let rotatedAt = created.addingTimeInterval(3_600)
        let decision = machine.decide(
            token: token(.rotated(at: rotatedAt, successorID: successorID)),
            family: family(lastUsed: rotatedAt),
            now: rotatedAt.addingTimeInterval(5))
        #expect(decision == .revokeFamily(reason: .reuseDetected))
    }

    @Test(arguments: [5.001, 60, 86_400])
    func reuseOutsideGraceRevokesFamily_C2_R1(_ elapsed: TimeInterval) {
        let rotatedAt = created.addingTimeInterval(3_600)
        let decision = machine.decide(
            token: token(.rotated(at: rotatedAt, successorID: successorID)),
            family: family(lastUsed: rotatedAt),
            now: rotatedAt.addingTimeInterval(elapsed))
        #expect(decision == .revokeFamily(reason: .reuseDetected))
    }

    @Test func smallClockSkewBeforeRotationCountsAsInsideGrace_R1() {
        let rotatedAt = created.addingTimeInterval(3_600)
        let rotated = token(.rotated(at: rotatedAt, successorID: successorID))
        #expect(
            machine.decide(token: rotated, family: family(lastUsed: rotatedAt), now: rotatedAt.addingTimeInterval(-4.9))
                == .returnExistingSuccessor(successorID: successorID))
        #expect(
            machine.decide(token: rotated, family: family(lastUsed: rotatedAt), now: rotatedAt.addingTimeInterval(-5))
                == .revokeFamily(reason: .reuseDetected))
    }

    @Test func reuseIsDetectedEvenWhenTheFamilyHasExpired_C2_R1() {
        let rotatedAt = created.addingTimeInterval(3_600)
        let decision = machine.decide(
            token: token(.rotated(at: rotatedAt, successorID: successorID)),
            family: family(lastUsed: rotatedAt),
            now: created.addingTimeInterval(91 * day))
        #expect(decision == .revokeFamily(reason: .reuseDetected))
    }

    @Test func revokedFamilyRejectsEveryToken_C2_R1() {
        let now = created.addingTimeInterval(60)
        let revoked = family(revokedAt: created.addingTimeInterval(30))
        #expect(machine.decide(token: token(.active), family: revoked, now: now) == .reject(.familyRevoked))
        // A stale rotated token of an already revoked family does not revoke it again.
        let stale = token(.rotated(at: created, successorID: successorID))
        #expect(machine.decide(token: stale, family: revoked, now: now) == .reject(.familyRevoked))
    }

    @Test func revokedTokenIsRejected_R1() {
        let now = created.addingTimeInterval(60)
        #expect(machine.decide(token: token(.revoked), family: family(), now: now) == .reject(.tokenRevoked))
    }

    @Test func idleTimeoutEndsSessionAtExactly30Days_X6() {
        let lastUsed = created.addingTimeInterval(10 * day)
        let f = family(lastUsed: lastUsed)
        #expect(machine.decide(token: token(.active), family: f, now: lastUsed.addingTimeInterval(30 * day - 0.001)) == .rotate)
        #expect(machine.decide(token: token(.active), family: f, now: lastUsed.addingTimeInterval(30 * day)) == .reject(.idleExpired))
    }

    @Test func absoluteLifetimeEndsSessionAtExactly90Days_X6() {
        // Used every day: never idle, still ends at 90 days.
        let end = created.addingTimeInterval(90 * day)
        let f = family(lastUsed: end.addingTimeInterval(-day))
        #expect(machine.decide(token: token(.active), family: f, now: end.addingTimeInterval(-0.001)) == .rotate)
        #expect(machine.decide(token: token(.active), family: f, now: end) == .reject(.absoluteExpired))
    }

    @Test func absoluteExpiryIsReportedBeforeIdle_X6() {
        let f = family(lastUsed: created)
        #expect(machine.decide(token: token(.active), family: f, now: created.addingTimeInterval(100 * day)) == .reject(.absoluteExpired))
    }

    @Test func graceReuseAfterAbsoluteExpiryIsRejected_X6() {
        let end = created.addingTimeInterval(90 * day)
        let rotatedAt = end.addingTimeInterval(-2)
        let decision = machine.decide(
            token: token(.rotated(at: rotatedAt, successorID: successorID)),
            family: family(lastUsed: rotatedAt),
            now: end.addingTimeInterval(1))
        #expect(decision == .reject(.absoluteExpired))
    }

    @Test func zeroGraceWindowRevokesOnAnyReuse_R1() {
        let strict = RefreshFamilyStateMachine(policy: RefreshPolicy(graceWindow: 0))
        let rotatedAt = created.addingTimeInterval(3_600)
        let decision = strict.decide(
            token: token(.rotated(at: rotatedAt, successorID: successorID)),
            family: family(lastUsed: rotatedAt),
            now: rotatedAt)
        #expect(decision == .revokeFamily(reason: .reuseDetected))
    }

    @Test func nanClockFailsClosed_X6() {
        // Evaluated outside #expect: describing a NaN Date traps inside Foundation.
        let decision = machine.decide(token: token(.active), family: family(), now: Date(timeIntervalSince1970: .nan))
        let rotated = decision == .rotate
        #expect(!rotated)
    }

    @Test func expiryIsTheEarlierOfIdleAndAbsolute_X6() {
        let policy = RefreshPolicy()
        #expect(policy.expiry(of: family(lastUsed: created)) == created.addingTimeInterval(30 * day))
        #expect(policy.expiry(of: family(lastUsed: created.addingTimeInterval(80 * day))) == created.addingTimeInterval(90 * day))
    }

    @Test func deviceBindingFlagsChangedFingerprint_R2() {
        let headers: [(name: String, value: String)] = [
            ("User-Agent", "Clau/1.0 (iPhone)"), ("Sec-CH-UA-Platform", "\"iOS\""), ("Accept", "*/*"),
        ]
        let stored = DeviceBinding.fingerprint(headers: headers)
        // Header order, case, unrelated headers and surrounding spaces do not matter.
        let reordered: [(name: String, value: String)] = [
            ("sec-ch-ua-platform", " \"iOS\" "), ("user-agent", "Clau/1.0 (iPhone)"),
        ]
        #expect(DeviceBinding.fingerprint(headers: reordered) == stored)
        let other = DeviceBinding.fingerprint(headers: [("User-Agent", "curl/8.0")])
        #expect(other != stored)
        #expect(stored.count == 64)
        #expect(DeviceBinding.isSuspiciousChange(stored: stored, presented: other))
        #expect(!DeviceBinding.isSuspiciousChange(stored: stored, presented: stored))
        #expect(!DeviceBinding.isSuspiciousChange(stored: nil, presented: other))
    }
}
