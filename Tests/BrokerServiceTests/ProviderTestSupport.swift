import AsyncHTTPClient
import Foundation
import Hummingbird
import Logging
import NIOCore
import NIOHTTP1
import ProviderFakes
import RPC
import ServiceLifecycle
import Synchronization
import Testing

@testable import BrokerService

/// Test credentials: made-up values distinct enough that a leak into a log line is found by a
/// plain substring search.
enum ProviderTestCredentials {
    static let alpacaClientID = "clau-broker-test-client"
    static let alpacaClientSecret = "alpaca-client-secret-4f1d9c2e7b"
    static let alpacaRedirectURI = "http://127.0.0.1:9/v1/alpaca/oauth/callback"
    static let stripeSecretKey = "sk_test_clauBrokerClientsSecret51Hx"
}

/// Every line logged through it, message and metadata rendered as text (C-11/R-10, C-17: tests
/// search these for secrets).
final class LogCapture: Sendable {
    private let lines = Mutex<[String]>([])

    var all: [String] { lines.withLock { $0 } }

    func append(_ line: String) { lines.withLock { $0.append(line) } }

    func logger(label: String = "test") -> Logger {
        var logger = Logger(label: label) { _ in CapturingLogHandler(capture: self) }
        logger.logLevel = .trace
        return logger
    }
}

struct CapturingLogHandler: LogHandler {
    let capture: LogCapture
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .trace

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        var merged = metadata
        for (key, value) in event.metadata ?? [:] { merged[key] = value }
        let rendered = merged.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
        capture.append("\(event.level) \(event.message) \(rendered)")
    }
}

/// The fakes, live on 127.0.0.1 with an ephemeral port, and an HTTP client to reach them.
struct LiveFakes: Sendable {
    let fakes: ProviderFakes
    let baseURL: String
    let client: HTTPClient

    func alpacaConfiguration() -> AlpacaConfiguration {
        AlpacaConfiguration(
            apiBaseURL: baseURL, oauthTokenURL: baseURL + "/oauth/token", clientID: ProviderTestCredentials.alpacaClientID,
            clientSecret: ProviderTestCredentials.alpacaClientSecret, redirectURI: ProviderTestCredentials.alpacaRedirectURI
        )
    }

    func alpacaClient(policy: ProviderHTTPPolicy = .fastTest) throws -> AlpacaClient {
        try AlpacaClient(configuration: alpacaConfiguration(), http: ProviderHTTP(name: "alpaca", client: client, policy: policy))
    }

    func stripeClient(policy: ProviderHTTPPolicy = .fastTest) throws -> StripeClient {
        try StripeClient(
            configuration: StripeConfiguration(apiBaseURL: baseURL, secretKey: ProviderTestCredentials.stripeSecretKey),
            http: ProviderHTTP(name: "stripe", client: client, policy: policy)
        )
    }

    /// A raw request to the fakes (admin routes, the authorize redirect).
    func raw(_ method: HTTPMethod, _ path: String, body: String? = nil, bearer: String? = nil) async throws -> (status: Int, headers: HTTPHeaders, body: String) {
        var request = HTTPClientRequest(url: baseURL + path)
        request.method = method
        if let bearer { request.headers.add(name: "Authorization", value: "Bearer \(bearer)") }
        if let body {
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(string: body))
        }
        let response = try await client.execute(request, timeout: .seconds(10))
        let buffer = try await response.body.collect(upTo: 1 << 20)
        return (Int(response.status.code), response.headers, String(buffer: buffer))
    }

    /// A fresh authorization code from the fake's `GET /oauth/authorize` redirect.
    func authorizationCode() async throws -> String {
        let redirect = ProviderTestCredentials.alpacaRedirectURI.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? ""
        let response = try await raw(
            .GET, "/oauth/authorize?response_type=code&client_id=\(ProviderTestCredentials.alpacaClientID)&redirect_uri=\(redirect)&scope=trading&state=s1"
        )
        try #require(response.status == 302)
        let location = try #require(response.headers.first(name: "location"))
        let code = URLComponents(string: location)?.queryItems?.first { $0.name == "code" }?.value
        return try #require(code)
    }

    /// "The next `count` requests to `path` answer `status`" (fakes' fault injection).
    func injectFault(path: String, method: String? = nil, status: Int, count: Int) async throws {
        let methodField = method.map { #","method":"\#($0)""# } ?? ""
        let response = try await raw(.POST, "/_fake/faults", body: #"{"path":"\#(path)"\#(methodField),"status":\#(status),"count":\#(count)}"#)
        try #require(response.status == 201)
    }

    /// Uses of injected faults not yet consumed.
    func remainingFaults() async -> Int {
        await fakes.faults.activeRules.reduce(0) { $0 + $1.remaining }
    }
}

extension ProviderHTTPPolicy {
    /// Production shape, test-sized waits: retries after 1–20 ms, a 5 s request timeout.
    static var fastTest: ProviderHTTPPolicy {
        var policy = ProviderHTTPPolicy()
        policy.baseBackoff = .milliseconds(1)
        policy.maximumBackoff = .milliseconds(20)
        policy.requestTimeout = .seconds(5)
        policy.connectTimeout = .seconds(2)
        return policy
    }
}

struct FakesDidNotStart: Error {}

/// Runs `body` against the fakes served live on 127.0.0.1:0; the bound port is learned from
/// `onServerRunning` (no guessed sleep), and the server and client are shut down afterwards.
func withLiveFakes<T: Sendable>(_ body: @Sendable (LiveFakes) async throws -> T) async throws -> T {
    var configuration = ProviderFakesConfiguration()
    configuration.host = "127.0.0.1"
    configuration.port = 0
    configuration.alpaca.clients = [
        AlpacaOAuthClient(
            clientID: ProviderTestCredentials.alpacaClientID, clientSecret: ProviderTestCredentials.alpacaClientSecret,
            redirectURIs: [ProviderTestCredentials.alpacaRedirectURI]
        ),
    ]
    configuration.stripe.secretKey = ProviderTestCredentials.stripeSecretKey
    let fakes = ProviderFakes(configuration: configuration)
    let quiet = Logger(label: "fakes") { _ in SwiftLogNoOpLogHandler() }
    let built = buildProviderFakesApplication(configuration: configuration, fakes: fakes, logger: quiet)
    let (ports, continuation) = AsyncStream.makeStream(of: Int.self)
    let application = Application(
        responder: built.responder, configuration: built.configuration,
        onServerRunning: { channel in
            continuation.yield(channel.localAddress?.port ?? 0)
            continuation.finish()
        },
        logger: quiet
    )
    let serviceGroup = ServiceGroup(configuration: .init(services: [application], logger: quiet))
    return try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask {
            defer { continuation.finish() }
            try await serviceGroup.run()
        }
        var iterator = ports.makeAsyncIterator()
        guard let port = await iterator.next(), port > 0 else {
            await serviceGroup.triggerGracefulShutdown()
            throw FakesDidNotStart()
        }
        let client = HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: ProviderHTTPPolicy().httpClientConfiguration)
        let live = LiveFakes(fakes: fakes, baseURL: "http://127.0.0.1:\(port)", client: client)
        let result: Result<T, any Error>
        do {
            result = .success(try await body(live))
        } catch {
            result = .failure(error)
        }
        try await client.shutdown()
        await serviceGroup.triggerGracefulShutdown()
        try await group.waitForAll()
        return try result.get()
    }
}

/// The RPC error an async call threw (nil when it did not throw). A non-RPC error is reported as
/// UNKNOWN so the expectation names it.
func rpcError<T>(_ operation: () async throws -> T) async -> RPCError? {
    do {
        _ = try await operation()
        return nil
    } catch let error as RPCError {
        return error
    } catch {
        return RPCError(code: .unknown, message: "non-RPC error: \(type(of: error))")
    }
}
