import Foundation
import Testing

@testable import BrokerService

/// Vault contexts bind each stored ciphertext to its owner and purpose.
@Suite("Credential context", .timeLimit(.minutes(5)))
struct CredentialContextTests {
    let userID = "3f2b9c1e-8d4a-4e71-9a0b-5c6d7e8f9a01"

    @Test func contextNamesProviderAndOwner_X4() throws {
        #expect(try CredentialContext(provider: .alpaca, userID: userID).value == "alpaca:user:3f2b9c1e-8d4a-4e71-9a0b-5c6d7e8f9a01")
        #expect(try CredentialContext(provider: .stripe, userID: userID).value == "stripe:user:3f2b9c1e-8d4a-4e71-9a0b-5c6d7e8f9a01")
    }

    @Test func oneUserHasOneSpellingOfEachContext_X4() throws {
        let lower = try CredentialContext(provider: .alpaca, userID: userID)
        let upper = try CredentialContext(provider: .alpaca, userID: userID.uppercased())
        #expect(lower == upper)
        #expect(lower.value == upper.value)
        #expect(CredentialContext(provider: .alpaca, userID: UUID(uuidString: userID)!).value == lower.value)
    }

    @Test func providersAndUsersNeverShareAContext_X4() throws {
        let other = "7a1c2d3e-4f50-4617-8293-a4b5c6d7e8f9"
        let contexts = try [userID, other].flatMap { id in try CredentialContext.Provider.allCases.map { try CredentialContext(provider: $0, userID: id).value } }
        #expect(Set(contexts).count == 4)
    }

    @Test(arguments: [
        "", "12", "not-a-uuid", "{3f2b9c1e-8d4a-4e71-9a0b-5c6d7e8f9a01}", " 3f2b9c1e-8d4a-4e71-9a0b-5c6d7e8f9a01",
        "3f2b9c1e8d4a4e719a0b5c6d7e8f9a01", "3f2b9c1e-8d4a-4e71-9a0b-5c6d7e8f9a0\u{0}", "3f2b9c1e-8d4a-4e71-9a0b-5c6d7e8f9a01:stripe",
    ])
    func onlyAHyphenatedUUIDIsAnOwner_X4(_ text: String) {
        #expect(throws: CredentialContext.ParseError.invalidUserID) { try CredentialContext(provider: .alpaca, userID: text) }
    }

    @Test func contextFitsTheVaultsLimits() throws {
        // The vault takes printable ASCII, 1–255 bytes (Protos/vault.proto).
        let value = try CredentialContext(provider: .stripe, userID: userID).value
        #expect(value.utf8.count <= 255)
        #expect(value.utf8.allSatisfy { $0 >= 0x20 && $0 <= 0x7E })
    }
}
