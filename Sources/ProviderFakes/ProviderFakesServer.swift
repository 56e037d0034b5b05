import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore

public struct ProviderFakesConfiguration: Sendable {
    public var host = "127.0.0.1"
    public var port = 8099
    public var alpaca = AlpacaFakeConfiguration()
    public var stripe = StripeFakeConfiguration()
    /// Larger request bodies are refused with 413 before they are parsed: no request the fakes
    /// serve is anywhere near this.
    public var maximumBodyBytes = 64 * 1024

    public init() {}
}

/// Both fakes and the fault injector: the state a test may also reach directly.
public struct ProviderFakes: Sendable {
    public let alpaca: AlpacaFake
    public let stripe: StripeFake
    public let faults: FaultInjector

    public init(configuration: ProviderFakesConfiguration) {
        alpaca = AlpacaFake(configuration: configuration.alpaca)
        stripe = StripeFake(configuration: configuration.stripe)
        faults = FaultInjector()
    }
}

public typealias ProviderFakesApplication = Application<RouterResponder<BasicRequestContext>>

/// The `clau-fakes` HTTP server: Alpaca's OAuth and Trading API paths (`/oauth/…`, `/v2/…`),
/// Stripe's (`/v1/…`), and fake-only admin routes under `/_fake/`. The executable and the tests
/// both build it here.
public func buildProviderFakesApplication(
    configuration: ProviderFakesConfiguration, fakes: ProviderFakes? = nil, logger: Logger = Logger(label: "clau-fakes")
) -> ProviderFakesApplication {
    let fakes = fakes ?? ProviderFakes(configuration: configuration)
    let router = Router(context: BasicRequestContext.self)
    router.add(middleware: FaultInjectionMiddleware(faults: fakes.faults, alpacaRequestsPerMinute: configuration.alpaca.requestsPerMinute))
    let bodyLimit = configuration.maximumBodyBytes
    addAlpacaRoutes(router, fakes.alpaca, bodyLimit: bodyLimit)
    addStripeRoutes(router, fakes.stripe, bodyLimit: bodyLimit)
    addAdminRoutes(router, fakes, bodyLimit: bodyLimit)
    return Application(
        router: router,
        configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: "clau-fakes"),
        logger: logger
    )
}

// MARK: Routes

private func addAlpacaRoutes(_ router: Router<BasicRequestContext>, _ alpaca: AlpacaFake, bodyLimit: Int) {
    @Sendable func read(_ request: Request, bodyLimit: Int) async -> Result<FakeRequest, AlpacaError> {
        do throws(RequestReadError) {
            return .success(try await FakeRequest(request, bodyLimit: bodyLimit))
        } catch {
            switch error {
            case .bodyTooLarge: return .failure(AlpacaError(status: 413, code: 41310000, message: "request body too large"))
            case .malformedQuery(let reason): return .failure(.malformed(reason))
            }
        }
    }
    func trading(_ operation: @escaping @Sendable (BasicRequestContext) throws -> AlpacaOperation) -> @Sendable (Request, BasicRequestContext) async throws -> Response {
        { request, context in
            switch await read(request, bodyLimit: bodyLimit) {
            case .success(let fakeRequest): Response(await alpaca.respond(to: try operation(context), fakeRequest))
            case .failure(let error): Response(error.response)
            }
        }
    }
    router.get("/oauth/authorize") { request, _ in
        switch await read(request, bodyLimit: 0) {
        case .success(let fakeRequest): Response(await alpaca.authorize(fakeRequest))
        case .failure(let error): Response(error.response)
        }
    }
    router.post("/oauth/token") { request, _ in
        switch await read(request, bodyLimit: bodyLimit) {
        case .success(let fakeRequest): Response(await alpaca.exchangeToken(fakeRequest))
        case .failure(let error): Response(error.response)
        }
    }
    router.get("/v2/account", use: trading { _ in .account })
    router.get("/v2/positions", use: trading { _ in .positions })
    router.get("/v2/orders", use: trading { _ in .listOrders })
    router.post("/v2/orders", use: trading { _ in .placeOrder })
    router.get("/v2/orders/{order_id}", use: trading { .getOrder(id: try $0.parameters.require("order_id")) })
    router.delete("/v2/orders/{order_id}", use: trading { .cancelOrder(id: try $0.parameters.require("order_id")) })
}

private func addStripeRoutes(_ router: Router<BasicRequestContext>, _ stripe: StripeFake, bodyLimit: Int) {
    func stripeOperation(_ operation: @escaping @Sendable (BasicRequestContext) throws -> StripeOperation) -> @Sendable (Request, BasicRequestContext) async throws -> Response {
        { request, context in
            let fakeRequest: FakeRequest
            do throws(RequestReadError) {
                fakeRequest = try await FakeRequest(request, bodyLimit: bodyLimit)
            } catch {
                switch error {
                case .bodyTooLarge:
                    return Response(StripeError(status: 413, type: "invalid_request_error", code: nil, message: "Request body too large.", param: nil).response)
                case .malformedQuery(let reason):
                    return Response(StripeError.invalid(reason).response)
                }
            }
            return Response(await stripe.respond(to: try operation(context), fakeRequest))
        }
    }
    @Sendable func id(_ context: BasicRequestContext) throws -> String { try context.parameters.require("id") }
    router.post("/v1/customers", use: stripeOperation { _ in .createCustomer })
    router.get("/v1/customers/{id}", use: stripeOperation { .retrieveCustomer(id: try id($0)) })
    router.post("/v1/financial_connections/sessions", use: stripeOperation { _ in .createFinancialConnectionsSession })
    router.get("/v1/financial_connections/sessions/{id}", use: stripeOperation { .retrieveFinancialConnectionsSession(id: try id($0)) })
    router.get("/v1/financial_connections/accounts", use: stripeOperation { _ in .listFinancialConnectionsAccounts })
    router.get("/v1/financial_connections/accounts/{id}", use: stripeOperation { .retrieveFinancialConnectionsAccount(id: try id($0)) })
    router.post("/v1/financial_connections/accounts/{id}/refresh", use: stripeOperation { .refreshFinancialConnectionsAccount(id: try id($0)) })
    router.post("/v1/financial_connections/accounts/{id}/disconnect", use: stripeOperation { .disconnectFinancialConnectionsAccount(id: try id($0)) })
    router.post("/v1/checkout/sessions", use: stripeOperation { _ in .createCheckoutSession })
    router.get("/v1/checkout/sessions/{id}", use: stripeOperation { .retrieveCheckoutSession(id: try id($0)) })
    router.get("/v1/subscriptions/{id}", use: stripeOperation { .retrieveSubscription(id: try id($0)) })
    router.delete("/v1/subscriptions/{id}", use: stripeOperation { .cancelSubscription(id: try id($0)) })
    router.get("/v1/events/{id}", use: stripeOperation { .retrieveEvent(id: try id($0)) })
}

/// Fake-only routes, unauthenticated: the fakes listen on loopback in tests and the dev stack and
/// are never deployed.
private func addAdminRoutes(_ router: Router<BasicRequestContext>, _ fakes: ProviderFakes, bodyLimit: Int) {
    @Sendable func adminError(_ status: Int, _ message: String) -> Response {
        Response(.json(status, ["error": .string(message)]))
    }
    @Sendable func read(_ request: Request, bodyLimit: Int) async -> Result<FakeRequest, AdminRefusal> {
        do throws(RequestReadError) {
            return .success(try await FakeRequest(request, bodyLimit: bodyLimit))
        } catch {
            switch error {
            case .bodyTooLarge: return .failure(AdminRefusal(response: adminError(413, "body too large (at most \(bodyLimit) bytes)")))
            case .malformedQuery(let reason): return .failure(AdminRefusal(response: adminError(400, reason)))
            }
        }
    }
    // Body: the raw webhook payload. Query: optional `timestamp` (unix seconds; default now).
    router.post("/_fake/stripe/webhooks/sign") { request, _ in
        let fakeRequest: FakeRequest
        switch await read(request, bodyLimit: bodyLimit) {
        case .success(let read): fakeRequest = read
        case .failure(let refusal): return refusal.response
        }
        var timestamp: Int64?
        if let text = fakeRequest.query.value("timestamp") {
            guard let value = Int64(text), value >= 0 else { return adminError(400, "timestamp must be unix seconds") }
            timestamp = value
        }
        return Response(await fakes.stripe.signWebhook(payload: fakeRequest.body, timestamp: timestamp))
    }
    // Query: optional `accounts` (1...10, default 2).
    router.post("/_fake/stripe/financial_connections/sessions/{id}/complete") { request, context in
        let count = request.uri.queryParameters.get("accounts").map { Int($0) ?? 0 } ?? 2
        return Response(await fakes.stripe.completeSession(id: try context.parameters.require("id"), accountCount: count))
    }
    router.post("/_fake/stripe/checkout/sessions/{id}/complete") { _, context in
        Response(await fakes.stripe.completeCheckoutSession(id: try context.parameters.require("id")))
    }
    // Body: `{"path": "/v2/account", "method": "GET", "status": 500, "count": 3}` (method optional).
    router.post("/_fake/faults") { request, _ in
        let fakeRequest: FakeRequest
        switch await read(request, bodyLimit: 4096) {
        case .success(let read): fakeRequest = read
        case .failure(let refusal): return refusal.response
        }
        guard let json = try? JSONValue.decode(fakeRequest.body),
              let path = json["path"]?.stringValue, let status = json["status"]?.integerValue else {
            return adminError(400, "expected JSON {\"path\": string, \"status\": integer, \"count\": integer, \"method\"?: string}")
        }
        let count = json["count"]?.integerValue ?? 1
        do {
            try await fakes.faults.add(.init(method: json["method"]?.stringValue, path: path, status: Int(status), remaining: Int(clamping: count)))
        } catch let error as FaultInjector.RuleError {
            return adminError(400, error.description)
        }
        return Response(.json(201, ["path": .string(path), "status": .integer(status), "count": .integer(count)]))
    }
    router.delete("/_fake/faults") { _, _ in
        await fakes.faults.removeAll()
        return Response(status: .noContent)
    }
}

/// An admin request refused before it ran, with the answer to send.
struct AdminRefusal: Error {
    var response: Response
}

// MARK: Fault injection

/// Answers a planned failure before routing, in the shape of the provider the path belongs to:
/// Stripe's error body under `/v1/`, Alpaca's elsewhere (with its rate-limit headers on a 429).
struct FaultInjectionMiddleware: RouterMiddleware {
    typealias Context = BasicRequestContext
    let faults: FaultInjector
    let alpacaRequestsPerMinute: Int

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard !request.uri.path.hasPrefix("/_fake/"),
              let status = await faults.take(method: request.method.rawValue, path: request.uri.path) else {
            return try await next(request, context)
        }
        if request.uri.path.hasPrefix("/v1/") {
            let error = status == 429
                ? StripeError(status: 429, type: "invalid_request_error", code: "rate_limit", message: "Too many requests hit the API too quickly.", param: nil)
                : StripeError(status: status, type: "api_error", code: nil, message: "An injected server error occurred.", param: nil)
            return Response(error.response)
        }
        var headers: [(name: String, value: String)] = []
        if status == 429 {
            let reset = Timestamp.unixSeconds(Date()) + 60
            headers = [("X-RateLimit-Limit", "\(alpacaRequestsPerMinute)"), ("X-RateLimit-Remaining", "0"), ("X-RateLimit-Reset", "\(reset)")]
        }
        let message = status == 429 ? "rate limit exceeded" : "internal server error (injected)"
        return Response(AlpacaError(status: status, code: Int64(status) * 100_000, message: message, headers: headers).response)
    }
}

// MARK: Conversions

/// Why a request could not be read; each provider answers it in its own error shape.
enum RequestReadError: Error {
    case bodyTooLarge
    case malformedQuery(String)
}

extension FakeRequest {
    /// Reads at most `bodyLimit` bytes of body and parses the query string.
    init(_ request: Request, bodyLimit: Int) async throws(RequestReadError) {
        let query: FormBody
        do {
            query = try FormBody(parsing: Substring(request.uri.query ?? ""))
        } catch {
            throw .malformedQuery(error.description)
        }
        var request = request
        let body: ByteBuffer
        do {
            // Also past the limit when the body is cut short or the connection fails: either way
            // there is no whole body to act on.
            body = bodyLimit > 0 ? try await request.collectBody(upTo: bodyLimit) : ByteBuffer()
        } catch {
            throw .bodyTooLarge
        }
        var headers: [String: String] = [:]
        for field in request.headers where headers[field.name.canonicalName] == nil {
            headers[field.name.canonicalName] = field.value
        }
        self.init(method: request.method.rawValue, path: request.uri.path, query: query, headers: headers, body: Array(body.readableBytesView))
    }
}

extension Response {
    init(_ response: FakeResponse) {
        var fields = HTTPFields()
        for header in response.headers {
            if let name = HTTPField.Name(header.name) { fields.append(HTTPField(name: name, value: header.value)) }
        }
        self.init(
            status: HTTPResponse.Status(code: response.status),
            headers: fields,
            body: ResponseBody(byteBuffer: ByteBuffer(bytes: response.body))
        )
    }
}
