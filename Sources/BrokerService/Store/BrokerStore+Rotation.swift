import Foundation
import Logging
import PostgresNIO

/// One stored ciphertext as re-wrapping sees it: where it lives, whose it is, which key sealed it.
public struct StoredCiphertext: Sendable, Hashable {
    public enum Table: String, Sendable, Hashable, CaseIterable {
        case alpacaConnections = "alpaca_connections"
        case stripeCustomers = "stripe_customers"

        var provider: CredentialContext.Provider {
            switch self {
            case .alpacaConnections: .alpaca
            case .stripeCustomers: .stripe
            }
        }
    }

    public var table: Table
    public var userID: UUID
    public var sealed: SealedCredential

    public var context: CredentialContext { CredentialContext(provider: table.provider, userID: userID) }
}

/// Re-wrapping: the vault has no database, so the broker finds the ciphertexts that are
/// not under the current key and replaces them. Each batch is picked afresh by key id, so a run
/// that crashed is finished by running again.
extension BrokerStore {
    /// Up to `limit` ciphertexts under a key other than `currentKeyID`, skipping those no key
    /// opens. Alpaca tokens first, then Stripe customers, each in user order.
    public func staleCiphertexts(currentKeyID: String, limit: Int, logger: Logger) async throws -> [StoredCiphertext] {
        var found: [StoredCiphertext] = []
        let alpaca = try await client.query("""
            SELECT user_id, token_ciphertext, key_id FROM broker.alpaca_connections
            WHERE key_id <> \(currentKeyID) AND NOT undecryptable ORDER BY user_id LIMIT \(limit)
            """, logger: logger)
        for try await (userID, ciphertext, keyID) in alpaca.decode((UUID, String, String).self) {
            found.append(StoredCiphertext(table: .alpacaConnections, userID: userID, sealed: SealedCredential(ciphertext: ciphertext, keyID: keyID)))
        }
        let remaining = limit - found.count
        guard remaining > 0 else { return found }
        let stripe = try await client.query("""
            SELECT user_id, customer_ciphertext, key_id FROM broker.stripe_customers
            WHERE key_id <> \(currentKeyID) AND NOT undecryptable ORDER BY user_id LIMIT \(remaining)
            """, logger: logger)
        for try await (userID, ciphertext, keyID) in stripe.decode((UUID, String, String).self) {
            found.append(StoredCiphertext(table: .stripeCustomers, userID: userID, sealed: SealedCredential(ciphertext: ciphertext, keyID: keyID)))
        }
        return found
    }

    /// Replaces one ciphertext, only if it is still the one that was re-wrapped (a reconnect in
    /// between wins). True when the row changed.
    public func replaceCiphertext(_ stored: StoredCiphertext, with replacement: SealedCredential, logger: Logger) async throws -> Bool {
        let rows: PostgresRowSequence
        switch stored.table {
        case .alpacaConnections:
            rows = try await client.query("""
                UPDATE broker.alpaca_connections SET token_ciphertext = \(replacement.ciphertext), key_id = \(replacement.keyID)
                WHERE user_id = \(stored.userID) AND token_ciphertext = \(stored.sealed.ciphertext) RETURNING user_id
                """, logger: logger)
        case .stripeCustomers:
            rows = try await client.query("""
                UPDATE broker.stripe_customers SET customer_ciphertext = \(replacement.ciphertext), key_id = \(replacement.keyID)
                WHERE user_id = \(stored.userID) AND customer_ciphertext = \(stored.sealed.ciphertext) RETURNING user_id
                """, logger: logger)
        }
        for try await _ in rows.decode(UUID.self) { return true }
        return false
    }

    /// Marks a ciphertext that no key of the vault opens, so re-wrapping stops picking it.
    public func markUndecryptable(_ stored: StoredCiphertext, logger: Logger) async throws {
        switch stored.table {
        case .alpacaConnections:
            try await client.query("""
                UPDATE broker.alpaca_connections SET undecryptable = true, status = 'connection_lost'
                WHERE user_id = \(stored.userID) AND token_ciphertext = \(stored.sealed.ciphertext)
                """, logger: logger)
        case .stripeCustomers:
            try await client.query("""
                UPDATE broker.stripe_customers SET undecryptable = true
                WHERE user_id = \(stored.userID) AND customer_ciphertext = \(stored.sealed.ciphertext)
                """, logger: logger)
        }
    }

    /// Stored ciphertexts per key id (all, and those a key still opens), and how many are still to
    /// be re-wrapped to `currentKeyID`.
    public func ciphertextCounts(currentKeyID: String, logger: Logger) async throws -> CiphertextCounts {
        try await Self.ciphertextCounts(currentKeyID: currentKeyID) { try await client.query($0, logger: logger) }
    }

    /// Runs `body` while this process holds the rotation lock (a PostgreSQL advisory lock held by
    /// one transaction), so two rotations started at once, from one broker or two, add one key
    /// between them. `body` counts on the locked connection, so one pooled connection suffices.
    public func whileHoldingRotationLock<Result: Sendable>(
        logger: Logger, _ body: @escaping @Sendable (_ counts: @escaping @Sendable (_ currentKeyID: String) async throws -> CiphertextCounts) async throws -> Result
    ) async throws -> Result {
        try await inTransaction(logger: logger) { connection in
            try await connection.query("SELECT pg_advisory_xact_lock(\(Self.rotationLockKey))", logger: logger)
            return try await body { currentKeyID in
                try await Self.ciphertextCounts(currentKeyID: currentKeyID) { try await connection.query($0, logger: logger) }
            }
        }
    }

    /// The advisory lock key of Fernet key rotation (any fixed 64-bit number; this one spells "clau-rot").
    static let rotationLockKey: Int64 = 0x636C_6175_2D72_6F74

    private static func ciphertextCounts(currentKeyID: String, run: (PostgresQuery) async throws -> PostgresRowSequence) async throws -> CiphertextCounts {
        let rows = try await run("""
            SELECT key_id, undecryptable, count(*) FROM (
                SELECT key_id, undecryptable FROM broker.alpaca_connections
                UNION ALL SELECT key_id, undecryptable FROM broker.stripe_customers) AS sealed
            GROUP BY key_id, undecryptable
            """)
        var byKeyID: [String: UInt64] = [:]
        var openableByKeyID: [String: UInt64] = [:]
        var stale: UInt64 = 0
        var undecryptable: UInt64 = 0
        for try await (keyID, broken, count) in rows.decode((String, Bool, Int64).self) {
            byKeyID[keyID, default: 0] += UInt64(count)
            if broken {
                undecryptable += UInt64(count)
                continue
            }
            openableByKeyID[keyID, default: 0] += UInt64(count)
            if keyID != currentKeyID { stale += UInt64(count) }
        }
        return CiphertextCounts(byKeyID: byKeyID, openableByKeyID: openableByKeyID, stale: stale, undecryptable: undecryptable)
    }
}

/// Stored ciphertexts by key id. `stale`: openable ones under a key other than the current one.
public struct CiphertextCounts: Sendable, Equatable {
    public var byKeyID: [String: UInt64]
    public var openableByKeyID: [String: UInt64]
    public var stale: UInt64
    public var undecryptable: UInt64

    /// Every openable ciphertext: all of them are stale once a new key becomes current.
    public var openable: UInt64 { openableByKeyID.values.reduce(0, +) }
}
