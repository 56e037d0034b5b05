import ClauDatabase
import Crypto
import Foundation
import Logging
import PostgresNIO

/// A row of `auth.users`. `passwordHash` never leaves this process.
public struct UserRecord: Sendable, Equatable {
    public var id: UUID
    public var email: String
    public var fullName: String
    public var phone: String?
    public var passwordHash: String
    public var role: String
    public var status: String
    public var createdAt: Date
    public var lockout = AccountLockoutState()
    /// Sealed with `AuthSecrets.sealTOTPSecret`; nil when TOTP is off.
    public var totpSecretSealed: Data?
    public var totpLastStep: Int64?
    public var points: Int64 = 0
}

/// The presented refresh token's row, its family and the family's user, read `FOR UPDATE`.
struct LockedRefreshToken: Sendable {
    var familyID: UUID
    var rotatedAt: Date?
    var successorHash: Data?
    var userID: UUID
    var familyCreatedAt: Date
    var familyLastUsedAt: Date
    var familyRevokedAt: Date?
    var role: String
    var userStatus: String
    var mfaAt: Date?
}

/// SQL access for the auth schema, through postgres-nio binds only (C-16): every value is a
/// bind parameter of a `PostgresQuery` built by string interpolation, never concatenated SQL.
public struct AuthStore: Sendable {
    public let client: BoundedPostgresClient
    /// `findUser(id:)` and `isRevoked(jti:)` run for every authenticated request at the edge;
    /// concurrent ones share one query (see `BatchedLookup`), which is why they take no logger:
    /// one query serves the request ids of many callers.
    private let usersByID: BatchedLookup<UUID, UserRecord>
    /// A revoked jti maps to itself; a live one is absent.
    private let revokedJTIs: BatchedLookup<UUID, UUID>

    /// `connectionWait`: how long a request may wait for a pooled connection (UNAVAILABLE after).
    public init(client: PostgresClient, connectionWait: Duration = .seconds(2)) {
        self.client = BoundedPostgresClient(client, connectionWait: connectionWait)
        self.usersByID = Self.batchedLookup(self.client, UsersByID.init, key: \.id)
        self.revokedJTIs = Self.batchedLookup(self.client, RevokedJTIs.init, key: { $0 })
    }

    /// Point reads by UUID through `statement`, whose rows are keyed by `key`.
    private static func batchedLookup<Statement: PostgresPreparedStatement>(
        _ client: BoundedPostgresClient, _ statement: @escaping @Sendable ([UUID]) -> Statement, key: @escaping @Sendable (Statement.Row) -> UUID
    ) -> BatchedLookup<UUID, Statement.Row> where Statement.Row: Sendable {
        BatchedLookup { keys in
            var rows: [UUID: Statement.Row] = [:]
            for try await row in try await client.execute(statement(keys), logger: AuthStore.batchLogger) { rows[key(row)] = row }
            return rows
        }
    }

    /// A batch serves many calls, so it cannot log with one call's request id; its failures
    /// reach each caller, which logs them with its own.
    private static let batchLogger = Logger(label: "clau.auth.store.batch", factory: { _ in SwiftLogNoOpLogHandler() })

    /// Refresh tokens and other 256-bit secrets are stored as SHA-256 only.
    public static func tokenHash(_ token: String) -> Data {
        Data(SHA256.hash(data: Data(token.utf8)))
    }

    // MARK: users

    /// Inserts a user; false when the normalised e-mail already exists (no error, nothing revealed).
    public func createUser(id: UUID, email: String, emailNormalized: String, fullName: String, phone: String?, passwordHash: String, role: String = "user", now: Date, logger: Logger) async throws -> Bool {
        let rows = try await client.query("""
            INSERT INTO auth.users (id, email, email_normalized, full_name, phone, password_hash, role, created_at, updated_at, password_changed_at)
            VALUES (\(id), \(email), \(emailNormalized), \(fullName), \(phone), \(passwordHash), \(role), \(now), \(now), \(now))
            ON CONFLICT (email_normalized) DO NOTHING
            RETURNING id
            """, logger: logger)
        for try await _ in rows.decode(UUID.self) { return true }
        return false
    }

    public func findUser(emailNormalized: String, logger: Logger) async throws -> UserRecord? {
        try await firstUser(client.query("""
            SELECT \(unescaped: Self.userColumns) FROM auth.users WHERE email_normalized = \(emailNormalized)
            """, logger: logger))
    }

    /// Runs on every `GET /v1/me` and each token check: concurrent calls share one prepared
    /// statement execution (PostgreSQL parses and plans it once per connection).
    public func findUser(id: UUID) async throws -> UserRecord? {
        try await usersByID.load(id)
    }

    struct UsersByID: PostgresPreparedStatement {
        static let sql = "SELECT \(AuthStore.userColumns) FROM auth.users WHERE id = ANY($1)"
        typealias Row = UserRecord
        var ids: [UUID]
        func makeBindings() throws -> PostgresBindings {
            var bindings = PostgresBindings(capacity: 1)
            bindings.append(ids)
            return bindings
        }
        func decodeRow(_ row: PostgresRow) throws -> UserRecord { try AuthStore.userRecord(from: row) }
    }

    /// The columns `userRecord(from:)` reads, in order.
    static let userColumns = """
        id, email, full_name, phone, password_hash, role, status, created_at,
        failed_login_count, last_failed_login_at, locked_until, totp_secret_enc, totp_last_step, points
        """

    static func userRecord(from row: PostgresRow) throws -> UserRecord {
        let (id, email, fullName, phone, hash, role, status, createdAt) = try row.decode((UUID, String, String, String?, String, String, String, Date).self)
        let columns = row.makeRandomAccess()
        var user = UserRecord(id: id, email: email, fullName: fullName, phone: phone, passwordHash: hash, role: role, status: status, createdAt: createdAt)
        user.lockout = AccountLockoutState(
            failureCount: Int(try columns[8].decode(Int32.self)),
            lockedUntil: try columns[10].decode(Date?.self),
            lastFailureAt: try columns[9].decode(Date?.self)
        )
        user.totpSecretSealed = try columns[11].decode(Data?.self)
        user.totpLastStep = try columns[12].decode(Int64?.self)
        user.points = try columns[13].decode(Int64.self)
        return user
    }

    private func firstUser(_ rows: PostgresRowSequence) async throws -> UserRecord? {
        for try await row in rows {
            return try Self.userRecord(from: row)
        }
        return nil
    }

    /// Replaces a hash with a stronger one of the same password (cost upgrade at login).
    public func upgradePasswordHash(userID: UUID, from old: String, to new: String, now: Date, logger: Logger) async throws {
        try await client.query("""
            UPDATE auth.users SET password_hash = \(new), updated_at = \(now)
            WHERE id = \(userID) AND password_hash = \(old)
            """, logger: logger)
    }

    /// Sets a new password and revokes every family but `keepFamily`, in one transaction.
    /// Returns the number of families revoked.
    public func changePassword(userID: UUID, newHash: String, keepFamily: UUID?, now: Date, logger: Logger) async throws -> Int {
        try await client.withTransaction(logger: logger) { connection in
            try await connection.query("""
                UPDATE auth.users SET password_hash = \(newHash), updated_at = \(now), password_changed_at = \(now)
                WHERE id = \(userID)
                """, logger: logger)
            return try await Self.revokeFamilies(userID: userID, except: keepFamily, reason: "password_changed", now: now, on: connection, logger: logger)
        }
    }

    // MARK: sessions

    /// A new refresh family with its first refresh token and first access token.
    public func createSession(userID: UUID, familyID: UUID, refreshHash: Data, jti: UUID, accessExpiresAt: Date, mfaAt: Date? = nil, deviceFingerprint: String? = nil, now: Date, logger: Logger) async throws {
        try await client.withTransaction(logger: logger) { connection in
            try await connection.query("""
                INSERT INTO auth.refresh_families (id, user_id, created_at, last_used_at, mfa_at, mfa_verified, device_fingerprint)
                VALUES (\(familyID), \(userID), \(now), \(now), \(mfaAt), \(mfaAt != nil), \(deviceFingerprint))
                """, logger: logger)
            try await connection.query("""
                INSERT INTO auth.refresh_tokens (token_hash, family_id, created_at)
                VALUES (\(refreshHash), \(familyID), \(now))
                """, logger: logger)
            try await connection.query("""
                INSERT INTO auth.access_tokens (jti, family_id, user_id, expires_at)
                VALUES (\(jti), \(familyID), \(userID), \(accessExpiresAt))
                """, logger: logger)
        }
    }

    /// Reads and locks the presented token's row and its family (`FOR UPDATE`): concurrent
    /// refreshes with one token queue here, so exactly one of them rotates it.
    static func lockRefreshToken(hash: Data, on connection: PostgresConnection, logger: Logger) async throws -> LockedRefreshToken? {
        let rows = try await connection.query("""
            SELECT t.family_id, t.rotated_at, t.successor_hash, f.user_id, f.created_at, f.last_used_at, f.revoked_at, u.role, u.status, f.mfa_at
            FROM auth.refresh_tokens t
            JOIN auth.refresh_families f ON f.id = t.family_id
            JOIN auth.users u ON u.id = f.user_id
            WHERE t.token_hash = \(hash)
            FOR UPDATE OF t, f
            """, logger: logger)
        for try await (familyID, rotatedAt, successor, userID, created, lastUsed, revoked, role, status, mfaAt) in rows.decode((UUID, Date?, Data?, UUID, Date, Date, Date?, String, String, Date?).self) {
            return LockedRefreshToken(familyID: familyID, rotatedAt: rotatedAt, successorHash: successor, userID: userID, familyCreatedAt: created, familyLastUsedAt: lastUsed, familyRevokedAt: revoked, role: role, userStatus: status, mfaAt: mfaAt)
        }
        return nil
    }

    /// Marks `oldHash` rotated to `newHash`, inserts the successor and its access token.
    static func rotate(oldHash: Data, newHash: Data, familyID: UUID, userID: UUID, jti: UUID, accessExpiresAt: Date, now: Date, on connection: PostgresConnection, logger: Logger) async throws {
        try await connection.query("""
            INSERT INTO auth.refresh_tokens (token_hash, family_id, created_at)
            VALUES (\(newHash), \(familyID), \(now))
            """, logger: logger)
        try await connection.query("""
            UPDATE auth.refresh_tokens SET rotated_at = \(now), successor_hash = \(newHash)
            WHERE token_hash = \(oldHash)
            """, logger: logger)
        try await connection.query("""
            UPDATE auth.refresh_families SET last_used_at = \(now) WHERE id = \(familyID)
            """, logger: logger)
        try await connection.query("""
            INSERT INTO auth.access_tokens (jti, family_id, user_id, expires_at)
            VALUES (\(jti), \(familyID), \(userID), \(accessExpiresAt))
            """, logger: logger)
    }

    /// Revokes one family and puts every still-valid access token minted from it on the
    /// revocation list (TTL = remaining lifetime). Returns whether the family was live.
    @discardableResult
    static func revokeFamily(_ familyID: UUID, reason: String, now: Date, on connection: PostgresConnection, logger: Logger) async throws -> Bool {
        let rows = try await connection.query("""
            UPDATE auth.refresh_families SET revoked_at = \(now), revoked_reason = \(reason)
            WHERE id = \(familyID) AND revoked_at IS NULL
            RETURNING id
            """, logger: logger)
        var revoked = false
        for try await _ in rows.decode(UUID.self) { revoked = true }
        try await connection.query("""
            INSERT INTO auth.revoked_tokens (jti, expires_at, revoked_at, reason)
            SELECT jti, expires_at, \(now), \(reason) FROM auth.access_tokens
            WHERE family_id = \(familyID) AND expires_at > \(now)
            ON CONFLICT (jti) DO NOTHING
            """, logger: logger)
        return revoked
    }

    static func revokeFamilies(userID: UUID, except keep: UUID?, reason: String, now: Date, on connection: PostgresConnection, logger: Logger) async throws -> Int {
        let rows = try await connection.query("""
            SELECT id FROM auth.refresh_families
            WHERE user_id = \(userID) AND revoked_at IS NULL
            FOR UPDATE
            """, logger: logger)
        var families: [UUID] = []
        for try await id in rows.decode(UUID.self) where id != keep { families.append(id) }
        for family in families {
            try await revokeFamily(family, reason: reason, now: now, on: connection, logger: logger)
        }
        return families.count
    }

    public func revokeFamily(_ familyID: UUID, reason: String, now: Date, logger: Logger) async throws {
        try await client.withTransaction(logger: logger) { connection in
            try await Self.revokeFamily(familyID, reason: reason, now: now, on: connection, logger: logger)
        }
    }

    public func revokeAllFamilies(userID: UUID, except keep: UUID? = nil, reason: String, now: Date, logger: Logger) async throws -> Int {
        try await client.withTransaction(logger: logger) { connection in
            try await Self.revokeFamilies(userID: userID, except: keep, reason: reason, now: now, on: connection, logger: logger)
        }
    }

    /// The family of a refresh token, if the token is known.
    public func familyOfRefreshToken(hash: Data, logger: Logger) async throws -> UUID? {
        let rows = try await client.query("SELECT family_id FROM auth.refresh_tokens WHERE token_hash = \(hash)", logger: logger)
        for try await id in rows.decode(UUID.self) { return id }
        return nil
    }

    // MARK: access-token revocation

    public func revokeAccessToken(jti: UUID, expiresAt: Date, reason: String, now: Date, logger: Logger) async throws {
        try await client.query("""
            INSERT INTO auth.revoked_tokens (jti, expires_at, revoked_at, reason)
            VALUES (\(jti), \(expiresAt), \(now), \(reason))
            ON CONFLICT (jti) DO NOTHING
            """, logger: logger)
    }

    /// Prepared: every edge asks this for each live token about twice a second.
    public func isRevoked(jti: UUID) async throws -> Bool {
        try await revokedJTIs.load(jti) != nil
    }

    struct RevokedJTIs: PostgresPreparedStatement {
        static let sql = "SELECT jti FROM auth.revoked_tokens WHERE jti = ANY($1)"
        typealias Row = UUID
        var jtis: [UUID]
        func makeBindings() throws -> PostgresBindings {
            var bindings = PostgresBindings(capacity: 1)
            bindings.append(jtis)
            return bindings
        }
        func decodeRow(_ row: PostgresRow) throws -> UUID { try row.decode(UUID.self) }
    }

    /// Deletes revocation rows whose tokens have expired anyway.
    public func purgeExpiredRevocations(now: Date, logger: Logger) async throws {
        try await client.query("DELETE FROM auth.revoked_tokens WHERE expires_at <= \(now)", logger: logger)
    }

    // MARK: audit

    static func audit(event: String, risk: String, userID: UUID?, requestID: String, details: [String: String], on connection: PostgresConnection, logger: Logger) async throws {
        let json = String(decoding: (try? JSONEncoder().encode(details)) ?? Data("{}".utf8), as: UTF8.self)
        try await connection.query("""
            INSERT INTO auth.audit_events (event_type, risk, user_id, request_id, details)
            VALUES (\(event), \(risk), \(userID), \(requestID), \(json)::jsonb)
            """, logger: logger)
    }

    public func audit(event: String, risk: String, userID: UUID?, requestID: String, details: [String: String] = [:], logger: Logger) async throws {
        try await client.withConnection { connection in
            try await Self.audit(event: event, risk: risk, userID: userID, requestID: requestID, details: details, on: connection, logger: logger)
        }
    }
}
