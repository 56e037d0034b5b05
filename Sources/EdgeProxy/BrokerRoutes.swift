import ClauSupport
import Foundation
import HTTPTypes
import RPC

/// The routes clau-broker serves (SPEC §3): Alpaca, Stripe, the subscription, the Stripe webhook
/// and Fernet re-wrapping. Each handler decodes a strict body, makes one broker RPC with the
/// request id and a deadline, and shapes the reply. `user_id` is always the authenticated subject,
/// never anything the client sent: the broker scopes every row and upstream call to it (C-7).
enum BrokerRoutes {
    /// Wraps a broker handler: without a configured broker the route answers 503 before reading
    /// the body (so a body that would not validate still gets the 503 that explains the outage).
    static func wired(_ handler: @escaping @Sendable (EdgeCall) async throws -> EdgeReply) -> @Sendable (EdgeCall) async throws -> EdgeReply {
        { call in
            try call.requireBroker()
            return try await handler(call)
        }
    }

    /// RFC 3339 UTC, or null for 0 (the broker's "unknown"), as every `*_at` of the API.
    static func time(_ seconds: Int64) -> Any { AuthRoutes.isoTime(seconds) }
}

// MARK: Alpaca

/// Alpaca documents no revoke endpoint and no token expiry: disconnecting deletes the stored
/// token only, and a 401 from Alpaca marks the connection lost (409 `alpaca_connection_lost`).
enum AlpacaRoutes {
    static func authorizeURL(_ call: EdgeCall) async throws -> EdgeReply {
        var request = BrokerStartAlpacaOAuthRequest()
        request.userID = try call.subject
        let response = try await call.broker(BrokerAPI.startAlpacaOAuth, request)
        return .json(["url": response.url, "expires_at": BrokerRoutes.time(response.expiresAt)])
    }

    static func callback(_ call: EdgeCall) async throws -> EdgeReply {
        let body = try await call.decode(AlpacaCallbackBody.self)
        var request = BrokerCompleteAlpacaOAuthRequest()
        request.userID = try call.subject
        request.code = body.code
        request.state = body.state
        let response = try await call.broker(BrokerAPI.completeAlpacaOAuth, request)
        return .json(["status": response.status, "scope": response.scope])
    }

    static func disconnect(_ call: EdgeCall) async throws -> EdgeReply {
        var request = BrokerDisconnectAlpacaRequest()
        request.userID = try call.subject
        _ = try await call.broker(BrokerAPI.disconnectAlpaca, request)
        return .noContent
    }

    static func account(_ call: EdgeCall) async throws -> EdgeReply {
        var request = BrokerGetAlpacaAccountRequest()
        request.userID = try call.subject
        let account = try await call.broker(BrokerAPI.getAlpacaAccount, request).account
        return .json(["id": account.id, "status": account.status, "currency": account.currency, "cash": account.cash,
                      "buying_power": account.buyingPower, "equity": account.equity, "portfolio_value": account.portfolioValue])
    }

    static func positions(_ call: EdgeCall) async throws -> EdgeReply {
        var request = BrokerListAlpacaPositionsRequest()
        request.userID = try call.subject
        let positions = try await call.broker(BrokerAPI.listAlpacaPositions, request).positions.map { position -> [String: Any] in
            ["symbol": position.symbol, "qty": position.qty, "side": position.side, "market_value": position.marketValue,
             "avg_entry_price": position.avgEntryPrice, "unrealized_pl": position.unrealizedPl]
        }
        return .json(["positions": positions])
    }

    static let orderStatuses: Set<String> = ["open", "closed", "all"]

    static func listOrders(_ call: EdgeCall) async throws -> EdgeReply {
        var request = BrokerListAlpacaOrdersRequest()
        request.userID = try call.subject
        let query = call.request.uri.queryParameters
        var problems: [FieldProblem] = []
        if let status = query["status"].map(String.init) {
            if orderStatuses.contains(status) { request.status = status } else { problems.append(FieldProblem(name: "status", problem: "must_be_open_closed_or_all")) }
        }
        if let limit = query["limit"].map(String.init) {
            // Digits only: `Int("+5")` would pass, and a limit is never signed.
            if limit.utf8.count <= 3, limit.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }), let value = UInt32(limit), (1...500).contains(value) {
                request.limit = value
            } else {
                problems.append(FieldProblem(name: "limit", problem: "must_be_1_to_500"))
            }
        }
        if !problems.isEmpty { throw EdgeError.validation(problems, message: "the query parameters are invalid") }
        let orders = try await call.broker(BrokerAPI.listAlpacaOrders, request).orders.map(orderJSON)
        return .json(["orders": orders])
    }

    static func placeOrder(_ call: EdgeCall) async throws -> EdgeReply {
        let body = try await call.decode(PlaceOrderBody.self)
        var request = BrokerPlaceAlpacaOrderRequest()
        request.userID = try call.subject
        request.symbol = body.symbol
        request.side = body.side
        request.type = body.type
        request.timeInForce = body.timeInForce
        request.qty = body.qty ?? ""
        request.notional = body.notional ?? ""
        request.limitPrice = body.limitPrice ?? ""
        let order = try await call.broker(BrokerAPI.placeAlpacaOrder, request).order
        return .json(orderJSON(order), status: .created)
    }

    static func cancelOrder(_ call: EdgeCall) async throws -> EdgeReply {
        guard let orderID = call.parameters["orderId"] else { throw EdgeError.notFound() }
        var request = BrokerCancelAlpacaOrderRequest()
        request.userID = try call.subject
        request.orderID = orderID
        _ = try await call.broker(BrokerAPI.cancelAlpacaOrder, request)
        return .noContent
    }

    /// SPEC §3's order; unset decimals (empty strings) are null.
    static func orderJSON(_ order: BrokerAlpacaOrder) -> [String: Any] {
        func decimal(_ value: String) -> Any { value.isEmpty ? NSNull() : value }
        return ["id": order.id, "client_order_id": order.clientOrderID, "symbol": order.symbol, "side": order.side, "type": order.type,
                "time_in_force": order.timeInForce, "qty": decimal(order.qty), "notional": decimal(order.notional),
                "limit_price": decimal(order.limitPrice), "status": order.status, "filled_qty": decimal(order.filledQty),
                "submitted_at": order.submittedAt.isEmpty ? NSNull() : order.submittedAt]
    }
}

// MARK: Stripe Financial Connections and subscription

enum StripeRoutes {
    static func createSession(_ call: EdgeCall) async throws -> EdgeReply {
        _ = try await call.decodeOptional(EmptyBody.self)
        var request = BrokerCreateFinancialConnectionsSessionRequest()
        request.userID = try call.subject
        let response = try await call.broker(BrokerAPI.createFinancialConnectionsSession, request)
        return .json(["session_id": response.sessionID, "client_secret": response.clientSecret], status: .created)
    }

    static func linkAccounts(_ call: EdgeCall) async throws -> EdgeReply {
        let body = try await call.decode(LinkAccountsBody.self)
        var request = BrokerLinkFinancialConnectionsAccountsRequest()
        request.userID = try call.subject
        request.sessionID = body.sessionID
        let accounts = try await call.broker(BrokerAPI.linkFinancialConnectionsAccounts, request).accounts.map { account -> [String: Any] in
            ["id": account.id, "institution_name": account.institutionName, "last4": account.last4, "category": account.category]
        }
        return .json(["accounts": accounts])
    }

    static func balances(_ call: EdgeCall) async throws -> EdgeReply {
        var request = BrokerListBankBalancesRequest()
        request.userID = try call.subject
        let accounts = try await call.broker(BrokerAPI.listBankBalances, request).accounts.map { account -> [String: Any] in
            let balance: Any = account.hasBalance
                ? ["current": account.balance.current.reduce(into: [String: Any]()) { $0[$1.key] = $1.value }, "as_of": BrokerRoutes.time(account.balance.asOf)] as [String: Any]
                : NSNull()
            return ["id": account.id, "institution_name": account.institutionName, "last4": account.last4, "balance": balance,
                    "refresh_status": account.refreshStatus.isEmpty ? NSNull() : account.refreshStatus]
        }
        return .json(["accounts": accounts])
    }

    static func checkout(_ call: EdgeCall) async throws -> EdgeReply {
        let body = try await call.decodeOptional(CheckoutBody.self)
        var request = BrokerCreateSubscriptionCheckoutRequest()
        request.userID = try call.subject
        request.priceID = body.priceID ?? ""
        let response = try await call.broker(BrokerAPI.createSubscriptionCheckout, request)
        return .json(["checkout_url": response.checkoutURL, "session_id": response.sessionID], status: .created)
    }

    /// `{userId}` already equals the subject (the route table's owner check, C-7); the broker
    /// checks it again from `subject_user_id`.
    static func subscription(_ call: EdgeCall) async throws -> EdgeReply {
        guard let owner = call.parameters["userId"] else { throw EdgeError.notFound() }
        var request = BrokerGetSubscriptionRequest()
        request.userID = try call.subject
        request.subjectUserID = owner.lowercased()
        let response = try await call.broker(BrokerAPI.getSubscription, request)
        var object: [String: Any] = ["status": response.status]
        if response.currentPeriodEnd != 0 { object["current_period_end"] = BrokerRoutes.time(response.currentPeriodEnd) }
        return .json(object)
    }
}

// MARK: Stripe webhook

enum WebhookRoutes {
    static let signatureHeader = HTTPField.Name("Stripe-Signature")!

    /// Public: the signature is the authentication, and only the broker holds the secret. The body
    /// goes through byte for byte (a re-serialized body no longer verifies), never JSON-decoded here.
    static func stripe(_ call: EdgeCall) async throws -> EdgeReply {
        let signatures = call.request.headers[values: signatureHeader]
        guard signatures.count == 1, let signature = signatures.first, !signature.isEmpty else {
            throw EdgeError(.badRequest, code: "invalid_signature", message: RPCError.humanMessage(forCode: "invalid_signature"))
        }
        var request = BrokerHandleStripeWebhookRequest()
        request.payload = try await call.app.readBody(call.request, limit: min(call.app.configuration.maximumWebhookBodyBytes, call.app.configuration.maximumBodyBytes))
        request.signatureHeader = signature
        _ = try await call.broker(BrokerAPI.handleStripeWebhook, request)
        // A duplicate event is a success too: Stripe must stop retrying it.
        return .json(["received": true])
    }
}

// MARK: Admin: Fernet re-wrap (R-11, C-19)

enum FernetRotationRoutes {
    /// Batches per request at most, whatever the time budget (a broker answering instantly with
    /// `done == false` forever must not keep the request alive).
    static let maximumBatches = 1000

    /// The vault adds a key (unless an earlier re-wrap is unfinished: then this call finishes it),
    /// then every stored ciphertext is re-wrapped under it, calling `RewrapAll` until `done`, no
    /// progress, or the time budget: 200 when done, 202 with what remains otherwise (call again to
    /// continue; no second key is added while anything remains). Retiring the old key is an
    /// operator step (`clauctl broker retire-key`).
    static func rotate(_ call: EdgeCall) async throws -> EdgeReply {
        let deadline = ContinuousClock.now + call.app.configuration.fernetRewrapBudget
        let begun = try await call.broker(BrokerAPI.beginKeyRotation, BrokerBeginKeyRotationRequest())
        var rewrapped: UInt64 = 0
        var failed: UInt64 = 0
        var last = BrokerRewrapAllResponse()
        for _ in 0..<maximumBatches {
            last = try await call.broker(BrokerAPI.rewrapAll, BrokerRewrapAllRequest())
            rewrapped += last.rewrapped
            failed += last.failed
            if last.done || last.rewrapped == 0 || ContinuousClock.now >= deadline { break }
        }
        return .json(["key_added": begun.keyAdded, "rewrapped": rewrapped, "failed": failed, "remaining": last.remaining,
                      "done": last.done, "current_key_id": last.currentKeyID], status: last.done ? .ok : .accepted)
    }
}

// MARK: Readiness

enum ReadinessRoutes {
    /// Auth must answer a cheap call; a configured broker must have a live connection (the broker
    /// has no method that is cheap and means "ready", and its rotation methods are admin-grade).
    static func ready(_ call: EdgeCall) async throws -> EdgeReply {
        var authReady = true
        do {
            _ = try await call.app.auth.call(AuthAPI.getJWKS, AuthGetJWKSRequest(), requestID: call.requestID, timeout: .seconds(1))
        } catch {
            authReady = false
        }
        let broker = call.app.brokerTransport.map { $0.isConnected ? "ok" : "unavailable" } ?? "not_configured"
        let auth = authReady ? "ok" : "unavailable"
        guard authReady, broker != "unavailable" else {
            throw EdgeError.serviceUnavailable("not ready: auth \(auth), broker \(broker)")
        }
        return .json(["status": "ready", "checks": ["auth": auth, "broker": broker]])
    }
}

// MARK: Request bodies

struct AlpacaCallbackBody: StrictBody {
    static let allowedFields: Set<String> = ["code", "state"]
    var code: String
    var state: String
    init(from decoder: any Decoder) throws {
        try decoder.rejectUnknownFields(allowed: Self.allowedFields)
        let c = try decoder.container(keyedBy: AnyCodingKey.self)
        code = try c.decode(String.self, forKey: AnyCodingKey(stringValue: "code"))
        state = try c.decode(String.self, forKey: AnyCodingKey(stringValue: "state"))
    }
    func problems() -> [FieldProblem] {
        [Check.length(code, "code", max: 512), Check.length(state, "state", max: 128)].compactMap { $0 }
    }
}

/// `POST /v1/alpaca/orders`. Formats here; the order rules that join fields (exactly one of qty
/// and notional, limit_price only on limit orders, fractional orders market + day) are the
/// broker's and come back as 422 naming the field.
package struct PlaceOrderBody: StrictBody {
    package static let allowedFields: Set<String> = ["symbol", "side", "type", "time_in_force", "qty", "notional", "limit_price"]
    static let sides: Set<String> = ["buy", "sell"]
    static let types: Set<String> = ["market", "limit"]
    static let timesInForce: Set<String> = ["day", "gtc", "opg", "cls", "ioc", "fok"]
    var symbol: String
    var side: String
    var type: String
    var timeInForce: String
    var qty: String?
    var notional: String?
    var limitPrice: String?
    package init(from decoder: any Decoder) throws {
        try decoder.rejectUnknownFields(allowed: Self.allowedFields)
        let c = try decoder.container(keyedBy: AnyCodingKey.self)
        symbol = try c.decode(String.self, forKey: AnyCodingKey(stringValue: "symbol"))
        side = try c.decode(String.self, forKey: AnyCodingKey(stringValue: "side"))
        type = try c.decode(String.self, forKey: AnyCodingKey(stringValue: "type"))
        timeInForce = try c.decode(String.self, forKey: AnyCodingKey(stringValue: "time_in_force"))
        qty = try c.decodeUnlessAbsent(String.self, forKey: AnyCodingKey(stringValue: "qty"))
        notional = try c.decodeUnlessAbsent(String.self, forKey: AnyCodingKey(stringValue: "notional"))
        limitPrice = try c.decodeUnlessAbsent(String.self, forKey: AnyCodingKey(stringValue: "limit_price"))
    }
    package func problems() -> [FieldProblem] {
        var problems = [Check.length(symbol, "symbol", max: 32)].compactMap { $0 }
        if !Self.sides.contains(side) { problems.append(FieldProblem(name: "side", problem: "unsupported_value")) }
        if !Self.types.contains(type) { problems.append(FieldProblem(name: "type", problem: "unsupported_value")) }
        if !Self.timesInForce.contains(timeInForce) { problems.append(FieldProblem(name: "time_in_force", problem: "unsupported_value")) }
        for (name, value) in [("qty", qty), ("notional", notional), ("limit_price", limitPrice)] {
            if let value, !Self.isDecimal(value) { problems.append(FieldProblem(name: name, problem: "invalid_format")) }
        }
        return problems
    }
    /// A plain positive-or-zero decimal as Alpaca writes them: digits, at most one dot, ≤ 32 bytes.
    static func isDecimal(_ text: String) -> Bool {
        let parts = text.split(separator: ".", maxSplits: 2, omittingEmptySubsequences: false)
        return text.utf8.count <= 32 && (1...2).contains(parts.count)
            && parts.allSatisfy { !$0.isEmpty && $0.utf8.allSatisfy { $0 >= 0x30 && $0 <= 0x39 } }
    }
}

struct LinkAccountsBody: StrictBody {
    static let allowedFields: Set<String> = ["session_id"]
    var sessionID: String
    init(from decoder: any Decoder) throws {
        try decoder.rejectUnknownFields(allowed: Self.allowedFields)
        sessionID = try decoder.container(keyedBy: AnyCodingKey.self).decode(String.self, forKey: AnyCodingKey(stringValue: "session_id"))
    }
    func problems() -> [FieldProblem] { [Check.length(sessionID, "session_id", max: 128)].compactMap { $0 } }
}

struct CheckoutBody: StrictBody {
    static let allowedFields: Set<String> = ["price_id"]
    var priceID: String?
    init(from decoder: any Decoder) throws {
        try decoder.rejectUnknownFields(allowed: Self.allowedFields)
        priceID = try decoder.container(keyedBy: AnyCodingKey.self).decodeUnlessAbsent(String.self, forKey: AnyCodingKey(stringValue: "price_id"))
    }
    func problems() -> [FieldProblem] { priceID.flatMap { Check.length($0, "price_id", max: 128) }.map { [$0] } ?? [] }
}

/// A body with nothing in it (`{}`, or none at all).
struct EmptyBody: StrictBody {
    static let allowedFields: Set<String> = []
    init(from decoder: any Decoder) throws { try decoder.rejectUnknownFields(allowed: Self.allowedFields) }
    func problems() -> [FieldProblem] { [] }
}
