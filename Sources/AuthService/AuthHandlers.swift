import ClauSupport
import Foundation
import Logging
import PostgresNIO
import RPC
import Synchronization

/// The auth service's RPC methods. Every request is untrusted input (the edge validates too).
/// Errors carry safe messages only; passwords, tokens and hashes are never logged.
public final class AuthHandlers: AuthRPCHandler {
    public let store: AuthStore
    public let hasher: PasswordHasher
    public let keyRing: SigningKeyRing
    public let passwordPolicy: PasswordPolicy
    public let refreshMachine: RefreshFamilyStateMachine
    public let protection: ProtectionSettings
    let now: @Sendable () -> Date
    let graceCache: GraceCache
    let audit: Logger

    /// The issuer of the moment (it changes on key rotation).
    public var issuer: TokenIssuer { keyRing.issuer }

    /// The one error for every failed login, whatever the reason.
    static let invalidCredentials = RPCError(code: .unauthenticated, message: "invalid_credentials")
    static let invalidRefreshToken = RPCError(code: .unauthenticated, message: "invalid_refresh_token")
    static let invalidAccessToken = RPCError(code: .unauthenticated, message: "invalid_access_token")

    public init(store: AuthStore, hasher: PasswordHasher, keyRing: SigningKeyRing, protection: ProtectionSettings, passwordPolicy: PasswordPolicy = PasswordPolicy(), refreshPolicy: RefreshPolicy = RefreshPolicy(), logger: Logger, now: @escaping @Sendable () -> Date = { Date() }) {
        self.store = store
        self.hasher = hasher
        self.keyRing = keyRing
        self.protection = protection
        self.passwordPolicy = passwordPolicy
        self.refreshMachine = RefreshFamilyStateMachine(policy: refreshPolicy)
        self.now = now
        self.graceCache = GraceCache(window: refreshPolicy.graceWindow)
        var audit = logger
        audit[metadataKey: "audit"] = "true"
        self.audit = audit
    }

    /// Every method of Protos/auth.proto's `service Auth` (generated: auth.rpc.swift).
    public func router() -> RPCRouter { rpcRouter() }

    /// The public keys that verify access tokens (JWKS); never a private key.
    public func getJWKS(_ request: AuthGetJWKSRequest, _ context: ServerContext) async throws -> AuthGetJWKSResponse {
        var response = AuthGetJWKSResponse()
        response.jwksJson = issuer.jwksJSON()
        return response
    }

    /// The policy the proto's `callers:` lines give: "edge" is the edge's uid, "admin" the operators'
    /// (the first admin is made on the host, never through the network: no default admin).
    public static func accessPolicy(edgeUIDs: Set<UInt32>, adminUIDs: Set<UInt32>) -> RPCAccessPolicy {
        AuthAPI.accessPolicy(callers: AuthRPCCallers(edge: CallerAllowlist(uids: edgeUIDs), admin: CallerAllowlist(uids: adminUIDs)))
    }

    // MARK: Register

    public func register(_ request: AuthRegisterRequest, _ context: ServerContext) async throws -> AuthRegisterResponse {
        let email = try Validation.email(request.email)
        let fullName = try Validation.fullName(request.fullName)
        let phone = try Validation.phone(request.phone)
        try checkNewPassword(request.password, email: email, fullName: fullName)

        // Hash before looking at the e-mail: a new and an existing address cost the same.
        let hash = try await hasher.hash(request.password)
        let userID = UUID()
        let created = try await store.createUser(id: userID, email: request.email.trimmingCharacters(in: .whitespaces), emailNormalized: email, fullName: fullName, phone: phone, passwordHash: hash, now: now(), logger: context.logger)
        if created {
            audit.info("user registered", metadata: ["event": "user_registered", "risk": "low", "user_id": "\(userID)", "request_id": "\(context.requestID)"])
        } else {
            // The caller sees the same response; the existing owner is told by e-mail.
            audit.notice("registration for an existing e-mail", metadata: ["event": "registration_existing_email", "risk": "medium", "request_id": "\(context.requestID)"])
            mail(.registrationAttemptOnExistingAccount, to: request.email.trimmingCharacters(in: .whitespaces), context)
        }
        var response = AuthRegisterResponse()
        response.accepted = true
        return response
    }

    /// bcrypt's limits first (never truncate), then the strength policy; every violation
    /// is named in `details["violations"]` so the client can show each one.
    func checkNewPassword(_ password: String, email: String?, fullName: String?) throws {
        do {
            try PasswordHasher.checkInput(password)
        } catch .passwordTooLong(let bytes) {
            throw RPCError(code: .invalidArgument, message: "password is longer than 72 bytes (\(bytes)); it is refused, not truncated", details: ["violations": PasswordViolation.Code.tooLong.rawValue])
        } catch {
            throw RPCError(code: .invalidArgument, message: "password must not contain NUL", details: ["violations": PasswordViolation.Code.containsNulCharacter.rawValue])
        }
        let evaluation = passwordPolicy.evaluate(password, email: email, fullName: fullName)
        guard evaluation.isAcceptable else {
            throw RPCError(
                code: .invalidArgument,
                message: evaluation.violations.map(\.message).joined(separator: " "),
                details: ["violations": evaluation.codes.map(\.rawValue).joined(separator: ","), "score": "\(evaluation.score)"]
            )
        }
    }

    func startSession(for user: UserRecord, mfaAt: Date?, deviceFingerprint: String?, _ context: ServerContext) async throws -> AuthTokenPair {
        let now = now()
        let familyID = UUID()
        let refresh = Self.newRefreshToken()
        let access = try issuer.issue(userID: user.id, role: user.role, sessionID: familyID, mfaAt: mfaAt, now: now)
        try await store.createSession(userID: user.id, familyID: familyID, refreshHash: AuthStore.tokenHash(refresh), jti: access.jti, accessExpiresAt: access.expiresAt, mfaAt: mfaAt, deviceFingerprint: deviceFingerprint, now: now, logger: context.logger)
        let family = RefreshFamily(id: familyID, createdAt: now, lastUsedAt: now)
        return Self.pair(access: access, refresh: refresh, familyID: familyID, refreshExpiresAt: refreshMachine.policy.expiry(of: family))
    }

    /// 256 bits from the CSPRNG, base64url (43 characters).
    static func newRefreshToken() -> String {
        Base64URL.encode(SecureRandom.bytes(32))
    }

    static func pair(access: IssuedAccessToken, refresh: String, familyID: UUID, refreshExpiresAt: Date) -> AuthTokenPair {
        var pair = AuthTokenPair()
        pair.accessToken = access.token
        pair.accessExpiresAt = Int64(access.expiresAt.timeIntervalSince1970)
        pair.refreshToken = refresh
        pair.refreshExpiresAt = Int64(refreshExpiresAt.timeIntervalSince1970.rounded(.down))
        pair.tokenType = "Bearer"
        pair.sessionID = familyID.uuidString.lowercased()
        return pair
    }

    // MARK: Refresh (C-2 / R-1)

    enum RefreshOutcome: Sendable {
        case issued(AuthTokenPair)
        case reuseDetected(familyID: UUID, userID: UUID)
        case rejected(String)
    }

    public func refresh(_ request: AuthRefreshRequest, _ context: ServerContext) async throws -> AuthRefreshResponse {
        guard request.refreshToken.utf8.count == 43, Base64URL.decode(request.refreshToken)?.count == 32 else {
            throw Self.invalidRefreshToken
        }
        let presentedHash = AuthStore.tokenHash(request.refreshToken)
        switch try await rotateInTransaction(presentedHash: presentedHash, context) {
        case .issued(let pair):
            var response = AuthRefreshResponse()
            response.tokens = pair
            return response
        case .reuseDetected(let familyID, let userID):
            graceCache.remove(family: familyID)
            audit.warning("refresh token reuse: family revoked", metadata: [
                "event": "token_reuse_detected", "risk": "high", "user_id": "\(userID)",
                "session_id": "\(familyID)", "request_id": "\(context.requestID)",
            ])
            throw Self.invalidRefreshToken
        case .rejected(let reason):
            audit.notice("refresh refused", metadata: ["event": "refresh_refused", "risk": "low", "reason": "\(reason)", "request_id": "\(context.requestID)"])
            throw Self.invalidRefreshToken
        }
    }

    /// Locks the presented token's row, lets `RefreshFamilyStateMachine` decide, and applies the
    /// decision, all in one transaction.
    private func rotateInTransaction(presentedHash: Data, _ context: ServerContext) async throws -> RefreshOutcome {
        let logger = context.logger
        var cachedHere = false
        do {
            return try await rotate(presentedHash: presentedHash, context, logger: logger, cached: &cachedHere)
        } catch {
            // A rotation that did not commit must not be handed out as a grace successor.
            if cachedHere { graceCache.remove(presentedHash: presentedHash) }
            throw error
        }
    }

    private func rotate(presentedHash: Data, _ context: ServerContext, logger: Logger, cached: inout Bool) async throws -> RefreshOutcome {
        let didCache = CachedFlag()
        defer { cached = didCache.value.load(ordering: .acquiring) }
        return try await store.client.withTransaction(logger: logger) { connection in
            let now = self.now()
            guard let row = try await AuthStore.lockRefreshToken(hash: presentedHash, on: connection, logger: logger) else {
                return .rejected("unknown_token")
            }
            guard row.userStatus == "active" else { return .rejected("user_inactive") }
            let family = RefreshFamily(id: row.familyID, createdAt: row.familyCreatedAt, lastUsedAt: row.familyLastUsedAt, revokedAt: row.familyRevokedAt)
            let state: RefreshTokenState = if let rotatedAt = row.rotatedAt {
                .rotated(at: rotatedAt, successorID: row.familyID)
            } else {
                .active
            }
            let record = RefreshTokenRecord(id: row.familyID, familyID: row.familyID, state: state)
            switch self.refreshMachine.decide(token: record, family: family, now: now) {
            case .rotate:
                let successor = Self.newRefreshToken()
                let successorHash = AuthStore.tokenHash(successor)
                let access = try self.issuer.issue(userID: row.userID, role: row.role, sessionID: row.familyID, mfaAt: row.mfaAt, now: now)
                try await AuthStore.rotate(oldHash: presentedHash, newHash: successorHash, familyID: row.familyID, userID: row.userID, jti: access.jti, accessExpiresAt: access.expiresAt, now: now, on: connection, logger: logger)
                var used = family
                used.lastUsedAt = now
                let pair = Self.pair(access: access, refresh: successor, familyID: row.familyID, refreshExpiresAt: self.refreshMachine.policy.expiry(of: used))
                // Cached before COMMIT releases the row lock, so a concurrent refresh that
                // waited on the lock finds the successor (the DB keeps hashes only).
                self.graceCache.store(pair, for: presentedHash, rotatedAt: now)
                didCache.value.store(true, ordering: .releasing)
                return .issued(pair)
            case .returnExistingSuccessor:
                if let pair = self.graceCache.successor(for: presentedHash, now: now) {
                    return .issued(pair)
                }
                return .rejected("grace_successor_unavailable")
            case .revokeFamily:
                try await AuthStore.revokeFamily(row.familyID, reason: RefreshRevocationReason.reuseDetected.rawValue, now: now, on: connection, logger: logger)
                try await AuthStore.audit(event: "token_reuse_detected", risk: "high", userID: row.userID, requestID: context.requestID, details: ["family_id": row.familyID.uuidString.lowercased()], on: connection, logger: logger)
                return .reuseDetected(familyID: row.familyID, userID: row.userID)
            case .reject(let rejection):
                return .rejected("\(rejection)")
            }
        }
    }

    // MARK: Logout, revocation

    public func logout(_ request: AuthLogoutRequest, _ context: ServerContext) async throws -> AuthLogoutResponse {
        let now = now()
        let claims: AccessTokenClaims
        do {
            claims = try issuer.verifier.verify(request.accessToken, now: now)
        } catch {
            throw Self.invalidAccessToken
        }
        guard let jti = UUID(uuidString: claims.jti), let family = UUID(uuidString: claims.sid) else { throw Self.invalidAccessToken }
        try await store.revokeAccessToken(jti: jti, expiresAt: Date(timeIntervalSince1970: TimeInterval(claims.exp)), reason: "logout", now: now, logger: context.logger)
        try await store.revokeFamily(family, reason: "logout", now: now, logger: context.logger)
        graceCache.remove(family: family)
        audit.info("logout", metadata: ["event": "logout", "risk": "low", "user_id": "\(claims.sub)", "session_id": "\(family)", "request_id": "\(context.requestID)"])
        return AuthLogoutResponse()
    }

    public func revokeAllSessions(_ request: AuthRevokeAllSessionsRequest, _ context: ServerContext) async throws -> AuthRevokeAllSessionsResponse {
        guard let userID = UUID(uuidString: request.userID) else { throw RPCError(code: .invalidArgument, message: "user_id must be a UUID") }
        let reason = Validation.reasonWord(request.reason)
        let count = try await store.revokeAllFamilies(userID: userID, reason: reason, now: now(), logger: context.logger)
        graceCache.removeAll()
        audit.notice("all sessions revoked", metadata: ["event": "sessions_revoked", "risk": "medium", "user_id": "\(userID)", "count": "\(count)", "reason": "\(reason)", "caller_uid": "\(context.peer.uid)", "request_id": "\(context.requestID)"])
        var response = AuthRevokeAllSessionsResponse()
        response.revokedSessions = Int32(clamping: count)
        return response
    }

    public func verifyAccessToken(_ request: AuthVerifyAccessTokenRequest, _ context: ServerContext) async throws -> AuthVerifyAccessTokenResponse {
        let claims: AccessTokenClaims
        do {
            claims = try issuer.verifier.verify(request.accessToken, now: now())
        } catch {
            throw Self.invalidAccessToken
        }
        guard let jti = UUID(uuidString: claims.jti), UUID(uuidString: claims.sub) != nil,
              try await !store.isRevoked(jti: jti)
        else { throw Self.invalidAccessToken }
        var response = AuthVerifyAccessTokenResponse()
        response.principal.userID = claims.sub
        response.principal.role = claims.role
        response.sessionID = claims.sid
        response.jti = claims.jti
        response.expiresAt = claims.exp
        response.amr = claims.amr ?? []
        response.authTime = claims.authTime ?? 0
        return response
    }

    public func checkRevoked(_ request: AuthCheckRevokedRequest, _ context: ServerContext) async throws -> AuthCheckRevokedResponse {
        guard let jti = UUID(uuidString: request.jti) else { throw RPCError(code: .invalidArgument, message: "jti must be a UUID") }
        var response = AuthCheckRevokedResponse()
        response.revoked = try await store.isRevoked(jti: jti)
        return response
    }

    // MARK: Users

    public func getUser(_ request: AuthGetUserRequest, _ context: ServerContext) async throws -> AuthGetUserResponse {
        guard let userID = UUID(uuidString: request.userID) else { throw RPCError(code: .invalidArgument, message: "user_id must be a UUID") }
        guard let user = try await store.findUser(id: userID), user.status != "deleted" else {
            throw RPCError(code: .notFound, message: "user not found")
        }
        var response = AuthGetUserResponse()
        response.user = Self.publicUser(user)
        return response
    }

    public func changePassword(_ request: AuthChangePasswordRequest, _ context: ServerContext) async throws -> AuthChangePasswordResponse {
        guard let userID = UUID(uuidString: request.userID) else { throw RPCError(code: .invalidArgument, message: "user_id must be a UUID") }
        let keep = request.sessionID.isEmpty ? nil : UUID(uuidString: request.sessionID)
        guard let user = try await store.findUser(id: userID), user.status == "active" else {
            _ = try await hasher.dummyVerify(request.currentPassword)
            throw Self.invalidCredentials
        }
        guard try await hasher.verify(request.currentPassword, against: user.passwordHash) else {
            audit.notice("password change: wrong current password", metadata: ["event": "password_change_failed", "risk": "medium", "user_id": "\(user.id)", "request_id": "\(context.requestID)"])
            throw Self.invalidCredentials
        }
        try checkNewPassword(request.newPassword, email: user.email, fullName: user.fullName)
        let hash = try await hasher.hash(request.newPassword)
        let revoked = try await store.changePassword(userID: user.id, newHash: hash, keepFamily: keep, now: now(), logger: context.logger)
        graceCache.removeAll()
        audit.notice("password changed", metadata: ["event": "password_changed", "risk": "medium", "user_id": "\(user.id)", "revoked_sessions": "\(revoked)", "request_id": "\(context.requestID)"])
        var response = AuthChangePasswordResponse()
        response.revokedSessions = Int32(clamping: revoked)
        return response
    }

    static func publicUser(_ user: UserRecord) -> AuthUser {
        var result = AuthUser()
        result.id = user.id.uuidString.lowercased()
        result.email = user.email
        result.fullName = user.fullName
        result.phone = user.phone ?? ""
        result.role = user.role
        result.status = user.status
        result.createdAt = Int64(user.createdAt.timeIntervalSince1970.rounded(.down))
        result.totpEnabled = user.totpSecretSealed != nil
        result.points = user.points
        return result
    }
}

/// Successor pairs of recently rotated refresh tokens, keyed by the SHA-256 of the presented
/// (old) token, kept only for the grace window: the database stores hashes, so this is the
/// only place a successor can be handed out again to a client's parallel refresh.
final class GraceCache: Sendable {
    private struct Entry: Sendable {
        var pair: AuthTokenPair
        var rotatedAt: Date
        var familyID: String
    }

    private let window: TimeInterval
    private let entries = Mutex<[Data: Entry]>([:])

    init(window: TimeInterval) {
        self.window = window
    }

    func store(_ pair: AuthTokenPair, for presentedHash: Data, rotatedAt: Date) {
        entries.withLock { entries in
            entries = entries.filter { rotatedAt.timeIntervalSince($0.value.rotatedAt) < window }
            entries[presentedHash] = Entry(pair: pair, rotatedAt: rotatedAt, familyID: pair.sessionID)
        }
    }

    func successor(for presentedHash: Data, now: Date) -> AuthTokenPair? {
        entries.withLock { entries in
            guard let entry = entries[presentedHash] else { return nil }
            guard abs(now.timeIntervalSince(entry.rotatedAt)) < window else {
                entries[presentedHash] = nil
                return nil
            }
            return entry.pair
        }
    }

    func remove(presentedHash: Data) {
        entries.withLock { $0[presentedHash] = nil }
    }

    func remove(family: UUID) {
        let id = family.uuidString.lowercased()
        entries.withLock { entries in entries = entries.filter { $0.value.familyID != id } }
    }

    func removeAll() {
        entries.withLock { $0.removeAll() }
    }
}

/// Input checks for account fields. Messages name the field, never echo secrets.
enum Validation {
    static func normalizedEmail(_ raw: String) -> String {
        FieldRules.normalizedEmail(raw)
    }

    /// The e-mail grammar the edge applies too (``FieldRules/emailProblem(_:)``). Returns the
    /// normalised (lower-cased) address.
    static func email(_ raw: String) throws -> String {
        guard FieldRules.emailProblem(raw) == nil else {
            throw RPCError(code: .invalidArgument, message: "email is not a valid address", details: ["field": "email"])
        }
        return normalizedEmail(raw)
    }

    static func fullName(_ raw: String) throws -> String {
        let name = raw.trimmingCharacters(in: .whitespacesAndNewlines)
        guard (1...200).contains(name.count), !name.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) else {
            throw RPCError(code: .invalidArgument, message: "full_name must be 1-200 characters without control characters", details: ["field": "full_name"])
        }
        return name
    }

    /// E.164 (``FieldRules/isE164Phone(_:)``). Empty means no phone.
    static func phone(_ raw: String) throws -> String? {
        guard !raw.isEmpty else { return nil }
        guard FieldRules.isE164Phone(raw) else {
            throw RPCError(code: .invalidArgument, message: "phone must be in E.164 form, e.g. +14155550100", details: ["field": "phone"])
        }
        return raw
    }

    /// An FCM registration token: 1-4096 printable ASCII characters (adding and removing alike).
    static func fcmToken(_ token: String) throws {
        guard (1...4096).contains(token.utf8.count), token.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else {
            throw RPCError(code: .invalidArgument, message: "fcm_token must be 1-4096 printable ASCII characters", details: ["field": "fcm_token"])
        }
    }

    /// Text PostgreSQL can store and a person could have typed: no NUL (PostgreSQL refuses it
    /// with 22021) and no other C0/C1 control character or DEL.
    static func isStorableText(_ text: String) -> Bool {
        !text.unicodeScalars.contains { $0.value < 0x20 || (0x7F...0x9F).contains($0.value) }
    }

    /// A short lower-case word for the audit trail.
    static func reasonWord(_ raw: String) -> String {
        let spaced = raw.lowercased().replacingOccurrences(of: " ", with: "_").replacingOccurrences(of: "-", with: "_")
        let word = String(spaced.unicodeScalars.prefix(32).filter { ("a"..."z").contains($0) || $0 == "_" }.map(Character.init))
        return word.isEmpty ? "unspecified" : word
    }
}

/// Set inside a refresh transaction (a `@Sendable` closure) when its successor pair went into the
/// grace cache, read by the caller after it.
private final class CachedFlag: Sendable {
    let value = Atomic<Bool>(false)
}
