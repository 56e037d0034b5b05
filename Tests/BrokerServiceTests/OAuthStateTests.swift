import Crypto
import Foundation
import RPC
import Testing

@testable import BrokerService

/// The Alpaca OAuth `state`: random, stored hashed, bound to the user, single use, 10-minute expiry
/// (SPEC §3: a reused, expired or foreign state → `invalid_state`).
@Suite("Alpaca OAuth state", .timeLimit(.minutes(5)))
struct OAuthStateTests {
    let alice = UUID(uuidString: "3f2b9c1e-8d4a-4e71-9a0b-5c6d7e8f9a01")!
    let mallory = UUID(uuidString: "7a1c2d3e-4f50-4617-8293-a4b5c6d7e8f9")!
    let issuedAt = Date(timeIntervalSince1970: 1_800_000_000)

    func redeemError(_ ledger: inout OAuthStateLedger, _ value: String, by user: UUID, at now: Date) -> OAuthStateError? {
        do throws(OAuthStateError) {
            try ledger.redeem(value, by: user, now: now)
            return nil
        } catch {
            return error
        }
    }

    @Test func stateIs32RandomBytesInURLSafeBase64() {
        var seen = Set<String>()
        for _ in 0..<500 {
            let state = OAuthState.generate()
            #expect(state.value.utf8.count == 43)
            #expect(OAuthState.hash(of: state.value) != nil)
            #expect(!state.value.contains("+") && !state.value.contains("/") && !state.value.contains("="))
            seen.insert(state.value)
        }
        #expect(seen.count == 500)
    }

    @Test func onlyTheHashIsStored() {
        var ledger = OAuthStateLedger()
        let (state, record) = ledger.issue(for: alice, now: issuedAt)
        #expect(record.stateHash == Array(SHA256.hash(data: Array(state.value.utf8))))
        #expect(record.stateHash.count == 32)
        #expect(!String(describing: record).contains(state.value))
        #expect(record.userID == alice)
        #expect(record.expiresAt == issuedAt.addingTimeInterval(600))
    }

    @Test func stateIsSingleUse() throws {
        var ledger = OAuthStateLedger()
        let (state, _) = ledger.issue(for: alice, now: issuedAt)
        let record = try ledger.redeem(state.value, by: alice, now: issuedAt.addingTimeInterval(30))
        #expect(record.usedAt == issuedAt.addingTimeInterval(30))
        #expect(redeemError(&ledger, state.value, by: alice, at: issuedAt.addingTimeInterval(31)) == .alreadyUsed)
    }

    @Test func stateExpiresAfterTenMinutes() throws {
        var ledger = OAuthStateLedger()
        let (late, _) = ledger.issue(for: alice, now: issuedAt)
        #expect(redeemError(&ledger, late.value, by: alice, at: issuedAt.addingTimeInterval(600)) == .expired)
        let (onTime, _) = ledger.issue(for: alice, now: issuedAt)
        try ledger.redeem(onTime.value, by: alice, now: issuedAt.addingTimeInterval(599.999))
    }

    @Test func anotherUsersStateIsRefusedAndStaysUsableByItsOwner_C7() throws {
        var ledger = OAuthStateLedger()
        let (state, _) = ledger.issue(for: alice, now: issuedAt)
        #expect(redeemError(&ledger, state.value, by: mallory, at: issuedAt) == .issuedToAnotherUser)
        try ledger.redeem(state.value, by: alice, now: issuedAt.addingTimeInterval(1))
    }

    @Test func unknownAndMalformedStatesAreRefused() {
        var ledger = OAuthStateLedger()
        _ = ledger.issue(for: alice, now: issuedAt)
        #expect(redeemError(&ledger, OAuthState.generate().value, by: alice, at: issuedAt) == .unknown)
        for malformed in ["", "short", String(repeating: "A", count: 42), String(repeating: "A", count: 44), String(repeating: "+", count: 43), String(repeating: "A", count: 42) + "\u{0}"] {
            #expect(redeemError(&ledger, malformed, by: alice, at: issuedAt) == .malformed, "\(malformed.debugDescription)")
        }
    }

    @Test func everyRefusalLooksTheSameToTheCaller() {
        let errors: [OAuthStateError] = [.malformed, .unknown, .issuedToAnotherUser, .expired, .alreadyUsed]
        for error in errors {
            #expect(error.rpcError == RPCError(code: .invalidArgument, message: "invalid_state"))
        }
    }

    @Test func spentStatesAreDropped() throws {
        var ledger = OAuthStateLedger()
        let (used, _) = ledger.issue(for: alice, now: issuedAt)
        _ = ledger.issue(for: alice, now: issuedAt.addingTimeInterval(-700))
        _ = ledger.issue(for: mallory, now: issuedAt)
        try ledger.redeem(used.value, by: alice, now: issuedAt)
        #expect(ledger.count == 3)
        ledger.removeSpent(now: issuedAt)
        #expect(ledger.count == 1)
    }

    @Test func authorizeURLIsTheRealEndpointWithEncodedParameters() throws {
        let builder = try AlpacaAuthorizeURLBuilder(clientID: "abc123", redirectURI: "https://app.example.com/alpaca/callback", scopes: [.accountWrite, .trading, .data])
        let state = OAuthState.generate()
        let url = builder.url(state: state)
        #expect(url.hasPrefix("https://app.alpaca.markets/oauth/authorize?"))
        #expect(url == "https://app.alpaca.markets/oauth/authorize?response_type=code&client_id=abc123"
            + "&redirect_uri=https%3A%2F%2Fapp.example.com%2Falpaca%2Fcallback&scope=account%3Awrite%20trading%20data&state=\(state.value)")
        let components = try #require(URLComponents(string: url))
        let items = Dictionary(uniqueKeysWithValues: (components.queryItems ?? []).map { ($0.name, $0.value ?? "") })
        #expect(items == [
            "response_type": "code", "client_id": "abc123", "redirect_uri": "https://app.example.com/alpaca/callback",
            "scope": "account:write trading data", "state": state.value,
        ])
    }

    @Test func authorizeURLWithoutScopesOmitsTheParameter() throws {
        let builder = try AlpacaAuthorizeURLBuilder(endpoint: "http://127.0.0.1:9100/oauth/authorize", clientID: "id", redirectURI: "http://localhost:8443/cb", scopes: [])
        #expect(!builder.url(state: .generate()).contains("scope="))
    }

    @Test func unsafeConfigurationIsRefused() {
        #expect(throws: AlpacaAuthorizeURLBuilder.ConfigurationError.invalidEndpoint) {
            try AlpacaAuthorizeURLBuilder(endpoint: "http://app.alpaca.markets/oauth/authorize", clientID: "id", redirectURI: "https://a.example/cb", scopes: [])
        }
        #expect(throws: AlpacaAuthorizeURLBuilder.ConfigurationError.invalidRedirectURI) {
            try AlpacaAuthorizeURLBuilder(clientID: "id", redirectURI: "javascript:alert(1)", scopes: [])
        }
        #expect(throws: AlpacaAuthorizeURLBuilder.ConfigurationError.invalidRedirectURI) {
            try AlpacaAuthorizeURLBuilder(clientID: "id", redirectURI: "https://a.example/cb#frag", scopes: [])
        }
        #expect(throws: AlpacaAuthorizeURLBuilder.ConfigurationError.invalidRedirectURI) {
            try AlpacaAuthorizeURLBuilder(clientID: "id", redirectURI: "https://a.example/cb?next=evil", scopes: [])
        }
        #expect(throws: AlpacaAuthorizeURLBuilder.ConfigurationError.invalidClientID) {
            try AlpacaAuthorizeURLBuilder(clientID: "id\u{0}", redirectURI: "https://a.example/cb", scopes: [])
        }
        #expect(throws: AlpacaAuthorizeURLBuilder.ConfigurationError.invalidScope) {
            try AlpacaAuthorizeURLBuilder(clientID: "id", redirectURI: "https://a.example/cb", scopes: [.data, .data])
        }
    }
}
