import Foundation
import Testing

@testable import VaultService

@Suite(.timeLimit(.minutes(5))) struct ContextBindingTests {
    let key = FernetKey.generate()
    let userA = "alpaca:user:3f2b9c1e-8d4a-4e71-9a0b-5c6d7e8f9a01"
    let userB = "alpaca:user:7a1c2d3e-4f50-4617-8293-a4b5c6d7e8f9"
    let secret = Array("alpaca-oauth-access-token-xyz".utf8)

    @Test func roundTripReturnsSecretAndKeyID() throws {
        let cipher = try ContextBoundCipher(keys: [key])
        let token = try cipher.encrypt(plaintext: secret, context: userA)
        let opened = try cipher.decrypt(token: token, context: userA)
        #expect(opened.plaintext == secret)
        #expect(opened.keyID == key.id)
        #expect(try cipher.decrypt(token: cipher.encrypt(plaintext: [], context: userA), context: userA).plaintext == [])
    }

    @Test func wrongContextFailsLikeWrongKey_X4() throws {
        let cipher = try ContextBoundCipher(keys: [key])
        let token = try cipher.encrypt(plaintext: secret, context: userA)

        // Same token pasted into user B's row.
        let wrongContext = #expect(throws: FernetError.self) { try cipher.decrypt(token: token, context: userB) }
        // Right context, wrong key.
        let otherCipher = try ContextBoundCipher(keys: [.generate()])
        let wrongKey = #expect(throws: FernetError.self) { try otherCipher.decrypt(token: token, context: userA) }

        #expect(wrongContext == .invalidToken)
        #expect(wrongKey == .invalidToken)
        #expect(wrongContext == wrongKey)
        #expect(String(describing: wrongContext) == String(describing: wrongKey))
        #expect(String(reflecting: wrongContext) == String(reflecting: wrongKey))
    }

    @Test func similarContextsDoNotMatch() throws {
        let cipher = try ContextBoundCipher(keys: [key])
        let token = try cipher.encrypt(plaintext: secret, context: "alpaca:user:12")
        for other in ["alpaca:user:1", "alpaca:user:123", "alpaca:user:13", "stripe:user:12", "Alpaca:user:12"] {
            #expect(throws: FernetError.invalidToken, "\(other)") { try cipher.decrypt(token: token, context: other) }
        }
    }

    @Test(arguments: [
        "", " ", "alpaca:user: 1", "alpaca:user:1\n", "alpaca:user:\u{0}", "alpaca:üser:1", "tab\tcontext",
        String(repeating: "a", count: 256),
    ])
    func invalidContextsAreRefused(_ context: String) throws {
        let cipher = try ContextBoundCipher(keys: [key])
        #expect(throws: FernetError.invalidContext) { try cipher.encrypt(plaintext: secret, context: context) }
        let token = try cipher.encrypt(plaintext: secret, context: userA)
        #expect(throws: FernetError.invalidContext) { try cipher.decrypt(token: token, context: context) }
        #expect(throws: FernetError.invalidContext) { try cipher.rewrap(token: token, context: context) }
    }

    @Test func longestContextIsAccepted() throws {
        let cipher = try ContextBoundCipher(keys: [key])
        let context = String(repeating: "~", count: 255)
        let token = try cipher.encrypt(plaintext: secret, context: context)
        #expect(try cipher.decrypt(token: token, context: context).plaintext == secret)
    }

    @Test func storedTokenIsPlainFernetWithDocumentedEnvelope() throws {
        let cipher = try ContextBoundCipher(keys: [key])
        let token = try cipher.encrypt(plaintext: secret, context: userA)
        let envelope = try Fernet(key: key).decrypt(token)
        let contextBytes = Array(userA.utf8)
        #expect(Array(envelope[0..<4]) == Array("CLV1".utf8))
        #expect(Int(envelope[4]) << 8 | Int(envelope[5]) == contextBytes.count)
        #expect(Array(envelope[6..<(6 + contextBytes.count)]) == contextBytes)
        #expect(Array(envelope[(6 + contextBytes.count)...]) == secret)
    }

    @Test func nonEnvelopeFernetTokensAreRefused() throws {
        let cipher = try ContextBoundCipher(keys: [key])
        let fernet = Fernet(key: key)
        let contextBytes = Array(userA.utf8)
        let malformed: [[UInt8]] = [
            [],
            Array("CLV1".utf8),
            Array("CLV2".utf8) + [0, UInt8(contextBytes.count)] + contextBytes + secret,  // wrong version
            Array("CLV1".utf8) + [0, 0] + secret,  // empty context
            Array("CLV1".utf8) + [1, UInt8(contextBytes.count)] + contextBytes,  // length > 255
            Array("CLV1".utf8) + [0, 200] + contextBytes,  // length beyond the envelope
            Array("CLV1".utf8) + [0, UInt8(contextBytes.count - 1)] + contextBytes,  // length off by one
            secret,
        ]
        for plaintext in malformed {
            #expect(throws: FernetError.invalidToken) {
                try cipher.decrypt(token: fernet.encrypt(plaintext), context: userA)
            }
        }
    }

    @Test func rewrapMovesToNewKeyAndKeepsBinding() throws {
        let old = FernetKey.generate()
        let new = FernetKey.generate()
        let oldToken = try ContextBoundCipher(keys: [old]).encrypt(plaintext: secret, context: userA)
        let rotated = try ContextBoundCipher(keys: [new, old])

        #expect(throws: FernetError.invalidToken) { try rotated.rewrap(token: oldToken, context: userB) }

        let rewrapped = try rotated.rewrap(token: oldToken, context: userA)
        #expect(rewrapped.oldKeyID == old.id)
        #expect(rewrapped.newKeyID == new.id)
        let newOnly = try ContextBoundCipher(keys: [new])
        #expect(try newOnly.decrypt(token: rewrapped.token, context: userA).plaintext == secret)
        #expect(try newOnly.decrypt(token: rewrapped.token, context: userA).keyID == new.id)
        #expect(throws: FernetError.invalidToken) { try newOnly.decrypt(token: rewrapped.token, context: userB) }
        #expect(throws: FernetError.invalidToken) { try newOnly.decrypt(token: oldToken, context: userA) }
    }
}
