import Foundation
import NIOCore
import PostgresNIO

/// Everything `AuthService.build` needs. Signing keys are loaded by the caller (from PEM files
/// or systemd credentials, see `SigningKey.load`), never from the database.
public struct AuthConfiguration: Sendable {
    public var socketPath: String
    public var database: PostgresClient.Configuration
    /// The first key signs; the others only verify (rotation).
    public var signingKeys: [SigningKey]
    public var issuer: String = "clau-auth"
    public var audience: String = "clau-api"
    /// Access-token lifetime, seconds: default 15 min, at most 30 (C-2).
    public var accessTokenLifetime: TimeInterval = TokenIssuer.defaultLifetime
    /// Grace window, idle timeout and absolute lifetime of refresh families.
    public var refreshPolicy = RefreshPolicy()
    /// bcrypt cost: default 12; `AuthService.build` refuses anything below 10 (C-3) unless
    /// `allowWeakBcryptCostForTests` is set, which only the test suites do.
    public var bcryptCost: Int = PasswordHasher.defaultCost
    public var allowWeakBcryptCostForTests = false
    /// Threads of the bcrypt pool: at most this many hashes run at once.
    public var bcryptThreads: Int = max(1, System.coreCount)
    public var passwordPolicy = PasswordPolicy()
    /// Per-account lockout (C-4): 5 failures → 15 min by default.
    public var lockoutPolicy = AccountLockoutPolicy()
    /// Per-IP progressive delays and threat levels.
    public var ipThreatPolicy = IPThreatPolicy()
    /// Reset codes (C-5): digits, expiry, attempts, daily cap.
    public var resetCodePolicy = ResetCodePolicy()
    /// The auth process's own secret (≥ 32 bytes, from `$CREDENTIALS_DIRECTORY/auth-secret` or a
    /// 0400 file): keys the HMACs of reset codes, API keys and client IPs and encrypts TOTP
    /// secrets. Changing it invalidates every API key and pending reset code.
    public var serverSecret: AuthSecrets
    /// Directory of signing keys that `RotateSigningKey` may write to (`<kid>.<ALG>.pem` files
    /// plus `current`), e.g. systemd's StateDirectory. Without it the keys come from
    /// `signingKeys` only and rotation is refused.
    public var signingKeyDirectory: String?
    /// Where security mail goes (reset codes, notices).
    public var mailer: (any Mailer)?
    /// `From:` of security mail and the product name used in it.
    public var mailFrom: String = "security@clau.invalid"
    public var productName: String = "Clau"
    /// An admin token is "MFA-fresh" for this long after the TOTP check; the edge enforces it.
    public var totpIssuer: String = "Clau"
    /// Callers (SO_PEERCRED uids): the edge may call every method; operators the admin ones.
    public var edgeUIDs: Set<UInt32> = []
    public var adminUIDs: Set<UInt32> = []
    public var socketMode: mode_t = 0o660
    public var socketGroup: gid_t?
    public var maximumFrameLength: Int = 1 << 20
    /// How long `run()` waits for PostgreSQL to answer before giving up.
    public var databaseStartupTimeout: Duration = .seconds(10)
    /// How long a request waits for a pooled PostgreSQL connection before it fails UNAVAILABLE
    /// (while the database is down, instead of waiting out the caller's deadline).
    public var databaseConnectionWait: Duration = .seconds(2)

    public init(socketPath: String, database: PostgresClient.Configuration, signingKeys: [SigningKey], serverSecret: AuthSecrets) {
        self.serverSecret = serverSecret
        self.socketPath = socketPath
        self.database = database
        self.signingKeys = signingKeys
    }
}
