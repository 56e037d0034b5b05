import Testing

@testable import BrokerService

/// Ids that end up in Alpaca/Stripe URL paths are checked against the provider's shape first, so a
/// caller cannot redirect an upstream call to another resource.
@Suite("Provider identifiers", .timeLimit(.minutes(5)))
struct ProviderIdentifiersTests {
    @Test func alpacaOrderIDsAreCanonicalUUIDs() throws {
        #expect(try ProviderIdentifiers.alpacaOrderID("61E69015-8549-4BFD-B9C3-01E75843F47D") == "61e69015-8549-4bfd-b9c3-01e75843f47d")
    }

    @Test(arguments: [
        ("", "missing"), ("../account", "invalid_format"), ("61e69015-8549-4bfd-b9c3-01e75843f47d/../../v2/account", "invalid_format"),
        ("61e6901585494bfdb9c301e75843f47d", "invalid_format"), ("61e69015-8549-4bfd-b9c3-01e75843f47%", "invalid_format"),
        ("61e69015-8549-4bfd-b9c3-01e75843f47\u{0}", "control_character"),
    ])
    func pathChangingOrderIDsAreRefused(_ text: String, _ problem: String) {
        #expect(throws: FieldValidationError(field: "order_id", problem: .init(rawValue: problem)!)) {
            try ProviderIdentifiers.alpacaOrderID(text)
        }
    }

    @Test func stripeIDsKeepTheirPrefixAndAlphabet() throws {
        #expect(try ProviderIdentifiers.stripeID("fcsess_1NdDkE2eZvKYlo2C", of: .financialConnectionsSession, field: "session_id") == "fcsess_1NdDkE2eZvKYlo2C")
        #expect(try ProviderIdentifiers.stripeID("cs_test_a1B2c3", of: .checkoutSession, field: "session_id") == "cs_test_a1B2c3")
        #expect(try ProviderIdentifiers.stripeID("fca_1MwVK", of: .financialConnectionsAccount, field: "account_id") == "fca_1MwVK")
    }

    @Test(arguments: [
        ("", "missing"), ("fca_", "invalid_format"), ("fca_1/../../customers", "invalid_format"), ("fca_1?expand[]=x", "invalid_format"),
        ("fcsess_1", "invalid_format"), ("FCA_1", "invalid_format"), ("fca_1 ", "invalid_format"), ("fca_1\n", "control_character"),
        ("fca_" + String(repeating: "a", count: 252), "too_long"),
    ])
    func malformedStripeIDsAreRefused(_ text: String, _ problem: String) {
        #expect(throws: FieldValidationError(field: "account_id", problem: .init(rawValue: problem)!)) {
            try ProviderIdentifiers.stripeID(text, of: .financialConnectionsAccount, field: "account_id")
        }
    }

    @Test func orderListQueryUsesAlpacasDefaultsAndBounds() throws {
        let unset = try AlpacaOrderListQuery(status: "", limit: 0)
        #expect(unset.status == .open)
        #expect(unset.limit == 50)
        #expect(try AlpacaOrderListQuery(status: "all", limit: 500).limit == 500)
        #expect(throws: FieldValidationError(field: "limit", problem: .outOfRange)) { try AlpacaOrderListQuery(status: "closed", limit: 501) }
        #expect(throws: FieldValidationError(field: "status", problem: .unsupportedValue)) { try AlpacaOrderListQuery(status: "OPEN", limit: 1) }
        #expect(throws: FieldValidationError(field: "status", problem: .controlCharacter)) { try AlpacaOrderListQuery(status: "open\u{0}", limit: 1) }
    }
}
