import Foundation
import Logging
import RPC
import Testing

@testable import BrokerService

/// `StripeClient` over real HTTP against the Stripe fake, live on 127.0.0.1.
@Suite("Stripe client against the live fake", .timeLimit(.minutes(3)))
struct StripeClientTests {
    let capture = LogCapture()
    var logger: Logger { capture.logger() }

    @Test func theSameIdempotencyKeyReturnsTheSameCustomer() async throws {
        try await withLiveFakes { live in
            let stripe = try live.stripeClient()
            let user = UUID()
            let key = "customer-\(user.uuidString.lowercased())"
            let first = try await stripe.createCustomer(userID: user, idempotencyKey: key, logger: logger)
            let second = try await stripe.createCustomer(userID: user, idempotencyKey: key, logger: logger)
            #expect(first.hasPrefix("cus_"))
            #expect(first == second)
            let other = try await stripe.createCustomer(userID: user, idempotencyKey: key + "-b", logger: logger)
            #expect(other != first)
            // metadata[user_id] was sent form-encoded with brackets.
            let stored = try await live.raw(.GET, "/v1/customers/\(first)", bearer: ProviderTestCredentials.stripeSecretKey)
            #expect((jsonObject(stored.body)?["metadata"] as? [String: Any])?["user_id"] as? String == user.uuidString.lowercased())
        }
    }

    @Test func financialConnectionsSessionLinkAccountsReadAndRefreshBalance() async throws {
        try await withLiveFakes { live in
            let stripe = try live.stripeClient()
            let customer = try await stripe.createCustomer(userID: UUID(), idempotencyKey: UUID().uuidString, logger: logger)
            let session = try await stripe.createFinancialConnectionsSession(customerID: customer, idempotencyKey: UUID().uuidString, logger: logger)
            #expect(session.id.hasPrefix("fcsess_"))
            #expect(session.clientSecret.hasPrefix(session.id + "_secret_"))
            #expect(session.customerID == customer)
            #expect(session.accountIDs.isEmpty)
            let created = try await live.raw(.GET, "/v1/financial_connections/sessions/\(session.id)", bearer: ProviderTestCredentials.stripeSecretKey)
            #expect(jsonObject(created.body)?["permissions"] as? [String] == ["balances"])

            let completed = try await live.raw(.POST, "/_fake/stripe/financial_connections/sessions/\(session.id)/complete?accounts=2")
            #expect(completed.status == 200)
            let read = try await stripe.financialConnectionsSession(id: session.id, logger: logger)
            #expect(read.accountIDs.count == 2)
            #expect(read.accountIDs.allSatisfy { $0.hasPrefix("fca_") })

            let accountID = try #require(read.accountIDs.first)
            let before = try await stripe.financialConnectionsAccount(id: accountID, logger: logger)
            #expect(before.id == accountID)
            #expect(before.institutionName == "StripeBank")
            #expect(before.last4.count == 4)
            #expect(before.category == "cash")
            #expect(!before.hasBalance)
            #expect(before.refreshStatus == "")

            let refreshed = try await stripe.refreshBalance(accountID: accountID, idempotencyKey: UUID().uuidString, logger: logger)
            #expect(refreshed.refreshStatus == "succeeded")
            #expect(refreshed.hasBalance)
            #expect(refreshed.balance.type == "cash")
            #expect(refreshed.balance.asOf > 0)
            let usd = try #require(refreshed.balance.current["usd"])
            #expect(usd > 0)
            let after = try await stripe.financialConnectionsAccount(id: accountID, logger: logger)
            #expect(after.balance.current == refreshed.balance.current)
            #expect(after.refreshStatus == "succeeded")
        }
    }

    @Test func subscriptionCheckoutCompletesIntoAnActiveSubscription() async throws {
        try await withLiveFakes { live in
            let stripe = try live.stripeClient()
            let customer = try await stripe.createCustomer(userID: UUID(), idempotencyKey: UUID().uuidString, logger: logger)
            let checkout = try await stripe.createSubscriptionCheckout(
                customerID: customer, priceID: "price_clauPro", successURL: "https://app.example/success", cancelURL: "https://app.example/cancel",
                clientReferenceID: UUID().uuidString.lowercased(), idempotencyKey: UUID().uuidString, logger: logger
            )
            #expect(checkout.id.hasPrefix("cs_"))
            #expect(checkout.url.hasPrefix("https://"))
            #expect(checkout.customerID == customer)
            #expect(checkout.subscriptionID == nil)
            let stored = try await live.raw(.GET, "/v1/checkout/sessions/\(checkout.id)", bearer: ProviderTestCredentials.stripeSecretKey)
            #expect(jsonObject(stored.body)?["mode"] as? String == "subscription")

            let completed = try await live.raw(.POST, "/_fake/stripe/checkout/sessions/\(checkout.id)/complete")
            #expect(completed.status == 200)
            let after = try await live.raw(.GET, "/v1/checkout/sessions/\(checkout.id)", bearer: ProviderTestCredentials.stripeSecretKey)
            let subscriptionID = try #require(jsonObject(after.body)?["subscription"] as? String)
            let subscription = try await stripe.subscription(id: subscriptionID, logger: logger)
            #expect(subscription.id == subscriptionID)
            #expect(subscription.status == "active")
            #expect(subscription.customerID == customer)
            #expect(subscription.currentPeriodEnd > Int64(Date().timeIntervalSince1970))
        }
    }

    @Test func unknownObjectsAreNotFoundAndMalformedIDsNeverReachTheURL() async throws {
        try await withLiveFakes { live in
            let stripe = try live.stripeClient()
            let missing = await rpcError { try await stripe.subscription(id: "sub_doesNotExist", logger: logger) }
            #expect(missing == RPCError(code: .notFound, message: "not_found"))
            for bad in ["sub_../../v1/customers", "cus_123", "sub_x?expand[]=customer", ""] {
                let error = await rpcError { try await stripe.subscription(id: bad, logger: logger) }
                #expect(error?.code == .invalidArgument, "\(bad)")
            }
            let wrongKind = await rpcError { try await stripe.financialConnectionsAccount(id: "fcsess_abc", logger: logger) }
            #expect(wrongKind?.code == .invalidArgument)
        }
    }

    @Test func aRejectedRequestIsInvalidArgumentWithoutStripesMessage() async throws {
        try await withLiveFakes { live in
            let stripe = try live.stripeClient()
            // The customer does not exist: Stripe answers 404 resource_missing.
            let missingCustomer = await rpcError {
                try await stripe.createFinancialConnectionsSession(customerID: "cus_nobody", idempotencyKey: UUID().uuidString, logger: logger)
            }
            #expect(missingCustomer == RPCError(code: .notFound, message: "not_found"))
            // The same key with another body: Stripe's 400 idempotency_error.
            let key = UUID().uuidString
            _ = try await stripe.createCustomer(userID: UUID(), idempotencyKey: key, logger: logger)
            let reused = await rpcError { try await stripe.createCustomer(userID: UUID(), idempotencyKey: key, logger: logger) }
            #expect(reused == RPCError(code: .invalidArgument, message: "stripe_rejected_request"))
        }
    }
}

/// A JSON object from the fakes, for checking what the client sent.
func jsonObject(_ text: String) -> [String: Any]? {
    (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String: Any]
}
