/// The auth service's methods (Protos/auth.proto). Here, not in AuthService, so that callers
/// (edge, clauctl) can call auth without linking the module that holds password hashes and
/// JWT private keys.
public enum AuthAPI {
    public static let service = "clau.auth.Auth"
    /// Callers: edge.
    public static let register = MethodDescriptor<AuthRegisterRequest, AuthRegisterResponse>(service: service, method: "Register")
    /// Callers: edge.
    public static let login = MethodDescriptor<AuthLoginRequest, AuthLoginResponse>(service: service, method: "Login")
    /// Callers: edge.
    public static let refresh = MethodDescriptor<AuthRefreshRequest, AuthRefreshResponse>(service: service, method: "Refresh")
    /// Callers: edge.
    public static let logout = MethodDescriptor<AuthLogoutRequest, AuthLogoutResponse>(service: service, method: "Logout")
    /// Callers: edge, admin CLI.
    public static let revokeAllSessions = MethodDescriptor<AuthRevokeAllSessionsRequest, AuthRevokeAllSessionsResponse>(service: service, method: "RevokeAllSessions")
    /// Callers: edge, admin CLI.
    public static let getUser = MethodDescriptor<AuthGetUserRequest, AuthGetUserResponse>(service: service, method: "GetUser")
    /// Callers: edge.
    public static let changePassword = MethodDescriptor<AuthChangePasswordRequest, AuthChangePasswordResponse>(service: service, method: "ChangePassword")
    /// Callers: edge, admin CLI. Public keys only.
    public static let getJWKS = MethodDescriptor<AuthGetJWKSRequest, AuthGetJWKSResponse>(service: service, method: "GetJWKS")
    /// Callers: edge, for HS256 tokens (the secret never leaves auth); includes the revocation check.
    public static let verifyAccessToken = MethodDescriptor<AuthVerifyAccessTokenRequest, AuthVerifyAccessTokenResponse>(service: service, method: "VerifyAccessToken")
    /// Callers: edge. The edge fails closed when this call fails.
    public static let checkRevoked = MethodDescriptor<AuthCheckRevokedRequest, AuthCheckRevokedResponse>(service: service, method: "CheckRevoked")

    // Accounts (issue 4).
    /// Callers: edge.
    public static let updateUser = MethodDescriptor<AuthUpdateUserRequest, AuthUpdateUserResponse>(service: service, method: "UpdateUser")
    /// Callers: edge.
    public static let deleteUser = MethodDescriptor<AuthDeleteUserRequest, AuthDeleteUserResponse>(service: service, method: "DeleteUser")
    /// Callers: edge.
    public static let listSessions = MethodDescriptor<AuthListSessionsRequest, AuthListSessionsResponse>(service: service, method: "ListSessions")
    /// Callers: admin CLI, edge (admin route).
    public static let rotateSigningKey = MethodDescriptor<AuthRotateSigningKeyRequest, AuthRotateSigningKeyResponse>(service: service, method: "RotateSigningKey")

    // Protection (issue 5).
    /// Callers: edge.
    public static let forgotPassword = MethodDescriptor<AuthForgotPasswordRequest, AuthForgotPasswordResponse>(service: service, method: "ForgotPassword")
    /// Callers: edge.
    public static let resetPassword = MethodDescriptor<AuthResetPasswordRequest, AuthResetPasswordResponse>(service: service, method: "ResetPassword")
    /// Callers: edge.
    public static let createAPIKey = MethodDescriptor<AuthCreateAPIKeyRequest, AuthCreateAPIKeyResponse>(service: service, method: "CreateAPIKey")
    /// Callers: edge.
    public static let listAPIKeys = MethodDescriptor<AuthListAPIKeysRequest, AuthListAPIKeysResponse>(service: service, method: "ListAPIKeys")
    /// Callers: edge.
    public static let revokeAPIKey = MethodDescriptor<AuthRevokeAPIKeyRequest, AuthRevokeAPIKeyResponse>(service: service, method: "RevokeAPIKey")
    /// Callers: edge (every request that carries an API key).
    public static let authenticateAPIKey = MethodDescriptor<AuthAuthenticateAPIKeyRequest, AuthAuthenticateAPIKeyResponse>(service: service, method: "AuthenticateAPIKey")
    /// Callers: edge.
    public static let beginTOTPEnrollment = MethodDescriptor<AuthBeginTOTPEnrollmentRequest, AuthBeginTOTPEnrollmentResponse>(service: service, method: "BeginTOTPEnrollment")
    /// Callers: edge.
    public static let confirmTOTPEnrollment = MethodDescriptor<AuthConfirmTOTPEnrollmentRequest, AuthConfirmTOTPEnrollmentResponse>(service: service, method: "ConfirmTOTPEnrollment")
    /// Callers: edge.
    public static let getNotificationPreferences = MethodDescriptor<AuthGetNotificationPreferencesRequest, AuthGetNotificationPreferencesResponse>(service: service, method: "GetNotificationPreferences")
    /// Callers: edge.
    public static let putNotificationPreferences = MethodDescriptor<AuthPutNotificationPreferencesRequest, AuthPutNotificationPreferencesResponse>(service: service, method: "PutNotificationPreferences")
    /// Callers: edge.
    public static let registerDevice = MethodDescriptor<AuthRegisterDeviceRequest, AuthRegisterDeviceResponse>(service: service, method: "RegisterDevice")
    /// Callers: edge.
    public static let removeDevice = MethodDescriptor<AuthRemoveDeviceRequest, AuthRemoveDeviceResponse>(service: service, method: "RemoveDevice")
    /// Callers: edge (admin route), admin CLI.
    public static let adminUnlockUser = MethodDescriptor<AuthAdminUnlockUserRequest, AuthAdminUnlockUserResponse>(service: service, method: "AdminUnlockUser")
    /// Callers: edge (admin route), admin CLI.
    public static let revokeEverything = MethodDescriptor<AuthRevokeEverythingRequest, AuthRevokeEverythingResponse>(service: service, method: "RevokeEverything")
    /// Callers: admin CLI only.
    public static let createAdmin = MethodDescriptor<AuthCreateAdminRequest, AuthCreateAdminResponse>(service: service, method: "CreateAdmin")
    /// Callers: edge (admin route), admin CLI.
    public static let listAuditEvents = MethodDescriptor<AuthListAuditEventsRequest, AuthListAuditEventsResponse>(service: service, method: "ListAuditEvents")
    /// Callers: edge (admin route), admin CLI.
    public static let blockIP = MethodDescriptor<AuthBlockIPRequest, AuthBlockIPResponse>(service: service, method: "BlockIP")
    /// Callers: edge (admin route), admin CLI.
    public static let unblockIP = MethodDescriptor<AuthUnblockIPRequest, AuthUnblockIPResponse>(service: service, method: "UnblockIP")
    /// Callers: edge (polled every few seconds to enforce the blocklist), admin CLI.
    public static let listIPBlocks = MethodDescriptor<AuthListIPBlocksRequest, AuthListIPBlocksResponse>(service: service, method: "ListIPBlocks")
}
