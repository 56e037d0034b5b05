import Foundation
import Logging
import RPC

/// What the broker needs to sell a subscription: which prices a user may pick and where Stripe
/// Checkout sends the user back to.
public struct BillingSettings: Sendable {
    /// Used when a request names no price.
    public var defaultPriceID: String
    /// Prices a request may name; the default is always allowed. A user cannot pick an arbitrary
    /// price of the platform's Stripe account (a cheaper or internal one).
    public var allowedPriceIDs: Set<String>
    public var successURL: String
    public var cancelURL: String

    public init(defaultPriceID: String, allowedPriceIDs: Set<String> = [], successURL: String, cancelURL: String) {
        self.defaultPriceID = defaultPriceID
        self.allowedPriceIDs = allowedPriceIDs.union([defaultPriceID])
        self.successURL = successURL
        self.cancelURL = cancelURL
    }
}

/// The broker's RPC handlers (`clau.broker.Broker`), one extension per resource: Alpaca OAuth and
/// trading, Stripe bank links and subscriptions, webhooks, key rotation. Every per-user method
/// takes the acting user from `user_id` (set by the edge from the access token) and scopes every
/// row and upstream call to it (C-7).
public struct BrokerHandlers: BrokerRPCHandler {
    public let store: BrokerStore
    public let vault: CredentialVault
    public let alpaca: AlpacaClient
    public let stripe: StripeClient
    public let authorizeURL: AlpacaAuthorizeURLBuilder
    public let billing: BillingSettings
    public let webhookSignature: StripeWebhookSignature
    public let now: @Sendable () -> Date

    public init(
        store: BrokerStore, vault: CredentialVault, alpaca: AlpacaClient, stripe: StripeClient,
        authorizeURL: AlpacaAuthorizeURLBuilder, billing: BillingSettings, webhookSignature: StripeWebhookSignature,
        now: @escaping @Sendable () -> Date = { Date() }
    ) {
        self.store = store
        self.vault = vault
        self.alpaca = alpaca
        self.stripe = stripe
        self.authorizeURL = authorizeURL
        self.billing = billing
        self.webhookSignature = webhookSignature
        self.now = now
    }

    /// The acting user. The edge always sends the token's subject, a UUID; anything else is a
    /// caller bug and refused before any row is read.
    static func actingUser(_ text: String) throws -> UUID {
        guard text.utf8.count == 36, let id = UUID(uuidString: text) else {
            throw FieldValidationError(field: "user_id", problem: .invalidFormat)
        }
        return id
    }
}
