import BrokerService
import Foundation
import HTTPTypes
import HummingbirdTesting
import Logging
import ProviderFakes
import TestSupport
import Testing
import VaultService
@testable import EdgeProxy

/// The edge in front of a real clau-broker and a real vault (in process, on Unix sockets, the
/// broker on its own fresh PostgreSQL database), with the fakes serving Alpaca and Stripe over
/// HTTP: the broker routes as they run in production, short of separate processes and users
/// (EdgeProcessTests has those).
struct BrokerStack: Sendable {
    static let alpacaClientID = "clau-edge-test-client"
    static let alpacaClientSecret = "alpaca-edge-test-secret-8c2f"
    static let redirectURI = "http://127.0.0.1:9/v1/alpaca/oauth/callback"
    static let price = "price_clauMonthly"

    let edge: EdgeHarness
    let fakesPort: Int

    /// A request to the fakes themselves (the authorize redirect, `/_fake/` admin routes).
    func fakes(_ method: HTTPRequest.Method, _ path: String) async throws -> TestClient.Response {
        try await TestClient.withClient(host: "127.0.0.1", port: fakesPort) {
            try await $0.execute(TestClient.Request(path, method: method, authority: "127.0.0.1", headers: [:], body: nil))
        }
    }

    /// Registers and logs in; the access token.
    func session(_ email: String) async throws -> String {
        try await edge.registerAndLogin(email).access
    }

    /// Alpaca OAuth through the edge: authorize URL, the fake's redirect, the callback.
    func linkAlpaca(_ token: String) async throws {
        let callback = try await edge.send(.post, "/v1/alpaca/oauth/callback", headers: bearer(token), body: try await authorizationGrant(token).body)
        try #require(callback.status == .ok, "\(callback.text.prefix(300))")
    }

    /// The authorize URL the edge hands out, followed at the fake: the callback body its redirect
    /// carries (`code` and `state`).
    func authorizationGrant(_ token: String) async throws -> (code: String, state: String, body: String) {
        let authorize = try await edge.send(.get, "/v1/alpaca/oauth/authorize-url", headers: bearer(token))
        try #require(authorize.status == .ok, "\(authorize.text.prefix(300))")
        let url = try #require(try authorize.jsonObject()["url"] as? String)
        let redirect = try await fakes(.get, String(url.dropFirst("http://127.0.0.1:\(fakesPort)".count)))
        let location = try #require(redirect.headers[.location].flatMap(URLComponents.init(string:))?.queryItems)
        let code = try #require(location.first { $0.name == "code" }?.value)
        let state = try #require(location.first { $0.name == "state" }?.value)
        return (code, state, #"{"code":"\#(code)","state":"\#(state)"}"#)
    }

    /// A Financial Connections session through the edge, completed at the fake with `accounts`
    /// accounts (the hosted flow a user would go through); its id.
    func completedBankSession(_ token: String, accounts: Int = 2) async throws -> String {
        let session = try await edge.send(.post, "/v1/stripe/financial-connections/sessions", headers: bearer(token))
        try #require(session.status == .created, "\(session.text.prefix(300))")
        let id = try #require(try session.jsonObject()["session_id"] as? String)
        let complete = try await fakes(.post, "/_fake/stripe/financial_connections/sessions/\(id)/complete?accounts=\(accounts)")
        try #require(complete.status == .ok, "\(complete.text.prefix(300))")
        return id
    }
}

/// Runs `body` with the whole broker path up: fakes, vault, broker, and auth + edge (`withEdge`)
/// with the edge's broker socket pointed at the broker. Returns once the edge reports the broker
/// connected (`/readyz`), so no request races the connection.
func withBrokerStack<T: Sendable>(_ body: @Sendable (BrokerStack) async throws -> T) async throws -> T {
    let quiet = Logger(label: "broker-stack") { _ in SwiftLogNoOpLogHandler() }
    let directory = try makeWorldReadableTemporaryDirectory(prefix: "clau-broker-stack")

    var fakesConfiguration = ProviderFakesConfiguration()
    fakesConfiguration.port = try freeLoopbackPort()
    fakesConfiguration.alpaca.clients = [AlpacaOAuthClient(clientID: BrokerStack.alpacaClientID, clientSecret: BrokerStack.alpacaClientSecret, redirectURIs: [BrokerStack.redirectURI])]
    // schemathesis sends thousands of requests with one token within a minute.
    fakesConfiguration.alpaca.requestsPerMinute = 1_000_000
    let fakes = buildProviderFakesApplication(configuration: fakesConfiguration, logger: quiet)
    let fakesPort = fakesConfiguration.port
    let fakesURL = "http://127.0.0.1:\(fakesPort)"

    let keyFile = directory + "/fernet-keys"
    try Data((FernetKey.generate().base64URLEncoded + "\n").utf8).write(to: URL(fileURLWithPath: keyFile))
    chmod(keyFile, 0o400)
    var vaultConfiguration = VaultConfiguration(socketPath: directory + "/vault.sock", keySource: .file(path: keyFile), brokerUIDs: [getuid()])
    vaultConfiguration.decryptsPerMinutePerCaller = 1_000_000
    let vault = try Vault.build(configuration: vaultConfiguration, logger: quiet)

    let database = try await PostgresHarness.shared.freshDatabase()
    var configuration = BrokerConfiguration(
        socketPath: directory + "/broker.sock", database: database.clientConfiguration(role: "clau_broker"), vaultSocketPath: directory + "/vault.sock",
        alpaca: AlpacaConfiguration(apiBaseURL: fakesURL, oauthTokenURL: fakesURL + "/oauth/token", clientID: BrokerStack.alpacaClientID,
                                    clientSecret: BrokerStack.alpacaClientSecret, redirectURI: BrokerStack.redirectURI),
        stripe: StripeConfiguration(apiBaseURL: fakesURL, secretKey: fakesConfiguration.stripe.secretKey),
        stripeWebhookSecret: fakesConfiguration.stripe.webhookSecret,
        billing: BillingSettings(defaultPriceID: BrokerStack.price, successURL: "https://app.clau.invalid/paid", cancelURL: "https://app.clau.invalid/cancelled")
    )
    configuration.alpacaAuthorizeEndpoint = fakesURL + "/oauth/authorize"
    configuration.edgeUIDs = [getuid()]
    let broker = try BrokerService.build(configuration: configuration, logger: quiet)

    return try await withEdge(configure: { $0.brokerSocketPath = directory + "/broker.sock" }, dependencies: [fakes, vault.server, broker]) { edge in
        let stack = BrokerStack(edge: edge, fakesPort: fakesPort)
        let deadline = ContinuousClock.now + .seconds(20)
        while true {
            let ready = (try? await edge.send(.get, "/readyz").status) == .ok
            let fakesUp = (try? await stack.fakes(.get, "/v2/account").status) == .unauthorized
            if ready && fakesUp { break }
            guard ContinuousClock.now < deadline else { throw HarnessError("broker stack not ready within 20 s") }
            try await Task.sleep(for: .milliseconds(50))
        }
        return try await body(stack)
    }
}
