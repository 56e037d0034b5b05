import Foundation

/// Identifiers that the broker puts into Alpaca and Stripe URL paths (`/v2/orders/{id}`,
/// `/v1/financial_connections/accounts/{id}`) or form bodies. Each is checked against the shape the
/// provider uses before it goes anywhere near a URL, so a value like `../../v2/account` or
/// `x?expand[]=…` can never change which upstream resource is addressed.
public enum ProviderIdentifiers {
    /// Alpaca order ids are UUIDs (contracts README); returned in canonical lowercase.
    public static func alpacaOrderID(_ text: String, field: String = "order_id") throws(FieldValidationError) -> String {
        guard !text.isEmpty else { throw FieldValidationError(field: field, problem: .missing) }
        guard !UntrustedText.containsControlCharacter(text) else { throw FieldValidationError(field: field, problem: .controlCharacter) }
        guard text.utf8.count == 36, let id = UUID(uuidString: text) else { throw FieldValidationError(field: field, problem: .invalidFormat) }
        return id.uuidString.lowercased()
    }

    /// The Stripe objects the broker refers to by id, with the prefixes Stripe's fixtures show
    /// (contracts README). Stripe states no id pattern, so only the prefix and a conservative
    /// alphabet are checked.
    public enum StripeObject: String, Sendable, Hashable, CaseIterable {
        case financialConnectionsSession = "fcsess_"
        case financialConnectionsAccount = "fca_"
        case price = "price_"
        case checkoutSession = "cs_"
        case customer = "cus_"
        case subscription = "sub_"
        case event = "evt_"
    }

    /// Stripe documents ids of up to 255 characters.
    static let maximumStripeIDLength = 255

    /// `prefix` + letters, digits and `_` (test-mode ids such as `cs_test_…` included).
    public static func stripeID(_ text: String, of kind: StripeObject, field: String) throws(FieldValidationError) -> String {
        guard !text.isEmpty else { throw FieldValidationError(field: field, problem: .missing) }
        guard !UntrustedText.containsControlCharacter(text) else { throw FieldValidationError(field: field, problem: .controlCharacter) }
        guard text.utf8.count <= maximumStripeIDLength else { throw FieldValidationError(field: field, problem: .tooLong) }
        guard text.hasPrefix(kind.rawValue), text.utf8.count > kind.rawValue.utf8.count,
            text.utf8.allSatisfy({ isIdentifierByte($0) })
        else { throw FieldValidationError(field: field, problem: .invalidFormat) }
        return text
    }

    private static func isIdentifierByte(_ byte: UInt8) -> Bool {
        switch byte {
        case 0x41...0x5A, 0x61...0x7A, 0x30...0x39, 0x5F: true
        default: false
        }
    }
}

/// `GET /v2/orders` parameters the broker passes on (contracts README: `status` open|closed|all,
/// default open; `limit` default 50, max 500).
public struct AlpacaOrderListQuery: Sendable, Hashable {
    public enum Status: String, Sendable, Hashable, CaseIterable {
        case open, closed, all
    }

    public static let defaultLimit = 50
    public static let maximumLimit = 500

    public let status: Status
    public let limit: Int

    /// Empty `status` and zero `limit` are proto3's "unset": Alpaca's defaults.
    public init(status: String, limit: UInt32) throws(FieldValidationError) {
        if status.isEmpty {
            self.status = .open
        } else if UntrustedText.containsControlCharacter(status) {
            throw FieldValidationError(field: "status", problem: .controlCharacter)
        } else if let parsed = Status(rawValue: status) {
            self.status = parsed
        } else {
            throw FieldValidationError(field: "status", problem: .unsupportedValue)
        }
        guard limit <= UInt32(Self.maximumLimit) else { throw FieldValidationError(field: "limit", problem: .outOfRange) }
        self.limit = limit == 0 ? Self.defaultLimit : Int(limit)
    }
}
