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
    /// Callers: edge. The edge fails closed when this call fails.
    public static let checkRevoked = MethodDescriptor<AuthCheckRevokedRequest, AuthCheckRevokedResponse>(service: service, method: "CheckRevoked")
}
