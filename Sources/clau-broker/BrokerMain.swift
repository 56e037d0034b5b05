import ArgumentParser
import BrokerService
import ClauDatabase
import ClauSupport
import Foundation
import Logging
import PostgresNIO

/// `clau-broker`: reads configuration, hardens the process, loads the provider secrets and runs
/// the broker until SIGTERM.
@main
struct BrokerMain: AsyncParsableCommand {
    /// Swift Concurrency on NIO's event loops (see `EventLoopConcurrency`), then the command.
    @MainActor static func main() async {
        EventLoopConcurrency.install()
        await main(nil)
    }

    static let configuration = CommandConfiguration(
        commandName: "clau-broker",
        abstract: "Alpaca (OAuth, trading) and Stripe (bank links, subscriptions, webhooks) over a Unix socket; tokens sealed by the vault."
    )

    @Option(help: "Socket path.")
    var socket: String = "/run/clau/broker/broker.sock"

    @Option(help: "Socket file mode, octal.")
    var socketMode: String = "0660"

    @Option(help: "Group owning the socket file (name or gid): the edge's and operators' group.")
    var socketGroup: String?

    @Option(help: "The vault's socket.")
    var vaultSocket: String = "/run/clau/vault/vault.sock"

    @Option(help: "PostgreSQL Unix socket path.")
    var dbSocket: String = "/run/postgresql/.s.PGSQL.5432"

    @Option(help: "PostgreSQL database.")
    var dbName: String = "clau"

    @Option(help: "PostgreSQL role (owner of schema broker only).")
    var dbUser: String = "clau_broker"

    @Option(help: "PostgreSQL connections, all opened at start (a fixed pool on the local socket).")
    var dbConnections: Int = 8

    @Option(help: "Milliseconds without progress of the PostgreSQL pool after which a request still waiting for a connection fails as unavailable (10-10000).")
    var dbConnectionWaitMs: Int = 2000

    @Option(help: "File holding the PostgreSQL password (mode 0400/0600; default: $CREDENTIALS_DIRECTORY/db-password if present, else peer/trust auth).")
    var dbPasswordFile: String?

    @Option(name: .customLong("edge-user"), help: "User (name or uid) allowed to call every method. Repeatable.")
    var edgeUsers: [String] = []

    @Option(name: .customLong("admin-user"), help: "User (name or uid) allowed the key-rotation methods (BeginKeyRotation, RewrapAll, RotationStatus, RetireKey; clauctl broker). Repeatable.")
    var adminUsers: [String] = []

    @Option(help: "Alpaca Trading API base URL: https://paper-api.alpaca.markets (paper) or https://api.alpaca.markets (live).")
    var alpacaApiUrl: String = "https://paper-api.alpaca.markets"

    @Option(help: "Alpaca OAuth token endpoint.")
    var alpacaTokenUrl: String = "https://api.alpaca.markets/oauth/token"

    @Option(help: "Alpaca OAuth authorize page.")
    var alpacaAuthorizeUrl: String = "https://app.alpaca.markets/oauth/authorize"

    @Option(help: "Alpaca OAuth client id (public).")
    var alpacaClientId: String?

    @Option(help: "File with the Alpaca OAuth client secret. Default: $CREDENTIALS_DIRECTORY/alpaca-client-secret.")
    var alpacaClientSecretFile: String?

    @Option(help: "The redirect URI registered with Alpaca (the app's callback).")
    var alpacaRedirectUri: String?

    @Option(help: "Stripe API base URL.")
    var stripeApiUrl: String = "https://api.stripe.com"

    @Option(help: "File with the Stripe secret key (sk_… or a restricted rk_…). Default: $CREDENTIALS_DIRECTORY/stripe-secret-key.")
    var stripeSecretKeyFile: String?

    @Option(help: "File with the webhook endpoint's signing secret (whsec_…). Default: $CREDENTIALS_DIRECTORY/stripe-webhook-secret.")
    var stripeWebhookSecretFile: String?

    @Option(help: "The subscription price checkout uses when a request names none (price_…).")
    var stripePrice: String?

    @Option(name: .customLong("stripe-allowed-price"), help: "Another price a checkout request may name. Repeatable.")
    var stripeAllowedPrices: [String] = []

    @Option(help: "Where Stripe Checkout sends the user after paying.")
    var checkoutSuccessUrl: String?

    @Option(help: "Where Stripe Checkout sends the user after cancelling.")
    var checkoutCancelUrl: String?

    @Option(help: "Log level.")
    var logLevel: String = "info"

    func run() async throws {
        try await ServiceProcess.run(name: "broker", logLevel: logLevel) { logger in
            let service = try BrokerService.build(configuration: try makeConfiguration(), logger: logger)
            return ServiceProcess.Plan(services: [.init(service: service)], startingMetadata: [
                "socket": "\(socket)", "vault_socket": "\(vaultSocket)", "alpaca_api": "\(alpacaApiUrl)", "stripe_api": "\(stripeApiUrl)",
            ])
        }
    }

    /// A setting that has no safe default: its absence stops the start with the flag's name.
    func required(_ value: String?, _ flag: String) throws -> String {
        guard let value, !value.isEmpty else { throw StartupError("--\(flag) is required") }
        return value
    }

    /// A secret from its file, or from the systemd credential of that name.
    func secret(_ path: String?, credential: String, flag: String) throws -> String {
        guard let path = path ?? SecretFile.credentialPath(credential) else {
            throw StartupError("no \(credential): pass --\(flag), or run under systemd with LoadCredential=\(credential)")
        }
        return try SecretFile.readString(at: path).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    func makeConfiguration() throws -> BrokerConfiguration {
        guard let mode = mode_t(socketMode, radix: 8), mode <= 0o777 else { throw StartupError("--socket-mode \(socketMode) is not an octal file mode") }
        let edges = try Set(edgeUsers.map(UserLookup.uid(of:)))
        guard !edges.isEmpty else { throw StartupError("--edge-user is required: without it no request reaches the broker") }
        let database = try PostgresClient.Configuration.service(socket: dbSocket, user: dbUser, database: dbName, connections: dbConnections, passwordFile: dbPasswordFile)

        let alpaca = AlpacaConfiguration(
            apiBaseURL: alpacaApiUrl, oauthTokenURL: alpacaTokenUrl, clientID: try required(alpacaClientId, "alpaca-client-id"),
            clientSecret: try secret(alpacaClientSecretFile, credential: "alpaca-client-secret", flag: "alpaca-client-secret-file"),
            redirectURI: try required(alpacaRedirectUri, "alpaca-redirect-uri")
        )
        let stripe = StripeConfiguration(apiBaseURL: stripeApiUrl, secretKey: try secret(stripeSecretKeyFile, credential: "stripe-secret-key", flag: "stripe-secret-key-file"))
        let billing = BillingSettings(
            defaultPriceID: try required(stripePrice, "stripe-price"), allowedPriceIDs: Set(stripeAllowedPrices),
            successURL: try required(checkoutSuccessUrl, "checkout-success-url"), cancelURL: try required(checkoutCancelUrl, "checkout-cancel-url")
        )
        var configuration = BrokerConfiguration(
            socketPath: socket, database: database, vaultSocketPath: vaultSocket, alpaca: alpaca, stripe: stripe,
            stripeWebhookSecret: try secret(stripeWebhookSecretFile, credential: "stripe-webhook-secret", flag: "stripe-webhook-secret-file"),
            billing: billing
        )
        configuration.alpacaAuthorizeEndpoint = alpacaAuthorizeUrl
        configuration.databaseConnectionWait = try BoundedPostgresClient.connectionWait(milliseconds: dbConnectionWaitMs)
        configuration.socketMode = mode
        configuration.socketGroup = try socketGroup.map(UserLookup.gid(of:))
        configuration.edgeUIDs = edges
        configuration.adminUIDs = try Set(adminUsers.map(UserLookup.uid(of:)))
        return configuration
    }
}
