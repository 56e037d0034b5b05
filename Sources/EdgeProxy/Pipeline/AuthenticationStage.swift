import Crypto
import Foundation
import HTTPTypes
import Hummingbird
import RPC

/// C-2, C-6, C-8, R-1, R-3: who is calling. Public routes pass; every other route needs an
/// access token (verified here, revocation checked through auth) or, where the route allows it,
/// an API key (checked by auth); admin routes also need role, MFA freshness and the admin key.
/// Auth is asked only through `AuthGateway`, which fails closed.
struct AuthenticationStage: RouterMiddleware {
    typealias Context = EdgeRequestContext
    let state: EdgeApplicationState

    func handle(_ request: Request, context: EdgeRequestContext, next: (Request, EdgeRequestContext) async throws -> Response) async throws -> Response {
        var context = context
        (context.caller, context.bearerToken) = try await authenticate(request, route: try context.matchedRoute(), requestID: context.requestID)
        context.exchange.note(userID: context.caller?.sub)
        return try await next(request, context)
    }

    private func authenticate(_ request: Request, route: Route, requestID: String) async throws -> (AccessClaims?, String?) {
        guard route.auth != .public else { return (nil, nil) }
        let claims: AccessClaims
        let bearer: String
        var revocationChecked = false
        switch try Self.credential(from: request.headers) {
        case .apiKey(let key):
            return (try await authenticateAPIKey(key, route: route, requestID: requestID), nil)
        case .bearer(let token):
            do {
                (claims, revocationChecked) = try await state.verifier.verify(token, now: Date(), requestID: requestID)
            } catch let error as EdgeError {
                throw error
            } catch {
                state.metrics.tokenRejected()
                state.logger.notice("access token rejected", metadata: ["event": "token_rejected", "risk": "low", "reason": "\(error)", "request_id": "\(requestID)"])
                throw EdgeError.invalidToken()
            }
            bearer = token
        }
        // revocation through auth, failing closed: no answer means no entry.
        if !revocationChecked && !state.revocations.isKnownLive(claims.jti) {
            var check = AuthCheckRevokedRequest()
            check.jti = claims.jti
            let revoked = try await state.auth.guardCall(AuthAPI.checkRevoked, check, requestID: requestID,
                                                         unavailable: "cannot verify the session right now, retry shortly",
                                                         warning: "revocation check failed; refusing").revoked
            guard !revoked else {
                state.metrics.tokenRejected()
                throw EdgeError.invalidToken()
            }
            state.revocations.rememberLive(claims.jti)
        }
        if route.auth == .admin { try checkAdmin(claims, request: request) }
        return (claims, bearer)
    }

    /// API keys are checked by auth on every request (auth keeps only a keyed hash).
    private func authenticateAPIKey(_ key: String, route: Route, requestID: String) async throws -> AccessClaims {
        guard route.allowsAPIKey else {
            throw EdgeError(.forbidden, code: "access_token_required", message: "this operation needs an access token, not an API key")
        }
        let invalid = EdgeError(.unauthorized, code: "invalid_api_key", message: "the API key is invalid, expired or revoked")
        guard key.utf8.count <= 128 else { throw invalid }
        var request = AuthAuthenticateAPIKeyRequest()
        request.apiKey = key
        // Fail closed, as for token revocation.
        let principal = try await state.auth.guardCall(AuthAPI.authenticateAPIKey, request, requestID: requestID, refusal: invalid,
                                                       unavailable: "cannot verify the API key right now, retry shortly").principal
        guard UUID(uuidString: principal.userID) != nil else { throw EdgeError.serviceUnavailable() }
        return AccessClaims(sub: principal.userID.lowercased(), sid: "", role: principal.role, jti: "", exp: 0, amr: [], authTime: nil, apiKeyID: principal.apiKeyID)
    }

    /// C-8, X-5: role `admin`, a token minted after a second factor not long ago, and the admin key.
    private func checkAdmin(_ claims: AccessClaims, request: Request) throws {
        let configuration = state.configuration
        guard claims.role == "admin" else { throw EdgeError.forbidden("admin role required") }
        if configuration.adminRequiresMFA {
            let now = Int64(Date().timeIntervalSince1970)
            guard claims.amr.contains("otp"), let authTime = claims.authTime,
                  authTime <= now + configuration.tokenLeewaySeconds, now - authTime <= configuration.adminMFAMaximumAge
            else {
                throw EdgeError(.forbidden, code: "mfa_required", message: "an access token minted after a second-factor check is required")
            }
        }
        guard let expected = configuration.adminKeySHA256, let presented = request.headers[.adminKey],
              Self.constantTimeEqual(Array(SHA256.hash(data: Data(presented.utf8))), expected)
        else { throw EdgeError.forbidden("admin key required") }
    }

    enum Credential { case bearer(String), apiKey(String) }

    static func credential(from headers: HTTPFields) throws(EdgeError) -> Credential {
        if let key = headers[.apiKey] { return .apiKey(key) }
        guard let authorization = headers[.authorization] else { throw .unauthenticated() }
        let parts = authorization.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: true)
        guard parts.count == 2, parts[0].lowercased() == "bearer" else { throw .unauthenticated() }
        let token = String(parts[1].trimmingOptionalWhitespace)
        guard !token.isEmpty else { throw .unauthenticated() }
        return token.hasPrefix("clau_") ? .apiKey(token) : .bearer(token)
    }

    /// C-8: no early exit on the first differing byte.
    static func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        var difference: UInt8 = 0
        for index in a.indices { difference |= a[index] ^ b[index] }
        return difference == 0
    }
}
