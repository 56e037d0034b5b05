import ClauSupport
import Foundation
import Logging
import PostgresNIO
import RPC

/// A live refresh family, for ListSessions.
public struct SessionRecord: Sendable, Equatable {
    public var id: UUID
    public var createdAt: Date
    public var lastUsedAt: Date
    public var mfaAt: Date?
}

public struct APIKeyRecord: Sendable, Equatable {
    public var id: UUID
    public var userID: UUID
    public var name: String
    public var prefix: String
    public var keyHMAC: String
    public var createdAt: Date
    public var expiresAt: Date?
    public var lastUsedAt: Date?
    public var revokedAt: Date?
}

public struct ResetCodeRecord: Sendable, Equatable {
    public var id: UUID
    public var codeHMAC: String
    public var createdAt: Date
    public var attempts: Int
    public var usedAt: Date?
}

/// Account data and protection state. Binds only (C-16).
extension AuthStore {
    // MARK: profile fields

    public func updateProfile(userID: UUID, fullName: String?, phone: String??, now: Date, logger: Logger) async throws -> UserRecord? {
        // COALESCE keeps unchanged fields; `phone` distinguishes "leave" (nil) from "clear" (.some(nil)).
        let setPhone = phone != nil
        let newPhone: String? = phone ?? nil
        try await client.query("""
            UPDATE auth.users SET
                full_name = COALESCE(\(fullName), full_name),
                phone = CASE WHEN \(setPhone) THEN \(newPhone) ELSE phone END,
                updated_at = \(now)
            WHERE id = \(userID) AND status = 'active'
            """, logger: logger)
        return try await findUser(id: userID)
    }

    /// Marks the account deleted and erases what identifies the person (e-mail becomes a
    /// tombstone so the address can register again), revokes every family and API key.
    public func deleteUser(userID: UUID, now: Date, logger: Logger) async throws -> Int {
        try await client.withTransaction(logger: logger) { connection in
            let tombstone = "deleted+\(userID.uuidString.lowercased())@invalid"
            try await connection.query("""
                UPDATE auth.users SET status = 'deleted', email = \(tombstone), email_normalized = \(tombstone),
                    full_name = 'deleted', phone = NULL, totp_secret_enc = NULL, totp_pending_enc = NULL, updated_at = \(now)
                WHERE id = \(userID)
                """, logger: logger)
            try await connection.query("UPDATE auth.api_keys SET revoked_at = \(now) WHERE user_id = \(userID) AND revoked_at IS NULL", logger: logger)
            try await connection.query("DELETE FROM auth.devices WHERE user_id = \(userID)", logger: logger)
            try await connection.query("DELETE FROM auth.notification_preferences WHERE user_id = \(userID)", logger: logger)
            try await connection.query("UPDATE auth.reset_codes SET cancelled_at = \(now) WHERE user_id = \(userID) AND used_at IS NULL AND cancelled_at IS NULL", logger: logger)
            return try await Self.revokeFamilies(userID: userID, except: nil, reason: "account_deleted", now: now, on: connection, logger: logger)
        }
    }

    public func liveSessions(userID: UUID, logger: Logger) async throws -> [SessionRecord] {
        let rows = try await client.query("""
            SELECT id, created_at, last_used_at, mfa_at FROM auth.refresh_families
            WHERE user_id = \(userID) AND revoked_at IS NULL
            ORDER BY created_at DESC LIMIT 200
            """, logger: logger)
        var sessions: [SessionRecord] = []
        for try await (id, created, lastUsed, mfaAt) in rows.decode((UUID, Date, Date, Date?).self) {
            sessions.append(SessionRecord(id: id, createdAt: created, lastUsedAt: lastUsed, mfaAt: mfaAt))
        }
        return sessions
    }

    /// When each family was created and whether TOTP was checked at its login.
    public func familyMFA(_ familyID: UUID, on connection: PostgresConnection, logger: Logger) async throws -> Date? {
        let rows = try await connection.query("SELECT mfa_at FROM auth.refresh_families WHERE id = \(familyID)", logger: logger)
        for try await mfaAt in rows.decode(Date?.self) { return mfaAt }
        return nil
    }

    // MARK: lockout (C-4)

    public func saveLockout(userID: UUID, _ state: AccountLockoutState, logger: Logger) async throws {
        try await client.query("""
            UPDATE auth.users SET failed_login_count = \(Int32(clamping: state.failureCount)),
                last_failed_login_at = \(state.lastFailureAt), locked_until = \(state.lockedUntil)
            WHERE id = \(userID)
            """, logger: logger)
    }

    // MARK: per-IP failures

    public func ipFailures(ipHash: String, since: Date, logger: Logger) async throws -> [Date] {
        let rows = try await client.query("""
            SELECT failed_at FROM auth.ip_login_failures
            WHERE ip_hash = \(ipHash) AND failed_at > \(since)
            ORDER BY failed_at LIMIT 1000
            """, logger: logger)
        var dates: [Date] = []
        for try await date in rows.decode(Date.self) { dates.append(date) }
        return dates
    }

    public func recordIPFailure(ipHash: String, at date: Date, logger: Logger) async throws {
        try await client.query("INSERT INTO auth.ip_login_failures (ip_hash, failed_at) VALUES (\(ipHash), \(date))", logger: logger)
    }

    /// Rows older than the sliding window are of no use (and are personal data).
    public func purgeIPFailures(before: Date, logger: Logger) async throws {
        try await client.query("DELETE FROM auth.ip_login_failures WHERE failed_at < \(before)", logger: logger)
    }

    // MARK: admin IP blocklist

    public func blockIP(_ ip: String, until: Date, reason: String, now: Date, logger: Logger) async throws {
        try await client.query("""
            INSERT INTO auth.ip_blocks (ip, blocked_until, reason, created_at) VALUES (\(ip), \(until), \(reason), \(now))
            ON CONFLICT (ip) DO UPDATE SET blocked_until = EXCLUDED.blocked_until, reason = EXCLUDED.reason
            """, logger: logger)
    }

    public func unblockIP(_ ip: String, logger: Logger) async throws -> Bool {
        let rows = try await client.query("DELETE FROM auth.ip_blocks WHERE ip = \(ip) RETURNING ip", logger: logger)
        for try await _ in rows.decode(String.self) { return true }
        return false
    }

    public func activeIPBlocks(now: Date, logger: Logger) async throws -> [(ip: String, until: Date, reason: String)] {
        let rows = try await client.query("""
            SELECT ip, blocked_until, reason FROM auth.ip_blocks WHERE blocked_until > \(now) ORDER BY ip LIMIT 10000
            """, logger: logger)
        var blocks: [(String, Date, String)] = []
        for try await row in rows.decode((String, Date, String).self) { blocks.append(row) }
        return blocks
    }

    // MARK: reset codes (C-5)

    public func resetCodesIssued(userID: UUID, since: Date, logger: Logger) async throws -> Int {
        let rows = try await client.query("SELECT count(*) FROM auth.reset_codes WHERE user_id = \(userID) AND created_at > \(since)", logger: logger)
        for try await count in rows.decode(Int64.self) { return Int(count) }
        return 0
    }

    /// Cancels every open code of the user and stores the new one, in one transaction.
    public func issueResetCode(id: UUID, userID: UUID, codeHMAC: String, now: Date, expiresAt: Date, logger: Logger) async throws {
        try await client.withTransaction(logger: logger) { connection in
            try await connection.query("""
                UPDATE auth.reset_codes SET cancelled_at = \(now)
                WHERE user_id = \(userID) AND used_at IS NULL AND cancelled_at IS NULL
                """, logger: logger)
            try await connection.query("""
                INSERT INTO auth.reset_codes (id, user_id, code_hmac, created_at, expires_at)
                VALUES (\(id), \(userID), \(codeHMAC), \(now), \(expiresAt))
                """, logger: logger)
        }
    }

    /// The user's one open code, its attempt counted atomically (so concurrent guesses cannot
    /// exceed the cap). nil when there is none.
    public func countResetAttempt(userID: UUID, now: Date, logger: Logger) async throws -> ResetCodeRecord? {
        let rows = try await client.query("""
            UPDATE auth.reset_codes SET attempts = attempts + 1
            WHERE user_id = \(userID) AND used_at IS NULL AND cancelled_at IS NULL
            RETURNING id, code_hmac, created_at, attempts - 1, used_at
            """, logger: logger)
        for try await (id, hmac, created, attempts, used) in rows.decode((UUID, String, Date, Int32, Date?).self) {
            return ResetCodeRecord(id: id, codeHMAC: hmac, createdAt: created, attempts: Int(attempts), usedAt: used)
        }
        return nil
    }

    /// Consumes the code (single use: `WHERE used_at IS NULL`), sets the password and revokes
    /// every family, all in one transaction. Returns nil when another request consumed it first.
    public func consumeResetCode(id: UUID, userID: UUID, newHash: String, now: Date, logger: Logger) async throws -> Int? {
        try await client.withTransaction(logger: logger) { connection in
            let rows = try await connection.query("""
                UPDATE auth.reset_codes SET used_at = \(now)
                WHERE id = \(id) AND used_at IS NULL AND cancelled_at IS NULL
                RETURNING id
                """, logger: logger)
            var consumed = false
            for try await _ in rows.decode(UUID.self) { consumed = true }
            guard consumed else { return nil }
            try await connection.query("""
                UPDATE auth.users SET password_hash = \(newHash), updated_at = \(now), password_changed_at = \(now),
                    failed_login_count = 0, locked_until = NULL
                WHERE id = \(userID)
                """, logger: logger)
            return try await Self.revokeFamilies(userID: userID, except: nil, reason: "password_reset", now: now, on: connection, logger: logger)
        }
    }

    // MARK: API keys

    public func insertAPIKey(_ key: APIKeyRecord, logger: Logger) async throws {
        try await client.query("""
            INSERT INTO auth.api_keys (id, user_id, name, prefix, key_hmac, created_at, expires_at)
            VALUES (\(key.id), \(key.userID), \(key.name), \(key.prefix), \(key.keyHMAC), \(key.createdAt), \(key.expiresAt))
            """, logger: logger)
    }

    public func apiKeys(userID: UUID, logger: Logger) async throws -> [APIKeyRecord] {
        try await apiKeyRows(client.query("""
            SELECT id, user_id, name, prefix, key_hmac, created_at, expires_at, last_used_at, revoked_at
            FROM auth.api_keys WHERE user_id = \(userID) AND revoked_at IS NULL ORDER BY created_at DESC
            """, logger: logger))
    }

    public func apiKeys(prefix: String, logger: Logger) async throws -> [APIKeyRecord] {
        try await apiKeyRows(client.query("""
            SELECT id, user_id, name, prefix, key_hmac, created_at, expires_at, last_used_at, revoked_at
            FROM auth.api_keys WHERE prefix = \(prefix) AND revoked_at IS NULL LIMIT 16
            """, logger: logger))
    }

    private func apiKeyRows(_ rows: PostgresRowSequence) async throws -> [APIKeyRecord] {
        var keys: [APIKeyRecord] = []
        for try await (id, user, name, prefix, hmac, created, expires, lastUsed, revoked) in rows.decode((UUID, UUID, String, String, String, Date, Date?, Date?, Date?).self) {
            keys.append(APIKeyRecord(id: id, userID: user, name: name, prefix: prefix, keyHMAC: hmac, createdAt: created, expiresAt: expires, lastUsedAt: lastUsed, revokedAt: revoked))
        }
        return keys
    }

    public func revokeAPIKey(id: UUID, userID: UUID, now: Date, logger: Logger) async throws -> Bool {
        let rows = try await client.query("""
            UPDATE auth.api_keys SET revoked_at = \(now)
            WHERE id = \(id) AND user_id = \(userID) AND revoked_at IS NULL RETURNING id
            """, logger: logger)
        for try await _ in rows.decode(UUID.self) { return true }
        return false
    }

    /// At most one write a minute per key: the condition is in the UPDATE itself.
    public func touchAPIKey(id: UUID, now: Date, logger: Logger) async throws {
        let minuteAgo = now.addingTimeInterval(-60)
        try await client.query("""
            UPDATE auth.api_keys SET last_used_at = \(now)
            WHERE id = \(id) AND (last_used_at IS NULL OR last_used_at < \(minuteAgo))
            """, logger: logger)
    }

    // MARK: TOTP

    public func setPendingTOTP(userID: UUID, sealed: Data, logger: Logger) async throws {
        try await client.query("UPDATE auth.users SET totp_pending_enc = \(sealed) WHERE id = \(userID)", logger: logger)
    }

    public func pendingTOTP(userID: UUID, logger: Logger) async throws -> Data? {
        let rows = try await client.query("SELECT totp_pending_enc FROM auth.users WHERE id = \(userID)", logger: logger)
        for try await sealed in rows.decode(Data?.self) { return sealed }
        return nil
    }

    public func confirmTOTP(userID: UUID, sealed: Data, step: Int64, logger: Logger) async throws {
        try await client.query("""
            UPDATE auth.users SET totp_secret_enc = \(sealed), totp_pending_enc = NULL, totp_last_step = \(step)
            WHERE id = \(userID)
            """, logger: logger)
    }

    /// Records the accepted step only if it is newer than the last one: two concurrent logins
    /// with one code cannot both pass (replay).
    public func acceptTOTPStep(userID: UUID, step: Int64, logger: Logger) async throws -> Bool {
        let rows = try await client.query("""
            UPDATE auth.users SET totp_last_step = \(step)
            WHERE id = \(userID) AND (totp_last_step IS NULL OR totp_last_step < \(step)) RETURNING id
            """, logger: logger)
        for try await _ in rows.decode(UUID.self) { return true }
        return false
    }

    // MARK: profile data

    public func notificationPreferences(userID: UUID, logger: Logger) async throws -> AuthNotificationPreferences {
        let rows = try await client.query("""
            SELECT security_email, order_push, price_alert_push, marketing_email
            FROM auth.notification_preferences WHERE user_id = \(userID)
            """, logger: logger)
        var preferences = AuthNotificationPreferences()
        preferences.securityEmail = true
        preferences.orderPush = true
        for try await (security, orders, alerts, marketing) in rows.decode((Bool, Bool, Bool, Bool).self) {
            preferences.securityEmail = security
            preferences.orderPush = orders
            preferences.priceAlertPush = alerts
            preferences.marketingEmail = marketing
        }
        return preferences
    }

    public func putNotificationPreferences(userID: UUID, _ p: AuthNotificationPreferences, now: Date, logger: Logger) async throws {
        try await client.query("""
            INSERT INTO auth.notification_preferences (user_id, security_email, order_push, price_alert_push, marketing_email, updated_at)
            VALUES (\(userID), \(p.securityEmail), \(p.orderPush), \(p.priceAlertPush), \(p.marketingEmail), \(now))
            ON CONFLICT (user_id) DO UPDATE SET security_email = EXCLUDED.security_email, order_push = EXCLUDED.order_push,
                price_alert_push = EXCLUDED.price_alert_push, marketing_email = EXCLUDED.marketing_email, updated_at = EXCLUDED.updated_at
            """, logger: logger)
    }

    public func registerDevice(userID: UUID, token: String, platform: String, now: Date, logger: Logger) async throws -> UUID {
        let rows = try await client.query("""
            INSERT INTO auth.devices (id, user_id, fcm_token, platform, created_at) VALUES (\(UUID()), \(userID), \(token), \(platform), \(now))
            ON CONFLICT (user_id, fcm_token) DO UPDATE SET platform = EXCLUDED.platform
            RETURNING id
            """, logger: logger)
        for try await id in rows.decode(UUID.self) { return id }
        throw StartupError("device insert returned no row")
    }

    public func removeDevice(userID: UUID, token: String, logger: Logger) async throws -> Bool {
        let rows = try await client.query("DELETE FROM auth.devices WHERE user_id = \(userID) AND fcm_token = \(token) RETURNING id", logger: logger)
        for try await _ in rows.decode(UUID.self) { return true }
        return false
    }

    // MARK: admin

    public func unlock(userID: UUID, logger: Logger) async throws {
        try await client.query("""
            UPDATE auth.users SET failed_login_count = 0, locked_until = NULL, last_failed_login_at = NULL WHERE id = \(userID)
            """, logger: logger)
    }

    public func revokeEveryFamily(reason: String, now: Date, logger: Logger) async throws -> Int {
        try await client.withTransaction(logger: logger) { connection in
            try await connection.query("""
                INSERT INTO auth.revoked_tokens (jti, expires_at, revoked_at, reason)
                SELECT jti, expires_at, \(now), \(reason) FROM auth.access_tokens WHERE expires_at > \(now)
                ON CONFLICT (jti) DO NOTHING
                """, logger: logger)
            let rows = try await connection.query("""
                UPDATE auth.refresh_families SET revoked_at = \(now), revoked_reason = \(reason)
                WHERE revoked_at IS NULL RETURNING id
                """, logger: logger)
            var count = 0
            for try await _ in rows.decode(UUID.self) { count += 1 }
            return count
        }
    }

    public func recordSigningKey(kid: String, algorithm: String, publicJWK: String?, retiring: String?, now: Date, logger: Logger) async throws {
        try await client.withTransaction(logger: logger) { connection in
            if let retiring {
                try await connection.query("""
                    INSERT INTO auth.signing_keys (kid, algorithm, created_at, retired_at) VALUES (\(retiring), \(algorithm), \(now), \(now))
                    ON CONFLICT (kid) DO UPDATE SET retired_at = COALESCE(auth.signing_keys.retired_at, EXCLUDED.retired_at)
                    """, logger: logger)
            }
            try await connection.query("""
                INSERT INTO auth.signing_keys (kid, algorithm, public_jwk, created_at) VALUES (\(kid), \(algorithm), \(publicJWK)::jsonb, \(now))
                """, logger: logger)
        }
    }

    public func signingKeyRetirements(logger: Logger) async throws -> [String: Date] {
        let rows = try await client.query("SELECT kid, retired_at FROM auth.signing_keys WHERE retired_at IS NOT NULL", logger: logger)
        var result: [String: Date] = [:]
        for try await (kid, retired) in rows.decode((String, Date).self) { result[kid] = retired }
        return result
    }

    public func auditEvents(afterID: Int64, limit: Int, logger: Logger) async throws -> [AuthAuditEvent] {
        let rows = try await client.query("""
            SELECT id, occurred_at, event_type, risk, user_id, request_id, details::text
            FROM auth.audit_events WHERE id > \(afterID) ORDER BY id LIMIT \(Int32(limit))
            """, logger: logger)
        var events: [AuthAuditEvent] = []
        for try await (id, occurred, type, risk, user, requestID, details) in rows.decode((Int64, Date, String, String, UUID?, String?, String).self) {
            var event = AuthAuditEvent()
            event.id = id
            event.occurredAt = Int64(occurred.timeIntervalSince1970.rounded(.down))
            event.eventType = type
            event.risk = risk
            event.userID = user?.uuidString.lowercased() ?? ""
            event.requestID = requestID ?? ""
            event.detailsJson = details
            events.append(event)
        }
        return events
    }
}
