import Crypto
import Foundation
import Testing

@testable import BrokerService

/// Loads a file from this target's Fixtures (a copy of `../shared/vectors/stripe/`, so the tests do
/// not depend on a folder outside the repository).
func fixtureData(_ name: String) throws -> Data {
    try Data(contentsOf: URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures/\(name)"))
}

struct StripeWebhookVectors: Decodable, Sendable {
    struct Primitive: Decodable, Sendable {
        struct Case: Decodable, Sendable {
            var name: String
            var payload: String
            var hmac_sha256_hex: String
        }
        var key: String
        var cases: [Case]
    }

    struct HeaderCase: Decodable, Sendable, CustomTestStringConvertible {
        var name: String
        var header: String
        var now: Int64
        var valid: Bool
        var error: String?
        var payload_override: String?
        var testDescription: String { name }
    }

    var hmac_primitive: Primitive
    var secret: String
    var payload: String
    var tolerance_sec: Int64
    var header_cases: [HeaderCase]

    static func load() throws -> StripeWebhookVectors {
        try JSONDecoder().decode(StripeWebhookVectors.self, from: fixtureData("webhook_signature_vectors.json"))
    }
}

/// Stripe webhook signatures: the authentication of the public webhook route (SPEC §3:
/// "a bad or stale signature → 400 invalid_signature").
@Suite("Stripe webhook signature", .timeLimit(.minutes(5)))
struct StripeWebhookSignatureTests {
    let vectors: StripeWebhookVectors

    init() throws {
        vectors = try StripeWebhookVectors.load()
    }

    /// The expected outcome of each published header case under this verifier. One case differs
    /// from Stripe's libraries, by choice: a timestamp an hour in the future is refused, because the
    /// tolerance applies in both directions here (see `StripeWebhookSignature.verify`).
    func expectedError(for testCase: StripeWebhookVectors.HeaderCase) -> StripeWebhookSignature.VerificationError? {
        if testCase.name.hasPrefix("future timestamp") { return .timestampOutsideTolerance }
        guard !testCase.valid else { return nil }
        switch testCase.error {
        case "Timestamp outside the tolerance zone": return .timestampOutsideTolerance
        case "No signatures found with expected scheme v1": return .noV1Signature
        case "No signatures found matching the expected signature for payload": return .noMatchingSignature
        case "Unable to extract timestamp and signatures from header": return .malformedHeader
        default:
            Issue.record("unmapped vector error \(testCase.error ?? "nil") in \(testCase.name)")
            return nil
        }
    }

    @Test func everyPublishedHeaderCaseGivesTheExpectedOutcome() throws {
        #expect(vectors.header_cases.count == 12, "a new vector needs a look at expectedError(for:)")
        #expect(vectors.tolerance_sec == StripeWebhookSignature.defaultTolerance)
        let verifier = StripeWebhookSignature(secret: vectors.secret)
        for testCase in vectors.header_cases {
            let payload = Array((testCase.payload_override ?? vectors.payload).utf8)
            let outcome: StripeWebhookSignature.VerificationError?
            do throws(StripeWebhookSignature.VerificationError) {
                let timestamp = try verifier.verify(payload: payload, header: testCase.header, now: testCase.now)
                #expect(timestamp == 1_700_000_000, "\(testCase.name)")
                outcome = nil
            } catch {
                outcome = error
            }
            #expect(outcome == expectedError(for: testCase), "\(testCase.name)")
        }
    }

    @Test func hmacPrimitiveMatchesStripesKnownAnswers() {
        for testCase in vectors.hmac_primitive.cases {
            let mac = HMAC<SHA256>.authenticationCode(for: Array(testCase.payload.utf8), using: SymmetricKey(data: Array(vectors.hmac_primitive.key.utf8)))
            #expect(StripeWebhookSignature.hex(mac) == testCase.hmac_sha256_hex, "\(testCase.name)")
        }
    }

    @Test func headerWeSignMatchesTheVectorsSignature() {
        let verifier = StripeWebhookSignature(secret: vectors.secret)
        let header = verifier.header(payload: Array(vectors.payload.utf8), timestamp: 1_700_000_000)
        #expect(header == vectors.header_cases[0].header)
    }

    @Test func webhookWithOldTimestampIsRefused() throws {
        let verifier = StripeWebhookSignature(secret: "whsec_replay")
        let payload = Array(#"{"id":"evt_1","type":"customer.subscription.updated"}"#.utf8)
        let header = verifier.header(payload: payload, timestamp: 1_800_000_000)
        #expect(try verifier.verify(payload: payload, header: header, now: 1_800_000_300) == 1_800_000_000)
        #expect(throws: StripeWebhookSignature.VerificationError.timestampOutsideTolerance) {
            try verifier.verify(payload: payload, header: header, now: 1_800_000_301)
        }
        #expect(throws: StripeWebhookSignature.VerificationError.timestampOutsideTolerance) {
            try verifier.verify(payload: payload, header: header, now: 1_799_999_699)
        }
        // Far-away clocks do not overflow the age computation.
        #expect(throws: StripeWebhookSignature.VerificationError.timestampOutsideTolerance) {
            try verifier.verify(payload: payload, header: header, now: .min)
        }
    }

    @Test func webhookWithBadSignatureIsRefused() {
        let verifier = StripeWebhookSignature(secret: "whsec_a")
        let payload = Array("{}".utf8)
        let otherSecret = StripeWebhookSignature(secret: "whsec_b").header(payload: payload, timestamp: 1_800_000_000)
        #expect(throws: StripeWebhookSignature.VerificationError.noMatchingSignature) {
            try verifier.verify(payload: payload, header: otherSecret, now: 1_800_000_000)
        }
        // Upper-case hex of the right MAC is not what Stripe sends and is not accepted.
        let right = verifier.header(payload: payload, timestamp: 1_800_000_000)
        #expect(throws: StripeWebhookSignature.VerificationError.noMatchingSignature) {
            try verifier.verify(payload: payload, header: "t=1800000000,v1=" + right.dropFirst("t=1800000000,v1=".count).uppercased(), now: 1_800_000_000)
        }
    }

    @Test(arguments: [
        "", "t=", "t=abc,v1=00", "v1=00", "t=1,t=1,v1=00", "t=-1,v1=00", "t=+1,v1=00", "t=1 ,v1=00",
        "t=1234567890123,v1=00", "t=1,v1", "t=1,,v1=00", "=x,t=1,v1=00", "t=1,v1=00\u{0}", "t=1,v1=\u{e9}",
    ])
    func malformedHeadersAreRefused(_ header: String) {
        let verifier = StripeWebhookSignature(secret: "whsec_x")
        #expect(throws: StripeWebhookSignature.VerificationError.malformedHeader) {
            try verifier.verify(payload: [UInt8](), header: header, now: 1)
        }
    }

    @Test func overlongHeaderIsRefusedBeforeAnyWork() {
        let verifier = StripeWebhookSignature(secret: "whsec_x")
        let valid = verifier.header(payload: [UInt8](), timestamp: 1)
        let padded = valid + String(repeating: ",v0=0", count: 1000)
        #expect(padded.utf8.count > StripeWebhookSignature.maximumHeaderLength)
        #expect(throws: StripeWebhookSignature.VerificationError.malformedHeader) {
            try verifier.verify(payload: [UInt8](), header: padded, now: 1)
        }
    }

    @Test func aTimestampWithoutV1IsReportedAsSuch() {
        #expect(throws: StripeWebhookSignature.VerificationError.noV1Signature) {
            try StripeWebhookSignature(secret: "whsec_x").verify(payload: [UInt8](), header: "t=1,v0=abc,x=y", now: 1)
        }
    }

    /// Property: any payload signed with the secret verifies, and changing any one byte of it —
    /// or of the signature — makes it fail.
    @Test func randomPayloadsVerifyAndEverySingleByteChangeFails() throws {
        var generator = SystemRandomNumberGenerator()
        let verifier = StripeWebhookSignature(secret: "whsec_" + String(UInt64.random(in: 0...UInt64.max, using: &generator), radix: 36))
        for _ in 0..<40 {
            let length = Int.random(in: 0...300, using: &generator)
            let payload = (0..<length).map { _ in UInt8.random(in: 0...255, using: &generator) }
            let timestamp = Int64.random(in: 1_600_000_000...2_000_000_000, using: &generator)
            let header = verifier.header(payload: payload, timestamp: timestamp)
            #expect(try verifier.verify(payload: payload, header: header, now: timestamp + 10) == timestamp)

            for index in payload.indices {
                var tampered = payload
                tampered[index] ^= UInt8.random(in: 1...255, using: &generator)
                #expect(throws: StripeWebhookSignature.VerificationError.noMatchingSignature) {
                    try verifier.verify(payload: tampered, header: header, now: timestamp + 10)
                }
            }
            // One byte appended or removed.
            #expect(throws: StripeWebhookSignature.VerificationError.noMatchingSignature) {
                try verifier.verify(payload: payload + [0x20], header: header, now: timestamp + 10)
            }
            if !payload.isEmpty {
                #expect(throws: StripeWebhookSignature.VerificationError.noMatchingSignature) {
                    try verifier.verify(payload: Array(payload.dropLast()), header: header, now: timestamp + 10)
                }
            }
            // One hex digit of the signature changed.
            var signatureBytes = Array(header.utf8)
            let position = Int.random(in: (signatureBytes.count - 64)..<signatureBytes.count, using: &generator)
            signatureBytes[position] = signatureBytes[position] == UInt8(ascii: "0") ? UInt8(ascii: "1") : UInt8(ascii: "0")
            #expect(throws: StripeWebhookSignature.VerificationError.noMatchingSignature) {
                try verifier.verify(payload: payload, header: String(decoding: signatureBytes, as: UTF8.self), now: timestamp + 10)
            }
        }
    }

    @Test func constantTimeComparisonAgreesWithEquality() {
        #expect(StripeWebhookSignature.constantTimeEquals([1, 2, 3], [1, 2, 3]))
        #expect(!StripeWebhookSignature.constantTimeEquals([1, 2, 3], [1, 2, 4]))
        #expect(!StripeWebhookSignature.constantTimeEquals([1, 2, 3], [1, 2]))
        #expect(StripeWebhookSignature.constantTimeEquals([], []))
    }
}
