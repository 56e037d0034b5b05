import Crypto
import Foundation

public struct StripeFakeConfiguration: Sendable {
    /// The only secret key the fake accepts (Bearer, or Basic with the key as user name).
    public var secretKey = "sk_test_clau_fake"
    /// The `whsec_…` secret the fake signs webhooks with.
    public var webhookSecret = "whsec_clau_fake"
    /// Remembered `Idempotency-Key`s; the oldest is forgotten past this (Stripe keeps them 24 h).
    public var idempotencyCapacity = 10_000
    /// Bound on every kind of stored object, so a long-running dev stack cannot grow without end.
    public var maximumObjectsPerKind = 50_000
    public var now: @Sendable () -> Date = { Date() }

    public init() {}
}

/// Stripe's error body, `{"error": {"type", "code", "message", "param"}}` (only `type` is required).
struct StripeError: Error {
    var status: Int
    var type: String
    var code: String?
    var message: String
    var param: String?

    var response: FakeResponse {
        var error: [String: JSONValue] = ["type": .string(type), "message": .string(message)]
        if let code { error["code"] = .string(code) }
        if let param { error["param"] = .string(param) }
        return .json(status, ["error": .object(error)])
    }

    static func invalid(_ message: String, param: String? = nil, code: String? = nil) -> StripeError {
        StripeError(status: 400, type: "invalid_request_error", code: code, message: message, param: param)
    }

    static func missing(_ param: String) -> StripeError {
        invalid("Missing required param: \(param).", param: param, code: "parameter_missing")
    }

    static func noSuch(_ kind: String, _ id: String, param: String = "id") -> StripeError {
        StripeError(status: 404, type: "invalid_request_error", code: "resource_missing", message: "No such \(kind): '\(id)'", param: param)
    }
}

/// The Stripe operations the fake serves (paths from the Stripe OpenAPI subset), plus the
/// fake-only ones that stand in for what a user does in Stripe's hosted pages.
public enum StripeOperation: Sendable {
    case createCustomer
    case retrieveCustomer(id: String)
    case createFinancialConnectionsSession
    case retrieveFinancialConnectionsSession(id: String)
    case listFinancialConnectionsAccounts
    case retrieveFinancialConnectionsAccount(id: String)
    case refreshFinancialConnectionsAccount(id: String)
    case disconnectFinancialConnectionsAccount(id: String)
    case createCheckoutSession
    case retrieveCheckoutSession(id: String)
    case retrieveSubscription(id: String)
    case cancelSubscription(id: String)
    case retrieveEvent(id: String)
}

/// The state of the fake Stripe account. Authentication, idempotency and the operation run in
/// one actor turn, so two requests with the same `Idempotency-Key` can never both execute.
public actor StripeFake {
    struct Customer {
        var id: String
        var created: Int64
        var email: String?
        var name: String?
        var description: String?
        var metadata: [String: String]
    }

    struct FinancialConnectionsSession {
        var id: String
        var clientSecret: String
        var customerID: String
        var permissions: [String]
        var countries: [String]?
        var returnURL: String?
        var accountIDs: [String] = []
    }

    struct FinancialConnectionsAccount {
        var id: String
        var sequence: Int
        var created: Int64
        var customerID: String
        var sessionID: String
        var subcategory: String
        var displayName: String
        var last4: String
        var permissions: [String]
        var status = "active"
        /// Minor units (cents) the fake's bank reports on the next refresh.
        var bankBalance: Int64
        var balanceAsOf: Int64?
        var balanceRefreshedAt: Int64?
    }

    struct CheckoutSession {
        var id: String
        var created: Int64
        var customerID: String?
        var customerEmail: String?
        var clientReferenceID: String?
        var successURL: String
        var cancelURL: String?
        var metadata: [String: String]
        var lineItems: [(price: String, quantity: Int64)]
        var status = "open"
        var paymentStatus = "unpaid"
        var subscriptionID: String?
    }

    struct Subscription {
        var id: String
        var created: Int64
        var customerID: String
        var items: [(id: String, price: String, quantity: Int64)]
        var metadata: [String: String]
        var status = "active"
        var canceledAt: Int64?
    }

    struct StoredResponse {
        var fingerprint: [UInt8]
        var response: FakeResponse
    }

    public let configuration: StripeFakeConfiguration
    private var customers: [String: Customer] = [:]
    private var sessions: [String: FinancialConnectionsSession] = [:]
    private var accounts: [String: FinancialConnectionsAccount] = [:]
    private var checkoutSessions: [String: CheckoutSession] = [:]
    private var subscriptions: [String: Subscription] = [:]
    private var events: [String: JSONValue] = [:]
    private var idempotentResponses: [String: StoredResponse] = [:]
    private var idempotencyKeyOrder: [String] = []
    private var accountSequence = 0

    public init(configuration: StripeFakeConfiguration) {
        self.configuration = configuration
    }

    private var now: Int64 { Timestamp.unixSeconds(configuration.now()) }

    // MARK: Request handling

    /// Ids of the customers created so far (tests check where they end up).
    public var customerIDs: [String] { Array(customers.keys) }

    public func respond(to operation: StripeOperation, _ request: FakeRequest) -> FakeResponse {
        let key = request.bearerToken ?? request.basicUser
        guard let key, constantTimeEqual(key, configuration.secretKey) else {
            let shown = key.map { "Invalid API Key provided: \(String($0.prefix(8)))****" } ?? "You did not provide an API key."
            return withRequestID(StripeError(status: 401, type: "invalid_request_error", code: nil, message: shown, param: nil).response)
        }
        guard request.method == "POST", let idempotencyKey = request.header("idempotency-key") else {
            return withRequestID(execute(operation, request))
        }
        guard !idempotencyKey.isEmpty, idempotencyKey.utf8.count <= 255 else {
            return withRequestID(StripeError.invalid("Idempotency-Key must be 1 to 255 characters.", param: "Idempotency-Key").response)
        }
        let fingerprint = Array(SHA256.hash(data: Array("\(request.method) \(request.path)\n".utf8) + request.body))
        if let stored = idempotentResponses[idempotencyKey] {
            guard stored.fingerprint == fingerprint else {
                return withRequestID(StripeError(
                    status: 400, type: "idempotency_error", code: nil,
                    message: "Keys for idempotent requests can only be used with the same parameters they were first used with. Try using a key other than '\(idempotencyKey)' if you meant to execute a different request.",
                    param: nil
                ).response)
            }
            var replay = stored.response
            replay.headers.append(("Idempotent-Replayed", "true"))
            return replay
        }
        let response = withRequestID(execute(operation, request))
        // Like Stripe, a request refused before it ran (validation, 4xx) saves no result: the
        // client may fix it and retry with the same key.
        if (200..<300).contains(response.status) {
            remember(idempotencyKey, StoredResponse(fingerprint: fingerprint, response: response))
        }
        return response
    }

    private func remember(_ key: String, _ stored: StoredResponse) {
        if idempotencyKeyOrder.count >= configuration.idempotencyCapacity {
            let evicted = idempotencyKeyOrder.removeFirst()
            idempotentResponses[evicted] = nil
        }
        idempotencyKeyOrder.append(key)
        idempotentResponses[key] = stored
    }

    private func withRequestID(_ response: FakeResponse) -> FakeResponse {
        var response = response
        response.headers.append(("Request-Id", RandomIdentifier.make("req_", length: 14)))
        return response
    }

    private func execute(_ operation: StripeOperation, _ request: FakeRequest) -> FakeResponse {
        do {
            let form: FormBody
            do {
                form = request.method == "GET" || request.method == "DELETE" ? request.query : try FormBody(parsing: request.body)
            } catch {
                throw StripeError.invalid(error.description)
            }
            switch operation {
            case .createCustomer: return .json(200, try createCustomer(form))
            case .retrieveCustomer(let id): return .json(200, customerJSON(try customer(id)))
            case .createFinancialConnectionsSession: return .json(200, try createSession(form))
            case .retrieveFinancialConnectionsSession(let id): return .json(200, sessionJSON(try session(id)))
            case .listFinancialConnectionsAccounts: return .json(200, try listAccounts(form))
            case .retrieveFinancialConnectionsAccount(let id): return .json(200, accountJSON(try account(id)))
            case .refreshFinancialConnectionsAccount(let id): return .json(200, try refreshAccount(id, form))
            case .disconnectFinancialConnectionsAccount(let id): return .json(200, try disconnectAccount(id, form))
            case .createCheckoutSession: return .json(200, try createCheckoutSession(form))
            case .retrieveCheckoutSession(let id): return .json(200, checkoutSessionJSON(try checkoutSession(id)))
            case .retrieveSubscription(let id): return .json(200, subscriptionJSON(try subscription(id)))
            case .cancelSubscription(let id): return .json(200, try cancelSubscription(id))
            case .retrieveEvent(let id):
                guard let event = events[id] else { throw StripeError.noSuch("event", id) }
                return .json(200, event)
            }
        } catch let error as StripeError {
            return error.response
        } catch {
            return StripeError(status: 500, type: "api_error", code: nil, message: "internal error", param: nil).response
        }
    }

    /// Stripe refuses parameters it does not know, naming the first one.
    private func refuseUnknown(_ form: FormBody, allowed: Set<String>) throws(StripeError) {
        if let unknown = form.rootNames.first(where: { !allowed.contains($0) }) {
            throw .invalid("Received unknown parameter: \(unknown)", param: unknown, code: "parameter_unknown")
        }
    }

    private func checkCapacity(_ count: Int) throws(StripeError) {
        guard count < configuration.maximumObjectsPerKind else {
            throw StripeError(status: 429, type: "invalid_request_error", code: "rate_limit", message: "This fake's object limit is reached.", param: nil)
        }
    }

    private static func metadata(_ form: FormBody) throws(StripeError) -> [String: String] {
        let metadata = form.dictionary("metadata")
        guard metadata.count <= 50 else { throw .invalid("Metadata can have at most 50 keys.", param: "metadata") }
        for (key, value) in metadata where key.count > 40 || value.count > 500 {
            throw .invalid("Metadata keys are at most 40 characters and values at most 500.", param: "metadata[\(key)]")
        }
        return metadata
    }

    // MARK: Customers

    private func createCustomer(_ form: FormBody) throws(StripeError) -> JSONValue {
        try refuseUnknown(form, allowed: ["email", "name", "description", "metadata", "expand"])
        try checkCapacity(customers.count)
        let customer = Customer(
            id: RandomIdentifier.make("cus_", length: 14), created: now, email: form.value("email"),
            name: form.value("name"), description: form.value("description"), metadata: try Self.metadata(form)
        )
        customers[customer.id] = customer
        return customerJSON(customer)
    }

    private func customer(_ id: String, param: String = "id") throws(StripeError) -> Customer {
        guard let customer = customers[id] else { throw .noSuch("customer", id, param: param) }
        return customer
    }

    // MARK: Financial Connections

    private func createSession(_ form: FormBody) throws(StripeError) -> JSONValue {
        try refuseUnknown(form, allowed: ["account_holder", "permissions", "filters", "return_url", "expand"])
        guard let holderType = form.value("account_holder[type]") else { throw .missing("account_holder[type]") }
        guard holderType == "customer" else {
            throw .invalid("This fake supports only account_holder[type]=customer.", param: "account_holder[type]")
        }
        guard let customerID = form.value("account_holder[customer]") else { throw .missing("account_holder[customer]") }
        _ = try customer(customerID, param: "account_holder[customer]")
        let permissions = form.arrayValues("permissions")
        guard !permissions.isEmpty else { throw .missing("permissions") }
        let known: Set<String> = ["balances", "ownership", "payment_method", "transactions"]
        if let bad = permissions.first(where: { !known.contains($0) }) {
            throw .invalid("Invalid permissions[]: must be one of balances, ownership, payment_method, or transactions (got \(bad)).", param: "permissions")
        }
        try checkCapacity(sessions.count)
        let countries = form.arrayValues("filters[countries]")
        let id = RandomIdentifier.make("fcsess_", length: 24)
        let session = FinancialConnectionsSession(
            id: id, clientSecret: id + "_secret_" + RandomIdentifier.make("", length: 24), customerID: customerID,
            permissions: permissions, countries: countries.isEmpty ? nil : countries, returnURL: form.value("return_url")
        )
        sessions[id] = session
        return sessionJSON(session)
    }

    private func session(_ id: String) throws(StripeError) -> FinancialConnectionsSession {
        guard let session = sessions[id] else { throw .noSuch("financial_connections.session", id) }
        return session
    }

    /// Stands in for the user finishing Stripe's hosted flow: links `count` fake bank accounts.
    public func completeSession(id: String, accountCount: Int) -> FakeResponse {
        do {
            var session = try session(id)
            guard session.accountIDs.isEmpty else { throw StripeError.invalid("This session has already been completed.") }
            guard (1...10).contains(accountCount) else { throw StripeError.invalid("accounts must be 1 to 10.", param: "accounts") }
            try checkCapacity(accounts.count + accountCount)
            for index in 0..<accountCount {
                accountSequence += 1
                let savings = index % 2 == 1
                let account = FinancialConnectionsAccount(
                    id: RandomIdentifier.make("fca_", length: 24), sequence: accountSequence, created: now,
                    customerID: session.customerID, sessionID: id, subcategory: savings ? "savings" : "checking",
                    displayName: savings ? "Fake Savings" : "Fake Checking", last4: String(format: "%04d", 1000 + accountSequence % 9000),
                    permissions: session.permissions, bankBalance: Int64(125_000 + 10_000 * accountSequence) * 100
                )
                accounts[account.id] = account
                session.accountIDs.append(account.id)
            }
            sessions[id] = session
            return .json(200, sessionJSON(session))
        } catch let error as StripeError {
            return error.response
        } catch {
            return StripeError(status: 500, type: "api_error", code: nil, message: "internal error", param: nil).response
        }
    }

    private func account(_ id: String) throws(StripeError) -> FinancialConnectionsAccount {
        guard let account = accounts[id] else { throw .noSuch("financial_connections.account", id) }
        return account
    }

    /// Newest first, as Stripe lists; `starting_after`/`ending_before` take object ids.
    private func listAccounts(_ form: FormBody) throws(StripeError) -> JSONValue {
        try refuseUnknown(form, allowed: ["account_holder", "session", "limit", "starting_after", "ending_before", "expand"])
        var limit = 10
        if let text = form.value("limit") {
            guard let value = Int(text), (1...100).contains(value) else {
                throw .invalid("Invalid integer: limit must be between 1 and 100.", param: "limit")
            }
            limit = value
        }
        var selected = accounts.values.filter { account in
            if let customer = form.value("account_holder[customer]"), account.customerID != customer { return false }
            if let session = form.value("session"), account.sessionID != session { return false }
            return true
        }.sorted { $0.sequence > $1.sequence }
        let startingAfter = form.value("starting_after")
        let endingBefore = form.value("ending_before")
        if startingAfter != nil, endingBefore != nil {
            throw .invalid("You may only specify one of these parameters: ending_before, starting_after.")
        }
        var hasMore: Bool
        if let endingBefore {
            guard let anchor = selected.firstIndex(where: { $0.id == endingBefore }) else {
                throw .noSuch("financial_connections.account", endingBefore, param: "ending_before")
            }
            let before = selected[..<anchor]
            hasMore = before.count > limit
            selected = Array(before.suffix(limit))
        } else {
            if let startingAfter {
                guard let anchor = selected.firstIndex(where: { $0.id == startingAfter }) else {
                    throw .noSuch("financial_connections.account", startingAfter, param: "starting_after")
                }
                selected = Array(selected[(anchor + 1)...])
            }
            hasMore = selected.count > limit
            selected = Array(selected.prefix(limit))
        }
        return ["object": "list", "data": .array(selected.map(accountJSON)), "has_more": .bool(hasMore), "url": "/v1/financial_connections/accounts"]
    }

    /// The fake's bank answers at once: the refresh is `succeeded` in the response itself, where
    /// Stripe answers `pending` and finishes later.
    private func refreshAccount(_ id: String, _ form: FormBody) throws(StripeError) -> JSONValue {
        try refuseUnknown(form, allowed: ["features", "expand"])
        var account = try account(id)
        let features = form.arrayValues("features")
        guard !features.isEmpty else { throw .missing("features") }
        if let bad = features.first(where: { $0 != "balance" && $0 != "ownership" }) {
            throw .invalid("Invalid features[]: must be one of balance or ownership (got \(bad)).", param: "features")
        }
        guard account.status == "active" else {
            throw .invalid("Cannot refresh an account that is \(account.status).", param: "id")
        }
        if features.contains("balance") {
            guard account.permissions.contains("balances") else {
                throw .invalid("The balances permission was not granted for this account.", param: "features")
            }
            account.balanceAsOf = now
            account.balanceRefreshedAt = now
        }
        accounts[id] = account
        return accountJSON(account)
    }

    private func disconnectAccount(_ id: String, _ form: FormBody) throws(StripeError) -> JSONValue {
        try refuseUnknown(form, allowed: ["expand"])
        var account = try account(id)
        account.status = "disconnected"
        accounts[id] = account
        return accountJSON(account)
    }

    // MARK: Checkout and subscriptions

    private func createCheckoutSession(_ form: FormBody) throws(StripeError) -> JSONValue {
        try refuseUnknown(form, allowed: [
            "mode", "customer", "customer_email", "client_reference_id", "line_items", "success_url", "cancel_url", "metadata", "expand",
        ])
        guard let mode = form.value("mode") else { throw .missing("mode") }
        guard ["payment", "setup", "subscription"].contains(mode) else {
            throw .invalid("Invalid mode: must be one of payment, setup, or subscription.", param: "mode")
        }
        guard mode == "subscription" else { throw .invalid("This fake supports only mode=subscription.", param: "mode") }
        guard let successURL = form.value("success_url") else { throw .missing("success_url") }
        let customerID = form.value("customer")
        if let customerID { _ = try customer(customerID, param: "customer") }
        var lineItems: [(price: String, quantity: Int64)] = []
        for index in 0..<20 {
            guard let price = form.value("line_items[\(index)][price]") else { break }
            guard price.hasPrefix("price_") else { throw .noSuch("price", price, param: "line_items[\(index)][price]") }
            let quantityText = form.value("line_items[\(index)][quantity]") ?? "1"
            guard let quantity = Int64(quantityText), quantity > 0 else {
                throw .invalid("Invalid positive integer", param: "line_items[\(index)][quantity]")
            }
            lineItems.append((price, quantity))
        }
        guard !lineItems.isEmpty else { throw .missing("line_items") }
        try checkCapacity(checkoutSessions.count)
        let session = CheckoutSession(
            id: RandomIdentifier.make("cs_test_", length: 58), created: now, customerID: customerID,
            customerEmail: form.value("customer_email"), clientReferenceID: form.value("client_reference_id"),
            successURL: successURL, cancelURL: form.value("cancel_url"), metadata: try Self.metadata(form), lineItems: lineItems
        )
        checkoutSessions[session.id] = session
        return checkoutSessionJSON(session)
    }

    private func checkoutSession(_ id: String) throws(StripeError) -> CheckoutSession {
        guard let session = checkoutSessions[id] else { throw .noSuch("checkout.session", id) }
        return session
    }

    /// Stands in for the customer paying on Checkout's hosted page: completes the session,
    /// creates the subscription, records a `checkout.session.completed` event and hands back its
    /// payload with a valid `Stripe-Signature`, ready to be delivered to a webhook endpoint.
    public func completeCheckoutSession(id: String) -> FakeResponse {
        do {
            var session = try checkoutSession(id)
            guard session.status == "open" else { throw StripeError.invalid("This Checkout Session is no longer open.") }
            try checkCapacity(subscriptions.count)
            var customerID = session.customerID
            if customerID == nil {
                let customer = Customer(id: RandomIdentifier.make("cus_", length: 14), created: now, email: session.customerEmail, metadata: [:])
                customers[customer.id] = customer
                customerID = customer.id
            }
            let subscriptionID = RandomIdentifier.make("sub_", length: 24)
            let subscription = Subscription(
                id: subscriptionID, created: now, customerID: customerID!,
                items: session.lineItems.map { (RandomIdentifier.make("si_", length: 14), $0.price, $0.quantity) }, metadata: session.metadata
            )
            subscriptions[subscriptionID] = subscription
            session.customerID = customerID
            session.status = "complete"
            session.paymentStatus = "paid"
            session.subscriptionID = subscriptionID
            checkoutSessions[id] = session
            let event = recordEvent(type: "checkout.session.completed", object: checkoutSessionJSON(session))
            return .json(200, signedDelivery(event))
        } catch let error as StripeError {
            return error.response
        } catch {
            return StripeError(status: 500, type: "api_error", code: nil, message: "internal error", param: nil).response
        }
    }

    private func subscription(_ id: String) throws(StripeError) -> Subscription {
        guard let subscription = subscriptions[id] else { throw .noSuch("subscription", id) }
        return subscription
    }

    private func cancelSubscription(_ id: String) throws(StripeError) -> JSONValue {
        var subscription = try subscription(id)
        guard subscription.status != "canceled" else {
            throw .invalid("A canceled subscription can only update its cancellation_details and metadata.", param: "id")
        }
        subscription.status = "canceled"
        subscription.canceledAt = now
        subscriptions[id] = subscription
        let json = subscriptionJSON(subscription)
        _ = recordEvent(type: "customer.subscription.deleted", object: json)
        return json
    }

    // MARK: Events and webhooks

    private func recordEvent(type: String, object: JSONValue) -> JSONValue {
        let event: JSONValue = [
            "id": .string(RandomIdentifier.make("evt_", length: 24)),
            "object": "event",
            "api_version": "2023-08-16",
            "created": .integer(now),
            "data": ["object": object],
            "livemode": false,
            "pending_webhooks": 1,
            "request": ["id": nil, "idempotency_key": nil],
            "type": .string(type),
        ]
        if events.count >= configuration.maximumObjectsPerKind, let oldest = events.keys.first { events[oldest] = nil }
        if let id = event["id"]?.stringValue { events[id] = event }
        return event
    }

    /// `{"payload": <raw JSON text>, "stripe_signature": "t=…,v1=…", "event": …}`: deliver
    /// `payload` byte for byte, since the signature covers those exact bytes.
    func signedDelivery(_ event: JSONValue) -> JSONValue {
        let payload = event.encodedBytes()
        let header = StripeWebhookSigner.signatureHeader(payload: payload, secret: configuration.webhookSecret, timestamp: now)
        return ["payload": .string(String(decoding: payload, as: UTF8.self)), "stripe_signature": .string(header), "event": event]
    }

    /// Signs an arbitrary payload with the configured webhook secret.
    public func signWebhook(payload: [UInt8], timestamp: Int64?) -> FakeResponse {
        let timestamp = timestamp ?? now
        let header = StripeWebhookSigner.signatureHeader(payload: payload, secret: configuration.webhookSecret, timestamp: timestamp)
        return .json(200, ["stripe_signature": .string(header), "timestamp": .integer(timestamp)], headers: [("Stripe-Signature", header)])
    }

    // MARK: Shapes

    private static func stringMap(_ map: [String: String]) -> JSONValue {
        .object(map.mapValues { .string($0) })
    }

    func customerJSON(_ customer: Customer) -> JSONValue {
        [
            "id": .string(customer.id), "object": "customer", "created": .integer(customer.created), "livemode": false,
            "email": .optional(customer.email), "name": .optional(customer.name), "description": .optional(customer.description),
            "phone": nil, "address": nil, "shipping": nil, "balance": 0, "currency": nil, "default_source": nil,
            "delinquent": false, "discount": nil, "invoice_prefix": .string(String(customer.id.dropFirst(4).prefix(8)).uppercased()),
            "invoice_settings": ["custom_fields": nil, "default_payment_method": nil, "footer": nil, "rendering_options": nil],
            "metadata": Self.stringMap(customer.metadata), "next_invoice_sequence": 1, "preferred_locales": [],
            "tax_exempt": "none", "test_clock": nil,
        ]
    }

    func sessionJSON(_ session: FinancialConnectionsSession) -> JSONValue {
        var json: [String: JSONValue] = [
            "id": .string(session.id), "object": "financial_connections.session", "livemode": false,
            "client_secret": .string(session.clientSecret),
            "account_holder": ["type": "customer", "customer": .string(session.customerID)],
            "permissions": .array(session.permissions.map { .string($0) }),
            "prefetch": [],
            "accounts": [
                "object": "list", "data": .array(session.accountIDs.compactMap { accounts[$0] }.map(accountJSON)),
                "has_more": false, "url": "/v1/financial_connections/accounts",
            ],
        ]
        if let countries = session.countries { json["filters"] = ["countries": .array(countries.map { .string($0) })] }
        if let returnURL = session.returnURL { json["return_url"] = .string(returnURL) }
        return .object(json)
    }

    func accountJSON(_ account: FinancialConnectionsAccount) -> JSONValue {
        var balance: JSONValue = nil
        var balanceRefresh: JSONValue = nil
        if let asOf = account.balanceAsOf, let refreshedAt = account.balanceRefreshedAt {
            balance = [
                "as_of": .integer(asOf), "type": "cash", "current": ["usd": .integer(account.bankBalance)],
                "cash": ["available": ["usd": .integer(account.bankBalance)]],
            ]
            balanceRefresh = ["status": "succeeded", "last_attempted_at": .integer(refreshedAt)]
        }
        return [
            "id": .string(account.id), "object": "financial_connections.account", "created": .integer(account.created),
            "livemode": false, "account_holder": ["type": "customer", "customer": .string(account.customerID)],
            "balance": balance, "balance_refresh": balanceRefresh, "category": "cash", "subcategory": .string(account.subcategory),
            "display_name": .string(account.displayName), "institution_name": "StripeBank", "last4": .string(account.last4),
            "ownership": nil, "ownership_refresh": nil, "permissions": .array(account.permissions.map { .string($0) }),
            "status": .string(account.status), "supported_payment_method_types": ["us_bank_account"],
        ]
    }

    func checkoutSessionJSON(_ session: CheckoutSession) -> JSONValue {
        [
            "id": .string(session.id), "object": "checkout.session", "created": .integer(session.created),
            "expires_at": .integer(session.created + 86_400), "livemode": false, "mode": "subscription",
            "status": .string(session.status), "payment_status": .string(session.paymentStatus),
            "url": session.status == "open" ? .string("https://checkout.stripe.com/c/pay/\(session.id)") : nil,
            "customer": .optional(session.customerID), "customer_email": .optional(session.customerEmail),
            "client_reference_id": .optional(session.clientReferenceID), "success_url": .string(session.successURL),
            "cancel_url": .optional(session.cancelURL), "metadata": Self.stringMap(session.metadata),
            "subscription": .optional(session.subscriptionID), "automatic_tax": ["enabled": false, "status": nil],
            "custom_fields": [], "custom_text": ["shipping_address": nil, "submit": nil], "payment_method_types": ["card"],
            "shipping_options": [], "currency": "usd", "amount_subtotal": nil, "amount_total": nil, "invoice": nil,
            "payment_intent": nil, "setup_intent": nil, "locale": nil, "payment_link": nil,
        ]
    }

    func subscriptionJSON(_ subscription: Subscription) -> JSONValue {
        let periodEnd = subscription.created + 30 * 86_400
        return [
            "id": .string(subscription.id), "object": "subscription", "created": .integer(subscription.created),
            "livemode": false, "customer": .string(subscription.customerID), "status": .string(subscription.status),
            "automatic_tax": ["enabled": false], "billing_cycle_anchor": .integer(subscription.created),
            "cancel_at_period_end": false, "cancel_at": nil, "canceled_at": .optional(subscription.canceledAt),
            "ended_at": .optional(subscription.canceledAt), "collection_method": "charge_automatically", "currency": "usd",
            "current_period_start": .integer(subscription.created), "current_period_end": .integer(periodEnd),
            "start_date": .integer(subscription.created), "metadata": Self.stringMap(subscription.metadata),
            "default_payment_method": nil, "latest_invoice": nil, "trial_start": nil, "trial_end": nil,
            "items": [
                "object": "list", "has_more": false, "url": .string("/v1/subscription_items?subscription=\(subscription.id)"),
                "data": .array(subscription.items.map { item in
                    [
                        "id": .string(item.id), "object": "subscription_item", "created": .integer(subscription.created),
                        "metadata": [:], "subscription": .string(subscription.id), "quantity": .integer(item.quantity),
                        "price": ["id": .string(item.price), "object": "price", "currency": "usd", "type": "recurring"],
                    ]
                }),
            ],
        ]
    }
}
