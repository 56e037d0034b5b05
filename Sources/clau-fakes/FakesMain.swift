import ArgumentParser
import ClauSupport
import Foundation
import Logging
import ProviderFakes
import ServiceLifecycle

/// `clau-fakes`: fake Alpaca and Stripe APIs in one process, for tests and the development stack.
/// Never deployed: it accepts fixed development credentials and has unauthenticated admin routes.
@main
struct FakesMain: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "clau-fakes",
        abstract: "Fake Alpaca (OAuth + Trading API) and Stripe HTTP servers for tests and the dev stack."
    )

    @Option(help: "Listen address (default $CLAU_FAKES_HOST or 127.0.0.1).")
    var host: String?

    @Option(help: "Port (default $CLAU_FAKES_PORT or 8099).")
    var port: Int?

    @Option(help: "Alpaca OAuth client id.")
    var alpacaClientId = "fake-alpaca-client"

    @Option(help: "Alpaca OAuth client secret (a development value, not a secret).")
    var alpacaClientSecret = "fake-alpaca-secret"

    @Option(name: .customLong("alpaca-redirect-uri"), help: "A registered Alpaca redirect URI. Repeatable.")
    var alpacaRedirectURIs: [String] = []

    @Option(help: "Alpaca requests per token per minute before 429.")
    var alpacaRequestsPerMinute = 200

    @Option(help: "The Stripe secret key the fake accepts.")
    var stripeSecretKey = "sk_test_clau_fake"

    @Option(help: "The Stripe webhook signing secret (whsec_…).")
    var stripeWebhookSecret = "whsec_clau_fake"

    @Option(help: "Log level.")
    var logLevel: String = "info"

    func run() async throws {
        try await ServiceProcess.run(name: "fakes", logLevel: logLevel) { logger in
            let configuration = try makeConfiguration()
            let application = buildProviderFakesApplication(configuration: configuration, logger: logger)
            return ServiceProcess.Plan(
                services: [.init(service: application)],
                startingMetadata: ["address": "\(configuration.host):\(configuration.port)"]
            )
        }
    }

    func makeConfiguration() throws -> ProviderFakesConfiguration {
        let environment = ProcessInfo.processInfo.environment
        var configuration = ProviderFakesConfiguration()
        configuration.host = host ?? environment["CLAU_FAKES_HOST"] ?? "127.0.0.1"
        if let port {
            configuration.port = port
        } else if let text = environment["CLAU_FAKES_PORT"] {
            guard let value = Int(text) else { throw StartupError("CLAU_FAKES_PORT is not a port number: \(text)") }
            configuration.port = value
        }
        guard (0...65535).contains(configuration.port) else { throw StartupError("port out of range: \(configuration.port)") }
        guard alpacaRequestsPerMinute > 0 else { throw StartupError("--alpaca-requests-per-minute must be positive") }
        let redirectURIs = alpacaRedirectURIs.isEmpty ? configuration.alpaca.clients.flatMap(\.redirectURIs) : alpacaRedirectURIs
        configuration.alpaca.clients = [AlpacaOAuthClient(clientID: alpacaClientId, clientSecret: alpacaClientSecret, redirectURIs: redirectURIs)]
        configuration.alpaca.requestsPerMinute = alpacaRequestsPerMinute
        configuration.stripe.secretKey = stripeSecretKey
        configuration.stripe.webhookSecret = stripeWebhookSecret
        return configuration
    }
}
