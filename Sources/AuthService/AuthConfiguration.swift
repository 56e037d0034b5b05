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
    /// Callers (SO_PEERCRED uids): the edge may call every method; operators the admin ones.
    public var edgeUIDs: Set<UInt32> = []
    public var adminUIDs: Set<UInt32> = []
    public var socketMode: mode_t = 0o660
    public var socketGroup: gid_t?
    public var maximumFrameLength: Int = 1 << 20
    /// How long `run()` waits for PostgreSQL to answer before giving up.
    public var databaseStartupTimeout: Duration = .seconds(10)

    public init(socketPath: String, database: PostgresClient.Configuration, signingKeys: [SigningKey]) {
        self.socketPath = socketPath
        self.database = database
        self.signingKeys = signingKeys
    }
}
