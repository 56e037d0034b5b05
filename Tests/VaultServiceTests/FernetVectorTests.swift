import Foundation
import Testing

@testable import VaultService

// MARK: - Fixtures (copies of shared/vectors/fernet, from the fernet/spec repository)

struct GenerateVector: Decodable, Sendable {
    let token: String
    let now: String
    let iv: [UInt8]
    let src: String
    let secret: String
}

struct VerifyVector: Decodable, Sendable {
    let token: String
    let now: String
    let ttl_sec: Int64
    let src: String
    let secret: String
}

struct InvalidVector: Decodable, Sendable, CustomTestStringConvertible {
    let desc: String
    let token: String
    let now: String
    let ttl_sec: Int64
    let secret: String

    var testDescription: String { desc }
}

enum FernetFixtures {
    static let directory = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent()
        .appendingPathComponent("Fixtures/fernet")

    static func load<Vector: Decodable>(_ name: String, as _: Vector.Type = Vector.self) throws -> [Vector] {
        let data = try Data(contentsOf: directory.appendingPathComponent(name))
        return try JSONDecoder().decode([Vector].self, from: data)
    }

    /// The vectors' timestamps are ISO-8601 with an offset, e.g. `1985-10-26T01:20:00-07:00`.
    static func date(_ iso8601: String) throws -> Date {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime]
        guard let date = formatter.date(from: iso8601) else {
            throw FixtureError.badDate(iso8601)
        }
        return date
    }

    enum FixtureError: Error { case badDate(String) }

    static let specKey = "cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4="
    /// Python: hashlib.sha256(urlsafe_b64decode(specKey)).hexdigest()[:8]
    static let specKeyID = "cbeb362f"
}

func decodedTokenBytes(_ token: String) -> [UInt8]? {
    var token = token
    return token.withUTF8 { Base64URL.decode($0) }
}

func encodedToken(_ bytes: [UInt8]) -> String {
    bytes.withUnsafeBytes { Base64URL.encode($0) }
}

// MARK: - Known-answer vectors

@Suite(.timeLimit(.minutes(5))) struct FernetVectorTests {
    @Test func generateVectorsProduceExactTokens() throws {
        let vectors = try FernetFixtures.load("generate.json", as: GenerateVector.self)
        #expect(!vectors.isEmpty)
        for vector in vectors {
            let fernet = Fernet(key: try FernetKey(base64URL: vector.secret))
            let now = try FernetFixtures.date(vector.now)
            let token = fernet.encrypt(
                Array(vector.src.utf8), timestamp: Fernet.timestamp(of: now), iv: vector.iv)
            #expect(token == vector.token)
        }
    }

    @Test func verifyVectorsDecrypt() throws {
        let vectors = try FernetFixtures.load("verify.json", as: VerifyVector.self)
        #expect(!vectors.isEmpty)
        for vector in vectors {
            let key = try FernetKey(base64URL: vector.secret)
            let now = try FernetFixtures.date(vector.now)
            let plaintext = try Fernet(key: key).decrypt(vector.token, ttl: .seconds(vector.ttl_sec), now: now)
            #expect(plaintext == Array(vector.src.utf8))
            let multi = try MultiFernet(keys: [FernetKey.generate(), key])
            let result = try multi.decrypt(vector.token, ttl: .seconds(vector.ttl_sec), now: now)
            #expect(result.plaintext == Array(vector.src.utf8))
            #expect(result.keyID == key.id)
        }
    }

    @Test(arguments: try FernetFixtures.load("invalid.json", as: InvalidVector.self))
    func invalidVectorIsRejected(_ vector: InvalidVector) throws {
        let key = try FernetKey(base64URL: vector.secret)
        let now = try FernetFixtures.date(vector.now)
        #expect(throws: FernetError.invalidToken) {
            try Fernet(key: key).decrypt(vector.token, ttl: .seconds(vector.ttl_sec), now: now)
        }
        #expect(throws: FernetError.invalidToken) {
            try MultiFernet(keys: [key]).decrypt(vector.token, ttl: .seconds(vector.ttl_sec), now: now)
        }
    }

    /// The time-based invalid vectors must fail for their stated reason, not some other defect.
    @Test func timeVectorsAreOtherwiseValid() throws {
        let vectors = try FernetFixtures.load("invalid.json", as: InvalidVector.self)
        let key = try FernetKey(base64URL: FernetFixtures.specKey)
        let expired = try #require(vectors.first { $0.desc == "expired TTL" })
        #expect(try Fernet(key: key).decrypt(expired.token, now: FernetFixtures.date(expired.now)) == [])  // the spec's plaintext is empty
        let future = try #require(vectors.first { $0.desc.hasPrefix("far-future TS") })
        let later = try FernetFixtures.date(future.now).addingTimeInterval(86400)
        #expect(try Fernet(key: key).decrypt(future.token, now: later) == [])
    }

    @Test func allElevenInvalidVectorsArePresent() throws {
        #expect(try FernetFixtures.load("invalid.json", as: InvalidVector.self).count == 11)
    }

    // MARK: Tampering

    @Test func flippingAnySingleByteFails() throws {
        let key = FernetKey.generate()
        let fernet = Fernet(key: key)
        let now = Date()
        let token = fernet.encrypt(Array("account-token-0123456789".utf8), now: now)
        let bytes = try #require(decodedTokenBytes(token))
        #expect(try fernet.decrypt(encodedToken(bytes), now: now) == Array("account-token-0123456789".utf8))
        for index in bytes.indices {
            for mask: UInt8 in [0x01, 0x80, 0xFF] {
                var tampered = bytes
                tampered[index] ^= mask
                #expect(throws: FernetError.invalidToken, "byte \(index) ^ \(mask)") {
                    try fernet.decrypt(encodedToken(tampered), now: now)
                }
            }
        }
    }

    @Test func truncatedAndExtendedTokensFail() throws {
        let fernet = Fernet(key: .generate())
        let token = fernet.encrypt(Array(repeating: 7, count: 40))
        let bytes = try #require(decodedTokenBytes(token))
        for length in 0..<bytes.count {
            #expect(throws: FernetError.invalidToken) {
                try fernet.decrypt(encodedToken(Array(bytes[..<length])))
            }
        }
        #expect(throws: FernetError.invalidToken) { try fernet.decrypt(encodedToken(bytes + [0])) }
        #expect(throws: FernetError.invalidToken) {
            try fernet.decrypt(encodedToken(bytes + Array(repeating: 0, count: 16)))
        }
        // Unpadded form of a valid token is refused: padding is mandatory.
        let padded = fernet.encrypt(Array(repeating: 1, count: 16))  // 89 bytes → one "="
        #expect(padded.hasSuffix("=") && !padded.hasSuffix("=="))
        #expect(try fernet.decrypt(padded) == Array(repeating: 1, count: 16))
        #expect(throws: FernetError.invalidToken) { try fernet.decrypt(String(padded.dropLast())) }
        #expect(throws: FernetError.invalidToken) { try fernet.decrypt(padded + "=") }
    }

    @Test func wrongKeyFails() throws {
        let token = Fernet(key: .generate()).encrypt(Array("secret".utf8))
        #expect(throws: FernetError.invalidToken) { try Fernet(key: .generate()).decrypt(token) }
    }

    @Test func garbageNeverCrashes() {
        let fernet = Fernet(key: .generate())
        var generator = SystemRandomNumberGenerator()
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=+/ \n\u{0}é")
        for _ in 0..<3000 {
            let length = Int.random(in: 0...160, using: &generator)
            let garbage = String((0..<length).map { _ in alphabet.randomElement(using: &generator)! })
            #expect(throws: FernetError.invalidToken) { try fernet.decrypt(garbage) }
        }
        // Structurally valid but random bytes (correct version byte and length).
        for _ in 0..<1000 {
            var bytes = (0..<(25 + 32 + 32)).map { _ in UInt8.random(in: 0...255, using: &generator) }
            bytes[0] = 0x80
            #expect(throws: FernetError.invalidToken) { try fernet.decrypt(encodedToken(bytes)) }
        }
    }

    // MARK: Time rules

    @Test func clockSkewAndTTLBoundaries() throws {
        let fernet = Fernet(key: .generate())
        let minted = Date(timeIntervalSince1970: 1_700_000_000)
        let token = fernet.encrypt(Array("x".utf8), now: minted)
        // 60 s in the future is tolerated, 61 s is not (checked with and without TTL).
        #expect(try fernet.decrypt(token, now: minted.addingTimeInterval(-60)) == Array("x".utf8))
        #expect(throws: FernetError.invalidToken) { try fernet.decrypt(token, now: minted.addingTimeInterval(-61)) }
        #expect(throws: FernetError.invalidToken) {
            try fernet.decrypt(token, ttl: .seconds(3600), now: minted.addingTimeInterval(-61))
        }
        // TTL: valid at exactly ts + ttl, invalid one second later.
        #expect(try fernet.decrypt(token, ttl: .seconds(60), now: minted.addingTimeInterval(60.9)) == Array("x".utf8))
        #expect(throws: FernetError.invalidToken) {
            try fernet.decrypt(token, ttl: .seconds(60), now: minted.addingTimeInterval(61))
        }
        // No TTL: old tokens stay valid.
        #expect(try fernet.decrypt(token, now: minted.addingTimeInterval(10 * 365 * 86400)) == Array("x".utf8))
        // Extreme clocks do not trap.
        #expect(throws: FernetError.invalidToken) { try fernet.decrypt(token, now: .distantPast) }
        _ = try fernet.decrypt(token, ttl: .seconds(Int64.max), now: .distantFuture)
        let early = fernet.encrypt([1], now: Date(timeIntervalSince1970: -5))
        #expect(try fernet.decrypt(early, now: Date(timeIntervalSince1970: 0)) == [1])
    }

    // MARK: Keys

    @Test func keyParsingIsStrict() throws {
        let key = try FernetKey(base64URL: FernetFixtures.specKey)
        #expect(key.id == FernetFixtures.specKeyID)
        #expect(key.base64URLEncoded == FernetFixtures.specKey)
        let rejected = [
            "",
            "cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4",  // missing padding
            "cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4==",  // too much padding
            "cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e5=",  // non-canonical trailing bits
            " cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4=",  // whitespace
            "cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4=\n",
            "cw/0x689RpI+jtRR7oE8h/eQsKImvJapLeSbXpwF4e4=",  // standard alphabet
            "cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4=AAAA",  // trailing data
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=AAAA",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",  // 30 bytes
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",  // 36 bytes
        ]
        for text in rejected {
            #expect(throws: FernetError.invalidKey, "\(text.debugDescription)") { try FernetKey(base64URL: text) }
        }
    }

    @Test func generatedKeysAreFreshAndRoundTrip() throws {
        let first = FernetKey.generate()
        let second = FernetKey.generate()
        #expect(first != second)
        #expect(first.id != second.id)
        #expect(first.base64URLEncoded.count == 44)
        #expect(try FernetKey(base64URL: first.base64URLEncoded) == first)
        #expect(first.id.count == 8 && first.id.allSatisfy(\.isHexDigit))
    }

    @Test func keyDescriptionsHideMaterial() throws {
        let key = try FernetKey(base64URL: FernetFixtures.specKey)
        var dumped = ""
        dump(key, to: &dumped)
        let renderings = [
            String(describing: key), String(reflecting: key), "\(key)", dumped,
            String(describing: Fernet(key: key)), String(describing: try MultiFernet(keys: [key])),
        ]
        for rendering in renderings {
            #expect(!rendering.contains(FernetFixtures.specKey))
            #expect(!rendering.contains("cw_0x689"))
            #expect(!rendering.contains("SymmetricKey"))
        }
        #expect(String(describing: key) == "FernetKey(id: \(FernetFixtures.specKeyID))")
    }

    // MARK: MultiFernet

    @Test func multiFernetRejectsEmptyKeyList() {
        #expect(throws: FernetError.noKeys) { try MultiFernet(keys: []) }
    }

    @Test func multiKeyDecryptAndRewrap() throws {
        let old = FernetKey.generate()
        let new = FernetKey.generate()
        let minted = Date(timeIntervalSince1970: 1_700_000_000)
        let oldToken = Fernet(key: old).encrypt(Array("alpaca-refresh".utf8), now: minted)

        let rotated = try MultiFernet(keys: [new, old])
        #expect(rotated.currentKeyID == new.id)
        let opened = try rotated.decrypt(oldToken, now: minted)
        #expect(opened.plaintext == Array("alpaca-refresh".utf8))
        #expect(opened.keyID == old.id)

        let rewrapped = try rotated.rewrap(oldToken, now: minted.addingTimeInterval(5))
        #expect(rewrapped.oldKeyID == old.id)
        #expect(rewrapped.newKeyID == new.id)
        #expect(rewrapped.token != oldToken)
        // Only the new key opens it now; the original timestamp is kept.
        #expect(try Fernet(key: new).decrypt(rewrapped.token, now: minted) == Array("alpaca-refresh".utf8))
        #expect(throws: FernetError.invalidToken) { try Fernet(key: old).decrypt(rewrapped.token, now: minted) }
        let newBytes = try #require(decodedTokenBytes(rewrapped.token))
        #expect(Fernet.timestamp(in: newBytes) == 1_700_000_000)
        #expect(try rotated.decrypt(rewrapped.token, now: minted).keyID == new.id)

        // Encryption uses the first key.
        #expect(try rotated.decrypt(rotated.encrypt([1, 2, 3])).keyID == new.id)
        // A key dropped from the list no longer decrypts.
        #expect(throws: FernetError.invalidToken) { try MultiFernet(keys: [new]).decrypt(oldToken, now: minted) }
    }

    @Test func emptyAndBlockSizedPlaintexts() throws {
        let fernet = Fernet(key: .generate())
        for length in [0, 1, 15, 16, 17, 31, 32, 33, 200, 4096] {
            let plaintext = (0..<length).map { UInt8(truncatingIfNeeded: $0 &* 31) }
            let token = fernet.encrypt(plaintext)
            let bytes = try #require(decodedTokenBytes(token))
            #expect(bytes.count == 25 + (length / 16 + 1) * 16 + 32)
            #expect(try fernet.decrypt(token) == plaintext)
        }
    }

    // MARK: Base64URL

    @Test func base64URLMatchesFoundationAndRejectsNonCanonical() throws {
        var generator = SystemRandomNumberGenerator()
        for length in 0...70 {
            let bytes = (0..<length).map { _ in UInt8.random(in: 0...255, using: &generator) }
            let ours = encodedToken(bytes)
            let foundation = Data(bytes).base64EncodedString()
                .replacingOccurrences(of: "+", with: "-")
                .replacingOccurrences(of: "/", with: "_")
            #expect(ours == foundation)
            #expect(decodedTokenBytes(ours) == bytes)
        }
        for nonCanonical in ["QR==", "QUF=", "Q===", "====", "QUFB=QUF", "QUFBQ", "QU FB", "QUFB\n"] {
            #expect(decodedTokenBytes(nonCanonical) == nil, "\(nonCanonical.debugDescription)")
        }
        // The table decoder used for tokens agrees with the constant-time one on every input.
        let characters = Array("AQgw-_=+/ a".utf8)
        for _ in 0..<5000 {
            let length = Int.random(in: 0...12, using: &generator) * (Bool.random(using: &generator) ? 4 : 1)
            let input = (0..<length).map { _ in characters.randomElement(using: &generator)! }
            let viaConstantTime = input.withUnsafeBufferPointer { Base64URL.decode($0) }
            let viaTable = input.withUnsafeBufferPointer { Base64URL.decodePublic($0) }
            #expect(viaConstantTime == viaTable, "\(String(decoding: input, as: UTF8.self))")
        }
        #expect(decodedTokenBytes("QQ==") == [0x41])
        #expect(decodedTokenBytes("QUE=") == [0x41, 0x41])
        // Every one of the 256 byte values is classified correctly by the branch-free decoder.
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".utf8)
        for byte in 0...255 {
            let expected = alphabet.firstIndex(of: UInt8(byte)).map(Int32.init) ?? -1
            let actual = Base64URL.decodeChar(UInt8(byte))
            #expect((actual < 0 ? -1 : actual) == expected, "byte \(byte)")
        }
    }
}
