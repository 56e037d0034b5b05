import Crypto
import Foundation
import Testing

@testable import AuthService

@Suite("API keys (R-3)", .timeLimit(.minutes(5)))
struct APIKeyFormatTests {
    @Test func generatedKeysHaveTheDocumentedFormat_R3() {
        let key = APIKeyFormat.generate()
        #expect(key.rawValue.hasPrefix("clau_"))
        #expect(key.rawValue.utf8.count == 69)
        #expect(key.rawValue.dropFirst(5).allSatisfy { ("0"..."9").contains($0) || ("a"..."f").contains($0) })
        #expect(APIKeyFormat.parse(key.rawValue) == key)
    }

    @Test func generatedKeysAreUnique_R3() {
        let keys = Set((0..<1_000).map { _ in APIKeyFormat.generate().rawValue })
        #expect(keys.count == 1_000)
        // And so, with 256 bits each, are their lookup prefixes in practice.
        #expect(Set(keys.map { String($0.dropFirst(5).prefix(8)) }).count > 990)
    }

    @Test func parseRejectsMalformedKeys_R3() {
        let valid = "clau_" + String(repeating: "0123456789abcdef", count: 4)
        #expect(APIKeyFormat.parse(valid) != nil)
        let hex = String(valid.dropFirst(5))
        let shortened = String(valid.dropLast())
        let invalid: [String] = [
            "",
            "clau-" + hex,  // wrong separator
            "CLAU_" + hex,  // uppercase prefix
            "sk_" + hex + "00",  // wrong prefix, same length
            shortened,  // 68
            valid + "0",  // 70
            "clau_" + hex.uppercased(),  // uppercase hex
            "clau_" + String(hex.dropLast()) + "g",  // non-hex
            " " + shortened,  // leading space
            shortened + "\n",
            shortened + "é",  // 70 bytes
            String(valid.dropLast(2)) + "é",  // 69 bytes, non-hex
        ]
        for text in invalid {
            #expect(APIKeyFormat.parse(text) == nil, "\(text.debugDescription)")
        }
    }

    @Test func lookupPrefixIsFirstEightHexCharacters_R3() {
        let valid = "clau_" + String(repeating: "0123456789abcdef", count: 4)
        #expect(APIKeyFormat.lookupPrefix(valid) == "01234567")
        #expect(APIKeyFormat.parse(valid)?.lookupPrefix == "01234567")
        #expect(APIKeyFormat.lookupPrefix("clau_0123") == nil)
    }

    @Test func hashIsKeyedHMACSHA256_R3() throws {
        let key = try #require(APIKeyFormat.parse("clau_" + String(repeating: "0123456789abcdef", count: 4)))
        let secret = SymmetricKey(data: Array("api-key-hash-secret-0123456789ab".utf8))
        let digest = APIKeyFormat.hash(key, secret: secret)
        #expect(digest == Hex.encode(HMAC<SHA256>.authenticationCode(for: Array(key.rawValue.utf8), using: secret)))
        #expect(digest.count == 64)
        #expect(APIKeyFormat.hash(key, secret: SymmetricKey(size: .bits256)) != digest)
        #expect(APIKeyFormat.hash(APIKeyFormat.generate(), secret: secret) != digest)
    }

    @Test func keyIsNeverPrintedInFull_R3() {
        let key = APIKeyFormat.generate()
        var dumped = ""
        dump(key, to: &dumped)
        for text in ["\(key)", String(reflecting: key), dumped] {
            #expect(!text.contains(key.rawValue))
            #expect(!text.contains(String(key.rawValue.suffix(56))))
        }
        #expect("\(key)".contains(key.lookupPrefix))
    }
}

@Suite("Shared primitives", .timeLimit(.minutes(5)))
struct SecurityPrimitivesTests {
    @Test func hmacSHA256MatchesRFC4231_R3() {
        // RFC 4231 test case 2.
        let digest = KeyedHash.hmacSHA256Hex("what do ya want for nothing?", key: SymmetricKey(data: Array("Jefe".utf8)))
        #expect(digest == "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
    }

    @Test func constantTimeEquals() {
        #expect(ConstantTime.equals([1, 2, 3] as [UInt8], [1, 2, 3] as [UInt8]))
        #expect(!ConstantTime.equals([1, 2, 3] as [UInt8], [1, 2, 4] as [UInt8]))
        #expect(!ConstantTime.equals([1, 2, 3] as [UInt8], [1, 2] as [UInt8]))
        #expect(ConstantTime.equals("", ""))
        #expect(!ConstantTime.equals("abc", "abd"))
    }

    @Test func hexRoundTrip() {
        #expect(Hex.encode([0x00, 0x7F, 0xAB, 0xFF]) == "007fabff")
        #expect(Hex.decode("007FabFF") == [0x00, 0x7F, 0xAB, 0xFF])
        #expect(Hex.decode("abc") == nil)
        #expect(Hex.decode("zz") == nil)
    }

    @Test func secureRandomBytes() {
        #expect(SecureRandom.bytes(0).isEmpty)
        #expect(SecureRandom.bytes(-1).isEmpty)
        #expect(SecureRandom.bytes(100).count == 100)
        #expect(SecureRandom.bytes(32) != SecureRandom.bytes(32))
    }
}
