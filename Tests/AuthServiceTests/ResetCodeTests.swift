import Crypto
import Foundation
import Testing

@testable import AuthService

@Suite("Password-reset codes (C-5)", .timeLimit(.minutes(5)))
struct ResetCodeTests {
    let key = SymmetricKey(data: Array("reset-code-test-key-0123456789ab".utf8))

    @Test func codesAreSixAsciiDigitsByDefault_C5() {
        for _ in 0..<100 {
            let code = ResetCode.generate()
            #expect(code.utf8.count == 6)
            #expect(code.utf8.allSatisfy { $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") })
        }
        #expect(ResetCode.generate(digits: 8).count == 8)
        #expect(ResetCode.generate(digits: 4).count == 6)  // never fewer than 6
        #expect(ResetCode.generate(digits: 100).count == 18)
    }

    @Test func rejectionSamplingDiscardsBiasedBytes_C5() {
        // Bytes 250...255 would favour 0–5 under `% 10`: they must be skipped.
        var chunks: [[UInt8]] = [[250, 251, 252, 253, 254, 255, 0, 9], [19, 249, 123, 7, 255, 255]]
        let code = ResetCode.generate(digits: 6) { _ in chunks.isEmpty ? [1] : chunks.removeFirst() }
        #expect(code == "099937")
    }

    @Test func digitsAreRoughlyUniform_C5() {
        var counts = [Int](repeating: 0, count: 10)
        for _ in 0..<10_000 {
            for byte in ResetCode.generate().utf8 { counts[Int(byte - UInt8(ascii: "0"))] += 1 }
        }
        // 60,000 digits, 6,000 expected each; ±10 % is about 8 standard deviations.
        for count in counts { #expect((5_400...6_600).contains(count), "\(counts)") }
    }

    @Test func storedValueIsKeyedHMACBoundToContext_C5() {
        let stored = ResetCode.hmac("123456", key: key, context: "user-1")
        #expect(stored.count == 64 && stored.allSatisfy { $0.isHexDigit && !$0.isUppercase })
        #expect(!stored.contains("123456"))
        #expect(ResetCode.hmac("123456", key: key, context: "user-1") == stored)
        #expect(ResetCode.hmac("123456", key: key, context: "user-2") != stored)
        #expect(ResetCode.hmac("123457", key: key, context: "user-1") != stored)
        #expect(ResetCode.hmac("123456", key: SymmetricKey(size: .bits256), context: "user-1") != stored)
    }

    @Test func verifyAcceptsOnlyTheRightCode_C5() {
        let stored = ResetCode.hmac("042137", key: key, context: "user-1")
        #expect(ResetCode.verify("042137", storedHMAC: stored, key: key, context: "user-1"))
        #expect(ResetCode.verify("042137", storedHMAC: stored.uppercased(), key: key, context: "user-1"))
        #expect(!ResetCode.verify("042138", storedHMAC: stored, key: key, context: "user-1"))
        #expect(!ResetCode.verify("042137", storedHMAC: stored, key: key, context: "user-2"))
        for malformed in ["", "42137", "04213a", " 042137", "０４２１３７", "042137\n"] {
            #expect(!ResetCode.verify(malformed, storedHMAC: stored, key: key, context: "user-1"))
        }
    }

    @Test func codeExpiresAtExactlyTenMinutes_C5() {
        let policy = ResetCodePolicy()
        let issued = Date(timeIntervalSince1970: 1_700_000_000)
        #expect(policy.checkAttempt(issuedAt: issued, attemptsSoFar: 0, used: false, now: issued.addingTimeInterval(599.999)) == .allowed)
        #expect(policy.checkAttempt(issuedAt: issued, attemptsSoFar: 0, used: false, now: issued.addingTimeInterval(600)) == .expired)
    }

    @Test func atMostFiveAttemptsPerCode_C5() {
        let policy = ResetCodePolicy()
        let issued = Date(timeIntervalSince1970: 1_700_000_000)
        let now = issued.addingTimeInterval(60)
        #expect(policy.checkAttempt(issuedAt: issued, attemptsSoFar: 4, used: false, now: now) == .allowed)
        #expect(policy.checkAttempt(issuedAt: issued, attemptsSoFar: 5, used: false, now: now) == .tooManyAttempts)
        #expect(policy.checkAttempt(issuedAt: issued, attemptsSoFar: 0, used: true, now: now) == .alreadyUsed)
    }

    @Test func dailyCapPerAccount_C5() {
        let policy = ResetCodePolicy()
        #expect(policy.dailyCapPerAccount == 5)
        #expect(policy.mayIssue(codesIssuedLast24h: 4))
        #expect(!policy.mayIssue(codesIssuedLast24h: 5))
        #expect(ResetCodePolicy(digits: 3).digits == 6)
    }
}
