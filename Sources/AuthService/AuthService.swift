import ClauDatabase
import ClauSupport
import Foundation
import Logging
import NIOPosix
import PostgresNIO
import RPC
import ServiceLifecycle

/// The auth process: its PostgreSQL client, bcrypt pool, signing keys, handlers and socket
/// server. `clau-auth`'s `@main` only parses configuration and runs this; tests call `build`
/// too and drive `core` through the in-process transport.
public struct AuthService: Service {
    public let handlers: AuthHandlers
    public let core: RPCServerCore
    public let server: UnixSocketServer
    public let postgres: PostgresClient
    public let bcryptPool: NIOThreadPool
    public let outbox: MailOutbox
    public let configuration: AuthConfiguration

    /// Checks the configuration (refusing a bcrypt cost below 10, an access-token lifetime over
    /// 30 minutes, no signing key) and builds everything. Starts the bcrypt pool; `run()`
    /// shuts it down. Errors name the setting at fault, never key material.
    public static func build(configuration: AuthConfiguration, logger: Logger, now: @escaping @Sendable () -> Date = { Date() }) async throws -> AuthService {
        guard let current = configuration.signingKeys.first else {
            throw StartupError("no JWT signing key configured")
        }
        guard configuration.bcryptThreads >= 1 else { throw StartupError("bcrypt threads must be at least 1") }
        let issuer: TokenIssuer
        do {
            issuer = try TokenIssuer(current: current, previous: Array(configuration.signingKeys.dropFirst()), issuer: configuration.issuer, audience: configuration.audience, lifetime: configuration.accessTokenLifetime)
        } catch let error as TokenKeyError {
            throw StartupError(error.description)
        }
        let pool = NIOThreadPool(numberOfThreads: configuration.bcryptThreads)
        pool.start()
        let hasher: PasswordHasher
        do {
            if configuration.allowWeakBcryptCostForTests {
                hasher = try await PasswordHasher.makeForTesting(cost: configuration.bcryptCost, threadPool: pool)
            } else {
                hasher = try await PasswordHasher.make(cost: configuration.bcryptCost, threadPool: pool)
            }
        } catch {
            try? await pool.shutdownGracefully()
            throw StartupError("bcrypt cost must be between \(PasswordHasher.minimumProductionCost) and 31 (got \(configuration.bcryptCost))")
        }
        let postgres = PostgresClient(configuration: configuration.database, backgroundLogger: logger)
        let outbox = MailOutbox(mailer: configuration.mailer, from: configuration.mailFrom, productName: configuration.productName, logger: logger)
        let protection = ProtectionSettings(
            secrets: configuration.serverSecret, lockoutPolicy: configuration.lockoutPolicy, ipPolicy: configuration.ipThreatPolicy,
            resetCodes: configuration.resetCodePolicy, outbox: outbox, productName: configuration.productName, totpIssuer: configuration.totpIssuer
        )
        let keyRing = SigningKeyRing(issuer: issuer, directory: configuration.signingKeyDirectory.map(SigningKeyDirectory.init(path:)))
        let handlers = AuthHandlers(store: AuthStore(client: postgres, connectionWait: configuration.databaseConnectionWait), hasher: hasher, keyRing: keyRing, protection: protection, passwordPolicy: configuration.passwordPolicy, refreshPolicy: configuration.refreshPolicy, logger: logger, now: now)
        let core = RPCServerCore(router: handlers.router(), accessPolicy: AuthHandlers.accessPolicy(edgeUIDs: configuration.edgeUIDs, adminUIDs: configuration.adminUIDs), logger: logger)
        var serverConfiguration = UnixSocketServer.Configuration(path: configuration.socketPath)
        serverConfiguration.socketMode = configuration.socketMode
        serverConfiguration.socketGroup = configuration.socketGroup
        serverConfiguration.maximumFrameLength = configuration.maximumFrameLength
        let server = UnixSocketServer(configuration: serverConfiguration, core: core, logger: logger)
        return AuthService(handlers: handlers, core: core, server: server, postgres: postgres, bcryptPool: pool, outbox: outbox, configuration: configuration)
    }

    /// Runs the PostgreSQL client and the socket server until graceful shutdown, then stops the
    /// bcrypt pool.
    public func run() async throws {
        do {
            try await withThrowingDiscardingTaskGroup { group in
                group.addTask { await postgres.run() }
                try await postgres.checkMigrated(schema: "auth", timeout: configuration.databaseStartupTimeout)
                group.addTask { try await outbox.run() }
                group.addTask { await purgeExpiredState() }
                try await server.run()
                group.cancelAll()
            }
        } catch {
            try? await bcryptPool.shutdownGracefully()
            throw error
        }
        try? await bcryptPool.shutdownGracefully()
    }
}

extension AuthService {
    /// Every ten minutes: revocation rows whose tokens expired anyway, IP failures past the
    /// sliding window. Failures are logged and retried next round.
    func purgeExpiredState() async {
        let logger = Logger(label: "clau-auth.purge")
        while !Task.isCancelled {
            let now = handlers.now()
            do {
                try await handlers.store.purgeExpiredRevocations(now: now, logger: logger)
                try await handlers.store.purgeIPFailures(before: now.addingTimeInterval(-configuration.ipThreatPolicy.window), logger: logger)
            } catch {
                logger.warning("purge of expired state failed", metadata: ["error": "\(String(reflecting: type(of: error)))"])
            }
            try? await Task.sleep(for: .seconds(600))
        }
    }
}
