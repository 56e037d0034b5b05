import Foundation

/// An OAuth application registered with the fake Alpaca (what Alpaca's developer dashboard holds).
public struct AlpacaOAuthClient: Sendable {
    public var clientID: String
    public var clientSecret: String
    /// Exact-match allowlist, as Alpaca's "whitelisted" redirect URIs.
    public var redirectURIs: [String]

    public init(clientID: String, clientSecret: String, redirectURIs: [String]) {
        self.clientID = clientID
        self.clientSecret = clientSecret
        self.redirectURIs = redirectURIs
    }
}

public struct AlpacaFakeConfiguration: Sendable {
    public var clients: [AlpacaOAuthClient] = [
        AlpacaOAuthClient(clientID: "fake-alpaca-client", clientSecret: "fake-alpaca-secret",
                          redirectURIs: ["http://127.0.0.1:8080/v1/alpaca/oauth/callback"]),
    ]
    /// Requests per token per 60-second window; Alpaca's documented default is 200 a minute.
    public var requestsPerMinute = 200
    /// An authorization code not exchanged within this time is refused.
    public var authorizationCodeLifetime: TimeInterval = 600
    /// Cash of every newly linked (fake) account, in dollars.
    public var startingCash: Decimal = 100_000
    /// Prices the fake fills market orders at; other symbols trade at `defaultPrice`.
    public var prices: [String: Decimal] = ["AAPL": 190, "MSFT": 410, "SPY": 500, "TSLA": 250]
    public var defaultPrice: Decimal = 100
    /// The clock (tests move it to expire codes and rate-limit windows).
    public var now: @Sendable () -> Date = { Date() }

    public init() {}
}

/// Alpaca's error body, `{"code": <number>, "message": <string>}`. The numeric codes follow the
/// pattern of the ones Alpaca returns (HTTP status followed by four digits).
struct AlpacaError: Error {
    var status: Int
    var code: Int64
    var message: String
    var headers: [(name: String, value: String)] = []

    var response: FakeResponse {
        .json(status, ["code": .integer(code), "message": .string(message)], headers: headers)
    }

    static func invalid(_ message: String) -> AlpacaError { AlpacaError(status: 422, code: 40010001, message: message) }
    static func malformed(_ message: String) -> AlpacaError { AlpacaError(status: 400, code: 40010000, message: message) }
    static let unauthorized = AlpacaError(status: 401, code: 40110000, message: "request is not authorized")
    static func forbidden(_ message: String) -> AlpacaError { AlpacaError(status: 403, code: 40310000, message: message) }
    static let orderNotFound = AlpacaError(status: 404, code: 40410000, message: "order not found")
}

/// The trading operations of the Alpaca fake (paths from the Trading API contract).
public enum AlpacaOperation: Sendable {
    case account, positions, listOrders, placeOrder
    case getOrder(id: String)
    case cancelOrder(id: String)
}

/// The state of the fake Alpaca: registered apps, outstanding codes, issued tokens, and one paper
/// account per token. All of it lives in this actor, so concurrent requests see a consistent
/// order of events.
public actor AlpacaFake {
    struct PendingCode {
        var clientID: String
        var redirectURI: String
        var scope: String
        var issuedAt: Date
        var used: Bool
    }

    struct Position {
        var quantity: Decimal
        var costBasis: Decimal
    }

    struct Order {
        var id: UUID
        var sequence: Int
        var clientOrderID: String
        var symbol: String
        var quantity: Decimal?
        var notional: Decimal?
        var type: String
        var side: String
        var timeInForce: String
        var limitPrice: Decimal?
        var extendedHours: Bool
        var status: String
        var createdAt: Date
        var updatedAt: Date
        var filledAt: Date?
        var canceledAt: Date?
        var filledQuantity: Decimal
        var filledAveragePrice: Decimal?
    }

    struct Account {
        var id = UUID()
        var number: String
        var createdAt: Date
        var cash: Decimal
        var positions: [String: Position] = [:]
        var orders: [Order] = []
    }

    struct RateWindow {
        var start: Int64
        var count: Int
    }

    /// Bounds on state a long-running dev stack could otherwise grow without end.
    static let maximumOutstandingCodes = 10_000
    static let maximumOrdersPerAccount = 10_000

    public let configuration: AlpacaFakeConfiguration
    private var codes: [String: PendingCode] = [:]
    private var accountIDsByToken: [String: UUID] = [:]
    private var accounts: [UUID: Account] = [:]
    private var rateWindows: [String: RateWindow] = [:]
    private var orderSequence = 0

    public init(configuration: AlpacaFakeConfiguration) {
        self.configuration = configuration
    }

    // MARK: OAuth

    /// `GET /oauth/authorize`: Alpaca shows a consent page; the fake consents at once and redirects
    /// to the registered `redirect_uri` with `code` and the caller's `state`.
    public func authorize(_ request: FakeRequest) -> FakeResponse {
        let query = request.query
        guard query.value("response_type") == "code" else {
            return AlpacaError.malformed("response_type must be code").response
        }
        guard let clientID = query.value("client_id"), let client = client(clientID) else {
            return AlpacaError(status: 401, code: 40110000, message: "unknown client_id").response
        }
        guard let redirectURI = query.value("redirect_uri"), client.redirectURIs.contains(redirectURI) else {
            return AlpacaError.malformed("redirect_uri is not registered for this client").response
        }
        let scope = query.value("scope") ?? ""
        let allowedScopes: Set<Substring> = ["account:write", "trading", "data"]
        guard scope.split(separator: " ").allSatisfy(allowedScopes.contains) else {
            return AlpacaError.malformed("unknown scope").response
        }
        pruneCodes()
        guard codes.count < Self.maximumOutstandingCodes else {
            return AlpacaError(status: 429, code: 42910000, message: "too many outstanding authorization codes").response
        }
        let code = RandomIdentifier.hex(bytes: 16)
        codes[code] = PendingCode(clientID: clientID, redirectURI: redirectURI, scope: scope, issuedAt: configuration.now(), used: false)
        var location = redirectURI + (redirectURI.contains("?") ? "&" : "?") + "code=" + code
        if let state = query.value("state") {
            location += "&state=" + percentEncodeQueryComponent(state)
        }
        return FakeResponse(status: 302, headers: [("Location", location)])
    }

    /// `POST /oauth/token` (form body): exchanges a code once, for the client it was issued to and
    /// the same redirect URI.
    public func exchangeToken(_ request: FakeRequest) -> FakeResponse {
        let form: FormBody
        do {
            form = try FormBody(parsing: request.body)
        } catch {
            return AlpacaError.malformed(error.description).response
        }
        guard form.value("grant_type") == "authorization_code" else {
            return AlpacaError.malformed("grant_type must be authorization_code").response
        }
        guard let clientID = form.value("client_id"), let client = client(clientID),
              let secret = form.value("client_secret"),
              constantTimeEqual(secret, client.clientSecret) else {
            return AlpacaError(status: 401, code: 40110000, message: "invalid client credentials").response
        }
        guard let code = form.value("code"), let pending = codes[code], pending.clientID == clientID else {
            return AlpacaError.malformed("invalid authorization code").response
        }
        guard !pending.used else {
            return AlpacaError.malformed("authorization code has already been used").response
        }
        guard configuration.now().timeIntervalSince(pending.issuedAt) <= configuration.authorizationCodeLifetime else {
            return AlpacaError.malformed("authorization code has expired").response
        }
        guard form.value("redirect_uri") == pending.redirectURI else {
            return AlpacaError.malformed("redirect_uri does not match the authorization request").response
        }
        codes[code]?.used = true
        let token = RandomIdentifier.hex(bytes: 24)
        let now = configuration.now()
        let account = Account(number: "PA" + RandomIdentifier.make("", length: 10).uppercased(), createdAt: now, cash: configuration.startingCash)
        accounts[account.id] = account
        accountIDsByToken[token] = account.id
        return .json(200, ["access_token": .string(token), "token_type": "bearer", "scope": .string(pending.scope)])
    }

    private func client(_ clientID: String) -> AlpacaOAuthClient? {
        configuration.clients.first { $0.clientID == clientID }
    }

    /// Used codes are kept until they expire so a replay is told "already used", then dropped.
    private func pruneCodes() {
        let now = configuration.now()
        codes = codes.filter { now.timeIntervalSince($0.value.issuedAt) <= configuration.authorizationCodeLifetime }
    }

    // MARK: Trading

    /// Authentication, the per-token rate limit, then the operation.
    public func respond(to operation: AlpacaOperation, _ request: FakeRequest) -> FakeResponse {
        guard let token = request.bearerToken, let accountID = accountIDsByToken[token], var account = accounts[accountID] else {
            return AlpacaError.unauthorized.response
        }
        let (allowed, rateHeaders) = countRequest(token: token)
        guard allowed else {
            return AlpacaError(status: 429, code: 42910000, message: "rate limit exceeded", headers: rateHeaders).response
        }
        var response: FakeResponse
        do throws(AlpacaError) {
            switch operation {
            case .account: response = .json(200, accountJSON(account))
            case .positions: response = .json(200, .array(account.positions.sorted { $0.key < $1.key }.map { positionJSON(symbol: $0.key, $0.value) }))
            case .listOrders: response = .json(200, .array(try listOrders(account, query: request.query).map(orderJSON)))
            case .placeOrder: response = .json(200, orderJSON(try placeOrder(&account, body: request.body)))
            case .getOrder(let id): response = .json(200, orderJSON(try order(id, in: account)))
            case .cancelOrder(let id):
                try cancelOrder(id, in: &account)
                response = FakeResponse(status: 204)
            }
            accounts[accountID] = account
        } catch {
            response = error.response
        }
        response.headers += rateHeaders
        return response
    }

    /// A fixed 60-second window per token, with Alpaca's three `X-RateLimit-*` headers.
    private func countRequest(token: String) -> (Bool, [(name: String, value: String)]) {
        let now = Timestamp.unixSeconds(configuration.now())
        let windowStart = now - now % 60
        var window = rateWindows[token] ?? RateWindow(start: windowStart, count: 0)
        if window.start != windowStart { window = RateWindow(start: windowStart, count: 0) }
        let allowed = window.count < configuration.requestsPerMinute
        if allowed { window.count += 1 }
        rateWindows[token] = window
        let headers: [(name: String, value: String)] = [
            ("X-RateLimit-Limit", "\(configuration.requestsPerMinute)"),
            ("X-RateLimit-Remaining", "\(max(0, configuration.requestsPerMinute - window.count))"),
            ("X-RateLimit-Reset", "\(windowStart + 60)"),
        ]
        return (allowed, headers)
    }

    private func price(_ symbol: String) -> Decimal {
        configuration.prices[symbol] ?? configuration.defaultPrice
    }

    private func placeOrder(_ account: inout Account, body: [UInt8]) throws(AlpacaError) -> Order {
        guard let json = try? JSONValue.decode(body), case .object(let fields) = json else {
            throw .malformed("request body format is invalid")
        }
        func string(_ name: String) throws(AlpacaError) -> String? {
            switch fields[name] {
            case nil, .null?: return nil
            case .string(let value)?: return value
            default: throw .invalid("\(name) must be a string")
            }
        }
        guard let type = try string("type") else { throw .invalid("type is required") }
        guard ["market", "limit", "stop", "stop_limit", "trailing_stop"].contains(type) else { throw .invalid("invalid order type") }
        guard type == "market" || type == "limit" else { throw .invalid("order type \(type) is not supported by this fake") }
        guard let timeInForce = try string("time_in_force") else { throw .invalid("time_in_force is required") }
        guard ["day", "gtc", "opg", "cls", "ioc", "fok"].contains(timeInForce) else { throw .invalid("invalid time_in_force") }
        guard let symbol = try string("symbol"), Self.isValidSymbol(symbol) else { throw .invalid("symbol is required and must be a valid symbol") }
        guard let side = try string("side") else { throw .invalid("side is required") }
        guard side == "buy" || side == "sell" else { throw .invalid("invalid side") }
        if let orderClass = try string("order_class"), !["", "simple"].contains(orderClass) {
            throw .invalid("order_class \(orderClass) is not supported by this fake")
        }
        let quantity = try Self.positiveDecimal(try string("qty"), name: "qty")
        let notional = try Self.positiveDecimal(try string("notional"), name: "notional")
        switch (quantity, notional) {
        case (nil, nil): throw .invalid("qty or notional is required")
        case (.some, .some): throw .invalid("only one of qty or notional can be specified")
        default: break
        }
        if notional != nil, type != "market" || timeInForce != "day" {
            throw .invalid("notional orders must be market orders with time_in_force day")
        }
        var limitPrice: Decimal?
        if type == "limit" {
            guard let value = try Self.positiveDecimal(try string("limit_price"), name: "limit_price") else {
                throw .invalid("limit_price is required for limit orders")
            }
            limitPrice = value
        }
        let extendedHours: Bool
        switch fields["extended_hours"] {
        case nil, .null?: extendedHours = false
        case .bool(let value)?: extendedHours = value
        default: throw .invalid("extended_hours must be a boolean")
        }
        let clientOrderID = try string("client_order_id") ?? UUID().uuidString.lowercased()
        guard !clientOrderID.isEmpty, clientOrderID.count <= 128 else { throw .invalid("client_order_id must be 1 to 128 characters") }
        guard !account.orders.contains(where: { $0.clientOrderID == clientOrderID }) else {
            throw .invalid("client_order_id must be unique")
        }
        guard account.orders.count < Self.maximumOrdersPerAccount else { throw .forbidden("order limit of this fake account reached") }

        let marketPrice = price(symbol)
        let executionPrice = limitPrice ?? marketPrice
        let filledQuantity = quantity ?? Self.rounded(notional! / marketPrice, scale: 9)
        let cost = notional ?? quantity! * executionPrice
        if side == "buy" {
            guard cost <= account.cash else { throw .forbidden("insufficient buying power") }
        } else {
            let held = account.positions[symbol]?.quantity ?? 0
            guard filledQuantity <= held else {
                throw .forbidden("insufficient qty available for order (requested: \(filledQuantity), available: \(held))")
            }
        }
        let now = configuration.now()
        orderSequence += 1
        var order = Order(
            id: UUID(), sequence: orderSequence, clientOrderID: clientOrderID, symbol: symbol, quantity: quantity, notional: notional,
            type: type, side: side, timeInForce: timeInForce, limitPrice: limitPrice, extendedHours: extendedHours,
            status: "new", createdAt: now, updatedAt: now, filledAt: nil, canceledAt: nil, filledQuantity: 0, filledAveragePrice: nil
        )
        // Market orders fill at once at the fake's price; limit orders rest until canceled.
        if type == "market" {
            order.status = "filled"
            order.filledAt = now
            order.filledQuantity = filledQuantity
            order.filledAveragePrice = marketPrice
            var position = account.positions[symbol] ?? Position(quantity: 0, costBasis: 0)
            if side == "buy" {
                account.cash -= cost
                position.quantity += filledQuantity
                position.costBasis += cost
            } else {
                let proceeds = filledQuantity * marketPrice
                account.cash += proceeds
                position.costBasis -= position.quantity == 0 ? 0 : position.costBasis * filledQuantity / position.quantity
                position.quantity -= filledQuantity
            }
            account.positions[symbol] = position.quantity == 0 ? nil : position
        }
        account.orders.append(order)
        return order
    }

    private func listOrders(_ account: Account, query: FormBody) throws(AlpacaError) -> [Order] {
        let status = query.value("status") ?? "open"
        guard ["open", "closed", "all"].contains(status) else { throw .invalid("invalid status") }
        var limit = 50
        if let text = query.value("limit") {
            guard let value = Int(text), value > 0 else { throw .invalid("invalid limit") }
            limit = min(value, 500)
        }
        let direction = query.value("direction") ?? "desc"
        guard direction == "asc" || direction == "desc" else { throw .invalid("invalid direction") }
        var after: Date?
        var until: Date?
        if let text = query.value("after") {
            guard let date = Timestamp.parseRFC3339(text) else { throw .invalid("invalid after") }
            after = date
        }
        if let text = query.value("until") {
            guard let date = Timestamp.parseRFC3339(text) else { throw .invalid("invalid until") }
            until = date
        }
        let symbols = query.value("symbols").map { Set($0.split(separator: ",").map(String.init)) }
        let openStatuses: Set<String> = ["new", "accepted", "partially_filled", "pending_new"]
        let selected = account.orders.filter { order in
            switch status {
            case "open": guard openStatuses.contains(order.status) else { return false }
            case "closed": guard !openStatuses.contains(order.status) else { return false }
            default: break
            }
            if let after, order.createdAt <= after { return false }
            if let until, order.createdAt >= until { return false }
            if let symbols, !symbols.contains(order.symbol) { return false }
            return true
        }
        let sorted = selected.sorted { direction == "asc" ? $0.sequence < $1.sequence : $0.sequence > $1.sequence }
        return Array(sorted.prefix(limit))
    }

    private func order(_ id: String, in account: Account) throws(AlpacaError) -> Order {
        guard let uuid = UUID(uuidString: id) else { throw .invalid("order_id must be a UUID") }
        guard let order = account.orders.first(where: { $0.id == uuid }) else { throw .orderNotFound }
        return order
    }

    private func cancelOrder(_ id: String, in account: inout Account) throws(AlpacaError) {
        let order = try order(id, in: account)
        guard ["new", "accepted", "partially_filled", "pending_new"].contains(order.status) else {
            throw AlpacaError(status: 422, code: 42210000, message: "order is not cancelable (status: \(order.status))")
        }
        let now = configuration.now()
        if let index = account.orders.firstIndex(where: { $0.id == order.id }) {
            account.orders[index].status = "canceled"
            account.orders[index].canceledAt = now
            account.orders[index].updatedAt = now
        }
    }

    // MARK: Shapes

    static func isValidSymbol(_ symbol: String) -> Bool {
        // Equities (`AAPL`, `BRK.B`) and crypto pairs (`BTC/USD`).
        let parts = symbol.split(separator: "/", omittingEmptySubsequences: false)
        guard (1...2).contains(parts.count), symbol.utf8.count <= 16 else { return false }
        return parts.allSatisfy { part in
            !part.isEmpty && part.allSatisfy { ($0.isASCII && $0.isUppercase) || $0.isNumber || $0 == "." }
        }
    }

    /// A positive decimal string with at most 9 fractional digits (Alpaca's precision), or nil.
    static func positiveDecimal(_ text: String?, name: String) throws(AlpacaError) -> Decimal? {
        guard let text else { return nil }
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        let digitsOnly = parts.allSatisfy { !$0.isEmpty && $0.allSatisfy { $0.isASCII && $0.isNumber } }
        guard digitsOnly, parts.count <= 2, (parts.count == 1 || parts[1].count <= 9), text.count <= 32,
              let value = Decimal(string: text), value > 0 else {
            throw .invalid("\(name) must be a positive decimal string")
        }
        return value
    }

    static func rounded(_ value: Decimal, scale: Int) -> Decimal {
        var input = value
        var result = Decimal()
        NSDecimalRound(&result, &input, scale, .down)
        return result
    }

    static func decimalString(_ value: Decimal) -> String { "\(value)" }

    /// A stable asset id per symbol (Alpaca's asset ids are UUIDs).
    static func assetID(_ symbol: String) -> String {
        var bytes = Array(StripeWebhookSigner.hmacSHA256Hex(key: Array("asset".utf8), message: Array(symbol.utf8)).prefix(32))
        bytes[12] = "4"
        let text = String(bytes)
        let i = text.startIndex
        func slice(_ from: Int, _ to: Int) -> Substring { text[text.index(i, offsetBy: from)..<text.index(i, offsetBy: to)] }
        return "\(slice(0, 8))-\(slice(8, 12))-\(slice(12, 16))-\(slice(16, 20))-\(slice(20, 32))"
    }

    private func marketValue(_ account: Account) -> Decimal {
        account.positions.reduce(Decimal(0)) { $0 + $1.value.quantity * price($1.key) }
    }

    func accountJSON(_ account: Account) -> JSONValue {
        let cash = Self.decimalString(account.cash)
        let longValue = marketValue(account)
        let equity = Self.decimalString(account.cash + longValue)
        return [
            "id": .string(account.id.uuidString.lowercased()),
            "account_number": .string(account.number),
            "status": "ACTIVE",
            "crypto_status": "ACTIVE",
            "currency": "USD",
            "cash": .string(cash),
            "buying_power": .string(cash),
            "regt_buying_power": .string(cash),
            "daytrading_buying_power": "0",
            "non_marginable_buying_power": .string(cash),
            "options_buying_power": .string(cash),
            "equity": .string(equity),
            "last_equity": .string(equity),
            "portfolio_value": .string(equity),
            "long_market_value": .string(Self.decimalString(longValue)),
            "short_market_value": "0",
            "initial_margin": "0",
            "maintenance_margin": "0",
            "last_maintenance_margin": "0",
            "sma": "0",
            "multiplier": "1",
            "accrued_fees": "0",
            "intraday_adjustments": "0",
            "pending_reg_taf_fees": "0",
            "pending_transfer_in": "0",
            "pending_transfer_out": "0",
            "daytrade_count": 0,
            "options_approved_level": 0,
            "options_trading_level": 0,
            "pattern_day_trader": false,
            "shorting_enabled": false,
            "trading_blocked": false,
            "transfers_blocked": false,
            "account_blocked": false,
            "trade_suspended_by_user": false,
            "created_at": .string(Timestamp.rfc3339(account.createdAt)),
            "balance_asof": .string(Timestamp.day(configuration.now())),
        ]
    }

    func positionJSON(symbol: String, _ position: Position) -> JSONValue {
        let current = price(symbol)
        let marketValue = position.quantity * current
        let averageEntry = Self.rounded(position.costBasis / position.quantity, scale: 9)
        let unrealized = marketValue - position.costBasis
        let percent = position.costBasis == 0 ? 0 : Self.rounded(unrealized / position.costBasis, scale: 9)
        return [
            "asset_id": .string(Self.assetID(symbol)),
            "symbol": .string(symbol),
            "exchange": symbol.contains("/") ? "" : "NASDAQ",
            "asset_class": symbol.contains("/") ? "crypto" : "us_equity",
            "asset_marginable": .bool(!symbol.contains("/")),
            "qty": .string(Self.decimalString(position.quantity)),
            "qty_available": .string(Self.decimalString(position.quantity)),
            "side": "long",
            "avg_entry_price": .string(Self.decimalString(averageEntry)),
            "market_value": .string(Self.decimalString(marketValue)),
            "cost_basis": .string(Self.decimalString(position.costBasis)),
            "unrealized_pl": .string(Self.decimalString(unrealized)),
            "unrealized_plpc": .string(Self.decimalString(percent)),
            "unrealized_intraday_pl": .string(Self.decimalString(unrealized)),
            "unrealized_intraday_plpc": .string(Self.decimalString(percent)),
            "current_price": .string(Self.decimalString(current)),
            "lastday_price": .string(Self.decimalString(current)),
            "change_today": "0",
        ]
    }

    func orderJSON(_ order: Order) -> JSONValue {
        func time(_ date: Date?) -> JSONValue { .optional(date.map(Timestamp.rfc3339)) }
        func decimal(_ value: Decimal?) -> JSONValue { .optional(value.map(Self.decimalString)) }
        return [
            "id": .string(order.id.uuidString.lowercased()),
            "client_order_id": .string(order.clientOrderID),
            "created_at": time(order.createdAt),
            "updated_at": time(order.updatedAt),
            "submitted_at": time(order.createdAt),
            "filled_at": time(order.filledAt),
            "expired_at": nil,
            "canceled_at": time(order.canceledAt),
            "failed_at": nil,
            "replaced_at": nil,
            "replaced_by": nil,
            "replaces": nil,
            "asset_id": .string(Self.assetID(order.symbol)),
            "symbol": .string(order.symbol),
            "asset_class": order.symbol.contains("/") ? "crypto" : "us_equity",
            "notional": decimal(order.notional),
            "qty": decimal(order.quantity),
            "filled_qty": .string(Self.decimalString(order.filledQuantity)),
            "filled_avg_price": decimal(order.filledAveragePrice),
            "order_class": "",
            "order_type": .string(order.type),
            "type": .string(order.type),
            "side": .string(order.side),
            "time_in_force": .string(order.timeInForce),
            "limit_price": decimal(order.limitPrice),
            "stop_price": nil,
            "status": .string(order.status),
            "extended_hours": .bool(order.extendedHours),
            "legs": nil,
            "trail_percent": nil,
            "trail_price": nil,
            "hwm": nil,
        ]
    }
}

/// Compares secrets without an early exit on the first differing byte.
func constantTimeEqual(_ lhs: String, _ rhs: String) -> Bool {
    let left = Array(lhs.utf8)
    let right = Array(rhs.utf8)
    guard left.count == right.count else { return false }
    var difference: UInt8 = 0
    for index in left.indices { difference |= left[index] ^ right[index] }
    return difference == 0
}
