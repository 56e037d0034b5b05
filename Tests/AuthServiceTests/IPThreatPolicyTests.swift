import Crypto
import Foundation
import Testing

@testable import AuthService
import TestSupport

@Suite("Per-IP threat policy (R-4, C-4)", .timeLimit(.minutes(5)))
struct IPThreatPolicyTests {
    let policy = IPThreatPolicy()
    let t0 = Date(timeIntervalSince1970: 1_700_000_000)

    func failures(_ count: Int, endingAt end: Date, spacing: TimeInterval = 1) -> [Date] {
        (0..<count).map { end.addingTimeInterval(-Double(count - 1 - $0) * spacing) }
    }

    @Test func progressiveDelayMapping_R4() {
        let expected: [Int: TimeInterval] = [
            0: 0, 1: 1, 2: 2, 3: 5, 4: 10, 5: 30, 6: 60, 7: 300, 8: 900, 9: 900, 50: 900,
        ]
        for (count, delay) in expected {
            #expect(policy.delay(afterFailures: count) == delay, "after \(count) failures")
        }
    }

    @Test func threatLevelThresholds_R4() {
        let expected: [Int: ThreatLevel] = [
            0: .low, 4: .low, 5: .medium, 9: .medium, 10: .high, 19: .high, 20: .critical, 500: .critical,
        ]
        for (count, level) in expected {
            #expect(policy.threatLevel(failureCount: count) == level, "\(count) failures")
        }
        #expect(ThreatLevel.critical > .high && ThreatLevel.medium > .low)
        #expect(ThreatLevel.critical.description == "CRITICAL")
    }

    @Test func noFailuresIsAllowed_R4() {
        #expect(policy.decision(failures: [], now: t0) == .allowed)
    }

    @Test func firstFailureDelaysOneSecond_R4() {
        let history = [t0]
        #expect(policy.decision(failures: history, now: t0.addingTimeInterval(0.5)) == .delayed(retryAfter: t0.addingTimeInterval(1)))
        #expect(policy.decision(failures: history, now: t0.addingTimeInterval(1)) == .allowed)
    }

    @Test func delayGrowsWithFailures_R4() {
        let history = failures(4, endingAt: t0)
        #expect(policy.decision(failures: history, now: t0.addingTimeInterval(9)) == .delayed(retryAfter: t0.addingTimeInterval(10)))
        #expect(policy.decision(failures: history, now: t0.addingTimeInterval(10)) == .allowed)
    }

    @Test func fiveFailuresBlockFifteenMinutesAtMedium_R4() {
        let history = failures(5, endingAt: t0)
        let until = t0.addingTimeInterval(15 * 60)
        #expect(policy.decision(failures: history, now: t0.addingTimeInterval(60)) == .blocked(until: until, level: .medium))
        #expect(policy.decision(failures: history, now: until.addingTimeInterval(-0.001)) == .blocked(until: until, level: .medium))
        // The block runs out by itself although the failures are still in the 24 h window.
        #expect(policy.decision(failures: history, now: until) == .allowed)
    }

    @Test func tenFailuresBlockOneHourAtHigh_R4() {
        let history = failures(10, endingAt: t0)
        #expect(policy.decision(failures: history, now: t0.addingTimeInterval(1_800)) == .blocked(until: t0.addingTimeInterval(3_600), level: .high))
        #expect(policy.decision(failures: history, now: t0.addingTimeInterval(3_600)) == .allowed)
    }

    @Test func twentyFailuresBlockADayAtCritical_R4() {
        let history = failures(20, endingAt: t0)
        let until = t0.addingTimeInterval(86_400)
        #expect(policy.decision(failures: history, now: t0.addingTimeInterval(43_200)) == .blocked(until: until, level: .critical))
        #expect(policy.decision(failures: history, now: until) == .allowed)
    }

    @Test func failuresOlderThan24HoursSlideOut_R4() {
        // 6 failures 23 h ago and 4 now: 10 in the window → HIGH.
        let old = failures(6, endingAt: t0.addingTimeInterval(-23 * 3_600))
        let recent = failures(4, endingAt: t0)
        #expect(policy.threatLevel(failures: old + recent, now: t0) == .high)
        // Two hours later the old ones are out of the window: 4 left → LOW.
        #expect(policy.threatLevel(failures: old + recent, now: t0.addingTimeInterval(2 * 3_600)) == .low)
        // A failure exactly 24 h old no longer counts.
        #expect(policy.prune([t0], now: t0.addingTimeInterval(86_400)).isEmpty)
        #expect(policy.prune([t0], now: t0.addingTimeInterval(86_399.999)) == [t0])
    }

    @Test func nextFailureAfterBlockBlocksAgain_R4() {
        var history = failures(5, endingAt: t0)
        let afterBlock = t0.addingTimeInterval(15 * 60)
        #expect(policy.decision(failures: history, now: afterBlock) == .allowed)
        history.append(afterBlock)
        #expect(
            policy.decision(failures: history, now: afterBlock.addingTimeInterval(1))
                == .blocked(until: afterBlock.addingTimeInterval(15 * 60), level: .medium))
    }

    @Test func unsortedInputIsHandled_R4() {
        let history = failures(3, endingAt: t0).reversed()
        #expect(policy.decision(failures: Array(history), now: t0) == .delayed(retryAfter: t0.addingTimeInterval(5)))
        #expect(policy.prune(Array(history), now: t0) == failures(3, endingAt: t0))
    }
}

@Suite("IP hashing (R-4)", .timeLimit(.minutes(5)))
struct IPHasherTests {
    let hasher = IPHasher(key: SymmetricKey(data: Array("test-ip-key-0123456789abcdef".utf8)))

    @Test func sameAddressInDifferentSpellingsHashesAlike_R4() {
        let v4 = hasher.hash("192.0.2.1")
        for spelling in [" 192.0.2.1 ", "::ffff:192.0.2.1", "[::ffff:192.0.2.1]", "::FFFF:c000:0201"] {
            #expect(hasher.hash(spelling) == v4, "\(spelling)")
        }
        let v6 = hasher.hash("2001:db8::1")
        for spelling in ["2001:DB8::1", "2001:0db8:0000:0000:0000:0000:0000:0001", "[2001:db8::1]", "2001:db8::1%eth0"] {
            #expect(hasher.hash(spelling) == v6, "\(spelling)")
        }
    }

    @Test func hashIsKeyedLowercaseHex_R4() {
        let digest = hasher.hash("192.0.2.1")
        #expect(digest.count == 64)
        #expect(digest.allSatisfy { $0.isHexDigit && !$0.isUppercase })
        let other = IPHasher(key: SymmetricKey(data: Array("another-key-0123456789abcdefgh".utf8)))
        #expect(other.hash("192.0.2.1") != digest)
        #expect(hasher.hash("192.0.2.2") != digest)
        // Not a plain SHA-256 of the address text.
        #expect(digest != Hex.encode(SHA256.hash(data: Array("192.0.2.1".utf8))))
    }

    @Test func ipv6IsGroupedByPrefix_R4() {
        #expect(hasher.hash("2001:db8:0:0:aaaa::1") == hasher.hash("2001:db8::2"))
        #expect(hasher.hash("2001:db8:0:1::1") != hasher.hash("2001:db8::1"))
        let exact = IPHasher(key: SymmetricKey(size: .bits256), ipv6PrefixLength: 128)
        #expect(exact.hash("2001:db8::1") != exact.hash("2001:db8::2"))
    }

    @Test func normalisationFollowsRFC5952_R4() {
        let exact = IPHasher(key: SymmetricKey(size: .bits256), ipv6PrefixLength: 128)
        #expect(exact.normalize("2001:db8:0:0:1:0:0:1") == "2001:db8::1:0:0:1")
        #expect(exact.normalize("2001:0:0:1:0:0:0:1") == "2001:0:0:1::1")
        #expect(exact.normalize("2001:db8:0:1:1:1:1:1") == "2001:db8:0:1:1:1:1:1")
        #expect(exact.normalize("::") == "::")
        #expect(exact.normalize("::1") == "::1")
        #expect(exact.normalize("fe80::1%eth0") == "fe80::1")
        #expect(hasher.normalize("2001:db8:1:2:3:4:5:6") == "2001:db8:1:2::/64")
    }

    @Test func malformedAddressesAreNotMistakenForValidOnes_R4() {
        // Leading zeros could be read as octal elsewhere: not treated as 10.0.0.1.
        #expect(hasher.normalize("010.0.0.1") != "10.0.0.1")
        for junk in ["256.1.1.1", "1.2.3", "1.2.3.4.5", "1::2::3", "12345::", "::g", "", "not an ip", "1.2.3.4 "] {
            _ = hasher.hash(junk)  // never crashes
        }
        #expect(hasher.normalize("256.1.1.1") == "256.1.1.1")
        #expect(hasher.normalize(" NOT-AN-IP ") == "not-an-ip")
    }

    @Test func randomInputNeverCrashes_R4() {
        var rng = SplitMix64(seed: 7)
        let alphabet = Array("0123456789abcdefABCDEF:.[]% ")
        for _ in 0..<2_000 {
            let text = String((0..<Int.random(in: 0...50, using: &rng)).map { _ in alphabet[Int.random(in: 0..<alphabet.count, using: &rng)] })
            #expect(hasher.hash(text).count == 64)
        }
    }
}
