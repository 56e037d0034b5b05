import Foundation
import PostgresNIO

/// Everything `BrokerService.build` needs. The provider secrets come from systemd credentials or
/// 0400 files (see `clau-broker`), never from the database or the environment in production.
public struct BrokerConfiguration: Sendable {
    public var socketPath: String
    public var socketMode: mode_t = 0o660
    public var socketGroup: gid_t?
    public var maximumFrameLength: Int = 1 << 20
    public var database: PostgresClient.Configuration
    /// How long start-up waits for PostgreSQL before it fails with a clear message.
    public var databaseStartupTimeout: Duration = .seconds(15)
    /// How long a request waits for a pooled PostgreSQL connection before it fails UNAVAILABLE
    /// (while the database is down, instead of waiting out the caller's deadline).
    public var databaseConnectionWait: Duration = .seconds(2)
    /// vault.sock: the broker is the only uid the vault answers `Decrypt` for.
    public var vaultSocketPath: String
    /// Deadline of each call to the vault.
    public var vaultCallTimeout: Duration = .seconds(5)
    /// Callers: the edge (every method) and operators (`clauctl`: re-wrap and rotation status).
    public var edgeUIDs: Set<UInt32> = []
    public var adminUIDs: Set<UInt32> = []

    public var alpaca: AlpacaConfiguration
    /// Alpaca's authorize page (the fakes' in tests and the dev stack).
    public var alpacaAuthorizeEndpoint: String = AlpacaAuthorizeURLBuilder.productionAuthorizeEndpoint
    public var alpacaScopes: [AlpacaAuthorizeURLBuilder.Scope] = [.accountWrite, .trading]
    public var alpacaPolicy = ProviderHTTPPolicy()

    public var stripe: StripeConfiguration
    /// The endpoint's `whsec_…` signing secret.
    public var stripeWebhookSecret: String
    public var stripePolicy = ProviderHTTPPolicy()
    public var billing: BillingSettings

    public init(
        socketPath: String, database: PostgresClient.Configuration, vaultSocketPath: String,
        alpaca: AlpacaConfiguration, stripe: StripeConfiguration, stripeWebhookSecret: String, billing: BillingSettings
    ) {
        self.socketPath = socketPath
        self.database = database
        self.vaultSocketPath = vaultSocketPath
        self.alpaca = alpaca
        self.stripe = stripe
        self.stripeWebhookSecret = stripeWebhookSecret
        self.billing = billing
    }
}
