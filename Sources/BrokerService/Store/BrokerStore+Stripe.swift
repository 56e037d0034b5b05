import Foundation
import Logging
import PostgresNIO
import RPC

/// A linked bank account as stored: the fields clients see and the last balance.
public struct BankAccountRecord: Sendable, Hashable {
    public var id: String
    public var institutionName: String
    public var last4: String
    public var category: String
    /// Currency code → minor units; nil until a balance was read.
    public var balanceCurrent: [String: Int64]?
    public var balanceAsOf: Date?
    public var balanceType: String?
    public var refreshStatus: String

    /// Bounds of `broker.bank_accounts` (migrations/broker/0001_init.sql).
    static let maximumInstitutionName = 200
    static let maximumCategory = 32
    static let refreshStatuses: Set<String> = ["", "pending", "succeeded", "failed"]

    /// From what Stripe returned: every value is brought within the table's CHECKs here (text
    /// shortened and stripped of controls, an odd last4, currency or refresh status dropped, an
    /// impossible time treated as absent), so a provider's surprise can never fail the insert.
    public init(_ account: BrokerLinkedBankAccount) {
        id = account.id
        institutionName = UntrustedText.storable(account.institutionName, maximumScalars: Self.maximumInstitutionName)
        last4 = account.last4.utf8.count <= 4 && account.last4.utf8.allSatisfy { $0 >= 0x30 && $0 <= 0x39 } ? account.last4 : ""
        category = UntrustedText.storable(account.category, maximumScalars: Self.maximumCategory)
        if account.hasBalance {
            // ISO 4217 codes as Stripe writes them (`usd`).
            balanceCurrent = account.balance.current.filter { key, _ in key.utf8.count == 3 && key.utf8.allSatisfy { $0 >= 0x61 && $0 <= 0x7A } }
            balanceAsOf = ProviderTime.date(unixSeconds: account.balance.asOf)
            balanceType = UntrustedText.storable(account.balance.type, maximumScalars: Self.maximumCategory)
        }
        refreshStatus = Self.refreshStatuses.contains(account.refreshStatus) ? account.refreshStatus : ""
    }

    /// The RPC shape.
    public var message: BrokerLinkedBankAccount {
        var account = BrokerLinkedBankAccount()
        account.id = id
        account.institutionName = institutionName
        account.last4 = last4
        account.category = category
        account.refreshStatus = refreshStatus
        if let balanceCurrent {
            var balance = BrokerBankBalance()
            balance.current = balanceCurrent
            balance.asOf = balanceAsOf.map { Int64($0.timeIntervalSince1970) } ?? 0
            balance.type = balanceType ?? ""
            account.balance = balance
        }
        return account
    }
}

/// A user's subscription as the webhooks left it.
public struct SubscriptionRecord: Sendable, Hashable {
    public var subscriptionID: String
    public var status: String
    public var currentPeriodEnd: Date?
}

extension BrokerStore {
    // MARK: Stripe customers

    public func stripeCustomer(userID: UUID, logger: Logger) async throws -> SealedCredential? {
        let rows = try await client.query("""
            SELECT customer_ciphertext, key_id FROM broker.stripe_customers WHERE user_id = \(userID)
            """, logger: logger)
        for try await (ciphertext, keyID) in rows.decode((String, String).self) {
            return SealedCredential(ciphertext: ciphertext, keyID: keyID)
        }
        return nil
    }

    /// Stores the user's customer unless one is already stored; returns the one that is stored
    /// afterwards (a concurrent first call may have won).
    public func saveStripeCustomer(userID: UUID, customer: SealedCredential, customerHash: Data, now: Date, logger: Logger) async throws -> SealedCredential {
        try await client.query("""
            INSERT INTO broker.stripe_customers (user_id, customer_ciphertext, key_id, customer_hash, created_at)
            VALUES (\(userID), \(customer.ciphertext), \(customer.keyID), \(customerHash), \(now))
            ON CONFLICT DO NOTHING
            """, logger: logger)
        return try await stripeCustomer(userID: userID, logger: logger) ?? customer
    }

    /// The user a Stripe customer id belongs to (webhooks name customers, not users).
    public func userID(forCustomerHash hash: Data, logger: Logger) async throws -> UUID? {
        let rows = try await client.query("""
            SELECT user_id FROM broker.stripe_customers WHERE customer_hash = \(hash)
            """, logger: logger)
        for try await userID in rows.decode(UUID.self) { return userID }
        return nil
    }

    // MARK: Financial Connections

    public func recordFinancialConnectionsSession(id: String, userID: UUID, now: Date, logger: Logger) async throws {
        try await client.query("""
            INSERT INTO broker.financial_connections_sessions (id, user_id, created_at) VALUES (\(id), \(userID), \(now))
            ON CONFLICT DO NOTHING
            """, logger: logger)
    }

    /// True when the session was created for this user.
    public func ownsFinancialConnectionsSession(id: String, userID: UUID, logger: Logger) async throws -> Bool {
        let rows = try await client.query("""
            SELECT 1::int4 FROM broker.financial_connections_sessions WHERE id = \(id) AND user_id = \(userID)
            """, logger: logger)
        for try await _ in rows.decode(Int32.self) { return true }
        return false
    }

    /// Inserts or updates a linked account of this user. An account id already linked by another
    /// user is left alone and reported as not saved.
    @discardableResult
    public func saveBankAccount(_ account: BankAccountRecord, userID: UUID, now: Date, logger: Logger) async throws -> Bool {
        let balance = try account.balanceCurrent.map { String(decoding: try JSONEncoder().encode($0), as: UTF8.self) }
        let rows = try await client.query("""
            INSERT INTO broker.bank_accounts (id, user_id, institution_name, last4, category, balance_current, balance_as_of,
                balance_type, refresh_status, linked_at, updated_at)
            VALUES (\(account.id), \(userID), \(account.institutionName), \(account.last4), \(account.category), \(balance)::jsonb,
                \(account.balanceAsOf), \(account.balanceType), \(account.refreshStatus), \(now), \(now))
            ON CONFLICT (id) DO UPDATE SET institution_name = EXCLUDED.institution_name, last4 = EXCLUDED.last4,
                category = EXCLUDED.category,
                balance_current = COALESCE(EXCLUDED.balance_current, broker.bank_accounts.balance_current),
                balance_as_of = COALESCE(EXCLUDED.balance_as_of, broker.bank_accounts.balance_as_of),
                balance_type = COALESCE(EXCLUDED.balance_type, broker.bank_accounts.balance_type),
                refresh_status = EXCLUDED.refresh_status, updated_at = EXCLUDED.updated_at
            WHERE broker.bank_accounts.user_id = EXCLUDED.user_id
            RETURNING id
            """, logger: logger)
        for try await _ in rows.decode(String.self) { return true }
        return false
    }

    public func bankAccounts(userID: UUID, id: String? = nil, logger: Logger) async throws -> [BankAccountRecord] {
        let rows = try await client.query("""
            SELECT id, institution_name, last4, category, balance_current::text, balance_as_of, balance_type, refresh_status
            FROM broker.bank_accounts WHERE user_id = \(userID) AND (\(id)::text IS NULL OR id = \(id)) ORDER BY linked_at, id
            """, logger: logger)
        var accounts: [BankAccountRecord] = []
        for try await (id, institution, last4, category, balance, asOf, type, refresh) in rows.decode((String, String, String, String, String?, Date?, String?, String).self) {
            var account = BankAccountRecord(BrokerLinkedBankAccount())
            account.id = id
            account.institutionName = institution
            account.last4 = last4
            account.category = category
            account.balanceCurrent = try balance.map { try JSONDecoder().decode([String: Int64].self, from: Data($0.utf8)) }
            account.balanceAsOf = asOf
            account.balanceType = type
            account.refreshStatus = refresh
            accounts.append(account)
        }
        return accounts
    }

    // MARK: Subscriptions

    public func recordCheckoutSession(id: String, userID: UUID, now: Date, logger: Logger) async throws {
        try await client.query("""
            INSERT INTO broker.checkout_sessions (id, user_id, created_at) VALUES (\(id), \(userID), \(now)) ON CONFLICT DO NOTHING
            """, logger: logger)
    }

    public func checkoutSessionOwner(id: String, logger: Logger) async throws -> UUID? {
        let rows = try await client.query("SELECT user_id FROM broker.checkout_sessions WHERE id = \(id)", logger: logger)
        for try await userID in rows.decode(UUID.self) { return userID }
        return nil
    }

    public func subscription(userID: UUID, logger: Logger) async throws -> SubscriptionRecord? {
        let rows = try await client.query("""
            SELECT subscription_id, status, current_period_end FROM broker.subscriptions WHERE user_id = \(userID)
            """, logger: logger)
        for try await (id, status, end) in rows.decode((String, String, Date?).self) {
            return SubscriptionRecord(subscriptionID: id, status: status, currentPeriodEnd: end)
        }
        return nil
    }

    // MARK: Webhook events

    public func eventProcessed(id: String, logger: Logger) async throws -> Bool {
        let rows = try await client.query("SELECT id FROM broker.stripe_events WHERE id = \(id)", logger: logger)
        for try await _ in rows.decode(String.self) { return true }
        return false
    }

    /// Applies `effect` and records `eventID` in one transaction, unless the event was recorded
    /// before: then nothing happens and the result is false. Concurrent deliveries of one event
    /// serialise on the primary key; the losers see the winner's row once it commits (and retry
    /// the effect if it rolled back).
    public func applyOnce(
        eventID: String, type: String, now: Date, logger: Logger,
        effect: @escaping @Sendable (PostgresConnection) async throws -> Void
    ) async throws -> Bool {
        try await inTransaction(logger: logger) { connection in
            let rows = try await connection.query("""
                INSERT INTO broker.stripe_events (id, type, processed_at) VALUES (\(eventID), \(type), \(now))
                ON CONFLICT DO NOTHING RETURNING id
                """, logger: logger)
            var inserted = false
            for try await _ in rows.decode(String.self) { inserted = true }
            guard inserted else { return false }
            try await effect(connection)
            return true
        }
    }

    /// Sets a user's subscription (inside `applyOnce`) unless a newer event already did: Stripe
    /// does not deliver events in order.
    public static func saveSubscription(userID: UUID, subscriptionID: String, status: String, currentPeriodEnd: Date?, eventCreated: Date, now: Date, on connection: PostgresConnection, logger: Logger) async throws {
        try await connection.query("""
            INSERT INTO broker.subscriptions (user_id, subscription_id, status, current_period_end, event_created, updated_at)
            VALUES (\(userID), \(subscriptionID), \(status), \(currentPeriodEnd), \(eventCreated), \(now))
            ON CONFLICT (user_id) DO UPDATE SET subscription_id = EXCLUDED.subscription_id, status = EXCLUDED.status,
                current_period_end = EXCLUDED.current_period_end, event_created = EXCLUDED.event_created, updated_at = EXCLUDED.updated_at
            WHERE broker.subscriptions.event_created <= EXCLUDED.event_created
            """, logger: logger)
    }
}
