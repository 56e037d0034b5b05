import ClauSupport
import Foundation
import HTTPTypes
import RPC

/// The route table of SPEC §3. Each row is one route with its handler, which makes one RPC call on
/// auth or on the broker (`BrokerRoutes.swift`; without a configured broker those answer 503).
extension RouteTable {
    static func clau() -> RouteTable {
        RouteTable(routes: [
            // Process and documents.
            Route(.get, "/healthz", .public, .none, exemptFromAdmission: true) { _ in .json(["status": "ok"]) },
            Route(.get, "/readyz", .public, .none, exemptFromAdmission: true, handler: ReadinessRoutes.ready),
            Route(.get, "/openapi.json", .public, .none) { _ in .raw(.ok, OpenAPIDocument.data) },
            Route(.get, "/.well-known/jwks.json", .public, .read, handler: AuthRoutes.jwks),

            // Public auth.
            Route(.post, "/v1/auth/register", .public, .register, handler: AuthRoutes.register),
            Route(.post, "/v1/auth/login", .public, .login, handler: AuthRoutes.login),
            Route(.post, "/v1/auth/refresh", .public, .refresh, handler: AuthRoutes.refresh),
            Route(.post, "/v1/auth/password/forgot", .public, .sensitive, handler: AccountRoutes.forgotPassword),
            Route(.post, "/v1/auth/password/reset", .public, .sensitive, handler: AccountRoutes.resetPassword),
            Route(.post, "/v1/stripe/webhook", .public, .webhook, handler: BrokerRoutes.wired(WebhookRoutes.stripe)),

            // The caller's own account (auth). `tokenOnly`: an API key alone cannot do it.
            Route(.post, "/v1/auth/logout", .user, .write, tokenOnly: true, handler: AuthRoutes.logout),
            Route(.get, "/v1/me", .user, .read, handler: AuthRoutes.me),
            Route(.patch, "/v1/me", .user, .write, handler: AccountRoutes.updateMe),
            Route(.delete, "/v1/me", .user, .highRisk, tokenOnly: true, handler: AccountRoutes.deleteMe),
            Route(.post, "/v1/me/password", .user, .sensitive, tokenOnly: true, handler: AuthRoutes.changePassword),
            Route(.get, "/v1/me/sessions", .user, .read, tokenOnly: true, handler: AccountRoutes.sessions),
            Route(.post, "/v1/me/mfa/totp", .user, .sensitive, tokenOnly: true, handler: AccountRoutes.beginTOTP),
            Route(.post, "/v1/me/mfa/totp/confirm", .user, .sensitive, tokenOnly: true, handler: AccountRoutes.confirmTOTP),
            Route(.get, "/v1/me/api-keys", .user, .read, handler: AccountRoutes.listAPIKeys),
            Route(.post, "/v1/me/api-keys", .user, .sensitive, tokenOnly: true, handler: AccountRoutes.createAPIKey),
            Route(.delete, "/v1/me/api-keys", .user, .sensitive, handler: AccountRoutes.revokeAPIKey),
            Route(.get, "/v1/me/notification-preferences", .user, .read, handler: AccountRoutes.getPreferences),
            Route(.put, "/v1/me/notification-preferences", .user, .write, handler: AccountRoutes.putPreferences),
            Route(.post, "/v1/me/devices", .user, .write, handler: AccountRoutes.registerDevice),
            Route(.delete, "/v1/me/devices", .user, .write, handler: AccountRoutes.removeDevice),
            // `{userId}` is checked against the token's subject before the handler runs (C-7).
            Route(.get, "/v1/users/{userId}/subscription", .user, .read, handler: BrokerRoutes.wired(StripeRoutes.subscription)),

            // Broker (Alpaca, Stripe): one broker RPC each; 503 when no broker is configured or reachable.
            Route(.get, "/v1/alpaca/oauth/authorize-url", .user, .read, handler: BrokerRoutes.wired(AlpacaRoutes.authorizeURL)),
            Route(.post, "/v1/alpaca/oauth/callback", .user, .sensitive, handler: BrokerRoutes.wired(AlpacaRoutes.callback)),
            Route(.delete, "/v1/alpaca/connection", .user, .sensitive, handler: BrokerRoutes.wired(AlpacaRoutes.disconnect)),
            Route(.get, "/v1/alpaca/account", .user, .read, handler: BrokerRoutes.wired(AlpacaRoutes.account)),
            Route(.get, "/v1/alpaca/positions", .user, .read, handler: BrokerRoutes.wired(AlpacaRoutes.positions)),
            Route(.get, "/v1/alpaca/orders", .user, .read, handler: BrokerRoutes.wired(AlpacaRoutes.listOrders)),
            Route(.post, "/v1/alpaca/orders", .user, .sensitive, handler: BrokerRoutes.wired(AlpacaRoutes.placeOrder)),
            Route(.delete, "/v1/alpaca/orders/{orderId}", .user, .sensitive, handler: BrokerRoutes.wired(AlpacaRoutes.cancelOrder)),
            Route(.post, "/v1/stripe/financial-connections/sessions", .user, .write, handler: BrokerRoutes.wired(StripeRoutes.createSession)),
            Route(.post, "/v1/stripe/financial-connections/accounts", .user, .write, handler: BrokerRoutes.wired(StripeRoutes.linkAccounts)),
            Route(.get, "/v1/stripe/balances", .user, .read, handler: BrokerRoutes.wired(StripeRoutes.balances)),
            Route(.post, "/v1/stripe/subscription/checkout", .user, .highRisk, handler: BrokerRoutes.wired(StripeRoutes.checkout)),

            // Admin (C-8): role admin + MFA-fresh token + X-Admin-Key.
            Route(.post, "/v1/admin/users/{userId}/sessions/revoke", .admin, .highRisk, handler: AuthRoutes.adminRevokeSessions),
            Route(.post, "/v1/admin/users/{userId}/unlock", .admin, .highRisk, handler: AdminRoutes.unlock),
            Route(.post, "/v1/admin/ip-blocks", .admin, .highRisk, handler: AdminRoutes.blockIP),
            Route(.delete, "/v1/admin/ip-blocks/{ip}", .admin, .highRisk, handler: AdminRoutes.unblockIP),
            Route(.post, "/v1/admin/keys/fernet/rotate", .admin, .highRisk, handler: BrokerRoutes.wired(FernetRotationRoutes.rotate)),
            Route(.post, "/v1/admin/keys/jwt/rotate", .admin, .highRisk, handler: AdminRoutes.rotateSigningKey),
            Route(.get, "/v1/admin/audit-log", .admin, .read, handler: AdminRoutes.auditLog),
        ])
    }
}

/// Handlers of the routes auth already serves: each decodes a strict body, makes one RPC call
/// with the request id and a deadline, and shapes the reply of SPEC §3.
enum AuthRoutes {
    static func register(_ call: EdgeCall) async throws -> EdgeReply {
        let body = try await call.decode(RegisterBody.self)
        var request = AuthRegisterRequest()
        request.email = body.email
        request.password = body.password
        request.fullName = body.fullName
        request.phone = body.phone ?? ""
        _ = try await call.rpc(AuthAPI.register, request)
        // Byte-for-byte the same for new and existing e-mails.
        return .json(["status": "accepted"], status: .accepted)
    }

    static func login(_ call: EdgeCall) async throws -> EdgeReply {
        let body = try await call.decode(LoginBody.self)
        // 5 per 5 minutes per IP + account (the account normalised as auth does).
        try await call.enforce(.login, key: RateLimitKey.login(clientIP: call.clientIP, email: body.email))
        var request = AuthLoginRequest()
        request.email = body.email
        request.password = body.password
        request.totp = body.totp ?? ""
        request.clientIp = call.clientIP
        request.deviceHeaders = call.deviceHeaders
        let response = try await call.rpc(AuthAPI.login, request)
        return tokens(response.tokens)
    }

    static func refresh(_ call: EdgeCall) async throws -> EdgeReply {
        let body = try await call.decode(RefreshBody.self)
        var request = AuthRefreshRequest()
        request.refreshToken = body.refreshToken
        request.clientIp = call.clientIP
        request.deviceHeaders = call.deviceHeaders
        return tokens(try await call.rpc(AuthAPI.refresh, request).tokens)
    }

    static func tokens(_ pair: AuthTokenPair) -> EdgeReply {
        let expiresIn = max(0, pair.accessExpiresAt - Int64(Date().timeIntervalSince1970))
        return .json(["access_token": pair.accessToken, "refresh_token": pair.refreshToken, "token_type": "Bearer", "expires_in": expiresIn])
    }

    static func logout(_ call: EdgeCall) async throws -> EdgeReply {
        guard let token = call.bearerToken else { throw EdgeError.unauthenticated() }
        var request = AuthLogoutRequest()
        request.accessToken = token
        _ = try await call.rpc(AuthAPI.logout, request)
        if let jti = call.caller?.jti { call.app.revocations.forget(jti) }
        return .noContent
    }

    static func me(_ call: EdgeCall) async throws -> EdgeReply {
        var request = AuthGetUserRequest()
        request.userID = try call.subject
        return .json(userJSON(try await call.rpc(AuthAPI.getUser, request).user))
    }

    static func userJSON(_ user: AuthUser) -> [String: Any] {
        ["id": user.id, "email": user.email, "full_name": user.fullName, "phone": user.phone.isEmpty ? NSNull() : user.phone,
         "role": user.role, "created_at": isoTime(user.createdAt)]
    }

    static func isoTime(_ seconds: Int64) -> Any {
        seconds == 0 ? NSNull() : ISO8601UTC.string(fromEpochSeconds: seconds)
    }

    static func changePassword(_ call: EdgeCall) async throws -> EdgeReply {
        let body = try await call.decode(ChangePasswordBody.self)
        var request = AuthChangePasswordRequest()
        request.userID = try call.subject
        request.currentPassword = body.currentPassword
        request.newPassword = body.newPassword
        request.sessionID = call.caller?.sid ?? ""
        _ = try await call.rpc(AuthAPI.changePassword, request, passwordField: "new_password")
        return .noContent
    }

    static func jwks(_ call: EdgeCall) async throws -> EdgeReply {
        if call.app.jwks.jwksJSON == nil { await call.app.jwks.refresh(requestID: call.requestID, force: false) }
        guard let json = call.app.jwks.jwksJSON else { throw EdgeError.serviceUnavailable() }
        return .raw(.ok, Data(json.utf8), contentType: "application/jwk-set+json")
    }

    static func adminRevokeSessions(_ call: EdgeCall) async throws -> EdgeReply {
        let body = try await call.decode(RevokeSessionsBody.self)
        guard let userID = call.parameters["userId"], UUID(uuidString: userID) != nil else { throw EdgeError.notFound() }
        var request = AuthRevokeAllSessionsRequest()
        request.userID = userID
        request.reason = body.reason ?? "admin"
        let response = try await call.rpc(AuthAPI.revokeAllSessions, request)
        return .json(["revoked_sessions": Int(response.revokedSessions)])
    }
}

/// The account and protection routes: one RPC each.
enum AccountRoutes {
    static func forgotPassword(_ call: EdgeCall) async throws -> EdgeReply {
        let body = try await call.decode(ForgotPasswordBody.self)
        var request = AuthForgotPasswordRequest()
        request.email = body.email
        request.clientIp = call.clientIP
        _ = try await call.rpc(AuthAPI.forgotPassword, request)
        // The same answer for known and unknown addresses.
        return .json(["status": "accepted"], status: .accepted)
    }

    static func resetPassword(_ call: EdgeCall) async throws -> EdgeReply {
        let body = try await call.decode(ResetPasswordBody.self)
        var request = AuthResetPasswordRequest()
        request.email = body.email
        request.code = body.code
        request.newPassword = body.newPassword
        request.clientIp = call.clientIP
        _ = try await call.rpc(AuthAPI.resetPassword, request, passwordField: "new_password")
        return .noContent
    }

    static func updateMe(_ call: EdgeCall) async throws -> EdgeReply {
        let body = try await call.decode(UpdateMeBody.self)
        var request = AuthUpdateUserRequest()
        request.userID = try call.subject
        request.fullName = body.fullName ?? ""
        request.phone = body.phone ?? ""
        request.removePhone = body.removePhone
        return .json(AuthRoutes.userJSON(try await call.rpc(AuthAPI.updateUser, request).user))
    }

    static func deleteMe(_ call: EdgeCall) async throws -> EdgeReply {
        let body = try await call.decode(PasswordConfirmationBody.self)
        var request = AuthDeleteUserRequest()
        request.userID = try call.subject
        request.password = body.password
        _ = try await call.rpc(AuthAPI.deleteUser, request)
        if let jti = call.caller?.jti { call.app.revocations.forget(jti) }
        return .noContent
    }

    static func sessions(_ call: EdgeCall) async throws -> EdgeReply {
        var request = AuthListSessionsRequest()
        request.userID = try call.subject
        request.currentSessionID = call.caller?.sid ?? ""
        let sessions = try await call.rpc(AuthAPI.listSessions, request).sessions.map { session -> [String: Any] in
            ["id": session.id, "created_at": AuthRoutes.isoTime(session.createdAt), "last_used_at": AuthRoutes.isoTime(session.lastUsedAt),
             "idle_expires_at": AuthRoutes.isoTime(session.idleExpiresAt), "absolute_expires_at": AuthRoutes.isoTime(session.absoluteExpiresAt),
             "current": session.current, "mfa_verified": session.mfaVerified]
        }
        return .json(["sessions": sessions])
    }

    static func beginTOTP(_ call: EdgeCall) async throws -> EdgeReply {
        var request = AuthBeginTOTPEnrollmentRequest()
        request.userID = try call.subject
        let response = try await call.rpc(AuthAPI.beginTOTPEnrollment, request)
        return .json(["secret_base32": response.secretBase32, "otpauth_uri": response.otpauthUri], status: .created)
    }

    static func confirmTOTP(_ call: EdgeCall) async throws -> EdgeReply {
        let body = try await call.decode(TOTPCodeBody.self)
        var request = AuthConfirmTOTPEnrollmentRequest()
        request.userID = try call.subject
        request.code = body.code
        _ = try await call.rpc(AuthAPI.confirmTOTPEnrollment, request)
        return .noContent
    }

    static func apiKeyJSON(_ key: AuthAPIKey) -> [String: Any] {
        ["id": key.id, "prefix": key.prefix, "name": key.name, "created_at": AuthRoutes.isoTime(key.createdAt),
         "expires_at": AuthRoutes.isoTime(key.expiresAt), "last_used_at": AuthRoutes.isoTime(key.lastUsedAt)]
    }

    static func listAPIKeys(_ call: EdgeCall) async throws -> EdgeReply {
        var request = AuthListAPIKeysRequest()
        request.userID = try call.subject
        return .json(["api_keys": try await call.rpc(AuthAPI.listAPIKeys, request).keys.map(apiKeyJSON)])
    }

    static func createAPIKey(_ call: EdgeCall) async throws -> EdgeReply {
        let body = try await call.decode(CreateAPIKeyBody.self)
        var request = AuthCreateAPIKeyRequest()
        request.userID = try call.subject
        request.name = body.name
        request.expiresAt = body.expiresAt ?? 0
        let response = try await call.rpc(AuthAPI.createAPIKey, request)
        // The secret is shown once, here; it is never logged.
        return .json(["api_key": apiKeyJSON(response.key), "secret": response.secret], status: .created)
    }

    static func revokeAPIKey(_ call: EdgeCall) async throws -> EdgeReply {
        let body = try await call.decode(IDBody.self)
        var request = AuthRevokeAPIKeyRequest()
        request.userID = try call.subject
        request.keyID = body.id
        _ = try await call.rpc(AuthAPI.revokeAPIKey, request, fieldNames: ["key_id": "id"])
        return .noContent
    }

    static func preferencesJSON(_ preferences: AuthNotificationPreferences) -> [String: Any] {
        ["security_email": preferences.securityEmail, "order_push": preferences.orderPush,
         "price_alert_push": preferences.priceAlertPush, "marketing_email": preferences.marketingEmail]
    }

    static func getPreferences(_ call: EdgeCall) async throws -> EdgeReply {
        var request = AuthGetNotificationPreferencesRequest()
        request.userID = try call.subject
        return .json(preferencesJSON(try await call.rpc(AuthAPI.getNotificationPreferences, request).preferences))
    }

    static func putPreferences(_ call: EdgeCall) async throws -> EdgeReply {
        let body = try await call.decode(NotificationPreferencesBody.self)
        var request = AuthPutNotificationPreferencesRequest()
        request.userID = try call.subject
        request.preferences.securityEmail = body.values["security_email"] ?? true
        request.preferences.orderPush = body.values["order_push"] ?? false
        request.preferences.priceAlertPush = body.values["price_alert_push"] ?? false
        request.preferences.marketingEmail = body.values["marketing_email"] ?? false
        return .json(preferencesJSON(try await call.rpc(AuthAPI.putNotificationPreferences, request).preferences))
    }

    static func registerDevice(_ call: EdgeCall) async throws -> EdgeReply {
        let body = try await call.decode(DeviceBody.self)
        var request = AuthRegisterDeviceRequest()
        request.userID = try call.subject
        request.fcmToken = body.fcmToken
        request.platform = body.platform ?? ""
        return .json(["device_id": try await call.rpc(AuthAPI.registerDevice, request).deviceID], status: .created)
    }

    static func removeDevice(_ call: EdgeCall) async throws -> EdgeReply {
        let body = try await call.decode(DeviceBody.self)
        var request = AuthRemoveDeviceRequest()
        request.userID = try call.subject
        request.fcmToken = body.fcmToken
        guard try await call.rpc(AuthAPI.removeDevice, request).removed else { throw EdgeError.notFound() }
        return .noContent
    }
}

/// Admin routes (C-8, C-19): the edge has checked role, MFA freshness and X-Admin-Key.
enum AdminRoutes {
    static func unlock(_ call: EdgeCall) async throws -> EdgeReply {
        guard let userID = call.parameters["userId"], UUID(uuidString: userID) != nil else { throw EdgeError.notFound() }
        var request = AuthAdminUnlockUserRequest()
        request.userID = userID
        request.actorUserID = try call.subject
        return .json(["was_locked": try await call.rpc(AuthAPI.adminUnlockUser, request).wasLocked])
    }

    static func blockIP(_ call: EdgeCall) async throws -> EdgeReply {
        let body = try await call.decode(BlockIPBody.self)
        var request = AuthBlockIPRequest()
        request.ip = body.ip
        request.durationSeconds = body.durationSeconds
        request.reason = body.reason ?? ""
        request.actorUserID = try call.subject
        _ = try await call.rpc(AuthAPI.blockIP, request)
        await call.app.blocklist.refresh(requestID: call.requestID)
        return .noContent
    }

    static func unblockIP(_ call: EdgeCall) async throws -> EdgeReply {
        guard let ip = call.parameters["ip"], IPAddress.isValid(ip) else { throw EdgeError.notFound() }
        var request = AuthUnblockIPRequest()
        request.ip = ip
        request.actorUserID = try call.subject
        guard try await call.rpc(AuthAPI.unblockIP, request).removed else { throw EdgeError.notFound() }
        await call.app.blocklist.refresh(requestID: call.requestID)
        return .noContent
    }

    static func rotateSigningKey(_ call: EdgeCall) async throws -> EdgeReply {
        let response = try await call.rpc(AuthAPI.rotateSigningKey, AuthRotateSigningKeyRequest())
        await call.app.jwks.refresh(requestID: call.requestID, force: true)
        return .json(["kid": response.kid, "algorithm": response.algorithm, "verifying_kids": response.verifyingKids])
    }

    static func auditLog(_ call: EdgeCall) async throws -> EdgeReply {
        var request = AuthListAuditEventsRequest()
        let query = call.request.uri.queryParameters
        request.afterID = query["after_id"].flatMap { Int64(String($0)) } ?? 0
        request.limit = query["limit"].flatMap { Int32(String($0)) }.map { min(max($0, 1), 500) } ?? 100
        let events = try await call.rpc(AuthAPI.listAuditEvents, request).events.map { event -> [String: Any] in
            ["id": event.id, "occurred_at": AuthRoutes.isoTime(event.occurredAt), "event_type": event.eventType, "risk": event.risk,
             "user_id": event.userID, "request_id": event.requestID,
             "details": (try? JSONSerialization.jsonObject(with: Data(event.detailsJson.utf8))) ?? [String: Any]()]
        }
        return .json(["events": events])
    }
}
