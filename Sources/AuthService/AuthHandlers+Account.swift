import Crypto
import Foundation
import Logging
import RPC

/// Account management, reset codes, API keys, TOTP enrolment, profile data and admin
/// operations. `user_id` always comes from the verified token at the edge (C-7).
extension AuthHandlers {
    static func userID(_ raw: String, field: String = "user_id") throws -> UUID {
        guard let id = UUID(uuidString: raw) else { throw RPCError(code: .invalidArgument, message: "\(field) must be a UUID", details: ["field": field]) }
        return id
    }

    static let userNotFound = RPCError(code: .notFound, message: "user not found")

    func activeUser(_ id: UUID, _ context: ServerContext) async throws -> UserRecord {
        guard let user = try await store.findUser(id: id), user.status == "active" else { throw Self.userNotFound }
        return user
    }

    // MARK: UpdateUser, DeleteUser, ListSessions

    public func updateUser(_ request: AuthUpdateUserRequest, _ context: ServerContext) async throws -> AuthUpdateUserResponse {
        let id = try Self.userID(request.userID)
        let fullName = request.fullName.isEmpty ? nil : try Validation.fullName(request.fullName)
        let phone: String?? = request.removePhone ? .some(nil) : (request.phone.isEmpty ? nil : .some(try Validation.phone(request.phone)))
        _ = try await activeUser(id, context)
        guard let user = try await store.updateProfile(userID: id, fullName: fullName, phone: phone, now: now(), logger: context.logger), user.status == "active" else {
            throw Self.userNotFound
        }
        await recordAudit("user_updated", risk: "low", userID: id, context)
        var response = AuthUpdateUserResponse()
        response.user = Self.publicUser(user)
        return response
    }

    public func deleteUser(_ request: AuthDeleteUserRequest, _ context: ServerContext) async throws -> AuthDeleteUserResponse {
        let id = try Self.userID(request.userID)
        let user = try await activeUser(id, context)
        guard try await hasher.verify(request.password, against: user.passwordHash) else {
            await recordAudit("account_delete_refused", risk: "medium", userID: id, context)
            throw Self.invalidCredentials
        }
        let revoked = try await store.deleteUser(userID: id, now: now(), logger: context.logger)
        graceCache.removeAll()
        await recordAudit("account_deleted", risk: "medium", userID: id, context, details: ["revoked_sessions": "\(revoked)"])
        return AuthDeleteUserResponse()
    }

    public func listSessions(_ request: AuthListSessionsRequest, _ context: ServerContext) async throws -> AuthListSessionsResponse {
        let id = try Self.userID(request.userID)
        let now = now()
        let policy = refreshMachine.policy
        var response = AuthListSessionsResponse()
        for session in try await store.liveSessions(userID: id, logger: context.logger) {
            let family = RefreshFamily(id: session.id, createdAt: session.createdAt, lastUsedAt: session.lastUsedAt)
            // Families past their idle or absolute limit are dead even if not yet marked so.
            guard policy.expiry(of: family) > now else { continue }
            var item = AuthSession()
            item.id = session.id.uuidString.lowercased()
            item.createdAt = Int64(session.createdAt.timeIntervalSince1970.rounded(.down))
            item.lastUsedAt = Int64(session.lastUsedAt.timeIntervalSince1970.rounded(.down))
            item.idleExpiresAt = Int64(session.lastUsedAt.addingTimeInterval(policy.idleTimeout).timeIntervalSince1970.rounded(.down))
            item.absoluteExpiresAt = Int64(session.createdAt.addingTimeInterval(policy.absoluteLifetime).timeIntervalSince1970.rounded(.down))
            item.current = item.id == request.currentSessionID.lowercased()
            item.mfaVerified = session.mfaAt != nil
            response.sessions.append(item)
        }
        return response
    }

    // MARK: Signing keys

    public func rotateSigningKey(_ request: AuthRotateSigningKeyRequest, _ context: ServerContext) async throws -> AuthRotateSigningKeyResponse {
        let algorithm: AccessTokenAlgorithm?
        if request.algorithm.isEmpty {
            algorithm = nil
        } else {
            guard let parsed = AccessTokenAlgorithm(rawValue: request.algorithm) else {
                throw RPCError(code: .invalidArgument, message: "algorithm must be one of RS256, ES256, EdDSA, HS256", details: ["field": "algorithm"])
            }
            algorithm = parsed
        }
        return try await rotateKey(algorithm: algorithm, context)
    }

    func rotateKey(algorithm: AccessTokenAlgorithm?, _ context: ServerContext) async throws -> AuthRotateSigningKeyResponse {
        let now = now()
        let previous = issuer.current
        let rotated: (new: SigningKey, issuer: TokenIssuer)
        do {
            rotated = try await keyRing.rotate(algorithm: algorithm, now: now, retiredAt: try await store.signingKeyRetirements(logger: context.logger))
        } catch let refused as RotationRefused {
            throw RPCError(code: .failedPrecondition, message: refused.description)
        }
        let jwk = rotated.new.publicJWK.flatMap { try? JSONEncoder().encode($0) }.map { String(decoding: $0, as: UTF8.self) }
        try await store.recordSigningKey(kid: rotated.new.kid, algorithm: rotated.new.algorithm.rawValue, publicJWK: jwk, retiring: previous.kid, now: now, logger: context.logger)
        await recordAudit("key_rotation", risk: "medium", userID: nil, context, details: ["kid": rotated.new.kid, "previous_kid": previous.kid])
        var response = AuthRotateSigningKeyResponse()
        response.kid = rotated.new.kid
        response.algorithm = rotated.new.algorithm.rawValue
        response.verifyingKids = ([rotated.issuer.current] + rotated.issuer.previous).map(\.kid)
        return response
    }

    // MARK: Reset codes (C-5)

    public func forgotPassword(_ request: AuthForgotPasswordRequest, _ context: ServerContext) async throws -> AuthForgotPasswordResponse {
        let email = Validation.normalizedEmail(request.email)
        guard email.utf8.count <= 254, !email.isEmpty else { return AuthForgotPasswordResponse() }
        // Locked accounts may reset (C-5): only the status matters here.
        guard let user = try await store.findUser(emailNormalized: email, logger: context.logger), user.status == "active" else {
            await recordAudit("password_reset_requested", risk: "low", userID: nil, context, details: ["known": "false"])
            return AuthForgotPasswordResponse()
        }
        let now = now()
        let policy = protection.resetCodes
        let issued = try await store.resetCodesIssued(userID: user.id, since: now.addingTimeInterval(-86_400), logger: context.logger)
        guard policy.mayIssue(codesIssuedLast24h: issued) else {
            await recordAudit("password_reset_capped", risk: "medium", userID: user.id, context)
            return AuthForgotPasswordResponse()
        }
        let code = ResetCode.generate(digits: policy.digits)
        let id = UUID()
        try await store.issueResetCode(id: id, userID: user.id, codeHMAC: ResetCode.hmac(code, key: protection.secrets.resetCodeKey, context: user.id.uuidString.lowercased()), now: now, expiresAt: now.addingTimeInterval(policy.expiry), logger: context.logger)
        mail(.resetCode(code: code, expiresInMinutes: Int(policy.expiry / 60)), to: user.email, context)
        await recordAudit("password_reset_requested", risk: "low", userID: user.id, context, details: ["known": "true"])
        return AuthForgotPasswordResponse()
    }

    static let invalidResetCode = RPCError(code: .invalidArgument, message: "invalid_reset_code", details: ["field": "code"])

    public func resetPassword(_ request: AuthResetPasswordRequest, _ context: ServerContext) async throws -> AuthResetPasswordResponse {
        let email = Validation.normalizedEmail(request.email)
        let code = request.code
        guard (ResetCode.minimumDigits...ResetCode.maximumDigits).contains(code.utf8.count), code.utf8.allSatisfy({ (48...57).contains($0) }),
              email.utf8.count <= 254, !email.isEmpty
        else {
            throw Self.invalidResetCode
        }
        // The account-independent policy first, so that a weak password is refused the same way
        // for every address and costs no attempt.
        try checkNewPassword(request.newPassword, email: nil, fullName: nil)
        guard let user = try await store.findUser(emailNormalized: email, logger: context.logger), user.status == "active" else {
            throw Self.invalidResetCode
        }
        let now = now()
        guard let open = try await store.countResetAttempt(userID: user.id, now: now, logger: context.logger) else { throw Self.invalidResetCode }
        switch protection.resetCodes.checkAttempt(issuedAt: open.createdAt, attemptsSoFar: open.attempts, used: open.usedAt != nil, now: now) {
        case .allowed: break
        case .expired, .alreadyUsed, .tooManyAttempts:
            await recordAudit("password_reset_failed", risk: "medium", userID: user.id, context, details: ["reason": "code_unusable"])
            throw Self.invalidResetCode
        }
        guard ResetCode.verify(code, storedHMAC: open.codeHMAC, key: protection.secrets.resetCodeKey, context: user.id.uuidString.lowercased()) else {
            await recordAudit("password_reset_failed", risk: "medium", userID: user.id, context, details: ["reason": "wrong_code"])
            throw Self.invalidResetCode
        }
        // The holder of the code owns the account: now the checks that use its e-mail and name.
        try checkNewPassword(request.newPassword, email: user.email, fullName: user.fullName)
        let hash = try await hasher.hash(request.newPassword)
        guard let revoked = try await store.consumeResetCode(id: open.id, userID: user.id, newHash: hash, now: now, logger: context.logger) else {
            throw Self.invalidResetCode
        }
        graceCache.removeAll()
        mail(.passwordChanged, to: user.email, context)
        await recordAudit("password_reset_completed", risk: "medium", userID: user.id, context, details: ["revoked_sessions": "\(revoked)"])
        var response = AuthResetPasswordResponse()
        response.revokedSessions = Int32(clamping: revoked)
        return response
    }

    // MARK: API keys

    static let invalidAPIKey = RPCError(code: .unauthenticated, message: "invalid_api_key")
    /// 9999-12-31T23:59:59Z, in Unix seconds: the latest expiry an API key may have.
    static let latestAPIKeyExpiry: Int64 = 253_402_300_799

    public func createAPIKey(_ request: AuthCreateAPIKeyRequest, _ context: ServerContext) async throws -> AuthCreateAPIKeyResponse {
        let id = try Self.userID(request.userID)
        let name = request.name.trimmingCharacters(in: .whitespacesAndNewlines)
        guard (1...100).contains(name.count), !name.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) else {
            throw RPCError(code: .invalidArgument, message: "name must be 1-100 characters", details: ["field": "name"])
        }
        let now = now()
        // PostgreSQL's driver turns a date into microseconds in an Int64 and traps beyond that:
        // a far-off expiry must be refused before it becomes a Date for the insert.
        guard request.expiresAt <= Self.latestAPIKeyExpiry else {
            throw RPCError(code: .invalidArgument, message: "expires_at must be before the year 10000", details: ["field": "expires_at"])
        }
        let expiresAt: Date? = request.expiresAt == 0 ? nil : Date(timeIntervalSince1970: TimeInterval(request.expiresAt))
        if let expiresAt, expiresAt <= now {
            throw RPCError(code: .invalidArgument, message: "expires_at must be in the future", details: ["field": "expires_at"])
        }
        _ = try await activeUser(id, context)
        guard try await store.apiKeys(userID: id, logger: context.logger).count < 50 else {
            // The account's state, not the request: 409 at the edge, like any conflict.
            throw RPCError(code: .conflict, message: "at most 50 API keys per user; revoke one first")
        }
        let key = APIKeyFormat.generate()
        let record = APIKeyRecord(id: UUID(), userID: id, name: name, prefix: key.lookupPrefix, keyHMAC: APIKeyFormat.hash(key, secret: protection.secrets.apiKeyKey), createdAt: now, expiresAt: expiresAt)
        try await store.insertAPIKey(record, logger: context.logger)
        await recordAudit("api_key_created", risk: "medium", userID: id, context, details: ["key_id": record.id.uuidString.lowercased(), "prefix": record.prefix])
        var response = AuthCreateAPIKeyResponse()
        response.key = Self.publicKey(record)
        response.secret = key.rawValue
        return response
    }

    public func listAPIKeys(_ request: AuthListAPIKeysRequest, _ context: ServerContext) async throws -> AuthListAPIKeysResponse {
        let id = try Self.userID(request.userID)
        var response = AuthListAPIKeysResponse()
        response.keys = try await store.apiKeys(userID: id, logger: context.logger).map(Self.publicKey)
        return response
    }

    public func revokeAPIKey(_ request: AuthRevokeAPIKeyRequest, _ context: ServerContext) async throws -> AuthRevokeAPIKeyResponse {
        let id = try Self.userID(request.userID)
        let keyID = try Self.userID(request.keyID, field: "key_id")
        // Another user's key id is simply not found (C-7).
        guard try await store.revokeAPIKey(id: keyID, userID: id, now: now(), logger: context.logger) else {
            throw RPCError(code: .notFound, message: "api key not found")
        }
        await recordAudit("api_key_revoked", risk: "medium", userID: id, context, details: ["key_id": keyID.uuidString.lowercased()])
        return AuthRevokeAPIKeyResponse()
    }

    public func authenticateAPIKey(_ request: AuthAuthenticateAPIKeyRequest, _ context: ServerContext) async throws -> AuthAuthenticateAPIKeyResponse {
        guard let key = APIKeyFormat.parse(request.apiKey) else { throw Self.invalidAPIKey }
        let presented = APIKeyFormat.hash(key, secret: protection.secrets.apiKeyKey)
        let now = now()
        let candidates = try await store.apiKeys(prefix: key.lookupPrefix, logger: context.logger)
        guard let record = candidates.first(where: { ConstantTime.equals($0.keyHMAC, presented) }),
              record.expiresAt.map({ $0 > now }) ?? true,
              let user = try await store.findUser(id: record.userID), user.status == "active"
        else {
            throw Self.invalidAPIKey
        }
        try await store.touchAPIKey(id: record.id, now: now, logger: context.logger)
        var response = AuthAuthenticateAPIKeyResponse()
        response.principal.userID = user.id.uuidString.lowercased()
        response.principal.role = user.role
        response.principal.apiKeyID = record.id.uuidString.lowercased()
        return response
    }

    static func publicKey(_ record: APIKeyRecord) -> AuthAPIKey {
        var key = AuthAPIKey()
        key.id = record.id.uuidString.lowercased()
        key.prefix = record.prefix
        key.name = record.name
        key.createdAt = Int64(record.createdAt.timeIntervalSince1970.rounded(.down))
        key.expiresAt = record.expiresAt.map { Int64($0.timeIntervalSince1970.rounded(.down)) } ?? 0
        key.lastUsedAt = record.lastUsedAt.map { Int64($0.timeIntervalSince1970.rounded(.down)) } ?? 0
        return key
    }

    // MARK: TOTP enrolment

    public func beginTOTPEnrollment(_ request: AuthBeginTOTPEnrollmentRequest, _ context: ServerContext) async throws -> AuthBeginTOTPEnrollmentResponse {
        let user = try await activeUser(try Self.userID(request.userID), context)
        let secret = TOTP.generateSecret()
        try await store.setPendingTOTP(userID: user.id, sealed: try protection.secrets.sealTOTPSecret(secret, userID: user.id), logger: context.logger)
        let totp = try TOTP(secret: secret)
        var response = AuthBeginTOTPEnrollmentResponse()
        response.secretBase32 = Base32.encode(secret)
        response.otpauthUri = totp.provisioningURI(issuer: protection.totpIssuer, account: user.email)
        return response
    }

    public func confirmTOTPEnrollment(_ request: AuthConfirmTOTPEnrollmentRequest, _ context: ServerContext) async throws -> AuthConfirmTOTPEnrollmentResponse {
        let user = try await activeUser(try Self.userID(request.userID), context)
        guard let sealed = try await store.pendingTOTP(userID: user.id, logger: context.logger),
              let secret = protection.secrets.openTOTPSecret(sealed, userID: user.id)
        else {
            throw RPCError(code: .failedPrecondition, message: "no TOTP enrolment in progress; begin one first")
        }
        guard case .valid(let step) = try TOTP(secret: secret).verify(code: request.code, at: now(), lastUsedStep: nil) else {
            await recordAudit("mfa_failure", risk: "medium", userID: user.id, context, details: ["reason": "enrolment_code"])
            throw RPCError(code: .invalidArgument, message: "invalid_totp_code", details: ["field": "code"])
        }
        try await store.confirmTOTP(userID: user.id, sealed: sealed, step: Int64(step), logger: context.logger)
        await recordAudit("mfa_enrolled", risk: "medium", userID: user.id, context)
        return AuthConfirmTOTPEnrollmentResponse()
    }

    // MARK: Profile data (owner only: the edge passes the token's subject)

    public func getNotificationPreferences(_ request: AuthGetNotificationPreferencesRequest, _ context: ServerContext) async throws -> AuthGetNotificationPreferencesResponse {
        let user = try await activeUser(try Self.userID(request.userID), context)
        var response = AuthGetNotificationPreferencesResponse()
        response.preferences = try await store.notificationPreferences(userID: user.id, logger: context.logger)
        return response
    }

    public func putNotificationPreferences(_ request: AuthPutNotificationPreferencesRequest, _ context: ServerContext) async throws -> AuthPutNotificationPreferencesResponse {
        let user = try await activeUser(try Self.userID(request.userID), context)
        try await store.putNotificationPreferences(userID: user.id, request.preferences, now: now(), logger: context.logger)
        var response = AuthPutNotificationPreferencesResponse()
        response.preferences = try await store.notificationPreferences(userID: user.id, logger: context.logger)
        return response
    }

    public func registerDevice(_ request: AuthRegisterDeviceRequest, _ context: ServerContext) async throws -> AuthRegisterDeviceResponse {
        let user = try await activeUser(try Self.userID(request.userID), context)
        try Validation.fcmToken(request.fcmToken)
        guard ["ios", "android"].contains(request.platform) else {
            throw RPCError(code: .invalidArgument, message: "platform must be ios or android", details: ["field": "platform"])
        }
        var response = AuthRegisterDeviceResponse()
        response.deviceID = try await store.registerDevice(userID: user.id, token: request.fcmToken, platform: request.platform, now: now(), logger: context.logger).uuidString.lowercased()
        return response
    }

    public func removeDevice(_ request: AuthRemoveDeviceRequest, _ context: ServerContext) async throws -> AuthRemoveDeviceResponse {
        let id = try Self.userID(request.userID)
        try Validation.fcmToken(request.fcmToken)
        var response = AuthRemoveDeviceResponse()
        response.removed = try await store.removeDevice(userID: id, token: request.fcmToken, logger: context.logger)
        return response
    }

    // MARK: Admin operations (C-19)

    public func adminUnlockUser(_ request: AuthAdminUnlockUserRequest, _ context: ServerContext) async throws -> AuthAdminUnlockUserResponse {
        let id = try Self.userID(request.userID)
        guard let user = try await store.findUser(id: id), user.status != "deleted" else { throw Self.userNotFound }
        try await store.unlock(userID: id, logger: context.logger)
        await recordAudit("admin_action", risk: "medium", userID: id, context, details: ["action": "unlock_user", "actor": request.actorUserID])
        var response = AuthAdminUnlockUserResponse()
        response.wasLocked = protection.lockout.isLocked(user.lockout, now: now())
        return response
    }

    public func revokeEverything(_ request: AuthRevokeEverythingRequest, _ context: ServerContext) async throws -> AuthRevokeEverythingResponse {
        // Every family and access token first: if rotation is refused, sessions are still gone.
        let count = try await store.revokeEveryFamily(reason: "revoke_everything", now: now(), logger: context.logger)
        graceCache.removeAll()
        var response = AuthRevokeEverythingResponse()
        response.revokedSessions = Int32(clamping: count)
        do {
            response.newKid = try await rotateKey(algorithm: nil, context).kid
        } catch let error as RPCError where error.code == .failedPrecondition {
            // Keys from configuration: revocation stands; the operator rotates the credential.
            audit.warning("revoke everything: signing key not rotated (keys come from configuration)", metadata: ["request_id": "\(context.requestID)"])
        }
        await recordAudit("admin_action", risk: "critical", userID: nil, context, details: ["action": "revoke_everything", "actor": request.actorUserID, "revoked_sessions": "\(count)"])
        return response
    }

    public func createAdmin(_ request: AuthCreateAdminRequest, _ context: ServerContext) async throws -> AuthCreateAdminResponse {
        let email = try Validation.email(request.email)
        let fullName = try Validation.fullName(request.fullName)
        try checkNewPassword(request.password, email: email, fullName: fullName)
        let hash = try await hasher.hash(request.password)
        let id = UUID()
        guard try await store.createUser(id: id, email: request.email.trimmingCharacters(in: .whitespaces), emailNormalized: email, fullName: fullName, phone: nil, passwordHash: hash, role: "admin", now: now(), logger: context.logger) else {
            throw RPCError(code: .alreadyExists, message: "an account with this e-mail exists")
        }
        // The admin gets TOTP at once: admin-scoped tokens need it.
        let secret = TOTP.generateSecret()
        let totp = try TOTP(secret: secret)
        try await store.confirmTOTP(userID: id, sealed: try protection.secrets.sealTOTPSecret(secret, userID: id), step: 0, logger: context.logger)
        await recordAudit("admin_action", risk: "high", userID: id, context, details: ["action": "create_admin"])
        var response = AuthCreateAdminResponse()
        response.userID = id.uuidString.lowercased()
        response.totpSecretBase32 = Base32.encode(secret)
        response.otpauthUri = totp.provisioningURI(issuer: protection.totpIssuer, account: request.email)
        return response
    }

    public func listAuditEvents(_ request: AuthListAuditEventsRequest, _ context: ServerContext) async throws -> AuthListAuditEventsResponse {
        let limit = request.limit == 0 ? 100 : Int(request.limit)
        guard (1...500).contains(limit), request.afterID >= 0 else {
            throw RPCError(code: .invalidArgument, message: "limit must be 1-500 and after_id ≥ 0", details: ["field": "limit"])
        }
        var response = AuthListAuditEventsResponse()
        response.events = try await store.auditEvents(afterID: request.afterID, limit: limit, logger: context.logger)
        return response
    }

    public func blockIP(_ request: AuthBlockIPRequest, _ context: ServerContext) async throws -> AuthBlockIPResponse {
        let ip = try Validation.ipAddress(request.ip)
        guard (60...(365 * 86_400)).contains(request.durationSeconds) else {
            throw RPCError(code: .invalidArgument, message: "duration_seconds must be 60 s to 365 days", details: ["field": "duration_seconds"])
        }
        let now = now()
        let reason = Validation.reasonWord(request.reason)
        try await store.blockIP(ip, until: now.addingTimeInterval(TimeInterval(request.durationSeconds)), reason: reason, now: now, logger: context.logger)
        await recordAudit("admin_action", risk: "medium", userID: nil, context, details: ["action": "block_ip", "ip": ip, "reason": reason, "actor": request.actorUserID])
        return AuthBlockIPResponse()
    }

    public func unblockIP(_ request: AuthUnblockIPRequest, _ context: ServerContext) async throws -> AuthUnblockIPResponse {
        let ip = try Validation.ipAddress(request.ip)
        var response = AuthUnblockIPResponse()
        response.removed = try await store.unblockIP(ip, logger: context.logger)
        await recordAudit("admin_action", risk: "medium", userID: nil, context, details: ["action": "unblock_ip", "ip": ip, "actor": request.actorUserID])
        return response
    }

    public func listIPBlocks(_ request: AuthListIPBlocksRequest, _ context: ServerContext) async throws -> AuthListIPBlocksResponse {
        var response = AuthListIPBlocksResponse()
        for block in try await store.activeIPBlocks(now: now(), logger: context.logger) {
            var item = AuthIPBlock()
            item.ip = block.ip
            item.blockedUntil = Int64(block.until.timeIntervalSince1970.rounded(.down))
            item.reason = block.reason
            response.blocks.append(item)
        }
        return response
    }
}

extension Validation {
    /// An IPv4 or IPv6 address in canonical text (the edge compares canonical forms).
    static func ipAddress(_ raw: String) throws -> String {
        if let v4 = IPAddressParser.parseIPv4(raw) { return v4.map(String.init).joined(separator: ".") }
        if let v6 = IPAddressParser.parseIPv6(raw) { return IPAddressParser.formatIPv6(v6) }
        throw RPCError(code: .invalidArgument, message: "ip must be an IPv4 or IPv6 address", details: ["field": "ip"])
    }
}
