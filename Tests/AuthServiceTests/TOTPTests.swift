import Foundation
import Testing

@testable import AuthService
import TestSupport

@Suite("TOTP (X-5, RFC 6238)", .timeLimit(.minutes(5)))
struct TOTPTests {
    static let sha1Seed = Array("12345678901234567890".utf8)
    static let sha256Seed = Array("12345678901234567890123456789012".utf8)
    static let sha512Seed = Array("1234567890123456789012345678901234567890123456789012345678901234".utf8)

    struct Vector: Sendable, CustomTestStringConvertible {
        let time: TimeInterval
        let algorithm: TOTP.Algorithm
        let code: String
        var testDescription: String { "\(algorithm.rawValue) @ \(Int64(time))" }
    }

    /// RFC 6238 Appendix B, every row.
    static let vectors: [Vector] = [
        .init(time: 59, algorithm: .sha1, code: "94287082"),
        .init(time: 59, algorithm: .sha256, code: "46119246"),
        .init(time: 59, algorithm: .sha512, code: "90693936"),
        .init(time: 1_111_111_109, algorithm: .sha1, code: "07081804"),
        .init(time: 1_111_111_109, algorithm: .sha256, code: "68084774"),
        .init(time: 1_111_111_109, algorithm: .sha512, code: "25091201"),
        .init(time: 1_111_111_111, algorithm: .sha1, code: "14050471"),
        .init(time: 1_111_111_111, algorithm: .sha256, code: "67062674"),
        .init(time: 1_111_111_111, algorithm: .sha512, code: "99943326"),
        .init(time: 1_234_567_890, algorithm: .sha1, code: "89005924"),
        .init(time: 1_234_567_890, algorithm: .sha256, code: "91819424"),
        .init(time: 1_234_567_890, algorithm: .sha512, code: "93441116"),
        .init(time: 2_000_000_000, algorithm: .sha1, code: "69279037"),
        .init(time: 2_000_000_000, algorithm: .sha256, code: "90698825"),
        .init(time: 2_000_000_000, algorithm: .sha512, code: "38618901"),
        .init(time: 20_000_000_000, algorithm: .sha1, code: "65353130"),
        .init(time: 20_000_000_000, algorithm: .sha256, code: "77737706"),
        .init(time: 20_000_000_000, algorithm: .sha512, code: "47863826"),
    ]

    static func seed(for algorithm: TOTP.Algorithm) -> [UInt8] {
        switch algorithm {
        case .sha1: sha1Seed
        case .sha256: sha256Seed
        case .sha512: sha512Seed
        }
    }

    static func sixDigit() throws -> TOTP { try TOTP(secret: sha1Seed) }

    @Test(arguments: vectors)
    func totpRFC6238Vectors_X5(_ vector: Vector) throws {
        let totp = try TOTP(secret: Self.seed(for: vector.algorithm), algorithm: vector.algorithm, digits: 8)
        let date = Date(timeIntervalSince1970: vector.time)
        #expect(totp.code(at: date) == vector.code)
        #expect(totp.verify(code: vector.code, at: date, lastUsedStep: nil).isValid)
    }

    @Test func defaultsAreSHA1SixDigitsThirtySeconds_X5() throws {
        let totp = try Self.sixDigit()
        #expect(totp.algorithm == .sha1 && totp.digits == 6 && totp.period == 30)
        // Same HOTP value as the 8-digit vector, truncated to its last 6 digits.
        #expect(totp.code(at: Date(timeIntervalSince1970: 59)) == "287082")
        #expect(totp.code(at: Date(timeIntervalSince1970: 1_111_111_109)) == "081804")
    }

    @Test func stepBoundaries_X5() throws {
        let totp = try Self.sixDigit()
        #expect(totp.step(at: Date(timeIntervalSince1970: 29.999)) == 0)
        #expect(totp.step(at: Date(timeIntervalSince1970: 30)) == 1)
        #expect(totp.step(at: Date(timeIntervalSince1970: 1_111_111_109)) == 37_037_036)
    }

    @Test func oneStepEitherSideIsAccepted_X5() throws {
        let totp = try Self.sixDigit()
        let now = Date(timeIntervalSince1970: 1_234_567_890)
        let step = try #require(totp.step(at: now))
        for offset in [-30.0, 0, 30] {
            let code = try #require(totp.code(at: now.addingTimeInterval(offset)))
            #expect(totp.verify(code: code, at: now, lastUsedStep: nil) == .valid(step: UInt64(Int64(step) + Int64(offset / 30))))
        }
    }

    @Test func twoStepsAwayIsRejected_X5() throws {
        let totp = try Self.sixDigit()
        let now = Date(timeIntervalSince1970: 1_234_567_890)
        for offset in [-60.0, 60, -90, 90] {
            let code = try #require(totp.code(at: now.addingTimeInterval(offset)))
            // Guard against a chance collision with an accepted step making the test vacuous.
            let accepted = try [-30.0, 0, 30].map { try #require(totp.code(at: now.addingTimeInterval($0))) }
            try #require(!accepted.contains(code))
            #expect(totp.verify(code: code, at: now, lastUsedStep: nil) == .invalid)
        }
    }

    @Test func replayOfUsedStepIsRejected_X5() throws {
        let totp = try Self.sixDigit()
        let now = Date(timeIntervalSince1970: 1_234_567_890)
        let code = try #require(totp.code(at: now))
        guard case let .valid(step) = totp.verify(code: code, at: now, lastUsedStep: nil) else {
            Issue.record("first use must be valid")
            return
        }
        // Same code again, 10 s later, after the caller stored `step`.
        #expect(totp.verify(code: code, at: now.addingTimeInterval(10), lastUsedStep: step) == .replayed(step: step))
        // An older code (previous step, still in tolerance) is also refused once a newer one was used.
        let previous = try #require(totp.code(at: now.addingTimeInterval(-30)))
        #expect(totp.verify(code: previous, at: now, lastUsedStep: step) == .replayed(step: step - 1))
        // The next step's code works.
        let next = try #require(totp.code(at: now.addingTimeInterval(30)))
        #expect(totp.verify(code: next, at: now.addingTimeInterval(30), lastUsedStep: step) == .valid(step: step + 1))
    }

    @Test(arguments: ["", "12345", "1234567", "28708a", " 287082", "287082 ", "２８７０８２", "-28708"])
    func malformedCodesAreRejected_X5(_ code: String) throws {
        let totp = try Self.sixDigit()
        #expect(totp.verify(code: code, at: Date(timeIntervalSince1970: 59), lastUsedStep: nil) == .invalid)
    }

    @Test func outOfRangeClockNeverCrashes_X5() throws {
        let totp = try Self.sixDigit()
        for seconds in [-1.0, -1e20, .infinity, -.infinity, .nan, 1e30] {
            // Evaluated outside #expect: describing a NaN Date traps inside Foundation.
            let date = Date(timeIntervalSince1970: seconds)
            let codeIsNil = totp.code(at: date) == nil
            let rejected = totp.verify(code: "287082", at: date, lastUsedStep: nil) == .invalid
            #expect(codeIsNil, "\(seconds)")
            #expect(rejected, "\(seconds)")
        }
        // Step 0 has no previous step: tolerance must not underflow.
        let first = try #require(totp.code(at: Date(timeIntervalSince1970: 0)))
        #expect(totp.verify(code: first, at: Date(timeIntervalSince1970: 1), lastUsedStep: nil) == .valid(step: 0))
    }

    @Test func configurationIsValidated_X5() {
        #expect(throws: TOTP.ConfigurationError.secretTooShort(minimumBytes: 16)) {
            try TOTP(secret: [UInt8](repeating: 1, count: 10))
        }
        #expect(throws: TOTP.ConfigurationError.unsupportedDigits) { try TOTP(secret: Self.sha1Seed, digits: 5) }
        #expect(throws: TOTP.ConfigurationError.unsupportedDigits) { try TOTP(secret: Self.sha1Seed, digits: 9) }
        #expect(throws: TOTP.ConfigurationError.invalidPeriod) { try TOTP(secret: Self.sha1Seed, period: 0) }
    }

    @Test func generatedSecretsAre20RandomBytes_X5() {
        let a = TOTP.generateSecret()
        let b = TOTP.generateSecret()
        #expect(a.count == 20 && b.count == 20)
        #expect(a != b)
    }

    @Test func provisioningURIIsPercentEncoded_X5() throws {
        let totp = try Self.sixDigit()
        let uri = totp.provisioningURI(issuer: "Clau Finance", account: "alice+test@example.com")
        #expect(
            uri == "otpauth://totp/Clau%20Finance:alice%2Btest%40example.com"
                + "?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=Clau%20Finance&algorithm=SHA1&digits=6&period=30")
        #expect(PercentEncoding.encode("a:b/c?d&e=f é") == "a%3Ab%2Fc%3Fd%26e%3Df%20%C3%A9")
    }

    @Test func secretIsNeverPrinted_X5() throws {
        let secret = TOTP.generateSecret()
        let totp = try TOTP(secret: secret)
        let base32 = Base32.encode(secret)
        var dumped = ""
        dump(totp, to: &dumped)
        dump(totp.secret, to: &dumped)
        let renderings = [
            "\(totp)", String(reflecting: totp), "\(totp.secret)", String(reflecting: totp.secret), dumped,
        ]
        for text in renderings {
            #expect(!text.contains(base32))
            #expect(!text.contains(secret.map(String.init).joined(separator: ", ")))
            #expect(!text.contains(Hex.encode(secret)))
        }
        #expect("\(totp.secret)".contains("redacted"))
    }

    @Test func base32RFC4648Vectors_X5() {
        let vectors: [(String, String)] = [
            ("", ""), ("f", "MY"), ("fo", "MZXQ"), ("foo", "MZXW6"), ("foob", "MZXW6YQ"),
            ("fooba", "MZXW6YTB"), ("foobar", "MZXW6YTBOI"),
        ]
        for (plain, encoded) in vectors {
            #expect(Base32.encode(Array(plain.utf8)) == encoded)
            #expect(Base32.decode(encoded) == Array(plain.utf8))
        }
        #expect(Base32.decode("MZXW6YQ=") == Array("foob".utf8))  // padding optional
        #expect(Base32.decode("mzxw6ytboi") == Array("foobar".utf8))  // case-insensitive
        #expect(Base32.decode("MZXW6YQ1") == nil)  // "1" is not in the alphabet
        #expect(Base32.decode("M") == nil)  // impossible length
        #expect(Base32.decode("MZ") == nil)  // non-zero leftover bits
        #expect(TOTPSecret(base32: "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ")?.bytes == Self.sha1Seed)
    }

    @Test func base32RoundTripsRandomBytes_X5() {
        var rng = SplitMix64(seed: 42)
        for _ in 0..<500 {
            let bytes = (0..<Int.random(in: 0...64, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            #expect(Base32.decode(Base32.encode(bytes)) == bytes)
        }
    }
}
