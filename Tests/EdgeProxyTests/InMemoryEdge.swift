import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import RPC
import RateLimiting
import Synchronization
import Testing
@testable import AuthService
@testable import EdgeProxy

/// Auth as a test scripts it: the few methods the edge's own stages call answer from values the
/// test sets; every other method is UNIMPLEMENTED. Each call is recorded with its request id and
/// deadline, and any method named in `unavailable` answers UNAVAILABLE (auth down).
final class ScriptedAuth: AuthRPCHandler {
    struct Script: Sendable {
        var jwksJSON = #"{"keys":[]}"#
        var revokedJTIs: Set<String> = []
        /// API key → its principal; any other key is `invalid_api_key`.
        var apiKeys: [String: AuthPrincipal] = [:]
        var blocks: [AuthIPBlock] = []
        /// Method names (`GetUser`, `CheckRevoked`, …) that fail as if auth were down.
        var unavailable: Set<String> = []
    }

    struct Call: Sendable {
        var method: String
        var requestID: String
        var deadline: ContinuousClock.Instant?
    }

    private let state = Mutex<(script: Script, calls: [Call])>((Script(), []))

    func script(_ change: (inout Script) -> Void) { state.withLock { change(&$0.script) } }
    var calls: [Call] { state.withLock { $0.calls } }

    /// Records the call and answers from the script, or fails as scripted.
    private func answer<T>(_ context: ServerContext, _ body: (Script) throws -> T) throws -> T {
        let script = state.withLock { state in
            state.calls.append(Call(method: context.method, requestID: context.requestID, deadline: context.deadline))
            return state.script
        }
        if script.unavailable.contains(where: { context.method.hasSuffix("/" + $0) }) {
            throw RPCError(code: .unavailable, message: "auth is down (scripted)")
        }
        return try body(script)
    }

    private func unscripted<T>(_ context: ServerContext) throws -> T {
        try answer(context) { _ in throw RPCError(code: .unimplemented, message: "not scripted") }
    }

    func getJWKS(_ request: AuthGetJWKSRequest, _ context: ServerContext) async throws -> AuthGetJWKSResponse {
        try answer(context) { script in
            var response = AuthGetJWKSResponse()
            response.jwksJson = script.jwksJSON
            return response
        }
    }

    func checkRevoked(_ request: AuthCheckRevokedRequest, _ context: ServerContext) async throws -> AuthCheckRevokedResponse {
        try answer(context) { script in
            var response = AuthCheckRevokedResponse()
            response.revoked = script.revokedJTIs.contains(request.jti)
            return response
        }
    }

    func authenticateAPIKey(_ request: AuthAuthenticateAPIKeyRequest, _ context: ServerContext) async throws -> AuthAuthenticateAPIKeyResponse {
        try answer(context) { script in
            guard let principal = script.apiKeys[request.apiKey] else { throw RPCError(code: .unauthenticated, message: "invalid_api_key") }
            var response = AuthAuthenticateAPIKeyResponse()
            response.principal = principal
            return response
        }
    }

    func verifyAccessToken(_ request: AuthVerifyAccessTokenRequest, _ context: ServerContext) async throws -> AuthVerifyAccessTokenResponse {
        try answer(context) { _ in throw RPCError(code: .unauthenticated, message: "invalid_access_token") }
    }

    /// Any user the edge asks for exists, named after their id.
    func getUser(_ request: AuthGetUserRequest, _ context: ServerContext) async throws -> AuthGetUserResponse {
        try answer(context) { _ in
            var response = AuthGetUserResponse()
            response.user.id = request.userID
            response.user.email = "user-\(request.userID.prefix(8))@example.com"
            response.user.fullName = "Scripted User"
            response.user.role = "user"
            response.user.createdAt = 1_700_000_000
            return response
        }
    }

    func listIPBlocks(_ request: AuthListIPBlocksRequest, _ context: ServerContext) async throws -> AuthListIPBlocksResponse {
        try answer(context) { script in
            var response = AuthListIPBlocksResponse()
            response.blocks = script.blocks
            return response
        }
    }

    func register(_ request: AuthRegisterRequest, _ context: ServerContext) async throws -> AuthRegisterResponse {
        try answer(context) { _ in AuthRegisterResponse() }
    }

    func login(_ request: AuthLoginRequest, _ context: ServerContext) async throws -> AuthLoginResponse { try unscripted(context) }
    func refresh(_ request: AuthRefreshRequest, _ context: ServerContext) async throws -> AuthRefreshResponse { try unscripted(context) }
    func logout(_ request: AuthLogoutRequest, _ context: ServerContext) async throws -> AuthLogoutResponse { try unscripted(context) }
    func revokeAllSessions(_ request: AuthRevokeAllSessionsRequest, _ context: ServerContext) async throws -> AuthRevokeAllSessionsResponse { try unscripted(context) }
    func changePassword(_ request: AuthChangePasswordRequest, _ context: ServerContext) async throws -> AuthChangePasswordResponse { try unscripted(context) }
    func updateUser(_ request: AuthUpdateUserRequest, _ context: ServerContext) async throws -> AuthUpdateUserResponse { try unscripted(context) }
    func deleteUser(_ request: AuthDeleteUserRequest, _ context: ServerContext) async throws -> AuthDeleteUserResponse { try unscripted(context) }
    func listSessions(_ request: AuthListSessionsRequest, _ context: ServerContext) async throws -> AuthListSessionsResponse { try unscripted(context) }
    func rotateSigningKey(_ request: AuthRotateSigningKeyRequest, _ context: ServerContext) async throws -> AuthRotateSigningKeyResponse { try unscripted(context) }
    func forgotPassword(_ request: AuthForgotPasswordRequest, _ context: ServerContext) async throws -> AuthForgotPasswordResponse { try unscripted(context) }
    func resetPassword(_ request: AuthResetPasswordRequest, _ context: ServerContext) async throws -> AuthResetPasswordResponse { try unscripted(context) }
    func createAPIKey(_ request: AuthCreateAPIKeyRequest, _ context: ServerContext) async throws -> AuthCreateAPIKeyResponse { try unscripted(context) }
    func listAPIKeys(_ request: AuthListAPIKeysRequest, _ context: ServerContext) async throws -> AuthListAPIKeysResponse { try unscripted(context) }
    func revokeAPIKey(_ request: AuthRevokeAPIKeyRequest, _ context: ServerContext) async throws -> AuthRevokeAPIKeyResponse { try unscripted(context) }
    func beginTOTPEnrollment(_ request: AuthBeginTOTPEnrollmentRequest, _ context: ServerContext) async throws -> AuthBeginTOTPEnrollmentResponse { try unscripted(context) }
    func confirmTOTPEnrollment(_ request: AuthConfirmTOTPEnrollmentRequest, _ context: ServerContext) async throws -> AuthConfirmTOTPEnrollmentResponse { try unscripted(context) }
    func getNotificationPreferences(_ request: AuthGetNotificationPreferencesRequest, _ context: ServerContext) async throws -> AuthGetNotificationPreferencesResponse { try unscripted(context) }
    func putNotificationPreferences(_ request: AuthPutNotificationPreferencesRequest, _ context: ServerContext) async throws -> AuthPutNotificationPreferencesResponse { try unscripted(context) }
    func registerDevice(_ request: AuthRegisterDeviceRequest, _ context: ServerContext) async throws -> AuthRegisterDeviceResponse { try unscripted(context) }
    func removeDevice(_ request: AuthRemoveDeviceRequest, _ context: ServerContext) async throws -> AuthRemoveDeviceResponse { try unscripted(context) }
    func adminUnlockUser(_ request: AuthAdminUnlockUserRequest, _ context: ServerContext) async throws -> AuthAdminUnlockUserResponse { try unscripted(context) }
    func revokeEverything(_ request: AuthRevokeEverythingRequest, _ context: ServerContext) async throws -> AuthRevokeEverythingResponse { try unscripted(context) }
    func createAdmin(_ request: AuthCreateAdminRequest, _ context: ServerContext) async throws -> AuthCreateAdminResponse { try unscripted(context) }
    func listAuditEvents(_ request: AuthListAuditEventsRequest, _ context: ServerContext) async throws -> AuthListAuditEventsResponse { try unscripted(context) }
    func blockIP(_ request: AuthBlockIPRequest, _ context: ServerContext) async throws -> AuthBlockIPResponse { try unscripted(context) }
    func unblockIP(_ request: AuthUnblockIPRequest, _ context: ServerContext) async throws -> AuthUnblockIPResponse { try unscripted(context) }
}

/// The edge's HTTP pipeline over an in-process auth: no sockets, no processes, no database.
/// Requests go through Hummingbird's router test framework straight into the same responder the
/// listeners serve.
struct InMemoryEdge: Sendable {
    let auth: ScriptedAuth
    let state: EdgeApplicationState
    let logs: LogCapture
    let signingKey: SigningKey
    let isTLS: Bool

    /// One ES256 key (quick to make) for every in-memory test.
    static let sharedKey = Task { try await SigningKey.generate(algorithm: .es256, kid: "in-memory-es256") }

    init(isTLS: Bool = true, configure: (inout EdgeConfiguration) -> Void = { _ in }) async throws {
        let key = try await Self.sharedKey.value
        let auth = ScriptedAuth()
        let jwks = try TokenIssuer(current: key, issuer: "clau-auth", audience: "clau-api").jwksJSON()
        auth.script { $0.jwksJSON = jwks }
        let server = auth.rpcServerCore(callers: AuthRPCCallers(edge: CallerAllowlist(uids: [getuid()])), logger: quietLogger)
        // The listener kind only decides HSTS and forwarded headers; nothing is bound.
        var configuration = EdgeConfiguration(listener: .behindProxy(host: "127.0.0.1", port: 0, trustedProxies: []), authSocketPath: "/nonexistent/auth.sock")
        configuration.rateLimitRules = .relaxedForTests
        configure(&configuration)
        let logs = LogCapture()
        self.state = EdgeApplicationState(configuration: configuration, auth: RPCClient(transport: InProcessTransport(server: server)),
                                          logger: logs.logger("edge", level: .info), accessLogger: logs.logger("edge-access", level: .info))
        self.auth = auth
        self.logs = logs
        self.signingKey = key
        self.isTLS = isTLS
    }

    /// Runs `body` with a client whose requests come from `clientIP`.
    func test<T: Sendable>(from clientIP: String = "198.51.100.20", _ body: @Sendable (any TestClientProtocol) async throws -> T) async throws -> T {
        let responder = FromAddress(address: clientIP, responder: EdgePipeline.responder(state: state, isTLS: isTLS, trustedProxies: nil))
        return try await Application(responder: responder, logger: quietLogger).test(.router, body)
    }

    /// A valid access token for `userID`, signed with the key the scripted JWKS publishes.
    func token(for userID: String = UUID().uuidString.lowercased(), jti: String = UUID().uuidString.lowercased(), lifetime: Int64 = 600, now: Date = Date()) throws -> String {
        var claims = TestClaims(sub: userID, lifetime: lifetime, now: now)
        claims.jti = jti
        return try signed(claims, key: signingKey)
    }
}

/// Plays a client at `address`: the router test framework has no TCP peer.
struct FromAddress<Responder: HTTPResponder>: HTTPResponder where Responder.Context == EdgeRequestContext {
    let address: String
    let responder: Responder

    func respond(to request: Request, context: EdgeRequestContext) async throws -> Response {
        var context = context
        context.peerIP = address
        return try await responder.respond(to: request, context: context)
    }
}

extension TestResponse {
    var text: String { String(buffer: body) }

    /// The `{"error": {...}}` object, checked for the shape every error has (R-14).
    func errorObject(sourceLocation: SourceLocation = #_sourceLocation) throws -> [String: Any] {
        try checkedErrorObject(text, requestIDHeader: headers[.requestID], sourceLocation: sourceLocation)
    }

    func errorCode(sourceLocation: SourceLocation = #_sourceLocation) throws -> String {
        try errorObject(sourceLocation: sourceLocation)["code"] as? String ?? ""
    }
}
