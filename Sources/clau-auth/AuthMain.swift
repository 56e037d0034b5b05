import ArgumentParser
import AuthService
import ClauDatabase
import ClauSupport
import Foundation
import Logging
import PostgresNIO
import ServiceLifecycle

/// `clau-auth`: reads configuration, hardens the process, loads the JWT signing keys and runs
/// the auth service until SIGTERM.
@main
struct AuthMain: AsyncParsableCommand {
    /// Swift Concurrency on NIO's event loops (see `EventLoopConcurrency`), then the command.
    @MainActor static func main() async {
        EventLoopConcurrency.install()
        await main(nil)
    }

    static let configuration = CommandConfiguration(
        commandName: "clau-auth",
        abstract: "Accounts, bcrypt, JWT access tokens and refresh-token families over a Unix socket."
    )

    @Option(help: "Socket path.")
    var socket: String = "/run/clau/auth/auth.sock"

    @Option(help: "Socket file mode, octal.")
    var socketMode: String = "0660"

    @Option(help: "Group owning the socket file (name or gid): the edge's and operators' group.")
    var socketGroup: String?

    @Option(help: "PostgreSQL Unix socket path.")
    var dbSocket: String = "/run/postgresql/.s.PGSQL.5432"

    @Option(help: "PostgreSQL database.")
    var dbName: String = "clau"

    @Option(help: "PostgreSQL role (owner of schema auth only).")
    var dbUser: String = "clau_auth"

    @Option(help: "PostgreSQL connections, all opened at start (a fixed pool on the local socket).")
    var dbConnections: Int = 8

    @Option(help: "Milliseconds without progress of the PostgreSQL pool after which a request still waiting for a connection fails as unavailable (10-10000).")
    var dbConnectionWaitMs: Int = 2000

    @Option(help: "File holding the PostgreSQL password (mode 0400/0600; default: $CREDENTIALS_DIRECTORY/db-password if present, else peer/trust auth).")
    var dbPasswordFile: String?

    @Option(name: .customLong("signing-key"), help: "ALG:KID:PEM-FILE (ALG = RS256, ES256, EdDSA or HS256; for HS256 the file holds the secret). Repeatable: the first signs, the others only verify. Default: RS256 from $CREDENTIALS_DIRECTORY/jwt-signing-key with --signing-kid.")
    var signingKeys: [String] = []

    @Option(help: "Key id of the credential-provided signing key.")
    var signingKid: String = "auth-1"

    @Option(help: "Directory of signing keys (mode 0700, e.g. systemd StateDirectory): enables online rotation (RotateSigningKey). Replaces --signing-key; an empty directory gets a new key of --signing-key-algorithm.")
    var signingKeyDir: String?

    @Option(help: "Algorithm of the first key generated in an empty --signing-key-dir.")
    var signingKeyAlgorithm: String = "RS256"

    @Option(help: "File with the auth secret (≥ 32 bytes; HMAC of reset codes, API keys, IPs; TOTP encryption). Default: $CREDENTIALS_DIRECTORY/auth-secret.")
    var secretFile: String?

    @Option(help: "Mail backend: sendmail, maildir:DIR, or none (development only: mail is dropped and logged).")
    var mail: String = "sendmail"

    @Option(help: "sendmail executable for --mail sendmail.")
    var sendmailPath: String = "/usr/sbin/sendmail"

    @Option(help: "From: address of security mail.")
    var mailFrom: String = "security@clau.invalid"

    @Option(name: .customLong("edge-user"), help: "User (name or uid) allowed to call every method. Repeatable.")
    var edgeUsers: [String] = []

    @Option(name: .customLong("admin-user"), help: "User (name or uid) allowed to call RevokeAllSessions, GetUser, GetJWKS. Repeatable.")
    var adminUsers: [String] = []

    @Option(help: "bcrypt cost (10-31).")
    var bcryptCost: Int = PasswordHasher.defaultCost

    @Option(help: "bcrypt threads: at most this many hashes at once.")
    var bcryptThreads: Int = max(1, ProcessInfo.processInfo.activeProcessorCount)

    @Option(help: "Access-token lifetime in minutes (1-30).")
    var accessTokenMinutes: Int = 15

    @Option(help: "JWT iss.")
    var issuer: String = "clau-auth"

    @Option(help: "JWT aud.")
    var audience: String = "clau-api"

    @Option(help: "Log level.")
    var logLevel: String = "info"

    func run() async throws {
        try await ServiceProcess.run(name: "auth", logLevel: logLevel) { logger in
            let service = try await AuthService.build(configuration: try await makeConfiguration(), logger: logger)
            return ServiceProcess.Plan(services: [.init(service: service)], startingMetadata: [
                "socket": "\(socket)", "signing_kid": "\(service.handlers.issuer.current.kid)",
                "alg": "\(service.handlers.issuer.current.algorithm.rawValue)", "bcrypt_cost": "\(bcryptCost)",
            ])
        }
    }

    func makeConfiguration() async throws -> AuthConfiguration {
        guard let mode = mode_t(socketMode, radix: 8), mode <= 0o777 else { throw StartupError("--socket-mode \(socketMode) is not an octal file mode") }
        let edges = try Set(edgeUsers.map(UserLookup.uid(of:)))
        guard !edges.isEmpty else { throw StartupError("--edge-user is required: without it nobody may log in") }
        guard (1...30).contains(accessTokenMinutes) else { throw StartupError("--access-token-minutes must be 1-30") }

        var keys: [SigningKey] = []
        if let signingKeyDir {
            guard signingKeys.isEmpty else { throw StartupError("--signing-key-dir and --signing-key exclude each other") }
            guard let algorithm = AccessTokenAlgorithm(rawValue: signingKeyAlgorithm) else {
                throw StartupError("--signing-key-algorithm must be RS256, ES256, EdDSA or HS256")
            }
            keys = try await SigningKeyDirectory(path: signingKeyDir).load(generate: algorithm)
        }
        for spec in signingKeys {
            let fields = spec.split(separator: ":", maxSplits: 2).map(String.init)
            guard fields.count == 3, let algorithm = AccessTokenAlgorithm(rawValue: fields[0]), !fields[1].isEmpty else {
                throw StartupError("--signing-key must be ALG:KID:FILE with ALG one of RS256, ES256, EdDSA, HS256")
            }
            keys.append(try await SigningKey.load(pem: try SecretFile.readString(at: fields[2]), algorithm: algorithm, kid: fields[1]))
        }
        if keys.isEmpty, signingKeyDir == nil {
            guard let path = SecretFile.credentialPath("jwt-signing-key") else {
                throw StartupError("no JWT signing key: pass --signing-key, or run under systemd with LoadCredential=jwt-signing-key")
            }
            keys.append(try await SigningKey.load(pem: try SecretFile.readString(at: path), algorithm: .rs256, kid: signingKid))
        }

        let database = try PostgresClient.Configuration.service(socket: dbSocket, user: dbUser, database: dbName, connections: dbConnections, passwordFile: dbPasswordFile)
        guard let secretPath = secretFile ?? SecretFile.credentialPath("auth-secret") else {
            throw StartupError("no auth secret: pass --secret-file, or run under systemd with LoadCredential=auth-secret")
        }
        let secret = try AuthSecrets(secret: Array(try SecretFile.read(at: secretPath)))
        var configuration = AuthConfiguration(socketPath: socket, database: database, signingKeys: keys, serverSecret: secret)
        configuration.signingKeyDirectory = signingKeyDir
        configuration.databaseConnectionWait = try BoundedPostgresClient.connectionWait(milliseconds: dbConnectionWaitMs)
        configuration.mailFrom = mailFrom
        let domain = mailFrom.split(separator: "@").last.map(String.init) ?? ""
        let renderer: MailRenderer
        do {
            renderer = try MailRenderer(messageIDDomain: domain)
        } catch {
            throw StartupError("--mail-from must be an address with a valid domain")
        }
        switch mail {
        case "sendmail":
            configuration.mailer = SendmailMailer(executable: sendmailPath, timeout: .seconds(30), renderer: renderer)
        case "none":
            configuration.mailer = nil
        case let value where value.hasPrefix("maildir:") && value.count > 8:
            configuration.mailer = MaildirMailer(directory: URL(fileURLWithPath: String(value.dropFirst(8))), renderer: renderer)
        default:
            throw StartupError("--mail must be sendmail, maildir:DIR or none")
        }
        configuration.socketMode = mode
        configuration.socketGroup = try socketGroup.map(UserLookup.gid(of:))
        configuration.edgeUIDs = edges
        configuration.adminUIDs = try Set(adminUsers.map(UserLookup.uid(of:)))
        configuration.bcryptCost = bcryptCost
        configuration.bcryptThreads = bcryptThreads
        configuration.accessTokenLifetime = TimeInterval(accessTokenMinutes * 60)
        configuration.issuer = issuer
        configuration.audience = audience
        return configuration
    }
}
