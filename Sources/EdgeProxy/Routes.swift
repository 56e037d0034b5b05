import Foundation
import HTTPTypes
import RPC

/// The route table of SPEC §3. Each row is one route; a route whose service does not exist yet
/// answers 503 `service_unavailable` through `notYet(…)` — wiring it later replaces that with a
/// handler making one RPC call.
extension RouteTable {
    static func clau() -> RouteTable {
        RouteTable(routes: [
            // Process and documents.
            Route(.get, "/healthz", .public, .none, exemptFromAdmission: true) { _ in .json(["status": "ok"]) },
            Route(.get, "/readyz", .public, .none, exemptFromAdmission: true, handler: AuthRoutes.ready),
            Route(.get, "/openapi.json", .public, .none) { _ in .raw(.ok, OpenAPIDocument.data) },
            Route(.get, "/.well-known/jwks.json", .public, .read, handler: AuthRoutes.jwks),

            // Public auth.
            Route(.post, "/v1/auth/register", .public, .register, handler: AuthRoutes.register),
            Route(.post, "/v1/auth/login", .public, .login, handler: AuthRoutes.login),
            Route(.post, "/v1/auth/refresh", .public, .refresh, handler: AuthRoutes.refresh),
            Route(.post, "/v1/auth/password/forgot", .public, .sensitive, handler: notYet("password reset")),
            Route(.post, "/v1/auth/password/reset", .public, .sensitive, handler: notYet("password reset")),
            Route(.post, "/v1/stripe/webhook", .public, .write, handler: notYet("stripe")),

            // The caller's own account.
            Route(.post, "/v1/auth/logout", .user, .write, handler: AuthRoutes.logout),
            Route(.get, "/v1/me", .user, .read, handler: AuthRoutes.me),
            Route(.patch, "/v1/me", .user, .write, handler: notYet("profile update")),
            Route(.delete, "/v1/me", .user, .highRisk, handler: notYet("account deletion")),
            Route(.post, "/v1/me/password", .user, .sensitive, handler: AuthRoutes.changePassword),
            Route(.get, "/v1/me/api-keys", .user, .read, handler: notYet("api keys")),
            Route(.post, "/v1/me/api-keys", .user, .sensitive, handler: notYet("api keys")),
            Route(.delete, "/v1/me/api-keys", .user, .sensitive, handler: notYet("api keys")),
            Route(.get, "/v1/me/notification-preferences", .user, .read, handler: notYet("notification preferences")),
            Route(.put, "/v1/me/notification-preferences", .user, .write, handler: notYet("notification preferences")),
            Route(.post, "/v1/me/devices", .user, .write, handler: notYet("devices")),
            Route(.delete, "/v1/me/devices", .user, .write, handler: notYet("devices")),
            // `{userId}` is checked against the token's subject before the handler runs (C-7).
            Route(.get, "/v1/users/{userId}/subscription", .user, .read, handler: notYet("subscriptions")),

            // Broker (Alpaca, Stripe): 503 until clau-broker exists.
            Route(.get, "/v1/alpaca/oauth/authorize-url", .user, .read, handler: notYet("alpaca")),
            Route(.post, "/v1/alpaca/oauth/callback", .user, .sensitive, handler: notYet("alpaca")),
            Route(.delete, "/v1/alpaca/connection", .user, .sensitive, handler: notYet("alpaca")),
            Route(.get, "/v1/alpaca/account", .user, .read, handler: notYet("alpaca")),
            Route(.get, "/v1/alpaca/positions", .user, .read, handler: notYet("alpaca")),
            Route(.get, "/v1/alpaca/orders", .user, .read, handler: notYet("alpaca")),
            Route(.post, "/v1/alpaca/orders", .user, .sensitive, handler: notYet("alpaca")),
            Route(.delete, "/v1/alpaca/orders/{orderId}", .user, .sensitive, handler: notYet("alpaca")),
            Route(.post, "/v1/stripe/financial-connections/sessions", .user, .write, handler: notYet("stripe")),
            Route(.post, "/v1/stripe/financial-connections/accounts", .user, .write, handler: notYet("stripe")),
            Route(.get, "/v1/stripe/balances", .user, .read, handler: notYet("stripe")),
            Route(.post, "/v1/stripe/subscription/checkout", .user, .highRisk, handler: notYet("stripe")),

            // Admin (C-8): role admin + MFA-fresh token + X-Admin-Key.
            Route(.post, "/v1/admin/users/{userId}/sessions/revoke", .admin, .highRisk, handler: AuthRoutes.adminRevokeSessions),
            Route(.post, "/v1/admin/users/{userId}/unlock", .admin, .highRisk, handler: notYet("account unlock")),
            Route(.post, "/v1/admin/ip-blocks", .admin, .highRisk, handler: notYet("ip blocklist")),
            Route(.delete, "/v1/admin/ip-blocks/{ip}", .admin, .highRisk, handler: notYet("ip blocklist")),
            Route(.post, "/v1/admin/keys/fernet/rotate", .admin, .highRisk, handler: notYet("fernet key rotation")),
            Route(.post, "/v1/admin/keys/jwt/rotate", .admin, .highRisk, handler: notYet("jwt key rotation")),
            Route(.get, "/v1/admin/audit-log", .admin, .read, handler: notYet("audit log")),
        ])
    }

    /// 503 until the RPC behind the route exists.
    static func notYet(_ feature: String) -> @Sendable (EdgeCall) async throws -> EdgeReply {
        { _ in throw EdgeError.serviceUnavailable("\(feature) is not available yet", retryAfter: 3600) }
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
        try await call.enforce(.login, key: "ip:\(call.clientIP)|account:\(body.email.trimmingCharacters(in: .whitespaces).lowercased())")
        var request = AuthLoginRequest()
        request.email = body.email
        request.password = body.password
        let response = try await call.rpc(AuthAPI.login, request)
        return tokens(response.tokens)
    }

    static func refresh(_ call: EdgeCall) async throws -> EdgeReply {
        let body = try await call.decode(RefreshBody.self)
        var request = AuthRefreshRequest()
        request.refreshToken = body.refreshToken
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
        return .noContent
    }

    static func me(_ call: EdgeCall) async throws -> EdgeReply {
        var request = AuthGetUserRequest()
        request.userID = try call.subject
        let user = try await call.rpc(AuthAPI.getUser, request).user
        let created = Date(timeIntervalSince1970: TimeInterval(user.createdAt)).formatted(.iso8601)
        return .json([
            "id": user.id, "email": user.email, "full_name": user.fullName,
            "phone": user.phone.isEmpty ? NSNull() : user.phone, "role": user.role, "created_at": created,
        ])
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

    static func ready(_ call: EdgeCall) async throws -> EdgeReply {
        do {
            _ = try await call.app.auth.call(AuthAPI.getJWKS, AuthGetJWKSRequest(), options: CallOptions(requestID: call.requestID, timeout: .seconds(1)))
        } catch {
            throw EdgeError.serviceUnavailable("auth is not reachable")
        }
        return .json(["status": "ready", "checks": ["auth": "ok", "broker": "not_configured"]])
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
