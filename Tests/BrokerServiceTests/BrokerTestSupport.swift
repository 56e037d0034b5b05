import Foundation
import Logging
import PostgresNIO
import RPC
import Synchronization
import TestSupport
import Testing

@testable import BrokerService
@testable import VaultService

/// The broker's handlers on a fresh PostgreSQL database, with a real vault (in process, its keys
/// in a 0400 file) and the fakes served live over HTTP. Calls go through the RPC core as the edge's
/// uid would make them, so the access policy is part of every test.
struct BrokerHarness: Sendable {
    static let edge = PeerCredentials(pid: 20, uid: 30_001, gid: 30_001)
    static let operatorCLI = PeerCredentials(pid: 21, uid: 30_002, gid: 30_002)
    static let brokerPeer = PeerCredentials(pid: 22, uid: 30_003, gid: 30_003)
    static let webhookSecret = "whsec_clau_fake"
    static let price = "price_clauMonthly"

    let database: TestDatabase
    let postgres: PostgresClient
    let vault: Vault
    let keyFile: String
    let handlers: BrokerHandlers
    let fakes: LiveFakes
    let clock: TestClock
    let logs: LogCapture

    /// The broker as the edge calls it.
    var broker: BrokerRPCClient { client(as: Self.edge) }

    func client(as peer: PeerCredentials) -> BrokerRPCClient {
        let core = handlers.rpcServerCore(
            callers: BrokerRPCCallers(edge: CallerAllowlist(uids: [Self.edge.uid]), admin: CallerAllowlist(uids: [Self.operatorCLI.uid])),
            logger: logs.logger(label: "broker")
        )
        return BrokerRPCClient(RPCClient(transport: InProcessTransport(server: core, peer: peer)))
    }

    /// The vault as the broker's uid sees it (plaintext from Decrypt).
    var vaultAsBroker: VaultRPCClient {
        let core = RPCServerCore(
            router: vault.handlers.router(),
            accessPolicy: VaultHandlers.accessPolicy(brokerUIDs: [Self.brokerPeer.uid], adminUIDs: []), logger: Logger(label: "vault") { _ in SwiftLogNoOpLogHandler() }
        )
        return VaultRPCClient(RPCClient(transport: InProcessTransport(server: core, peer: Self.brokerPeer)))
    }

    /// Replaces the vault's key file with `keys` (the first encrypts) and reloads it.
    func installKeys(_ keys: [FernetKey]) throws {
        chmod(keyFile, 0o600)
        try Data((keys.map(\.base64URLEncoded).joined(separator: "\n") + "\n").utf8).write(to: URL(fileURLWithPath: keyFile))
        chmod(keyFile, 0o400)
        try vault.reloadKeys()
    }

    /// Every row of every table of the `broker` schema as JSON text: what a dump would show.
    func dumpBrokerSchema() async throws -> String {
        let connection = try await database.connect(role: "clau_broker")
        defer { Task { try? await connection.close() } }
        var dump = ""
        let tables = try await connection.query("SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'broker'", logger: Logger(label: "dump"))
        var names: [String] = []
        for try await name in tables.decode(String.self) { names.append(name) }
        for name in names {
            let rows = try await connection.query(PostgresQuery(unsafeSQL: "SELECT row_to_json(t)::text FROM broker.\(name) t"), logger: Logger(label: "dump"))
            for try await row in rows.decode(String.self) { dump += row + "\n" }
        }
        return dump
    }

    func sql(_ query: PostgresQuery) async throws {
        try await postgres.query(query, logger: Logger(label: "test-sql"))
    }
}

/// A clock the test moves: OAuth state expiry without waiting ten minutes.
final class TestClock: Sendable {
    private let current = Mutex(Date())
    var now: Date { current.withLock { $0 } }
    func advance(by seconds: TimeInterval) { current.withLock { $0 = $0.addingTimeInterval(seconds) } }
}

func withBroker<T: Sendable>(decryptsPerMinute: Int = 100_000, _ body: @Sendable (BrokerHarness) async throws -> T) async throws -> T {
    let database = try await PostgresHarness.shared.freshDatabase()
    let directory = try makeWorldReadableTemporaryDirectory(prefix: "clau-broker-keys")
    let keyFile = directory + "/fernet-keys"
    try Data((FernetKey.generate().base64URLEncoded + "\n").utf8).write(to: URL(fileURLWithPath: keyFile))
    chmod(keyFile, 0o400)
    var vaultConfiguration = VaultConfiguration(socketPath: "/unused", keySource: .file(path: keyFile), brokerUIDs: [BrokerHarness.brokerPeer.uid])
    vaultConfiguration.decryptsPerMinutePerCaller = decryptsPerMinute
    let quiet = Logger(label: "vault") { _ in SwiftLogNoOpLogHandler() }
    let vault = try Vault.build(configuration: vaultConfiguration, logger: quiet)
    let vaultCore = RPCServerCore(router: vault.handlers.router(), accessPolicy: VaultHandlers.accessPolicy(brokerUIDs: [BrokerHarness.brokerPeer.uid], adminUIDs: []), logger: quiet)
    let vaultClient = VaultRPCClient(RPCClient(transport: InProcessTransport(server: vaultCore, peer: BrokerHarness.brokerPeer)))
    let postgres = PostgresClient(configuration: database.clientConfiguration(role: "clau_broker"), backgroundLogger: quiet)
    return try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask { await postgres.run() }
        defer { group.cancelAll() }
        return try await withLiveFakes { fakes in
            let clock = TestClock()
            let handlers = BrokerHandlers(
                store: BrokerStore(client: postgres), vault: CredentialVault(client: vaultClient),
                alpaca: try fakes.alpacaClient(), stripe: try fakes.stripeClient(),
                authorizeURL: try AlpacaAuthorizeURLBuilder(
                    endpoint: fakes.baseURL + "/oauth/authorize", clientID: ProviderTestCredentials.alpacaClientID,
                    redirectURI: ProviderTestCredentials.alpacaRedirectURI, scopes: [.accountWrite, .trading]
                ),
                billing: BillingSettings(defaultPriceID: BrokerHarness.price, successURL: "https://app.clau.invalid/paid", cancelURL: "https://app.clau.invalid/cancelled"),
                webhookSignature: StripeWebhookSignature(secret: BrokerHarness.webhookSecret),
                now: { clock.now }
            )
            let harness = BrokerHarness(database: database, postgres: postgres, vault: vault, keyFile: keyFile, handlers: handlers, fakes: fakes, clock: clock, logs: LogCapture())
            return try await body(harness)
        }
    }
}

extension BrokerHarness {
    /// Runs the OAuth flow for `user` against the fake: authorize URL → the fake's redirect → callback.
    @discardableResult
    func connectAlpaca(_ user: UUID) async throws -> BrokerCompleteAlpacaOAuthResponse {
        let (code, state) = try await authorize(user)
        var complete = BrokerCompleteAlpacaOAuthRequest()
        complete.userID = user.uuidString
        complete.code = code
        complete.state = state
        return try await broker.completeAlpacaOAuth(complete)
    }

    /// The authorize URL the broker hands out, followed at the fake: its redirect's code and state.
    func authorize(_ user: UUID) async throws -> (code: String, state: String) {
        var start = BrokerStartAlpacaOAuthRequest()
        start.userID = user.uuidString
        let url = try await broker.startAlpacaOAuth(start).url
        let path = String(url.dropFirst(fakes.baseURL.count))
        let response = try await fakes.raw(.GET, path)
        try #require(response.status == 302)
        let header = try #require(response.headers.first(name: "location"))
        let location = try #require(URLComponents(string: header))
        let code = try #require(location.queryItems?.first { $0.name == "code" }?.value)
        let state = try #require(location.queryItems?.first { $0.name == "state" }?.value)
        return (code, state)
    }

    func account(_ user: UUID) async throws -> BrokerAlpacaAccount {
        var request = BrokerGetAlpacaAccountRequest()
        request.userID = user.uuidString
        return try await broker.getAlpacaAccount(request).account
    }

    /// A webhook delivery signed as Stripe would sign it at `timestamp`.
    func deliver(_ payload: String, timestamp: Int64? = nil) async throws -> BrokerHandleStripeWebhookResponse {
        var request = BrokerHandleStripeWebhookRequest()
        request.payload = Data(payload.utf8)
        request.signatureHeader = StripeWebhookSignature(secret: Self.webhookSecret).header(payload: Data(payload.utf8), timestamp: timestamp ?? Int64(clock.now.timeIntervalSince1970))
        return try await broker.handleStripeWebhook(request)
    }
}
