import AsyncHTTPClient
import Foundation
import Logging
import NIOHTTP1
import RPC

public struct AlpacaConfiguration: Sendable {
    /// `https://paper-api.alpaca.markets` or `https://api.alpaca.markets` (or `http://127.0.0.1:PORT`, the fakes).
    public var apiBaseURL: String
    /// `https://api.alpaca.markets/oauth/token`.
    public var oauthTokenURL: String
    public var clientID: String
    /// Never logged, never in an error message (C-11/R-10).
    public var clientSecret: String
    public var redirectURI: String

    public init(apiBaseURL: String, oauthTokenURL: String, clientID: String, clientSecret: String, redirectURI: String) {
        self.apiBaseURL = apiBaseURL
        self.oauthTokenURL = oauthTokenURL
        self.clientID = clientID
        self.clientSecret = clientSecret
        self.redirectURI = redirectURI
    }
}

/// What `POST /oauth/token` grants. `accessToken` goes to the vault at once and is never logged.
public struct AlpacaOAuthGrant: Sendable {
    public let accessToken: String
    public let scope: String
    public let tokenType: String
}

/// Alpaca's OAuth token endpoint and Trading API on one user's behalf (their bearer token).
///
/// Retries: GET and DELETE are idempotent and retried after 429/5xx/transport failures. The OAuth
/// code exchange is never retried (a code is single use: a second try after a lost answer would be
/// refused anyway and could hide the first grant). `POST /v2/orders` is **not** retried either:
/// `client_order_id` makes a resubmission detectable at Alpaca (422 "client_order_id must be
/// unique"), but turning that 422 into the existing order needs
/// `GET /v2/orders:by_client_order_id`, which neither `../shared/contracts/alpaca` nor the fakes
/// provide. So a failed placement surfaces as UNAVAILABLE and the caller may resubmit the same
/// `ValidatedAlpacaOrder` (same `clientOrderID`), which Alpaca refuses rather than buying twice.
public struct AlpacaClient: Sendable {
    let configuration: AlpacaConfiguration
    let apiBase: String
    let tokenURL: String
    let http: ProviderHTTP

    public static let unavailable = "alpaca_unavailable"
    public static let invalidGrant = "invalid_grant"

    /// Throws `ProviderConfigurationError` if a URL is not https (http only to 127.0.0.0/8,
    /// localhost or ::1).
    public init(configuration: AlpacaConfiguration, http: ProviderHTTP) throws {
        self.configuration = configuration
        self.apiBase = try ProviderURL.validatedBase(configuration.apiBaseURL, setting: "alpaca api base URL")
        self.tokenURL = try ProviderURL.validatedBase(configuration.oauthTokenURL, setting: "alpaca oauth token URL")
        self.http = http
    }

    /// Form POST `grant_type=authorization_code`, `code`, `client_id`, `client_secret`,
    /// `redirect_uri`. Not retried (a code is single use). 400/401 → INVALID_ARGUMENT
    /// `invalid_grant`; 5xx, transport → UNAVAILABLE.
    public func exchangeCode(_ code: String, logger: Logger) async throws -> AlpacaOAuthGrant {
        guard !code.isEmpty, code.utf8.count <= 512, !UntrustedText.containsControlCharacter(code) else {
            throw RPCError(code: .invalidArgument, message: Self.invalidGrant)
        }
        let body = FormEncoding.encode([
            ("grant_type", "authorization_code"), ("code", code), ("client_id", configuration.clientID),
            ("client_secret", configuration.clientSecret), ("redirect_uri", configuration.redirectURI),
        ])
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: "application/x-www-form-urlencoded")
        headers.add(name: "Accept", value: "application/json")
        let request = ProviderRequest(method: .POST, pathTemplate: "/oauth/token", url: tokenURL, headers: headers, body: body, idempotent: false)
        let response = try await send(request, logger: logger)
        switch response.status {
        case 200...299:
            do {
                let json = try ProviderJSON.parse(response.body)
                let token = try json.string("access_token")
                guard token.utf8.count <= 4096, UntrustedText.isPrintableASCII(token) else { throw ProviderJSON.Malformed() }
                return AlpacaOAuthGrant(accessToken: token, scope: try json.optionalString("scope"), tokenType: try json.optionalString("token_type"))
            } catch {
                throw malformed(request, response, logger: logger)
            }
        case 400, 401:
            if response.status == 401 {
                // Alpaca also answers 401 for wrong client credentials: our configuration, so say
                // so in our log (without the secret); the user still sees invalid_grant.
                logger.warning("alpaca refused the oauth client credentials or code", metadata: ["provider": "alpaca", "status": "401"])
            }
            throw RPCError(code: .invalidArgument, message: Self.invalidGrant)
        case 429:
            throw AlpacaErrorMapping.rpcError(status: 429, body: response.body, retryAfterSeconds: retryAfterSeconds(response))
        case 500...599:
            throw RPCError(code: .unavailable, message: Self.unavailable)
        default:
            throw RPCError(code: .internalError, message: "internal error")
        }
    }

    public func account(token: String, logger: Logger) async throws -> BrokerAlpacaAccount {
        let (request, response) = try await trading(.GET, "/v2/account", template: "/v2/account", token: token, logger: logger)
        do {
            let json = try ProviderJSON.parse(response.body)
            var account = BrokerAlpacaAccount()
            account.id = try json.string("id")
            account.status = try json.string("status")
            account.currency = try json.optionalString("currency")
            account.cash = try json.optionalString("cash")
            account.buyingPower = try json.optionalString("buying_power")
            account.equity = try json.optionalString("equity")
            account.portfolioValue = try json.optionalString("portfolio_value")
            return account
        } catch {
            throw malformed(request, response, logger: logger)
        }
    }

    public func positions(token: String, logger: Logger) async throws -> [BrokerAlpacaPosition] {
        let (request, response) = try await trading(.GET, "/v2/positions", template: "/v2/positions", token: token, logger: logger)
        do {
            return try ProviderJSON.parse(response.body).array().map { json throws(ProviderJSON.Malformed) in
                var position = BrokerAlpacaPosition()
                position.symbol = try json.string("symbol")
                position.qty = try json.optionalString("qty")
                position.side = try json.optionalString("side")
                position.marketValue = try json.optionalString("market_value")
                position.avgEntryPrice = try json.optionalString("avg_entry_price")
                position.unrealizedPl = try json.optionalString("unrealized_pl")
                return position
            }
        } catch {
            throw malformed(request, response, logger: logger)
        }
    }

    public func orders(token: String, query: AlpacaOrderListQuery, logger: Logger) async throws -> [BrokerAlpacaOrder] {
        let path = "/v2/orders?status=\(query.status.rawValue)&limit=\(query.limit)"
        let (request, response) = try await trading(.GET, path, template: "/v2/orders", token: token, logger: logger)
        do {
            return try ProviderJSON.parse(response.body).array().map { json throws(ProviderJSON.Malformed) in try Self.order(json) }
        } catch {
            throw malformed(request, response, logger: logger)
        }
    }

    /// `POST /v2/orders` with the validated order and its `client_order_id`. Not retried (see the
    /// type's comment): a transport failure or 5xx answers UNAVAILABLE and the caller may resubmit
    /// the same validated order.
    public func placeOrder(token: String, order: ValidatedAlpacaOrder, logger: Logger) async throws -> BrokerAlpacaOrder {
        var fields: [String: String] = [
            "symbol": order.symbol, "side": order.side.rawValue, "type": order.type.rawValue,
            "time_in_force": order.timeInForce.rawValue, "client_order_id": order.clientOrderID,
        ]
        switch order.amount {
        case .quantity(let qty): fields["qty"] = qty
        case .notional(let notional): fields["notional"] = notional
        }
        if let limitPrice = order.limitPrice { fields["limit_price"] = limitPrice }
        let body: [UInt8]
        do {
            let encoder = JSONEncoder()
            encoder.outputFormatting = .sortedKeys
            body = Array(try encoder.encode(fields))
        } catch {
            throw RPCError(code: .internalError, message: "internal error")
        }
        let (request, response) = try await trading(.POST, "/v2/orders", template: "/v2/orders", token: token, body: body, logger: logger)
        do {
            return try Self.order(try ProviderJSON.parse(response.body))
        } catch {
            throw malformed(request, response, logger: logger)
        }
    }

    /// `DELETE /v2/orders/{id}`; `orderID` was validated by the caller and is checked again here.
    public func cancelOrder(token: String, orderID: String, logger: Logger) async throws {
        let id: String
        do {
            id = try ProviderIdentifiers.alpacaOrderID(orderID)
        } catch {
            throw error.rpcError
        }
        _ = try await trading(.DELETE, "/v2/orders/\(id)", template: "/v2/orders/{id}", token: token, logger: logger)
    }

    // MARK: Plumbing

    static func order(_ json: ProviderJSON) throws(ProviderJSON.Malformed) -> BrokerAlpacaOrder {
        var order = BrokerAlpacaOrder()
        order.id = try json.string("id")
        order.clientOrderID = try json.optionalString("client_order_id")
        order.symbol = try json.string("symbol")
        order.side = try json.optionalString("side")
        order.type = try json.optionalString("type")
        if order.type.isEmpty { order.type = try json.optionalString("order_type") }
        order.timeInForce = try json.optionalString("time_in_force")
        order.qty = try json.optionalString("qty")
        order.notional = try json.optionalString("notional")
        order.limitPrice = try json.optionalString("limit_price")
        order.status = try json.string("status")
        order.filledQty = try json.optionalString("filled_qty")
        order.submittedAt = try json.optionalString("submitted_at")
        return order
    }

    /// One Trading API call with the user's bearer token; a non-2xx answer becomes
    /// `AlpacaErrorMapping`'s error (401 → CONFLICT `alpaca_connection_lost`).
    private func trading(
        _ method: HTTPMethod, _ pathAndQuery: String, template: String, token: String, body: [UInt8]? = nil, logger: Logger
    ) async throws -> (ProviderRequest, ProviderResponse) {
        guard !token.isEmpty, token.utf8.count <= 4096, UntrustedText.isPrintableASCII(token) else {
            // A token that cannot be a header value cannot be Alpaca's: treat it as lost.
            throw RPCError(code: .conflict, message: AlpacaErrorMapping.connectionLost, details: ["reconnect": "true"])
        }
        var headers = HTTPHeaders()
        headers.add(name: "Authorization", value: "Bearer \(token)")
        headers.add(name: "Accept", value: "application/json")
        if body != nil { headers.add(name: "Content-Type", value: "application/json") }
        let request = ProviderRequest(
            method: method, pathTemplate: template, url: apiBase + pathAndQuery, headers: headers, body: body,
            idempotent: method == .GET || method == .DELETE
        )
        let response = try await send(request, logger: logger)
        guard (200...299).contains(response.status) else {
            throw AlpacaErrorMapping.rpcError(status: response.status, body: response.body, retryAfterSeconds: retryAfterSeconds(response))
        }
        return (request, response)
    }

    private func send(_ request: ProviderRequest, logger: Logger) async throws -> ProviderResponse {
        do {
            return try await http.send(request, logger: logger) { response in
                Self.retryAfterSeconds(response).map { .seconds($0) }
            }
        } catch {
            switch error {
            case .overloaded:
                throw RPCError(code: .resourceExhausted, message: "alpaca_overloaded", details: ["retry_after": "1"])
            case .cancelled:
                throw RPCError(code: .cancelled, message: "cancelled")
            case .circuitOpen, .transport, .responseTooLarge:
                throw RPCError(code: .unavailable, message: Self.unavailable)
            }
        }
    }

    private func retryAfterSeconds(_ response: ProviderResponse) -> Int? { Self.retryAfterSeconds(response) }

    /// `Retry-After` (seconds) when present, else `X-RateLimit-Reset` (Unix seconds).
    static func retryAfterSeconds(_ response: ProviderResponse) -> Int? {
        guard response.status == 429 else { return nil }
        if let text = response.headers.first(name: "retry-after"), text.utf8.count <= 6, let seconds = Int(text), seconds >= 0 {
            return seconds
        }
        return AlpacaErrorMapping.retryAfter(
            rateLimitReset: response.headers.first(name: "x-ratelimit-reset"), now: Int64(Date().timeIntervalSince1970)
        )
    }

    /// A 2xx whose body is not what Alpaca sends: a provider failure, logged with the path template
    /// and status only.
    private func malformed(_ request: ProviderRequest, _ response: ProviderResponse, logger: Logger) -> RPCError {
        logger.warning(
            "provider answered a malformed body",
            metadata: ["provider": "alpaca", "method": "\(request.method.rawValue)", "path": "\(request.pathTemplate)", "status": "\(response.status)"]
        )
        return RPCError(code: .unavailable, message: Self.unavailable)
    }
}
