import Foundation

/// The parts of a Stripe event the broker acts on, decoded from a payload whose signature already
/// checked out. Unknown fields and event types are ignored (Stripe adds both over time); the
/// fields that are read are checked like any other input.
public struct StripeWebhookEvent: Sendable, Hashable {
    public enum Effect: Sendable, Hashable {
        /// A Checkout session finished: look up its subscription and bind it to the session's user.
        case checkoutCompleted(sessionID: String, subscriptionID: String)
        /// A subscription changed: apply its status to the customer's user.
        case subscriptionChanged(subscriptionID: String, customerID: String, status: String, currentPeriodEnd: Int64?)
        /// Acknowledged and recorded, nothing else.
        case none
    }

    public enum DecodingError: Error, Sendable, Hashable {
        case notJSON
        case missingField(String)
        case invalidField(String)
    }

    public let id: String
    public let type: String
    /// Unix seconds.
    public let created: Int64
    public let effect: Effect

    /// Statuses Stripe documents for subscriptions.
    public static let subscriptionStatuses: Set<String> = ["incomplete", "incomplete_expired", "trialing", "active", "past_due", "canceled", "unpaid", "paused"]

    public init(payload: some DataProtocol) throws(DecodingError) {
        let envelope: Envelope
        do {
            envelope = try JSONDecoder().decode(Envelope.self, from: Data(payload))
        } catch {
            throw .notJSON
        }
        guard let id = envelope.id else { throw .missingField("id") }
        guard (try? ProviderIdentifiers.stripeID(id, of: .event, field: "id")) != nil else { throw .invalidField("id") }
        guard let type = envelope.type, !type.isEmpty, type.utf8.count <= 100, UntrustedText.isPrintableASCII(type) else { throw .invalidField("type") }
        self.id = id
        self.type = type
        self.created = envelope.created ?? 0
        let object = envelope.data?.object
        switch type {
        case "checkout.session.completed":
            guard object?.mode == "subscription" else {
                effect = .none
                return
            }
            guard let sessionID = object?.id, (try? ProviderIdentifiers.stripeID(sessionID, of: .checkoutSession, field: "id")) != nil else {
                throw .invalidField("data.object.id")
            }
            guard let subscriptionID = object?.subscription?.id, (try? ProviderIdentifiers.stripeID(subscriptionID, of: .subscription, field: "subscription")) != nil else {
                throw .invalidField("data.object.subscription")
            }
            effect = .checkoutCompleted(sessionID: sessionID, subscriptionID: subscriptionID)
        case "customer.subscription.created", "customer.subscription.updated", "customer.subscription.deleted":
            guard let subscriptionID = object?.id, (try? ProviderIdentifiers.stripeID(subscriptionID, of: .subscription, field: "id")) != nil else {
                throw .invalidField("data.object.id")
            }
            guard let customerID = object?.customer?.id, (try? ProviderIdentifiers.stripeID(customerID, of: .customer, field: "customer")) != nil else {
                throw .invalidField("data.object.customer")
            }
            guard let status = object?.status, Self.subscriptionStatuses.contains(status) else { throw .invalidField("data.object.status") }
            effect = .subscriptionChanged(subscriptionID: subscriptionID, customerID: customerID, status: status, currentPeriodEnd: object?.currentPeriodEnd)
        default:
            effect = .none
        }
    }

    private struct Envelope: Decodable {
        var id: String?
        var type: String?
        var created: Int64?
        var data: EventData?
    }

    private struct EventData: Decodable {
        var object: EventObject?
    }

    private struct EventObject: Decodable {
        var id: String?
        var mode: String?
        var status: String?
        var customer: Reference?
        var subscription: Reference?
        var currentPeriodEnd: Int64?

        enum CodingKeys: String, CodingKey {
            case id, mode, status, customer, subscription
            case currentPeriodEnd = "current_period_end"
        }
    }

    /// Stripe sends a related object as its id, or expanded as an object with an `id`.
    private struct Reference: Decodable {
        var id: String?

        init(from decoder: any Decoder) throws {
            if let text = try? decoder.singleValueContainer().decode(String.self) {
                id = text
            } else {
                struct Expanded: Decodable { var id: String? }
                id = try Expanded(from: decoder).id
            }
        }
    }
}
