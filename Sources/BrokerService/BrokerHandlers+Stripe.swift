import Foundation
import Logging
import RPC

/// Stripe: one customer per user (its id stored sealed), Financial Connections bank links and
/// balances, subscription checkout and status, and the webhook that keeps the status current.
extension BrokerHandlers {
    /// Largest webhook payload read (Stripe's events are a few KiB).
    public static let maximumWebhookPayloadBytes = 64 * 1024

    public func createFinancialConnectionsSession(_ request: BrokerCreateFinancialConnectionsSessionRequest, _ context: ServerContext) async throws -> BrokerCreateFinancialConnectionsSessionResponse {
        let userID = try Self.actingUser(request.userID)
        let customerID = try await stripeCustomer(of: userID, context)
        let session = try await stripe.createFinancialConnectionsSession(customerID: customerID, idempotencyKey: UUID().uuidString, logger: context.logger)
        _ = try ProviderIdentifiers.stripeID(session.id, of: .financialConnectionsSession, field: "session_id")
        try await store.recordFinancialConnectionsSession(id: session.id, userID: userID, now: now(), logger: context.logger)
        var response = BrokerCreateFinancialConnectionsSessionResponse()
        response.sessionID = session.id
        response.clientSecret = session.clientSecret
        return response
    }

    public func linkFinancialConnectionsAccounts(_ request: BrokerLinkFinancialConnectionsAccountsRequest, _ context: ServerContext) async throws -> BrokerLinkFinancialConnectionsAccountsResponse {
        let userID = try Self.actingUser(request.userID)
        let sessionID = try ProviderIdentifiers.stripeID(request.sessionID, of: .financialConnectionsSession, field: "session_id")
        // Only sessions created for this user: another user's (or a made-up) id is NOT_FOUND (C-7).
        guard try await store.ownsFinancialConnectionsSession(id: sessionID, userID: userID, logger: context.logger) else {
            throw RPCError(code: .notFound, message: "not_found")
        }
        let session = try await stripe.financialConnectionsSession(id: sessionID, logger: context.logger)
        var linked: [BrokerLinkedBankAccount] = []
        for accountID in session.accountIDs.prefix(50) {
            guard (try? ProviderIdentifiers.stripeID(accountID, of: .financialConnectionsAccount, field: "id")) != nil else { continue }
            let account = try await stripe.financialConnectionsAccount(id: accountID, logger: context.logger)
            let record = BankAccountRecord(account)
            if try await store.saveBankAccount(record, userID: userID, now: now(), logger: context.logger) {
                linked.append(record.message)
            }
        }
        var response = BrokerLinkFinancialConnectionsAccountsResponse()
        response.accounts = linked
        return response
    }

    public func listBankBalances(_ request: BrokerListBankBalancesRequest, _ context: ServerContext) async throws -> BrokerListBankBalancesResponse {
        let userID = try Self.actingUser(request.userID)
        var response = BrokerListBankBalancesResponse()
        response.accounts = try await store.bankAccounts(userID: userID, logger: context.logger).map(\.message)
        return response
    }

    public func refreshBankBalance(_ request: BrokerRefreshBankBalanceRequest, _ context: ServerContext) async throws -> BrokerRefreshBankBalanceResponse {
        let userID = try Self.actingUser(request.userID)
        let accountID = try ProviderIdentifiers.stripeID(request.accountID, of: .financialConnectionsAccount, field: "account_id")
        guard try await !store.bankAccounts(userID: userID, id: accountID, logger: context.logger).isEmpty else {
            throw RPCError(code: .notFound, message: "not_found")
        }
        let account = try await stripe.refreshBalance(accountID: accountID, idempotencyKey: UUID().uuidString, logger: context.logger)
        let record = BankAccountRecord(account)
        try await store.saveBankAccount(record, userID: userID, now: now(), logger: context.logger)
        var response = BrokerRefreshBankBalanceResponse()
        response.account = try await store.bankAccounts(userID: userID, id: accountID, logger: context.logger).first?.message ?? record.message
        return response
    }

    public func createSubscriptionCheckout(_ request: BrokerCreateSubscriptionCheckoutRequest, _ context: ServerContext) async throws -> BrokerCreateSubscriptionCheckoutResponse {
        let userID = try Self.actingUser(request.userID)
        let priceID: String
        if request.priceID.isEmpty {
            priceID = billing.defaultPriceID
        } else {
            priceID = try ProviderIdentifiers.stripeID(request.priceID, of: .price, field: "price_id")
            guard billing.allowedPriceIDs.contains(priceID) else {
                throw FieldValidationError(field: "price_id", problem: .unsupportedValue)
            }
        }
        let customerID = try await stripeCustomer(of: userID, context)
        let session = try await stripe.createSubscriptionCheckout(
            customerID: customerID, priceID: priceID, successURL: billing.successURL, cancelURL: billing.cancelURL,
            clientReferenceID: userID.uuidString.lowercased(), idempotencyKey: UUID().uuidString, logger: context.logger
        )
        _ = try ProviderIdentifiers.stripeID(session.id, of: .checkoutSession, field: "session_id")
        try await store.recordCheckoutSession(id: session.id, userID: userID, now: now(), logger: context.logger)
        var response = BrokerCreateSubscriptionCheckoutResponse()
        response.checkoutURL = session.url
        response.sessionID = session.id
        return response
    }

    public func getSubscription(_ request: BrokerGetSubscriptionRequest, _ context: ServerContext) async throws -> BrokerGetSubscriptionResponse {
        let userID = try Self.actingUser(request.userID)
        // Owner only (C-7), checked here as well as at the edge: any other subject is NOT_FOUND.
        guard let subject = UUID(uuidString: request.subjectUserID), subject == userID else {
            throw RPCError(code: .notFound, message: "not_found")
        }
        var response = BrokerGetSubscriptionResponse()
        guard let subscription = try await store.subscription(userID: userID, logger: context.logger) else {
            response.status = "none"
            return response
        }
        response.status = subscription.status
        response.currentPeriodEnd = subscription.currentPeriodEnd.map { Int64($0.timeIntervalSince1970) } ?? 0
        return response
    }

    // MARK: Webhooks

    public func handleStripeWebhook(_ request: BrokerHandleStripeWebhookRequest, _ context: ServerContext) async throws -> BrokerHandleStripeWebhookResponse {
        let invalidSignature = RPCError(code: .invalidArgument, message: "invalid_signature")
        guard request.payload.count <= Self.maximumWebhookPayloadBytes else { throw invalidSignature }
        do {
            try webhookSignature.verify(payload: request.payload, header: request.signatureHeader, now: Int64(now().timeIntervalSince1970))
        } catch {
            context.logger.notice("stripe webhook refused", metadata: ["event": "stripe_webhook_refused", "reason": "\(error)"])
            throw invalidSignature
        }
        let event: StripeWebhookEvent
        do {
            event = try StripeWebhookEvent(payload: request.payload)
        } catch {
            // Authentic but not understood: Stripe retries a 4xx, and the log says why.
            context.logger.warning("stripe webhook payload not understood", metadata: ["event": "stripe_webhook_unreadable", "reason": "\(error)"])
            throw RPCError(code: .invalidArgument, message: "invalid_payload")
        }
        var response = BrokerHandleStripeWebhookResponse()
        response.received = true
        if try await store.eventProcessed(id: event.id, logger: context.logger) {
            response.duplicate = true
            return response
        }
        let applied = try await apply(event, context)
        response.duplicate = !applied
        context.logger.info("stripe webhook", metadata: ["event": "stripe_webhook", "stripe_event": "\(event.id)", "type": "\(event.type)", "applied": "\(applied)"])
        return response
    }

    /// Applies the event once (see `BrokerStore.applyOnce`); false when it had been applied before.
    func apply(_ event: StripeWebhookEvent, _ context: ServerContext) async throws -> Bool {
        let logger = context.logger
        let eventCreated = ProviderTime.date(unixSeconds: event.created) ?? Date(timeIntervalSince1970: 0)
        let at = now()
        switch event.effect {
        case .none:
            return try await store.applyOnce(eventID: event.id, type: event.type, now: at, logger: logger) { _ in }
        case let .checkoutCompleted(sessionID, subscriptionID):
            // The session must be one this broker created; its row, not the payload, names the user.
            guard let userID = try await store.checkoutSessionOwner(id: sessionID, logger: logger) else {
                logger.warning("checkout session unknown to the broker", metadata: ["stripe_event": "\(event.id)"])
                return try await store.applyOnce(eventID: event.id, type: event.type, now: at, logger: logger) { _ in }
            }
            let subscription = try await stripe.subscription(id: subscriptionID, logger: logger)
            let status = StripeWebhookEvent.subscriptionStatuses.contains(subscription.status) ? subscription.status : "incomplete"
            let periodEnd = ProviderTime.date(unixSeconds: subscription.currentPeriodEnd)
            return try await store.applyOnce(eventID: event.id, type: event.type, now: at, logger: logger) { connection in
                try await BrokerStore.saveSubscription(userID: userID, subscriptionID: subscriptionID, status: status, currentPeriodEnd: periodEnd, eventCreated: eventCreated, now: at, on: connection, logger: logger)
            }
        case let .subscriptionChanged(subscriptionID, customerID, status, currentPeriodEnd):
            guard let userID = try await store.userID(forCustomerHash: BrokerStore.lookupHash(customerID), logger: logger) else {
                logger.warning("subscription of a customer unknown to the broker", metadata: ["stripe_event": "\(event.id)"])
                return try await store.applyOnce(eventID: event.id, type: event.type, now: at, logger: logger) { _ in }
            }
            let periodEnd = currentPeriodEnd.flatMap(ProviderTime.date(unixSeconds:))
            return try await store.applyOnce(eventID: event.id, type: event.type, now: at, logger: logger) { connection in
                try await BrokerStore.saveSubscription(userID: userID, subscriptionID: subscriptionID, status: status, currentPeriodEnd: periodEnd, eventCreated: eventCreated, now: at, on: connection, logger: logger)
            }
        }
    }

    // MARK: Customers

    /// The user's Stripe customer id, creating the customer on first use. The creation's
    /// idempotency key is derived from the user, so concurrent or retried first calls meet the same
    /// customer at Stripe and only one is stored.
    func stripeCustomer(of userID: UUID, _ context: ServerContext) async throws -> String {
        let credentialContext = CredentialContext(provider: .stripe, userID: userID)
        if let sealed = try await store.stripeCustomer(userID: userID, logger: context.logger) {
            do {
                return try await vault.open(sealed, for: credentialContext, options: context.downstreamOptions())
            } catch is CredentialVault.UnopenableCredential {
                context.logger.error("stored stripe customer does not open for its owner", metadata: ["event": "credential_unopenable", "user_id": "\(userID)", "key_id": "\(sealed.keyID)"])
                throw RPCError(code: .failedPrecondition, message: "stripe_customer_unavailable")
            }
        }
        let customerID = try await stripe.createCustomer(userID: userID, idempotencyKey: "clau-customer-\(userID.uuidString.lowercased())", logger: context.logger)
        _ = try ProviderIdentifiers.stripeID(customerID, of: .customer, field: "customer")
        let sealed = try await vault.seal(customerID, for: credentialContext, options: context.downstreamOptions())
        let stored = try await store.saveStripeCustomer(userID: userID, customer: sealed, customerHash: BrokerStore.lookupHash(customerID), now: now(), logger: context.logger)
        if stored == sealed { return customerID }
        return try await vault.open(stored, for: credentialContext, options: context.downstreamOptions())
    }
}
