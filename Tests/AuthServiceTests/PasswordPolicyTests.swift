import Foundation
import Testing

@testable import AuthService
import TestSupport


@Suite("PasswordPolicy (R-6, C-3)", .timeLimit(.minutes(5)))
struct PasswordPolicyTests {
    let policy = PasswordPolicy()

    @Test(arguments: [
        "correct horse battery staple",
        "tractor mango lantern pebble",
        "My dog Rex ate 3 socks at noon",
        "Crème brûlée façade naïve",
    ])
    func longPassphrasesPass_R6(_ password: String) {
        let result = policy.evaluate(password, email: "alice.jones@example.com", fullName: "Alice Jones")
        #expect(result.isAcceptable, "violations: \(result.codes)")
        #expect(result.score >= 60)
    }

    @Test(arguments: ["Password123!", "Password2024!!", "P@ssw0rd2024!", "iloveyou12345", "sunshine2024!"])
    func commonPasswordsAreRefusedEvenDecorated_R6(_ password: String) {
        let result = policy.evaluate(password, email: nil, fullName: nil)
        #expect(!result.isAcceptable)
        #expect(result.has(.commonPassword), "violations: \(result.codes)")
        #expect(result.score < 60)
    }

    @Test(arguments: ["qwertyuiop12", "QWERTYuiop12", "1qaz2wsx3edc4rfv", "zaq1xsw2cde3", "asdfghjkl;'zx"])
    func keyboardWalksAreRefused_R6(_ password: String) {
        let result = policy.evaluate(password, email: nil, fullName: nil)
        #expect(!result.isAcceptable)
        #expect(result.has(.keyboardWalk), "violations: \(result.codes)")
    }

    @Test func repeatedCharactersAreRefused_R6() {
        let result = policy.evaluate("aaaaaaaaaaaaaa", email: nil, fullName: nil)
        #expect(result.has(.containsRepeats))
        #expect(result.has(.tooFewDistinctCharacters))
        #expect(result.has(.tooWeak))
    }

    @Test func repeatedBlocksAreRefused_R6() {
        let result = policy.evaluate("xK9#mQxK9#mQxK9#mQ", email: nil, fullName: nil)
        #expect(result.has(.containsRepeats), "violations: \(result.codes)")
        #expect(!result.isAcceptable)
    }

    @Test(arguments: ["abcdefghijklmn", "nmlkjihgfedcba", "1234567890123", "ABCDEFGHIJKLMN"])
    func sequencesAreRefused_R6(_ password: String) {
        let result = policy.evaluate(password, email: nil, fullName: nil)
        #expect(!result.isAcceptable)
        #expect(result.has(.containsSequence), "violations: \(result.codes)")
    }

    @Test(arguments: ["jonathan.smith1987", "JONATHAN.SMITH1987", "jonathan1987!!", "Kx7#jon4th4n!Qz9"])
    func emailLocalPartIsRefused_R6(_ password: String) {
        let result = policy.evaluate(password, email: "jonathan.smith@example.com", fullName: nil)
        #expect(!result.isAcceptable)
        #expect(result.has(.containsEmail), "violations: \(result.codes)")
    }

    @Test func nameTokensAreRefused_R6() {
        let password = "smithsonian-Kx7#Lq"
        let withName = policy.evaluate(password, email: nil, fullName: "Jonathan Smith")
        #expect(withName.codes == [.containsName])
        // The same password without the user's name is fine: the violation comes from the name.
        #expect(policy.evaluate(password, email: nil, fullName: nil).isAcceptable)
        // Tokens shorter than 3 characters are ignored ("Al").
        #expect(!policy.evaluate("Walrus-ocean-Kx7#", email: nil, fullName: "Al Wu").has(.containsName))
    }

    static let strong72 = "Violet tractor orbit fjord 42, Zq8!xTr4#v Lp9 Mo7$ quiet ember harbor!!?"

    @Test func seventyThreeBytesIsTooLong_C3_R6() {
        let password = Self.strong72 + "x"
        #expect(password.utf8.count == 73)
        let result = policy.evaluate(password, email: nil, fullName: nil)
        #expect(result.has(.tooLong))
        #expect(result.byteCount == 73)
        let message = result.violations.first { $0.code == .tooLong }?.message ?? ""
        #expect(message.contains("72") && message.contains("bcrypt"))
    }

    @Test func strongPasswordOfExactly72BytesPasses_C3_R6() {
        let password = Self.strong72
        #expect(password.utf8.count == 72)
        let result = policy.evaluate(password, email: nil, fullName: nil)
        #expect(result.isAcceptable, "violations: \(result.codes)")
    }

    @Test func lengthIsCountedInUTF8Bytes_R6() {
        // 25 characters, 75 bytes: too long although well under 72 characters.
        let euros = String(repeating: "€", count: 25)
        #expect(policy.evaluate(euros, email: nil, fullName: nil).has(.tooLong))
        #expect(!policy.evaluate(String(repeating: "€", count: 24), email: nil, fullName: nil).has(.tooLong))
        // 6 characters, 12 bytes: long enough. 5 characters, 10 bytes: too short.
        #expect(!policy.evaluate("ÄÖÜäöü", email: nil, fullName: nil).has(.tooShort))
        #expect(policy.evaluate("ÄÖÜäö", email: nil, fullName: nil).has(.tooShort))
        // A strong passphrase with accents and an emoji: 62 characters but 75 bytes.
        let accented = "Crème brûlée façade naïve 🦊 jalapeño smörgåsbord déjà vu, Zq8!"
        #expect(accented.count == 62)
        let result = policy.evaluate(accented, email: nil, fullName: nil)
        #expect(result.byteCount == 75)
        #expect(result.codes == [.tooLong])
        // Its first 57 characters (70 bytes) are fine.
        #expect(policy.evaluate(String(accented.prefix(57)), email: nil, fullName: nil).isAcceptable)
    }

    @Test func passwordIsJudgedExactlyAsReceived_R6() {
        // No Unicode normalisation: precomposed and decomposed "é" differ in bytes.
        let precomposed = "caf\u{E9} Zq8!xTr4#vLp"
        let decomposed = "cafe\u{301} Zq8!xTr4#vLp"
        #expect(policy.evaluate(precomposed, email: nil, fullName: nil).byteCount == precomposed.utf8.count)
        #expect(policy.evaluate(decomposed, email: nil, fullName: nil).byteCount == precomposed.utf8.count + 1)
        // No trimming: surrounding spaces count.
        #expect(policy.evaluate("  short pw  ", email: nil, fullName: nil).byteCount == 12)
        #expect(!policy.evaluate("  short pw  ", email: nil, fullName: nil).has(.tooShort))
        // No case folding of the password itself: "A" and "a" are distinct characters.
        #expect(!policy.evaluate("AaBbCcDdEeFf", email: nil, fullName: nil).has(.tooFewDistinctCharacters))
    }

    @Test func nulCharacterIsRefused_C3() {
        let result = policy.evaluate("correct horse\u{0}battery staple", email: nil, fullName: nil)
        #expect(result.has(.containsNulCharacter))
    }

    @Test func fewDistinctCharactersAreRefused_R6() {
        let result = policy.evaluate("abcbacbcabca", email: nil, fullName: nil)
        #expect(result.violations.contains(.tooFewDistinctCharacters(minimum: 8, actual: 3)))
    }

    @Test func randomLookingButShortOnEntropyIsTooWeak_R6() {
        let result = policy.evaluate("483920571638", email: nil, fullName: nil)
        #expect(result.codes == [.tooWeak])
        #expect(result.score < 60)
    }

    @Test func compositionRulesAreOffByDefaultAndConfigurable_R6() {
        let passphrase = "correct horse battery staple"
        #expect(policy.evaluate(passphrase, email: nil, fullName: nil).isAcceptable)
        let strict = PasswordPolicy(requireUppercase: true, requireLowercase: true, requireDigit: true, requireSpecial: true)
        let result = strict.evaluate("correcthorsebatterystaple", email: nil, fullName: nil)
        #expect(result.codes == [.missingUppercase, .missingDigit, .missingSpecial])
        #expect(strict.evaluate("Correct horse battery staple 9", email: nil, fullName: nil).isAcceptable)
        #expect(strict.evaluate("CORRECT HORSE BATTERY STAPLE 9", email: nil, fullName: nil).codes == [.missingLowercase])
    }

    @Test func maximumCanNeverExceedBcryptLimit_C3() {
        #expect(PasswordPolicy(maxBytes: 200).maxBytes == 72)
        #expect(PasswordPolicy(maxBytes: 64).maxBytes == 64)
    }

    @Test func violationCodesAreStableSnakeCaseAndMessagesNeverEchoInput_R6() {
        let codes = PasswordViolation.Code.allCases.map(\.rawValue)
        #expect(Set(codes).count == codes.count)
        #expect(codes.allSatisfy { $0.allSatisfy { $0.isLowercase || $0 == "_" } })
        #expect(PasswordViolation.containsSequence.code.rawValue == "contains_sequence")
        let secret = "jonathan.smith1987"
        let result = policy.evaluate(secret, email: "jonathan.smith@example.com", fullName: "Jonathan Smith")
        #expect(!result.violations.isEmpty)
        for violation in result.violations {
            #expect(!violation.message.isEmpty)
            #expect(!violation.message.lowercased().contains("jonathan"))
        }
    }

    @Test func scoreRisesWithLength_R6() {
        let short = policy.evaluate("mvtkqbzrplhx", email: nil, fullName: nil)
        let long = policy.evaluate("mvtkqbzrplhxgwdf", email: nil, fullName: nil)
        #expect(short.score >= 60)
        #expect(long.score > short.score)
    }

    /// Property test: arbitrary bytes (decoded leniently, as the RPC layer would) and
    /// arbitrary scalars never crash the evaluator and always give a sane result.
    @Test func evaluatorNeverCrashesOnRandomInput_R6() {
        var rng = SplitMix64(seed: 0xC1A0_5EED)
        for iteration in 0..<3_000 {
            let length = Int.random(in: 0...120, using: &rng)
            let password: String
            if iteration % 2 == 0 {
                let bytes = (0..<length).map { _ in UInt8.random(in: 0...255, using: &rng) }
                password = String(decoding: bytes, as: UTF8.self)
            } else {
                var scalars = String.UnicodeScalarView()
                for _ in 0..<length {
                    // Bias towards ASCII so that patterns actually occur.
                    let value = Bool.random(using: &rng)
                        ? UInt32.random(in: 0...0x7F, using: &rng) : UInt32.random(in: 0...0x10FFFF, using: &rng)
                    if let scalar = Unicode.Scalar(value) { scalars.append(scalar) }
                }
                password = String(scalars)
            }
            let email = iteration % 3 == 0 ? String(password.prefix(5)) + "@x.io" : nil
            let name = iteration % 5 == 0 ? String(password.suffix(7)) : nil
            let result = policy.evaluate(password, email: email, fullName: name)
            #expect((0...100).contains(result.score))
            #expect(result.byteCount == password.utf8.count)
            #expect(result.estimatedBits.isFinite && result.estimatedBits >= 0)
            #expect(result.has(.tooLong) == (password.utf8.count > 72))
            #expect(result.has(.tooShort) == (password.utf8.count < 12))
        }
    }

    @Test func hugeInputIsBoundedAndRefused_R6() {
        let huge = String(repeating: "Zq8!xTr4#v", count: 100_000)  // 1 MB
        let start = ContinuousClock.now
        let result = policy.evaluate(huge, email: "a@b.c", fullName: "Zq")
        #expect(result.has(.tooLong))
        #expect(ContinuousClock.now - start < .seconds(5))
    }
}

@Suite("Common password list (R-6)", .timeLimit(.minutes(5)))
struct CommonPasswordsTests {
    @Test func bundlesAtLeastTenThousandPasswords_R6() {
        #expect(CommonPasswords.all.count >= 10_000)
        #expect(CommonPasswords.all.count == CommonPasswords.generatedCount)
    }

    @Test(arguments: ["password", "123456", "qwerty", "letmein", "iloveyou", "1qaz2wsx"])
    func knownEntriesArePresent_R6(_ entry: String) {
        #expect(CommonPasswords.all.contains(entry))
        #expect(CommonPasswords.contains(entry.uppercased()))
    }

    @Test func ranksFollowFrequency_R6() {
        #expect(CommonPasswords.rank(of: "123456") == 1)
        #expect(CommonPasswords.rank(of: "password") == 2)
        #expect(CommonPasswords.all.allSatisfy { $0 == $0.lowercased() && !$0.isEmpty })
    }
}
