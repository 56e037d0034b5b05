import AsyncHTTPClient
import Foundation
import Logging
import NIOHTTP1
import RPC

public struct StripeConfiguration: Sendable {
    /// `https://api.stripe.com` (or the fakes).
    public var apiBaseURL: String
    /// The platform's `sk_…` key: never logged, never in an error message (C-11/R-10).
    public var secretKey: String

    public init(apiBaseURL: String, secretKey: String) {
        self.apiBaseURL = apiBaseURL
        self.secretKey = secretKey
    }
}

public struct StripeFinancialConnectionsSession: Sendable {
    public let id: String
    public let clientSecret: String
    public let customerID: String?
    public let accountIDs: [String]
}

public struct StripeSubscription: Sendable {
    public let id: String
    public let status: String
    public let currentPeriodEnd: Int64
    public let customerID: String
}

public struct StripeCheckoutSession: Sendable {
    public let id: String
    /// Checkout's hosted page; "" once the session is no longer open.
    public let url: String
    public let subscriptionID: String?
    public let customerID: String?
}

/// Stripe's API with the platform key. Every POST is form-encoded and carries the caller's
/// `Idempotency-Key`, so it is retried (after 429/5xx/transport failures) with the same key: Stripe
/// replays the first result instead of acting twice. GETs are retried as well.
public struct StripeClient: Sendable {
    let apiBase: String
    let secretKey: String
    let http: ProviderHTTP

    public static let unavailable = "stripe_unavailable"
    public static let rejected = "stripe_rejected_request"
    /// The API version the contracts (`../shared/contracts/stripe`) describe; pinned so a change of
    /// the account's default version cannot move fields under the broker.
    public static let apiVersion = "2023-08-16"

    public init(configuration: StripeConfiguration, http: ProviderHTTP) throws {
        self.apiBase = try ProviderURL.validatedBase(configuration.apiBaseURL, setting: "stripe api base URL")
        guard configuration.secretKey.hasPrefix("sk_") || configuration.secretKey.hasPrefix("rk_"),
            configuration.secretKey.utf8.count <= 512, UntrustedText.isPrintableASCII(configuration.secretKey),
            !configuration.secretKey.contains(" ")
        else { throw ProviderConfigurationError(setting: "stripe secret key", problem: "is not an sk_/rk_ key") }
        self.secretKey = configuration.secretKey
        self.http = http
    }

    /// `POST /v1/customers` with `metadata[user_id]`; returns the `cus_…` id.
    public func createCustomer(userID: UUID, idempotencyKey: String, logger: Logger) async throws -> String {
        let json = try await call(
            .POST, "/v1/customers", template: "/v1/customers",
            form: [("metadata[user_id]", userID.uuidString.lowercased())], idempotencyKey: idempotencyKey, logger: logger
        )
        return try decode("/v1/customers") { () throws(ProviderJSON.Malformed) in try Self.validID(try json.value.string("id"), .customer) }
    }

    /// `POST /v1/financial_connections/sessions`: `account_holder[type]=customer`,
    /// `account_holder[customer]`, `permissions[]=balances`.
    public func createFinancialConnectionsSession(customerID: String, idempotencyKey: String, logger: Logger) async throws -> StripeFinancialConnectionsSession {
        let customerID = try Self.checkedID(customerID, .customer, field: "customer_id")
        let template = "/v1/financial_connections/sessions"
        let json = try await call(
            .POST, template, template: template,
            form: [("account_holder[type]", "customer"), ("account_holder[customer]", customerID), ("permissions[]", "balances")],
            idempotencyKey: idempotencyKey, logger: logger
        )
        return try decode(template) { () throws(ProviderJSON.Malformed) in try Self.session(json.value) }
    }

    public func financialConnectionsSession(id: String, logger: Logger) async throws -> StripeFinancialConnectionsSession {
        let id = try Self.checkedID(id, .financialConnectionsSession, field: "session_id")
        let template = "/v1/financial_connections/sessions/{id}"
        let json = try await call(.GET, "/v1/financial_connections/sessions/\(id)", template: template, logger: logger)
        return try decode(template) { () throws(ProviderJSON.Malformed) in try Self.session(json.value) }
    }

    /// Maps `balance` (`current` in minor units, `as_of`, `type`) and `balance_refresh.status` →
    /// `refresh_status`.
    public func financialConnectionsAccount(id: String, logger: Logger) async throws -> BrokerLinkedBankAccount {
        let id = try Self.checkedID(id, .financialConnectionsAccount, field: "account_id")
        let template = "/v1/financial_connections/accounts/{id}"
        let json = try await call(.GET, "/v1/financial_connections/accounts/\(id)", template: template, logger: logger)
        return try decode(template) { () throws(ProviderJSON.Malformed) in try Self.account(json.value) }
    }

    /// `POST /v1/financial_connections/accounts/{id}/refresh` with `features[]=balance`.
    public func refreshBalance(accountID: String, idempotencyKey: String, logger: Logger) async throws -> BrokerLinkedBankAccount {
        let id = try Self.checkedID(accountID, .financialConnectionsAccount, field: "account_id")
        let template = "/v1/financial_connections/accounts/{id}/refresh"
        let json = try await call(
            .POST, "/v1/financial_connections/accounts/\(id)/refresh", template: template,
            form: [("features[]", "balance")], idempotencyKey: idempotencyKey, logger: logger
        )
        return try decode(template) { () throws(ProviderJSON.Malformed) in try Self.account(json.value) }
    }

    /// `POST /v1/checkout/sessions`: `mode=subscription`, `customer`, `line_items[0][price]`,
    /// `line_items[0][quantity]=1`, `success_url`, `cancel_url`, `client_reference_id`.
    public func createSubscriptionCheckout(
        customerID: String, priceID: String, successURL: String, cancelURL: String, clientReferenceID: String,
        idempotencyKey: String, logger: Logger
    ) async throws -> StripeCheckoutSession {
        let customerID = try Self.checkedID(customerID, .customer, field: "customer_id")
        let priceID = try Self.checkedID(priceID, .price, field: "price_id")
        for (field, value) in [("success_url", successURL), ("cancel_url", cancelURL), ("client_reference_id", clientReferenceID)] {
            guard !value.isEmpty, value.utf8.count <= 2048, UntrustedText.isPrintableASCII(value) else {
                throw FieldValidationError(field: field, problem: value.isEmpty ? .missing : .invalidFormat).rpcError
            }
        }
        let template = "/v1/checkout/sessions"
        let json = try await call(
            .POST, template, template: template,
            form: [
                ("mode", "subscription"), ("customer", customerID), ("line_items[0][price]", priceID), ("line_items[0][quantity]", "1"),
                ("success_url", successURL), ("cancel_url", cancelURL), ("client_reference_id", clientReferenceID),
            ],
            idempotencyKey: idempotencyKey, logger: logger
        )
        return try decode(template) { () throws(ProviderJSON.Malformed) in
            let value = json.value
            return StripeCheckoutSession(
                id: try Self.validID(try value.string("id"), .checkoutSession),
                url: try value.optionalString("url"),
                subscriptionID: try Self.optionalReference(value, "subscription", .subscription),
                customerID: try Self.optionalReference(value, "customer", .customer)
            )
        }
    }

    public func subscription(id: String, logger: Logger) async throws -> StripeSubscription {
        let id = try Self.checkedID(id, .subscription, field: "subscription_id")
        let template = "/v1/subscriptions/{id}"
        let json = try await call(.GET, "/v1/subscriptions/\(id)", template: template, logger: logger)
        return try decode(template) { () throws(ProviderJSON.Malformed) in
            let value = json.value
            // API 2023-08-16 has current_period_end on the subscription; newer versions moved it
            // to the items: take either.
            var periodEnd = try value.optionalInteger("current_period_end")
            if periodEnd == nil, let items = try value.optionalObject("items"), case .array(let data)? = items["data"], let first = data.first {
                periodEnd = try first.optionalInteger("current_period_end")
            }
            guard let periodEnd, let customerID = try Self.optionalReference(value, "customer", .customer) else { throw ProviderJSON.Malformed() }
            return StripeSubscription(
                id: try Self.validID(try value.string("id"), .subscription), status: try value.string("status"),
                currentPeriodEnd: periodEnd, customerID: customerID
            )
        }
    }

    // MARK: Decoding

    static func session(_ value: ProviderJSON) throws(ProviderJSON.Malformed) -> StripeFinancialConnectionsSession {
        var customerID: String?
        if let holder = try value.optionalObject("account_holder") {
            customerID = try optionalReference(holder, "customer", .customer)
        }
        var accountIDs: [String] = []
        if let accounts = try value.optionalObject("accounts") {
            switch accounts["data"] {
            case nil, .null?: break
            case .array(let data)?:
                for account in data { accountIDs.append(try validID(try account.string("id"), .financialConnectionsAccount)) }
            default: throw ProviderJSON.Malformed()
            }
        }
        return StripeFinancialConnectionsSession(
            id: try validID(try value.string("id"), .financialConnectionsSession), clientSecret: try value.string("client_secret"),
            customerID: customerID, accountIDs: accountIDs
        )
    }

    static func account(_ value: ProviderJSON) throws(ProviderJSON.Malformed) -> BrokerLinkedBankAccount {
        var account = BrokerLinkedBankAccount()
        account.id = try validID(try value.string("id"), .financialConnectionsAccount)
        account.institutionName = try value.optionalString("institution_name")
        account.last4 = try value.optionalString("last4")
        account.category = try value.optionalString("category")
        if let balance = try value.optionalObject("balance") {
            var mapped = BrokerBankBalance()
            if let current = try balance.optionalObject("current") {
                for (currency, amount) in try current.object() {
                    guard case .integer(let minor) = amount, currency.utf8.count <= 8 else { throw ProviderJSON.Malformed() }
                    mapped.current[currency] = minor
                }
            }
            mapped.asOf = try balance.optionalInteger("as_of") ?? 0
            mapped.type = try balance.optionalString("type")
            account.balance = mapped
        }
        if let refresh = try value.optionalObject("balance_refresh") {
            account.refreshStatus = try refresh.optionalString("status")
        }
        return account
    }

    /// An id field that may be a string, an expanded object with an `id`, or null.
    static func optionalReference(
        _ value: ProviderJSON, _ key: String, _ kind: ProviderIdentifiers.StripeObject
    ) throws(ProviderJSON.Malformed) -> String? {
        switch value[key] {
        case nil, .null?: return nil
        case .string(let id)?: return try validID(id, kind)
        case .object?: return try validID(try value[key]!.string("id"), kind)
        default: throw ProviderJSON.Malformed()
        }
    }

    /// Ids that come back are checked like the ones going out: the broker will put them in paths.
    static func validID(_ id: String, _ kind: ProviderIdentifiers.StripeObject) throws(ProviderJSON.Malformed) -> String {
        do {
            return try ProviderIdentifiers.stripeID(id, of: kind, field: "id")
        } catch {
            throw ProviderJSON.Malformed()
        }
    }

    /// Defence in depth: the caller validated already; an id that fails here never reaches a URL.
    static func checkedID(_ id: String, _ kind: ProviderIdentifiers.StripeObject, field: String) throws -> String {
        do {
            return try ProviderIdentifiers.stripeID(id, of: kind, field: field)
        } catch {
            throw error.rpcError
        }
    }

    // MARK: Plumbing

    /// The parsed body of a 2xx (parsing happens in `call`, shape checks in `decode`).
    struct Parsed: Sendable {
        var value: ProviderJSON
        var status: Int
        var method: HTTPMethod
    }

    private func decode<T>(_ template: String, _ body: () throws(ProviderJSON.Malformed) -> T) throws(RPCError) -> T {
        do {
            return try body()
        } catch {
            throw RPCError(code: .unavailable, message: Self.unavailable)
        }
    }

    private func call(
        _ method: HTTPMethod, _ path: String, template: String, form: [(String, String)]? = nil, idempotencyKey: String? = nil, logger: Logger
    ) async throws -> Parsed {
        var headers = HTTPHeaders()
        headers.add(name: "Authorization", value: "Bearer \(secretKey)")
        headers.add(name: "Stripe-Version", value: Self.apiVersion)
        headers.add(name: "Accept", value: "application/json")
        var body: [UInt8]?
        if let form {
            headers.add(name: "Content-Type", value: "application/x-www-form-urlencoded")
            body = FormEncoding.encode(form)
        }
        if let idempotencyKey {
            guard !idempotencyKey.isEmpty, idempotencyKey.utf8.count <= 255, UntrustedText.isPrintableASCII(idempotencyKey) else {
                throw FieldValidationError(field: "idempotency_key", problem: .invalidFormat).rpcError
            }
            headers.add(name: "Idempotency-Key", value: idempotencyKey)
        }
        // GETs are safe to repeat; a POST only with its Idempotency-Key (resent unchanged).
        let request = ProviderRequest(
            method: method, pathTemplate: template, url: apiBase + path, headers: headers, body: body,
            idempotent: method == .GET || idempotencyKey != nil
        )
        let response: ProviderResponse
        do {
            response = try await http.send(request, logger: logger) { response in
                // Stripe sends no Retry-After on 429 as a rule; honour one if present.
                guard let text = response.headers.first(name: "retry-after"), text.utf8.count <= 6, let seconds = Int(text), seconds >= 0 else { return nil }
                return .seconds(seconds)
            }
        } catch {
            switch error {
            case .overloaded:
                throw RPCError(code: .resourceExhausted, message: "stripe_overloaded", details: ["retry_after": "1"])
            case .cancelled:
                throw RPCError(code: .cancelled, message: "cancelled")
            case .circuitOpen, .transport, .responseTooLarge:
                throw RPCError(code: .unavailable, message: Self.unavailable)
            }
        }
        guard (200...299).contains(response.status) else {
            throw mapError(response, request: request, logger: logger)
        }
        do {
            return Parsed(value: try ProviderJSON.parse(response.body), status: response.status, method: method)
        } catch {
            logger.warning(
                "provider answered a malformed body",
                metadata: ["provider": "stripe", "method": "\(method.rawValue)", "path": "\(template)", "status": "\(response.status)"]
            )
            throw RPCError(code: .unavailable, message: Self.unavailable)
        }
    }

    /// Stripe's `{"error": {"type", "code", "message", "param"}}` → an RPC error. Stripe's message is
    /// never passed on (it can echo ids and parameters).
    func mapError(_ response: ProviderResponse, request: ProviderRequest, logger: Logger) -> RPCError {
        var errorCode: String?
        if let parsed = try? ProviderJSON.parse(response.body), case .string(let code)? = parsed["error"]?["code"] {
            errorCode = code
        }
        switch response.status {
        case 404:
            return RPCError(code: .notFound, message: "not_found")
        case 400 where errorCode == "resource_missing":
            return RPCError(code: .notFound, message: "not_found")
        case 401, 403:
            logger.warning(
                "stripe refused the platform key",
                metadata: ["provider": "stripe", "method": "\(request.method.rawValue)", "path": "\(request.pathTemplate)", "status": "\(response.status)"]
            )
            return RPCError(code: .internalError, message: "internal error")
        case 429:
            let seconds = response.headers.first(name: "retry-after").flatMap(Int.init).map { min(max($0, 1), 60) } ?? 1
            return RPCError(code: .resourceExhausted, message: "rate_limited", details: ["retry_after": "\(seconds)"])
        case 500...599:
            return RPCError(code: .unavailable, message: Self.unavailable)
        case 400...499:
            return RPCError(code: .invalidArgument, message: Self.rejected)
        default:
            return RPCError(code: .internalError, message: "internal error")
        }
    }
}
