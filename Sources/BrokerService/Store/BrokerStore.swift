import ClauDatabase
import Crypto
import Foundation
import Logging
import PostgresNIO

/// A stored credential: the vault's ciphertext and the id of the key that sealed it. Never the
/// plaintext, which exists only for the one call that needs it.
public struct SealedCredential: Sendable, Hashable {
    public var ciphertext: String
    public var keyID: String

    public init(ciphertext: String, keyID: String) {
        self.ciphertext = ciphertext
        self.keyID = keyID
    }
}

/// A row of `broker.alpaca_connections`.
public struct AlpacaConnectionRecord: Sendable, Hashable {
    public enum Status: String, Sendable, Hashable {
        case connected
        case connectionLost = "connection_lost"
    }

    public var userID: UUID
    public var token: SealedCredential
    public var scope: String
    public var status: Status
    public var connectedAt: Date
}

/// SQL access for the `broker` schema, through postgres-nio binds only (C-16): every value is a
/// bind parameter of a `PostgresQuery` built by string interpolation, never concatenated SQL.
/// Every per-user read and write names the user in its WHERE clause (C-7).
public struct BrokerStore: Sendable {
    public let client: BoundedPostgresClient

    /// `connectionWait`: how long a request may wait for a pooled connection (UNAVAILABLE after).
    public init(client: PostgresClient, connectionWait: Duration = .seconds(2)) {
        self.client = BoundedPostgresClient(client, connectionWait: connectionWait)
    }

    /// Lookup hashes of provider identifiers and OAuth states (both carry ≥ 128 random bits, so a
    /// plain SHA-256 cannot be reversed by guessing).
    public static func lookupHash(_ value: String) -> Data {
        Data(SHA256.hash(data: Data(value.utf8)))
    }

    /// `withTransaction`, with the closure's own error rethrown as itself (postgres-nio wraps it
    /// in `PostgresTransactionError`), so a refusal decided inside a transaction reaches the
    /// caller as the typed error it is.
    func inTransaction<Result: Sendable>(logger: Logger, _ body: @escaping @Sendable (PostgresConnection) async throws -> Result) async throws -> Result {
        do {
            return try await client.withTransaction(logger: logger) { connection in try await body(connection) }
        } catch let error as PostgresTransactionError {
            throw error.closureError ?? error
        }
    }

    // MARK: Alpaca OAuth states

    /// Most outstanding states one user may hold; starting a new flow beyond it drops the oldest.
    public static let maximumOutstandingStatesPerUser = 5

    public func insertOAuthState(_ record: OAuthStateRecord, logger: Logger) async throws {
        try await inTransaction(logger: logger) { connection in
            try await connection.query("""
                INSERT INTO broker.alpaca_oauth_states (state_hash, user_id, issued_at, expires_at)
                VALUES (\(Data(record.stateHash)), \(record.userID), \(record.issuedAt), \(record.expiresAt))
                """, logger: logger)
            try await connection.query("""
                DELETE FROM broker.alpaca_oauth_states WHERE state_hash IN (
                    SELECT state_hash FROM broker.alpaca_oauth_states WHERE user_id = \(record.userID)
                    ORDER BY issued_at DESC OFFSET \(Self.maximumOutstandingStatesPerUser))
                """, logger: logger)
        }
    }

    /// Redeems a presented state for `userID` in one transaction (the row is locked, so two
    /// concurrent callbacks cannot both succeed). A refusal by another user leaves it usable.
    public func redeemOAuthState(hash: [UInt8], by userID: UUID, now: Date, logger: Logger) async throws {
        try await inTransaction(logger: logger) { connection in
            let rows = try await connection.query("""
                SELECT user_id, issued_at, expires_at, used_at FROM broker.alpaca_oauth_states
                WHERE state_hash = \(Data(hash)) FOR UPDATE
                """, logger: logger)
            var found: OAuthStateRecord?
            for try await (owner, issuedAt, expiresAt, usedAt) in rows.decode((UUID, Date, Date, Date?).self) {
                found = OAuthStateRecord(stateHash: hash, userID: owner, issuedAt: issuedAt, expiresAt: expiresAt, usedAt: usedAt)
            }
            guard var record = found else { throw OAuthStateError.unknown }
            try record.redeem(by: userID, now: now)
            try await connection.query("""
                UPDATE broker.alpaca_oauth_states SET used_at = \(now) WHERE state_hash = \(Data(hash))
                """, logger: logger)
        }
    }

    /// States that can no longer be redeemed.
    public func purgeOAuthStates(now: Date, logger: Logger) async throws {
        try await client.query("""
            DELETE FROM broker.alpaca_oauth_states WHERE expires_at < \(now) OR used_at IS NOT NULL
            """, logger: logger)
    }

    // MARK: Alpaca connections

    /// Read before every Alpaca call, so a prepared statement: parsed and planned once per
    /// connection instead of on every request.
    public func alpacaConnection(userID: UUID, logger: Logger) async throws -> AlpacaConnectionRecord? {
        for try await record in try await client.execute(AlpacaConnectionByUser(userID: userID), logger: logger) { return record }
        return nil
    }

    struct AlpacaConnectionByUser: PostgresPreparedStatement {
        static let sql = """
            SELECT token_ciphertext, key_id, scope, status, connected_at FROM broker.alpaca_connections WHERE user_id = $1
            """
        typealias Row = AlpacaConnectionRecord
        var userID: UUID

        func makeBindings() throws -> PostgresBindings {
            var bindings = PostgresBindings(capacity: 1)
            bindings.append(userID)
            return bindings
        }

        func decodeRow(_ row: PostgresRow) throws -> AlpacaConnectionRecord {
            let (ciphertext, keyID, scope, status, connectedAt) = try row.decode((String, String, String, String, Date).self)
            return AlpacaConnectionRecord(
                userID: userID, token: SealedCredential(ciphertext: ciphertext, keyID: keyID), scope: scope,
                status: AlpacaConnectionRecord.Status(rawValue: status) ?? .connectionLost, connectedAt: connectedAt
            )
        }
    }

    /// Stores a new connection, replacing any earlier one of the same user.
    public func saveAlpacaConnection(userID: UUID, token: SealedCredential, scope: String, now: Date, logger: Logger) async throws {
        try await client.query("""
            INSERT INTO broker.alpaca_connections (user_id, token_ciphertext, key_id, scope, status, connected_at, updated_at)
            VALUES (\(userID), \(token.ciphertext), \(token.keyID), \(scope), 'connected', \(now), \(now))
            ON CONFLICT (user_id) DO UPDATE SET token_ciphertext = EXCLUDED.token_ciphertext, key_id = EXCLUDED.key_id,
                undecryptable = false, scope = EXCLUDED.scope, status = 'connected',
                connected_at = EXCLUDED.connected_at, updated_at = EXCLUDED.updated_at
            """, logger: logger)
    }

    /// Marks the connection lost, but only if it still holds the token that failed: a reconnect
    /// that raced the failing call keeps its new token.
    public func markAlpacaConnectionLost(userID: UUID, ciphertext: String, now: Date, logger: Logger) async throws {
        try await client.query("""
            UPDATE broker.alpaca_connections SET status = 'connection_lost', updated_at = \(now)
            WHERE user_id = \(userID) AND token_ciphertext = \(ciphertext)
            """, logger: logger)
    }

    /// Deletes the ciphertext; true when there was one.
    @discardableResult
    public func deleteAlpacaConnection(userID: UUID, logger: Logger) async throws -> Bool {
        let rows = try await client.query("""
            DELETE FROM broker.alpaca_connections WHERE user_id = \(userID) RETURNING user_id
            """, logger: logger)
        for try await _ in rows.decode(UUID.self) { return true }
        return false
    }
}
