import AsyncHTTPClient
import ClauDatabase
import ClauSupport
import Foundation
import Logging
import PostgresNIO
import RPC
import ServiceLifecycle

/// The broker process: its PostgreSQL client, its vault client, one HTTP client for Alpaca and
/// Stripe, the handlers and the socket server. `clau-broker`'s `@main` only parses configuration
/// and runs this; tests call `build` too.
public struct BrokerService: Service {
    public let handlers: BrokerHandlers
    public let core: RPCServerCore
    public let server: UnixSocketServer
    public let postgres: PostgresClient
    public let vaultTransport: UnixSocketClient
    public let httpClient: HTTPClient
    public let configuration: BrokerConfiguration

    /// Checks the configuration (URLs, secrets present, price ids) and builds everything; errors
    /// name the setting at fault, never a secret.
    public static func build(configuration: BrokerConfiguration, logger: Logger, now: @escaping @Sendable () -> Date = { Date() }) throws -> BrokerService {
        guard configuration.stripeWebhookSecret.hasPrefix("whsec_"), configuration.stripeWebhookSecret.utf8.count >= 12 else {
            throw StartupError("the Stripe webhook secret must be a whsec_… value")
        }
        guard configuration.stripe.secretKey.hasPrefix("sk_") || configuration.stripe.secretKey.hasPrefix("rk_") else {
            throw StartupError("the Stripe secret key must be an sk_… or rk_… value")
        }
        guard !configuration.alpaca.clientSecret.isEmpty else { throw StartupError("the Alpaca client secret is empty") }
        for price in configuration.billing.allowedPriceIDs {
            guard (try? ProviderIdentifiers.stripeID(price, of: .price, field: "price")) != nil else {
                throw StartupError("\(price.prefix(40)) is not a Stripe price id (price_…)")
            }
        }
        let authorizeURL: AlpacaAuthorizeURLBuilder
        do {
            authorizeURL = try AlpacaAuthorizeURLBuilder(
                endpoint: configuration.alpacaAuthorizeEndpoint, clientID: configuration.alpaca.clientID,
                redirectURI: configuration.alpaca.redirectURI, scopes: configuration.alpacaScopes
            )
        } catch {
            throw StartupError("Alpaca OAuth settings refused (\(error)): the authorize endpoint and redirect URI must be https (http only on loopback)")
        }
        // One client for both providers: the connect timeout is per client in AsyncHTTPClient, so
        // it is the Alpaca policy's; each provider's policy sets its own deadline per request.
        let httpConfiguration = configuration.alpacaPolicy.httpClientConfiguration
        let httpClient = HTTPClient(eventLoopGroupProvider: .singleton, configuration: httpConfiguration, backgroundActivityLogger: logger)
        let alpaca: AlpacaClient
        let stripe: StripeClient
        do {
            alpaca = try AlpacaClient(configuration: configuration.alpaca, http: ProviderHTTP(name: "alpaca", client: httpClient, policy: configuration.alpacaPolicy))
            stripe = try StripeClient(configuration: configuration.stripe, http: ProviderHTTP(name: "stripe", client: httpClient, policy: configuration.stripePolicy))
        } catch {
            try? httpClient.syncShutdown()
            throw StartupError("provider base URLs refused: they must be https (http only on loopback)")
        }
        let postgres = PostgresClient(configuration: configuration.database, backgroundLogger: logger)
        let vaultTransport = UnixSocketClient(configuration: .init(path: configuration.vaultSocketPath), logger: logger)
        let handlers = BrokerHandlers(
            store: BrokerStore(client: postgres, connectionWait: configuration.databaseConnectionWait), vault: CredentialVault(client: VaultRPCClient(RPCClient(transport: vaultTransport))),
            alpaca: alpaca, stripe: stripe, authorizeURL: authorizeURL, billing: configuration.billing,
            webhookSignature: StripeWebhookSignature(secret: configuration.stripeWebhookSecret), now: now
        )
        let core = handlers.rpcServerCore(callers: BrokerRPCCallers(edge: CallerAllowlist(uids: configuration.edgeUIDs), admin: CallerAllowlist(uids: configuration.adminUIDs)), logger: logger)
        var serverConfiguration = UnixSocketServer.Configuration(path: configuration.socketPath)
        serverConfiguration.socketMode = configuration.socketMode
        serverConfiguration.socketGroup = configuration.socketGroup
        serverConfiguration.maximumFrameLength = configuration.maximumFrameLength
        let server = UnixSocketServer(configuration: serverConfiguration, core: core, logger: logger)
        return BrokerService(handlers: handlers, core: core, server: server, postgres: postgres, vaultTransport: vaultTransport, httpClient: httpClient, configuration: configuration)
    }

    /// Runs PostgreSQL, the vault client and the socket server until graceful shutdown, then
    /// closes the HTTP client.
    public func run() async throws {
        do {
            try await withThrowingDiscardingTaskGroup { group in
                group.addTask { await postgres.run() }
                group.addTask { try await vaultTransport.run() }
                try await postgres.checkMigrated(schema: "broker", timeout: configuration.databaseStartupTimeout)
                group.addTask { await purgeSpentOAuthStates() }
                try await server.run()
                group.cancelAll()
            }
        } catch {
            try? await httpClient.shutdown()
            throw error
        }
        try? await httpClient.shutdown()
    }

    /// Every ten minutes: OAuth states that can no longer be redeemed.
    func purgeSpentOAuthStates() async {
        let logger = Logger(label: "clau-broker.purge")
        while !Task.isCancelled {
            do {
                try await handlers.store.purgeOAuthStates(now: handlers.now(), logger: logger)
            } catch {
                logger.warning("purge of spent OAuth states failed", metadata: ["error": "\(String(reflecting: type(of: error)))"])
            }
            try? await Task.sleep(for: .seconds(600))
        }
    }
}
