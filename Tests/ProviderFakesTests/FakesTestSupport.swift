import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import ProviderFakes
import Synchronization

/// A response read whole, with its body parsed as JSON when it is JSON.
struct ReceivedResponse: Sendable {
    var status: Int
    var headers: HTTPFields
    var body: [UInt8]

    var json: JSONValue? { try? JSONValue.decode(body) }

    func header(_ name: String) -> String? {
        HTTPField.Name(name).flatMap { headers[$0] }
    }
}

/// Requests against the fakes' router, in process (no socket), with the fakes' state reachable.
struct FakesClient: Sendable {
    let client: any TestClientProtocol

    func send(
        _ method: HTTPRequest.Method, _ uri: String, headers: [String: String] = [:], body: String? = nil
    ) async throws -> ReceivedResponse {
        var fields = HTTPFields()
        for (name, value) in headers { fields.append(HTTPField(name: HTTPField.Name(name)!, value: value)) }
        let response = try await client.execute(uri: uri, method: method, headers: fields, body: body.map { ByteBuffer(string: $0) })
        return ReceivedResponse(status: Int(response.status.code), headers: response.headers, body: Array(response.body.readableBytesView))
    }

    // MARK: Alpaca

    static let clientID = "test-client"
    static let clientSecret = "test-client-secret"
    static let redirectURI = "http://127.0.0.1:9/callback"

    /// The redirect's query parameters after `GET /oauth/authorize`.
    func authorize(state: String = "st-1", redirectURI: String = FakesClient.redirectURI) async throws -> (response: ReceivedResponse, query: [String: String]) {
        let uri = "/oauth/authorize?response_type=code&client_id=\(Self.clientID)&redirect_uri=\(percentEncoded(redirectURI))&state=\(percentEncoded(state))&scope=trading"
        let response = try await send(.get, uri)
        var query: [String: String] = [:]
        if let location = response.header("Location"), let components = URLComponents(string: location) {
            for item in components.queryItems ?? [] { query[item.name] = item.value }
        }
        return (response, query)
    }

    func exchange(code: String, secret: String = FakesClient.clientSecret, redirectURI: String = FakesClient.redirectURI) async throws -> ReceivedResponse {
        let form = "grant_type=authorization_code&code=\(code)&client_id=\(Self.clientID)&client_secret=\(percentEncoded(secret))&redirect_uri=\(percentEncoded(redirectURI))"
        return try await send(.post, "/oauth/token", headers: ["Content-Type": "application/x-www-form-urlencoded"], body: form)
    }

    /// A linked fake Alpaca account's bearer token.
    func alpacaToken() async throws -> String {
        let (_, query) = try await authorize()
        let response = try await exchange(code: query["code"] ?? "")
        guard let token = response.json?["access_token"]?.stringValue else { throw TestFailure("no access_token: \(response.status)") }
        return token
    }

    func alpaca(_ method: HTTPRequest.Method, _ uri: String, token: String, json: String? = nil) async throws -> ReceivedResponse {
        var headers = ["Authorization": "Bearer \(token)"]
        if json != nil { headers["Content-Type"] = "application/json" }
        return try await send(method, uri, headers: headers, body: json)
    }

    // MARK: Stripe

    static let stripeKey = "sk_test_unit"

    func stripe(_ method: HTTPRequest.Method, _ uri: String, form: String? = nil, idempotencyKey: String? = nil) async throws -> ReceivedResponse {
        var headers = ["Authorization": "Bearer \(Self.stripeKey)"]
        if form != nil { headers["Content-Type"] = "application/x-www-form-urlencoded" }
        if let idempotencyKey { headers["Idempotency-Key"] = idempotencyKey }
        return try await send(method, uri, headers: headers, body: form)
    }

    func createCustomer(email: String = "a@example.com") async throws -> String {
        let response = try await stripe(.post, "/v1/customers", form: "email=\(percentEncoded(email))")
        guard let id = response.json?["id"]?.stringValue else { throw TestFailure("customer not created: \(response.status)") }
        return id
    }

    /// A finished Financial Connections session with `accounts` linked accounts.
    func linkedSession(customer: String, accounts: Int = 2) async throws -> JSONValue {
        let created = try await stripe(.post, "/v1/financial_connections/sessions",
                                       form: "account_holder[type]=customer&account_holder[customer]=\(customer)&permissions[]=balances")
        guard let id = created.json?["id"]?.stringValue else { throw TestFailure("session not created: \(created.status)") }
        let completed = try await send(.post, "/_fake/stripe/financial_connections/sessions/\(id)/complete?accounts=\(accounts)")
        guard let json = completed.json, completed.status == 200 else { throw TestFailure("session not completed: \(completed.status)") }
        return json
    }
}

struct TestFailure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

func percentEncoded(_ text: String) -> String {
    var allowed = CharacterSet.alphanumerics
    allowed.insert(charactersIn: "-._~")
    return text.addingPercentEncoding(withAllowedCharacters: allowed) ?? ""
}

/// A clock tests can move.
final class TestClock: Sendable {
    private let offset = Mutex<TimeInterval>(0)
    func advance(by seconds: TimeInterval) { offset.withLock { $0 += seconds } }
    func now() -> Date { Date().addingTimeInterval(offset.withLock { $0 }) }
    /// Moves to one second into a 60-second window, so a test of a per-minute window is not cut
    /// in two by a minute boundary of the real clock (which this one follows).
    func advanceToStartOfMinute() {
        let seconds = now().timeIntervalSince1970
        advance(by: 61 - seconds.truncatingRemainder(dividingBy: 60))
    }
}

func testConfiguration(clock: TestClock = TestClock(), requestsPerMinute: Int = 200) -> ProviderFakesConfiguration {
    var configuration = ProviderFakesConfiguration()
    configuration.port = 0
    configuration.alpaca.clients = [
        AlpacaOAuthClient(clientID: FakesClient.clientID, clientSecret: FakesClient.clientSecret, redirectURIs: [FakesClient.redirectURI]),
    ]
    configuration.alpaca.requestsPerMinute = requestsPerMinute
    configuration.alpaca.now = { clock.now() }
    configuration.stripe.secretKey = FakesClient.stripeKey
    configuration.stripe.webhookSecret = "whsec_unit"
    configuration.stripe.now = { clock.now() }
    return configuration
}

/// Runs `body` against a fresh pair of fakes, in process.
func withFakes<Value: Sendable>(
    _ configuration: ProviderFakesConfiguration = testConfiguration(),
    _ body: @Sendable (FakesClient) async throws -> Value
) async throws -> Value {
    let application = buildProviderFakesApplication(configuration: configuration)
    return try await application.test(.router) { client in try await body(FakesClient(client: client)) }
}
