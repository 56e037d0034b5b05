import Foundation
import HTTPTypes
import HummingbirdTesting
import Logging
import RPC
import RateLimiting
import Synchronization
import TestSupport
import Testing
@testable import EdgeProxy

/// A stand-in for clau-broker on a real Unix socket: it records every request it receives (method,
/// user id, request id, the message) and answers canned values, or the error set for a method.
final class TestBroker: BrokerRPCHandler {
    struct Received: Sendable {
        var method: String
        var userID: String
        var requestID: String
        var message: any Sendable
    }

    private struct State {
        var received: [Received] = []
        var failures: [String: RPCError] = [:]
        /// Ciphertexts under an old key, for RewrapAll (two re-wrapped per batch).
        var stale: UInt64 = 5
    }
    private let state = Mutex(State())

    var received: [Received] { state.withLock { $0.received } }
    func messages<T>(_ type: T.Type) -> [T] { received.compactMap { $0.message as? T } }
    func fail(_ method: String, with error: RPCError?) { state.withLock { $0.failures[method] = error } }
    func reset() { state.withLock { $0.received = []; $0.failures = [:] } }
    func setStale(_ count: UInt64) { state.withLock { $0.stale = count } }

    private func record(_ method: String, _ userID: String, _ message: any Sendable, _ context: ServerContext) throws {
        let failure = state.withLock { state -> RPCError? in
            state.received.append(Received(method: method, userID: userID, requestID: context.requestID, message: message))
            return state.failures[method]
        }
        if let failure { throw failure }
    }

    static let order: BrokerAlpacaOrder = {
        var order = BrokerAlpacaOrder()
        order.id = "61e69015-8549-4bfd-b9c3-01e75843f47d"
        order.clientOrderID = "clau-1"
        order.symbol = "AAPL"
        order.side = "buy"
        order.type = "market"
        order.timeInForce = "day"
        order.qty = "1.5"
        order.status = "accepted"
        order.filledQty = "0"
        order.submittedAt = "2026-12-03T10:00:00Z"
        return order
    }()

    func startAlpacaOAuth(_ request: BrokerStartAlpacaOAuthRequest, _ context: ServerContext) async throws -> BrokerStartAlpacaOAuthResponse {
        try record("StartAlpacaOAuth", request.userID, request, context)
        var response = BrokerStartAlpacaOAuthResponse()
        response.url = "https://app.alpaca.markets/oauth/authorize?response_type=code&state=abc"
        response.expiresAt = 1_800_000_000
        return response
    }

    func completeAlpacaOAuth(_ request: BrokerCompleteAlpacaOAuthRequest, _ context: ServerContext) async throws -> BrokerCompleteAlpacaOAuthResponse {
        try record("CompleteAlpacaOAuth", request.userID, request, context)
        var response = BrokerCompleteAlpacaOAuthResponse()
        response.status = "connected"
        response.scope = "account:write trading"
        return response
    }

    func disconnectAlpaca(_ request: BrokerDisconnectAlpacaRequest, _ context: ServerContext) async throws -> BrokerDisconnectAlpacaResponse {
        try record("DisconnectAlpaca", request.userID, request, context)
        return BrokerDisconnectAlpacaResponse()
    }

    func getAlpacaConnection(_ request: BrokerGetAlpacaConnectionRequest, _ context: ServerContext) async throws -> BrokerGetAlpacaConnectionResponse {
        try record("GetAlpacaConnection", request.userID, request, context)
        return BrokerGetAlpacaConnectionResponse()
    }

    func getAlpacaAccount(_ request: BrokerGetAlpacaAccountRequest, _ context: ServerContext) async throws -> BrokerGetAlpacaAccountResponse {
        try record("GetAlpacaAccount", request.userID, request, context)
        var response = BrokerGetAlpacaAccountResponse()
        response.account.id = "acct-1"
        response.account.status = "ACTIVE"
        response.account.currency = "USD"
        response.account.cash = "1000.00"
        response.account.buyingPower = "2000.00"
        response.account.equity = "1500.25"
        response.account.portfolioValue = "1500.25"
        return response
    }

    func listAlpacaPositions(_ request: BrokerListAlpacaPositionsRequest, _ context: ServerContext) async throws -> BrokerListAlpacaPositionsResponse {
        try record("ListAlpacaPositions", request.userID, request, context)
        var position = BrokerAlpacaPosition()
        position.symbol = "AAPL"
        position.qty = "3"
        position.side = "long"
        position.marketValue = "600.00"
        position.avgEntryPrice = "190.00"
        position.unrealizedPl = "30.00"
        var response = BrokerListAlpacaPositionsResponse()
        response.positions = [position]
        return response
    }

    func listAlpacaOrders(_ request: BrokerListAlpacaOrdersRequest, _ context: ServerContext) async throws -> BrokerListAlpacaOrdersResponse {
        try record("ListAlpacaOrders", request.userID, request, context)
        var response = BrokerListAlpacaOrdersResponse()
        response.orders = [Self.order]
        return response
    }

    func placeAlpacaOrder(_ request: BrokerPlaceAlpacaOrderRequest, _ context: ServerContext) async throws -> BrokerPlaceAlpacaOrderResponse {
        try record("PlaceAlpacaOrder", request.userID, request, context)
        var response = BrokerPlaceAlpacaOrderResponse()
        response.order = Self.order
        return response
    }

    func cancelAlpacaOrder(_ request: BrokerCancelAlpacaOrderRequest, _ context: ServerContext) async throws -> BrokerCancelAlpacaOrderResponse {
        try record("CancelAlpacaOrder", request.userID, request, context)
        return BrokerCancelAlpacaOrderResponse()
    }

    func createFinancialConnectionsSession(_ request: BrokerCreateFinancialConnectionsSessionRequest, _ context: ServerContext) async throws -> BrokerCreateFinancialConnectionsSessionResponse {
        try record("CreateFinancialConnectionsSession", request.userID, request, context)
        var response = BrokerCreateFinancialConnectionsSessionResponse()
        response.sessionID = "fcsess_1"
        response.clientSecret = "fcsess_1_secret_x"
        return response
    }

    static func linkedAccount(withBalance: Bool) -> BrokerLinkedBankAccount {
        var account = BrokerLinkedBankAccount()
        account.id = "fca_1"
        account.institutionName = "Test Bank"
        account.last4 = "6789"
        account.category = "cash"
        if withBalance {
            account.balance.current = ["usd": 12_345]
            account.balance.asOf = 1_800_000_000
            account.balance.type = "cash"
            account.refreshStatus = "succeeded"
        }
        return account
    }

    func linkFinancialConnectionsAccounts(_ request: BrokerLinkFinancialConnectionsAccountsRequest, _ context: ServerContext) async throws -> BrokerLinkFinancialConnectionsAccountsResponse {
        try record("LinkFinancialConnectionsAccounts", request.userID, request, context)
        var response = BrokerLinkFinancialConnectionsAccountsResponse()
        response.accounts = [Self.linkedAccount(withBalance: false)]
        return response
    }

    func listBankBalances(_ request: BrokerListBankBalancesRequest, _ context: ServerContext) async throws -> BrokerListBankBalancesResponse {
        try record("ListBankBalances", request.userID, request, context)
        var response = BrokerListBankBalancesResponse()
        response.accounts = [Self.linkedAccount(withBalance: true), Self.linkedAccount(withBalance: false)]
        return response
    }

    func refreshBankBalance(_ request: BrokerRefreshBankBalanceRequest, _ context: ServerContext) async throws -> BrokerRefreshBankBalanceResponse {
        try record("RefreshBankBalance", request.userID, request, context)
        return BrokerRefreshBankBalanceResponse()
    }

    func createSubscriptionCheckout(_ request: BrokerCreateSubscriptionCheckoutRequest, _ context: ServerContext) async throws -> BrokerCreateSubscriptionCheckoutResponse {
        try record("CreateSubscriptionCheckout", request.userID, request, context)
        var response = BrokerCreateSubscriptionCheckoutResponse()
        response.checkoutURL = "https://checkout.stripe.com/c/pay/cs_test_1"
        response.sessionID = "cs_test_1"
        return response
    }

    func getSubscription(_ request: BrokerGetSubscriptionRequest, _ context: ServerContext) async throws -> BrokerGetSubscriptionResponse {
        try record("GetSubscription", request.userID, request, context)
        var response = BrokerGetSubscriptionResponse()
        response.status = "active"
        response.currentPeriodEnd = 1_800_000_000
        return response
    }

    func handleStripeWebhook(_ request: BrokerHandleStripeWebhookRequest, _ context: ServerContext) async throws -> BrokerHandleStripeWebhookResponse {
        try record("HandleStripeWebhook", "", request, context)
        var response = BrokerHandleStripeWebhookResponse()
        response.received = true
        return response
    }

    func rewrapAll(_ request: BrokerRewrapAllRequest, _ context: ServerContext) async throws -> BrokerRewrapAllResponse {
        try record("RewrapAll", "", request, context)
        return state.withLock { state in
            var response = BrokerRewrapAllResponse()
            let batch = min(state.stale, 2)
            state.stale -= batch
            response.rewrapped = batch
            response.remaining = state.stale
            response.done = state.stale == 0
            response.currentKeyID = "key-2"
            return response
        }
    }

    func rotationStatus(_ request: BrokerRotationStatusRequest, _ context: ServerContext) async throws -> BrokerRotationStatusResponse {
        try record("RotationStatus", "", request, context)
        return BrokerRotationStatusResponse()
    }

    /// Adds a key only when nothing is stale; five ciphertexts are then under the old key.
    func beginKeyRotation(_ request: BrokerBeginKeyRotationRequest, _ context: ServerContext) async throws -> BrokerBeginKeyRotationResponse {
        try record("BeginKeyRotation", "", request, context)
        return state.withLock { state in
            var response = BrokerBeginKeyRotationResponse()
            response.keyAdded = state.stale == 0
            if response.keyAdded { state.stale = 5 }
            response.stale = state.stale
            response.currentKeyID = "key-2"
            return response
        }
    }

    func retireKey(_ request: BrokerRetireKeyRequest, _ context: ServerContext) async throws -> BrokerRetireKeyResponse {
        try record("RetireKey", "", request, context)
        return BrokerRetireKeyResponse()
    }
}

/// The edge (real auth behind it) with `broker` served on a real Unix socket; nil: the socket path
/// is configured but nothing listens there.
func withBrokerEdge<T: Sendable>(
    _ broker: TestBroker?,
    configure: @escaping @Sendable (inout EdgeConfiguration) -> Void = { _ in },
    _ body: @Sendable (EdgeHarness) async throws -> T
) async throws -> T {
    let directory = try makeWorldReadableTemporaryDirectory(prefix: "clau-broker-edge")
    defer { try? FileManager.default.removeItem(atPath: directory) }
    let path = directory + "/broker.sock"
    var server: Task<Void, any Error>?
    if let broker {
        let me = CallerAllowlist(uids: [getuid()])
        let unixServer = UnixSocketServer(configuration: .init(path: path), core: broker.rpcServerCore(callers: BrokerRPCCallers(edge: me, admin: me), logger: quietLogger), logger: quietLogger)
        server = Task { try await unixServer.run() }
        await unixServer.waitUntilListening()
    }
    defer { server?.cancel() }
    return try await withEdge(configure: { configuration in
        configuration.brokerSocketPath = path
        configure(&configuration)
    }) { edge in
        if broker != nil, let client = edge.edge.brokerClient {
            let deadline = ContinuousClock.now + .seconds(10)
            while !client.isConnected && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
        }
        return try await body(edge)
    }
}

/// Responses checked against the OpenAPI document: the status must be documented for the route,
/// and the body must validate against its schema (jsonschema, draft 2020-12, as OpenAPI 3.1).
final class OpenAPIResponseLog: Sendable {
    private struct Case: Encodable, Sendable {
        var method: String
        var path: String
        var status: Int
        var body: String?
    }
    private let cases = Mutex<[Case]>([])

    func add(_ method: HTTPRequest.Method, _ template: String, _ response: TestClient.Response) {
        let item = Case(method: method.rawValue.lowercased(), path: template, status: Int(response.status.code), body: response.text.isEmpty ? nil : response.text)
        cases.withLock { $0.append(item) }
    }

    static let validator = #"""
    import json, sys
    from jsonschema import Draft202012Validator
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012
    doc = json.load(open(sys.argv[1]))
    cases = json.load(open(sys.argv[2]))
    registry = Registry().with_resource("urn:clau", Resource.from_contents(doc, default_specification=DRAFT202012))
    problems = []
    for case in cases:
        name = f"{case['method'].upper()} {case['path']} {case['status']}"
        responses = doc["paths"][case["path"]][case["method"]]["responses"]
        documented = responses.get(str(case["status"]))
        if documented is None:
            problems.append(f"{name}: status not documented"); continue
        content = documented.get("content", {}).get("application/json")
        if case["body"] is None:
            if content is not None: problems.append(f"{name}: documented with a body, got none")
            continue
        if content is None:
            problems.append(f"{name}: body not documented"); continue
        schema = {"$ref": "urn:clau" + content["schema"]["$ref"]}
        for error in Draft202012Validator(schema, registry=registry).iter_errors(json.loads(case["body"])):
            problems.append(f"{name}: {error.message} at {list(error.absolute_path)}")
    print("\n".join(problems) if problems else "OK")
    """#

    /// Every problem found, or "OK".
    func validate() async throws -> String {
        let all = cases.withLock { $0 }
        // Absent bodies must be written as null (the validator reads `case["body"]`).
        let encoder = JSONEncoder()
        let objects = try all.map { item -> Any in
            var object = try JSONSerialization.jsonObject(with: encoder.encode(item)) as? [String: Any] ?? [:]
            if item.body == nil { object["body"] = NSNull() }
            return object
        }
        let data = try JSONSerialization.data(withJSONObject: objects)
        let path = NSTemporaryDirectory() + "clau-openapi-cases-\(UUID().uuidString).json"
        try data.write(to: URL(fileURLWithPath: path))
        defer { unlink(path) }
        let document = repositoryRoot + "/Sources/EdgeProxy/Resources/openapi.json"
        return try await Shell.run("/usr/bin/env", ["python3", "-c", Self.validator, document, path]).trimmingCharacters(in: .whitespacesAndNewlines)
    }
}

@Suite("Edge: broker routes through a broker RPC server", .timeLimit(.minutes(5)))
struct BrokerRoutesTests {
    static let requestIDHeader = HTTPField.Name("X-Request-ID")!
    static let signatureHeader = HTTPField.Name("Stripe-Signature")!
    static let adminKeyHeader = HTTPField.Name("X-Admin-Key")!

    /// C-7: every user route forwards the token's subject as `user_id` with the request id, shapes
    /// SPEC §3's reply, and documents it; a `user_id` in a body is an unknown field, never forwarded.
    @Test func everyBrokerRouteForwardsTheTokenSubjectAsUserID_C7() async throws {
        let broker = TestBroker()
        let documented = OpenAPIResponseLog()
        try await withBrokerEdge(broker) { edge in
            let tokens = try await edge.registerAndLogin("broker-user@example.com")
            let subject = try edge.userID(of: tokens.access)
            let someoneElse = UUID().uuidString.lowercased()
            let order = #"{"symbol":"AAPL","side":"buy","type":"market","time_in_force":"day","qty":"1.5"}"#
            let cases: [(HTTPRequest.Method, String, String, String?, HTTPResponse.Status, String)] = [
                (.get, "/v1/alpaca/oauth/authorize-url", "/v1/alpaca/oauth/authorize-url", nil, .ok, "StartAlpacaOAuth"),
                (.post, "/v1/alpaca/oauth/callback", "/v1/alpaca/oauth/callback", #"{"code":"c-1","state":"s-1"}"#, .ok, "CompleteAlpacaOAuth"),
                (.delete, "/v1/alpaca/connection", "/v1/alpaca/connection", nil, .noContent, "DisconnectAlpaca"),
                (.get, "/v1/alpaca/account", "/v1/alpaca/account", nil, .ok, "GetAlpacaAccount"),
                (.get, "/v1/alpaca/positions", "/v1/alpaca/positions", nil, .ok, "ListAlpacaPositions"),
                (.get, "/v1/alpaca/orders?status=closed&limit=25", "/v1/alpaca/orders", nil, .ok, "ListAlpacaOrders"),
                (.post, "/v1/alpaca/orders", "/v1/alpaca/orders", order, .created, "PlaceAlpacaOrder"),
                (.delete, "/v1/alpaca/orders/ord_42", "/v1/alpaca/orders/{orderId}", nil, .noContent, "CancelAlpacaOrder"),
                (.post, "/v1/stripe/financial-connections/sessions", "/v1/stripe/financial-connections/sessions", nil, .created, "CreateFinancialConnectionsSession"),
                (.post, "/v1/stripe/financial-connections/accounts", "/v1/stripe/financial-connections/accounts", #"{"session_id":"fcsess_1"}"#, .ok, "LinkFinancialConnectionsAccounts"),
                (.get, "/v1/stripe/balances", "/v1/stripe/balances", nil, .ok, "ListBankBalances"),
                (.post, "/v1/stripe/subscription/checkout", "/v1/stripe/subscription/checkout", #"{"price_id":"price_1"}"#, .created, "CreateSubscriptionCheckout"),
                (.get, "/v1/users/\(subject)/subscription", "/v1/users/{userId}/subscription", nil, .ok, "GetSubscription"),
            ]
            for (index, (method, path, template, body, status, rpc)) in cases.enumerated() {
                broker.reset()
                let requestID = "broker-test-\(index)"
                var headers = bearer(tokens.access)
                headers[Self.requestIDHeader] = requestID
                let response = try await edge.send(method, path, headers: headers, body: body)
                #expect(response.status == status, "\(method) \(path): \(response.text)")
                documented.add(method, template, response)
                let received = broker.received
                #expect(received.map(\.method) == [rpc], "\(method) \(path) makes exactly one broker call")
                #expect(received.first?.userID == subject, "\(method) \(path) forwards the token's subject")
                #expect(received.first?.requestID == requestID, "\(method) \(path) carries the request id")

                // Naming another user in the body is refused outright, before any broker call.
                if let body {
                    broker.reset()
                    let smuggled = String(body.dropLast()) + #","user_id":"\#(someoneElse)"}"#
                    let refused = try await edge.send(method, path, headers: bearer(tokens.access), body: smuggled)
                    #expect(refused.status == .unprocessableContent, "\(method) \(path) with user_id in the body")
                    #expect((try refused.errorObject()["fields"] as? [[String: String]])?.contains { $0["name"] == "user_id" && $0["problem"] == "unknown_field" } == true)
                    #expect(broker.received.isEmpty, "\(method) \(path): no broker call for a refused body")
                }
            }

            // What the handlers put in the requests besides user_id.
            broker.reset()
            _ = try await edge.send(.get, "/v1/alpaca/orders?status=closed&limit=25", headers: bearer(tokens.access))
            _ = try await edge.send(.post, "/v1/alpaca/orders", headers: bearer(tokens.access), body: order)
            _ = try await edge.send(.delete, "/v1/alpaca/orders/ord_42", headers: bearer(tokens.access))
            _ = try await edge.send(.get, "/v1/users/\(subject.uppercased())/subscription", headers: bearer(tokens.access))
            let list = try #require(broker.messages(BrokerListAlpacaOrdersRequest.self).first)
            #expect(list.status == "closed" && list.limit == 25)
            let placed = try #require(broker.messages(BrokerPlaceAlpacaOrderRequest.self).first)
            #expect(placed.symbol == "AAPL" && placed.side == "buy" && placed.type == "market" && placed.timeInForce == "day" && placed.qty == "1.5" && placed.notional.isEmpty)
            #expect(broker.messages(BrokerCancelAlpacaOrderRequest.self).first?.orderID == "ord_42")
            #expect(broker.messages(BrokerGetSubscriptionRequest.self).first?.subjectUserID == subject)

            // The shapes of SPEC §3.
            let balances = try await edge.send(.get, "/v1/stripe/balances", headers: bearer(tokens.access)).jsonObject()
            let accounts = try #require(balances["accounts"] as? [[String: Any]])
            #expect(((accounts.first?["balance"] as? [String: Any])?["current"] as? [String: Any])?["usd"] as? Int == 12_345)
            #expect(accounts.last?["balance"] is NSNull)
            let placedReply = try await edge.send(.post, "/v1/alpaca/orders", headers: bearer(tokens.access), body: order).jsonObject()
            #expect(placedReply["notional"] is NSNull && placedReply["qty"] as? String == "1.5")

            let ready = try await edge.send(.get, "/readyz")
            #expect(ready.status == .ok)
            #expect((try ready.jsonObject()["checks"] as? [String: String])?["broker"] == "ok")
            documented.add(.get, "/readyz", ready)
        }
        #expect(try await documented.validate() == "OK")
    }

    /// C-9: Stripe's deliveries from one address are limited by their own category, not by the
    /// users' write budget: a burst past the write limit is accepted, and past the webhook limit
    /// the answer is 429 with Retry-After, which Stripe honours by retrying later. (Hour-long
    /// windows, so no budget refills while the test runs.)
    @Test func webhookBurstFromOneAddressHasItsOwnBudget_C9() async throws {
        let broker = TestBroker()
        try await withBrokerEdge(broker, configure: { configuration in
            configuration.rateLimitRules = .spec
            configuration.rateLimitRules.write = RateLimitRule(name: "write", limit: 5, window: .seconds(3600))
            configuration.rateLimitRules.webhook = RateLimitRule(name: "webhook", limit: 12, window: .seconds(3600))
        }) { edge in
            let headers: HTTPFields = [Self.signatureHeader: "t=1800000000,v1=00"]
            for index in 0..<12 {
                let response = try await edge.send(.post, "/v1/stripe/webhook", headers: headers, body: #"{"id":"evt_\#(index)"}"#)
                try #require(response.status == .ok, "delivery \(index): \(response.status) \(response.text)")
            }
            #expect(broker.messages(BrokerHandleStripeWebhookRequest.self).count == 12)
            let refused = try await edge.send(.post, "/v1/stripe/webhook", headers: headers, body: #"{"id":"evt_12"}"#)
            #expect(refused.status == .tooManyRequests)
            #expect(refused.headers[.retryAfter] != nil && refused.headers[.rateLimitLimit] == "12")
            #expect(broker.messages(BrokerHandleStripeWebhookRequest.self).count == 12)
        }
    }

    /// The webhook's body reaches the broker byte for byte, with the Stripe-Signature header as
    /// sent: the edge never parses it (a body strict JSON would refuse goes through too).
    @Test func webhookBodyArrivesByteForByteWithItsSignature() async throws {
        let broker = TestBroker()
        let documented = OpenAPIResponseLog()
        try await withBrokerEdge(broker) { edge in
            let payload = "{ \"id\" :\"evt_1\",\n\t\"id\": \"evt_1\" , \"data\":{\"name\":\"Zoë 😀 \\u0000 \\ud83d\\ude00\"}   }\r\n  "
            let signature = "t=1800000000,v1=5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8e108d8bd, v0=6ffbb59b2300aae63f272406069a9788598b792a944a07aba816edb039989a39"
            let response = try await edge.send(.post, "/v1/stripe/webhook", headers: [Self.signatureHeader: signature], body: payload)
            #expect(response.status == .ok, "\(response.text)")
            #expect(try response.jsonObject()["received"] as? Bool == true)
            documented.add(.post, "/v1/stripe/webhook", response)
            let received = try #require(broker.messages(BrokerHandleStripeWebhookRequest.self).first)
            #expect(received.payload == Data(payload.utf8))
            #expect(received.signatureHeader == signature)

            // Without the header (or with two) the broker is never asked.
            broker.reset()
            let missing = try await edge.send(.post, "/v1/stripe/webhook", body: payload)
            #expect(missing.status == .badRequest)
            #expect(try missing.errorCode() == "invalid_signature")
            documented.add(.post, "/v1/stripe/webhook", missing)
            var twice = HTTPFields()
            twice.append(HTTPField(name: Self.signatureHeader, value: "t=1,v1=a"))
            twice.append(HTTPField(name: Self.signatureHeader, value: "t=2,v1=b"))
            #expect(try await edge.send(.post, "/v1/stripe/webhook", headers: twice, body: payload).status == .badRequest)
            // Over 64 KiB: 413, never forwarded.
            let huge = try await edge.send(.post, "/v1/stripe/webhook", headers: [Self.signatureHeader: signature], body: "{\"pad\":\"" + String(repeating: "x", count: 70 * 1024) + "\"}")
            #expect(huge.status == .contentTooLarge)
            documented.add(.post, "/v1/stripe/webhook", huge)
            #expect(broker.received.isEmpty)

            // The broker's verdict on the signature is passed on.
            broker.fail("HandleStripeWebhook", with: RPCError(code: .invalidArgument, message: "invalid_signature"))
            let bad = try await edge.send(.post, "/v1/stripe/webhook", headers: [Self.signatureHeader: "t=1,v1=00"], body: payload)
            #expect(bad.status == .badRequest)
            #expect(try bad.errorCode() == "invalid_signature")
            documented.add(.post, "/v1/stripe/webhook", bad)
        }
        #expect(try await documented.validate() == "OK")
    }

    /// C-7: another user's subscription is 404 before any broker call (and a malformed id too).
    @Test func subscriptionOfAnotherUserIs404_C7() async throws {
        let broker = TestBroker()
        try await withBrokerEdge(broker) { edge in
            let alice = try await edge.registerAndLogin("sub-alice@example.com")
            let bob = try await edge.registerAndLogin("sub-bob@example.com")
            let bobID = try edge.userID(of: bob.access)
            let foreign = try await edge.send(.get, "/v1/users/\(bobID)/subscription", headers: bearer(alice.access))
            #expect(foreign.status == .notFound)
            #expect(try foreign.errorCode() == "not_found")
            #expect(try await edge.send(.get, "/v1/users/not-a-uuid/subscription", headers: bearer(alice.access)).status == .notFound)
            #expect(broker.received.isEmpty, "the owner check comes before the broker")
            // Bob reads his own; the broker is told whose it is from both sides.
            #expect(try await edge.send(.get, "/v1/users/\(bobID)/subscription", headers: bearer(bob.access)).status == .ok)
            let request = try #require(broker.messages(BrokerGetSubscriptionRequest.self).first)
            #expect(request.userID == bobID && request.subjectUserID == bobID)
        }
    }

    /// C-6: no credentials, no broker call — on every broker user route.
    @Test func unauthenticatedBrokerCallsAre401WithoutABrokerCall_C6() async throws {
        let broker = TestBroker()
        try await withBrokerEdge(broker) { edge in
            let routes = RouteTable.clau().routes.filter { $0.auth == .user && ($0.template.hasPrefix("/v1/alpaca/") || $0.template.hasPrefix("/v1/stripe/") || $0.template.hasSuffix("/subscription")) }
            #expect(routes.count == 13)
            for route in routes {
                let path = route.template.replacingOccurrences(of: "{userId}", with: UUID().uuidString.lowercased()).replacingOccurrences(of: "{orderId}", with: "ord_1")
                let response = try await edge.send(route.method, path, body: route.method == .post ? "{}" : nil)
                #expect(response.status == .unauthorized, "\(route.method) \(route.template)")
                #expect(try response.errorCode() == "unauthenticated")
            }
            #expect(broker.received.isEmpty)
        }
    }

    /// C-15: bodies and query parameters are checked at the edge, before the broker.
    @Test func badBodiesAndQueriesAre422WithoutABrokerCall_C15() async throws {
        let broker = TestBroker()
        try await withBrokerEdge(broker) { edge in
            let tokens = try await edge.registerAndLogin("strict-broker@example.com")
            let control = try await edge.send(.post, "/v1/alpaca/oauth/callback", headers: bearer(tokens.access), body: #"{"code":"a\u0007b","state":"s"}"#)
            #expect(control.status == .unprocessableContent)
            #expect((try control.errorObject()["fields"] as? [[String: String]]) == [["name": "code", "problem": "control_character"]])
            let query = try await edge.send(.get, "/v1/alpaca/orders?status=pending&limit=0", headers: bearer(tokens.access))
            #expect(query.status == .unprocessableContent)
            let names = (try query.errorObject()["fields"] as? [[String: String]])?.compactMap { $0["name"] }
            #expect(names == ["status", "limit"])
            let order = try await edge.send(.post, "/v1/alpaca/orders", headers: bearer(tokens.access), body: #"{"symbol":"AAPL","side":"hold","type":"market","time_in_force":"day","qty":"-1"}"#)
            #expect(order.status == .unprocessableContent)
            #expect(Set((try order.errorObject()["fields"] as? [[String: String]])?.compactMap { $0["name"] } ?? []) == ["side", "qty"])
            let checkout = try await edge.send(.post, "/v1/stripe/subscription/checkout", headers: bearer(tokens.access), body: "price", json: false)
            #expect(checkout.status == .unsupportedMediaType)
            #expect(broker.received.isEmpty)
        }
    }

    /// Each broker RPC error class becomes its documented HTTP status and code (SPEC §3), never a
    /// 500 unless the broker said INTERNAL.
    @Test func brokerErrorsMapToTheirDocumentedStatus() async throws {
        let broker = TestBroker()
        let documented = OpenAPIResponseLog()
        try await withBrokerEdge(broker) { edge in
            let tokens = try await edge.registerAndLogin("errors@example.com")
            let order = #"{"symbol":"AAPL","side":"buy","type":"market","time_in_force":"day","qty":"1","notional":"10"}"#
            struct Case {
                var rpc: String
                var error: RPCError
                var method: HTTPRequest.Method
                var path: String
                var template: String
                var body: String?
                var status: HTTPResponse.Status
                var code: String
            }
            let cases: [Case] = [
                Case(rpc: "CompleteAlpacaOAuth", error: RPCError(code: .invalidArgument, message: "invalid_state"), method: .post, path: "/v1/alpaca/oauth/callback",
                     template: "/v1/alpaca/oauth/callback", body: #"{"code":"c","state":"reused"}"#, status: .badRequest, code: "invalid_state"),
                Case(rpc: "CompleteAlpacaOAuth", error: RPCError(code: .invalidArgument, message: "invalid_grant"), method: .post, path: "/v1/alpaca/oauth/callback",
                     template: "/v1/alpaca/oauth/callback", body: #"{"code":"c","state":"s"}"#, status: .badRequest, code: "invalid_grant"),
                Case(rpc: "PlaceAlpacaOrder", error: RPCError(code: .invalidArgument, message: "conflicts_with_other_field", details: ["field": "notional"]), method: .post,
                     path: "/v1/alpaca/orders", template: "/v1/alpaca/orders", body: order, status: .unprocessableContent, code: "validation_failed"),
                Case(rpc: "CancelAlpacaOrder", error: RPCError(code: .invalidArgument, message: "order is already filled"), method: .delete,
                     path: "/v1/alpaca/orders/ord_1", template: "/v1/alpaca/orders/{orderId}", body: nil, status: .unprocessableContent, code: "validation_failed"),
                Case(rpc: "GetAlpacaAccount", error: RPCError(code: .conflict, message: "alpaca_not_connected"), method: .get, path: "/v1/alpaca/account",
                     template: "/v1/alpaca/account", body: nil, status: .conflict, code: "alpaca_not_connected"),
                Case(rpc: "ListAlpacaPositions", error: RPCError(code: .conflict, message: "alpaca_connection_lost"), method: .get, path: "/v1/alpaca/positions",
                     template: "/v1/alpaca/positions", body: nil, status: .conflict, code: "alpaca_connection_lost"),
                Case(rpc: "CancelAlpacaOrder", error: RPCError(code: .notFound, message: "no such order"), method: .delete, path: "/v1/alpaca/orders/ord_2",
                     template: "/v1/alpaca/orders/{orderId}", body: nil, status: .notFound, code: "not_found"),
                Case(rpc: "LinkFinancialConnectionsAccounts", error: RPCError(code: .notFound, message: "no such session"), method: .post, path: "/v1/stripe/financial-connections/accounts",
                     template: "/v1/stripe/financial-connections/accounts", body: #"{"session_id":"fcsess_other"}"#, status: .notFound, code: "not_found"),
                Case(rpc: "ListBankBalances", error: RPCError(code: .unavailable, message: "stripe unreachable"), method: .get, path: "/v1/stripe/balances",
                     template: "/v1/stripe/balances", body: nil, status: .serviceUnavailable, code: "service_unavailable"),
                Case(rpc: "CreateSubscriptionCheckout", error: RPCError(code: .resourceExhausted, message: "rate_limited", details: ["retry_after": "7"]), method: .post,
                     path: "/v1/stripe/subscription/checkout", template: "/v1/stripe/subscription/checkout", body: nil, status: .tooManyRequests, code: "rate_limited"),
                Case(rpc: "StartAlpacaOAuth", error: RPCError(code: .permissionDenied, message: "caller not allowed"), method: .get, path: "/v1/alpaca/oauth/authorize-url",
                     template: "/v1/alpaca/oauth/authorize-url", body: nil, status: .forbidden, code: "forbidden"),
                Case(rpc: "ListAlpacaOrders", error: RPCError(code: .unimplemented, message: "no such method"), method: .get, path: "/v1/alpaca/orders",
                     template: "/v1/alpaca/orders", body: nil, status: .serviceUnavailable, code: "service_unavailable"),
                Case(rpc: "DisconnectAlpaca", error: RPCError(code: .internalError, message: "database down"), method: .delete, path: "/v1/alpaca/connection",
                     template: "/v1/alpaca/connection", body: nil, status: .internalServerError, code: "internal_error"),
            ]
            for item in cases {
                broker.reset()
                broker.fail(item.rpc, with: item.error)
                let response = try await edge.send(item.method, item.path, headers: bearer(tokens.access), body: item.body)
                let name = "\(item.error.code) \(item.error.message) on \(item.method) \(item.path)"
                #expect(response.status == item.status, "\(name): \(response.text)")
                let error = try response.errorObject()
                #expect(error["code"] as? String == item.code, "\(name)")
                #expect(!(error["message"] as? String ?? "").contains("database"), "no broker internals in \(name)")
                #expect(broker.received.count == 1, "\(name): one broker call")
                documented.add(item.method, item.template, response)
                switch item.status {
                case .unprocessableContent where item.error.details["field"] != nil:
                    #expect((error["fields"] as? [[String: String]]) == [["name": "notional", "problem": "conflicts_with_other_field"]])
                case .tooManyRequests:
                    #expect(response.headers[.retryAfter] == "7")
                case .serviceUnavailable:
                    #expect(response.headers[.retryAfter] != nil)
                default:
                    break
                }
            }
            // C-17: broker calls without a usable answer are counted by method, apart from auth's.
            let metrics = edge.edge.state.metrics.render()
            #expect(metrics.contains(#"clau_edge_broker_rpc_failures_total{method="ListBankBalances"} 1"#))
            #expect(metrics.contains(#"clau_edge_broker_rpc_failures_total{method="DisconnectAlpaca"} 1"#))
            #expect(!metrics.contains(#"clau_edge_broker_rpc_failures_total{method="GetAlpacaAccount"}"#), "a 409 is an answer, not a failure")
        }
        #expect(try await documented.validate() == "OK")
    }

    /// A configured broker that is not running: its routes are 503 with Retry-After (never a 500 and
    /// never a hang), /readyz is 503 naming the broker, and auth routes keep working.
    @Test func brokerSocketAbsentIs503AndReadyzSaysUnavailable() async throws {
        let documented = OpenAPIResponseLog()
        try await withBrokerEdge(nil) { edge in
            let tokens = try await edge.registerAndLogin("no-broker@example.com")
            let response = try await edge.send(.get, "/v1/alpaca/account", headers: bearer(tokens.access))
            #expect(response.status == .serviceUnavailable)
            #expect(try response.errorCode() == "service_unavailable")
            #expect(response.headers[.retryAfter] != nil)
            documented.add(.get, "/v1/alpaca/account", response)
            let webhook = try await edge.send(.post, "/v1/stripe/webhook", headers: [Self.signatureHeader: "t=1,v1=00"], body: "{}")
            #expect(webhook.status == .serviceUnavailable)
            let ready = try await edge.send(.get, "/readyz")
            #expect(ready.status == .serviceUnavailable)
            #expect((try ready.errorObject()["message"] as? String)?.contains("broker unavailable") == true)
            documented.add(.get, "/readyz", ready)
            #expect(try await edge.send(.get, "/v1/me", headers: bearer(tokens.access)).status == .ok)
        }
        // No broker configured at all: ready, and says so.
        try await withEdge { edge in
            let ready = try await edge.send(.get, "/readyz")
            #expect(ready.status == .ok)
            #expect((try ready.jsonObject()["checks"] as? [String: String])?["broker"] == "not_configured")
        }
        #expect(try await documented.validate() == "OK")
    }

    /// R-11/C-19: the admin route has the vault add a key, then re-wraps batch after batch until
    /// done (200), or answers 202 with what remains when its time budget runs out (and a second
    /// call adds no key while anything remains); admin checks come first (C-8).
    @Test func fernetRotationRewrapsUntilDone_R11_C8() async throws {
        let broker = TestBroker()
        let documented = OpenAPIResponseLog()
        try await withBrokerEdge(broker) { edge in
            let adminSub = UUID().uuidString.lowercased()
            let admin = try signed(TestClaims(sub: adminSub, role: "admin", amr: ["pwd", "otp"], authTime: Date()), key: edge.signingKey)
            let user = try signed(TestClaims(sub: adminSub, role: "user", amr: ["pwd", "otp"], authTime: Date()), key: edge.signingKey)
            let path = "/v1/admin/keys/fernet/rotate"
            #expect(try await edge.send(.post, path, headers: [.authorization: "Bearer \(user)", Self.adminKeyHeader: adminKey]).status == .forbidden)
            #expect(try await edge.send(.post, path, headers: [.authorization: "Bearer \(admin)"]).status == .forbidden)
            #expect(broker.received.isEmpty)

            broker.setStale(0)
            let done = try await edge.send(.post, path, headers: [.authorization: "Bearer \(admin)", Self.adminKeyHeader: adminKey])
            #expect(done.status == .ok, "\(done.text)")
            let object = try done.jsonObject()
            #expect(object["key_added"] as? Bool == true)
            #expect(object["rewrapped"] as? Int == 5 && object["remaining"] as? Int == 0 && object["done"] as? Bool == true && object["current_key_id"] as? String == "key-2")
            #expect(broker.received.map(\.method) == ["BeginKeyRotation", "RewrapAll", "RewrapAll", "RewrapAll"])
            documented.add(.post, path, done)

            // The vault cannot write its key file: 409 with the reason, and nothing re-wrapped.
            broker.reset()
            broker.fail("BeginKeyRotation", with: RPCError(code: .failedPrecondition, message: "key_source_read_only"))
            let refused = try await edge.send(.post, path, headers: [.authorization: "Bearer \(admin)", Self.adminKeyHeader: adminKey])
            #expect(refused.status == .conflict)
            #expect(try refused.errorCode() == "key_source_read_only")
            #expect(broker.received.map(\.method) == ["BeginKeyRotation"])
            documented.add(.post, path, refused)
        }
        try await withBrokerEdge(broker, configure: { $0.fernetRewrapBudget = .zero }) { edge in
            let admin = try signed(TestClaims(sub: UUID().uuidString.lowercased(), role: "admin", amr: ["pwd", "otp"], authTime: Date()), key: edge.signingKey)
            broker.reset()
            broker.setStale(5)
            let partial = try await edge.send(.post, "/v1/admin/keys/fernet/rotate", headers: [.authorization: "Bearer \(admin)", Self.adminKeyHeader: adminKey])
            #expect(partial.status == .accepted)
            let object = try partial.jsonObject()
            #expect(object["key_added"] as? Bool == false)
            #expect(object["rewrapped"] as? Int == 2 && object["remaining"] as? Int == 3 && object["done"] as? Bool == false)
            documented.add(.post, "/v1/admin/keys/fernet/rotate", partial)
        }
        #expect(try await documented.validate() == "OK")
    }
}
