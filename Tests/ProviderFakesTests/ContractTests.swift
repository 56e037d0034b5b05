import Foundation
import ProviderFakes
import Testing

/// One of the upstream OpenAPI subsets (`Tests/Fixtures/contracts`, copied from `shared/contracts`), and a checker for the subset of
/// JSON Schema (OpenAPI 3.0 flavour) those documents use: `$ref`, `type`, `nullable`, `required`,
/// `properties`, `additionalProperties`, `items`, `enum`, `anyOf`, `minLength`/`maxLength`, and
/// the `uuid` and `date-time` formats. Strict about undeclared fields: a field the fake sends that
/// the contract does not declare is a drift too (a renamed field fails twice).
struct OpenAPIContract {
    let document: JSONValue

    /// `$CLAU_CONTRACTS_DIR`, or the copy in `Tests/Fixtures/contracts` (taken from the upstream
    /// subsets in `shared/contracts`, so a fresh clone has them; refresh it when they change).
    static func load(_ relativePath: String) throws -> OpenAPIContract {
        let directory: URL
        if let override = ProcessInfo.processInfo.environment["CLAU_CONTRACTS_DIR"] {
            directory = URL(fileURLWithPath: override)
        } else {
            directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
                .appendingPathComponent("Fixtures/contracts")
        }
        let data = try Data(contentsOf: directory.appendingPathComponent(relativePath))
        return OpenAPIContract(document: try JSONValue.decode(Array(data)))
    }

    func schema(path: String, method: String, status: String) throws -> JSONValue {
        let operation = try #require(document["paths"]?[path]?[method], "\(method) \(path) is not in the contract")
        let response = try #require(operation["responses"]?[status], "\(method) \(path) declares no \(status) response")
        return try #require(response["content"]?["application/json"]?["schema"], "\(method) \(path) \(status) has no JSON schema")
    }

    func component(_ name: String) throws -> JSONValue {
        try #require(document["components"]?["schemas"]?[name], "no schema \(name)")
    }

    /// Every way `value` departs from `schema`, each with its JSON path.
    func violations(of value: JSONValue, against schema: JSONValue, at path: String = "$") -> [String] {
        if let reference = schema["$ref"]?.stringValue {
            let name = String(reference.split(separator: "/").last ?? "")
            guard let target = document["components"]?["schemas"]?[name] else { return ["\(path): unresolvable \(reference)"] }
            return violations(of: value, against: target, at: path)
        }
        if value == .null {
            return schema["nullable"] == true ? [] : ["\(path): null but not nullable"]
        }
        if let alternatives = schema["anyOf"]?.arrayValue {
            let results = alternatives.map { violations(of: value, against: $0, at: path) }
            return results.contains { $0.isEmpty } ? [] : ["\(path): matches no anyOf alternative (\(results.flatMap { $0 }.prefix(3).joined(separator: "; ")))"]
        }
        var problems: [String] = []
        if let allowed = schema["enum"]?.arrayValue, !allowed.contains(value) {
            problems.append("\(path): \(value) is not one of the enum values")
        }
        switch schema["type"]?.stringValue {
        case "string"?:
            guard case .string(let text) = value else { return problems + ["\(path): expected string, got \(value)"] }
            if let minimum = schema["minLength"]?.integerValue, text.count < minimum { problems.append("\(path): shorter than \(minimum)") }
            if let maximum = schema["maxLength"]?.integerValue, text.count > maximum { problems.append("\(path): longer than \(maximum)") }
            switch schema["format"]?.stringValue {
            case "uuid"?:
                if UUID(uuidString: text) == nil || text != text.lowercased() { problems.append("\(path): not a lowercase UUID: \(text)") }
            case "date-time"?:
                if (try? Date.ISO8601FormatStyle(includingFractionalSeconds: true).parse(text)) == nil,
                   (try? Date.ISO8601FormatStyle().parse(text)) == nil {
                    problems.append("\(path): not an RFC 3339 date-time: \(text)")
                }
            default: break
            }
        case "integer"?:
            guard case .integer = value else { return problems + ["\(path): expected integer, got \(value)"] }
        case "number"?:
            switch value {
            case .integer, .number: break
            default: return problems + ["\(path): expected number, got \(value)"]
            }
        case "boolean"?:
            guard case .bool = value else { return problems + ["\(path): expected boolean, got \(value)"] }
        case "array"?:
            guard case .array(let elements) = value else { return problems + ["\(path): expected array, got \(value)"] }
            if let items = schema["items"] {
                for (index, element) in elements.enumerated() { problems += violations(of: element, against: items, at: "\(path)[\(index)]") }
            }
        case "object"?, nil:
            guard case .object(let members) = value else {
                if schema["type"] == "object" { problems.append("\(path): expected object, got \(value)") }
                return problems
            }
            problems += objectViolations(members, schema: schema, at: path)
        default:
            problems.append("\(path): unknown schema type \(schema["type"] ?? .null)")
        }
        return problems
    }

    private func objectViolations(_ members: [String: JSONValue], schema: JSONValue, at path: String) -> [String] {
        var problems: [String] = []
        for name in schema["required"]?.arrayValue?.compactMap(\.stringValue) ?? [] where members[name] == nil {
            problems.append("\(path): required field \(name) missing")
        }
        let properties = schema["properties"]?.objectValue
        let additional = schema["additionalProperties"]
        // A schema that says nothing about its members (e.g. one the subset cut) accepts any.
        let describesMembers = properties != nil || additional != nil
        for (name, member) in members.sorted(by: { $0.key < $1.key }) {
            if let propertySchema = properties?[name] {
                problems += violations(of: member, against: propertySchema, at: "\(path).\(name)")
            } else if let additional, additional.objectValue != nil {
                problems += violations(of: member, against: additional, at: "\(path).\(name)")
            } else if describesMembers, additional != true {
                problems.append("\(path): field \(name) is not declared by the contract")
            }
        }
        return problems
    }
}

@Suite("Contract: the fakes' responses match the upstream schemas", .timeLimit(.minutes(5)))
struct ContractTests {
    static let alpaca = Result { try OpenAPIContract.load("alpaca/trading-api.subset.json") }
    static let stripe = Result { try OpenAPIContract.load("stripe/spec3.subset.json") }

    func expectConforms(_ response: ReceivedResponse, _ contract: OpenAPIContract, _ schema: JSONValue, _ label: String) throws {
        let json = try #require(response.json, "\(label): body is not JSON")
        let problems = contract.violations(of: json, against: schema)
        #expect(problems.isEmpty, "\(label): \(problems.joined(separator: "\n"))")
    }

    @Test("Alpaca: account, positions, orders (list, place, get) and errors")
    func alpacaResponses() async throws {
        let contract = try Self.alpaca.get()
        try await withFakes { fakes in
            let token = try await fakes.alpacaToken()
            _ = try await fakes.alpaca(.post, "/v2/orders", token: token, json: #"{"symbol":"AAPL","qty":"3","side":"buy","type":"market","time_in_force":"day"}"#)
            _ = try await fakes.alpaca(.post, "/v2/orders", token: token, json: #"{"symbol":"BTC/USD","notional":"10","side":"buy","type":"market","time_in_force":"day"}"#)
            let limit = try await fakes.alpaca(.post, "/v2/orders", token: token,
                                               json: #"{"symbol":"MSFT","qty":"1","side":"buy","type":"limit","limit_price":"300.5","time_in_force":"gtc"}"#)
            try expectConforms(limit, contract, try contract.schema(path: "/v2/orders", method: "post", status: "200"), "POST /v2/orders")
            let id = try #require(limit.json?["id"]?.stringValue)
            _ = try await fakes.alpaca(.delete, "/v2/orders/\(id)", token: token)

            let account = try await fakes.alpaca(.get, "/v2/account", token: token)
            try expectConforms(account, contract, try contract.schema(path: "/v2/account", method: "get", status: "200"), "GET /v2/account")
            let positions = try await fakes.alpaca(.get, "/v2/positions", token: token)
            #expect(positions.json?.arrayValue?.count == 2)
            try expectConforms(positions, contract, try contract.schema(path: "/v2/positions", method: "get", status: "200"), "GET /v2/positions")
            let orders = try await fakes.alpaca(.get, "/v2/orders?status=all", token: token)
            #expect(orders.json?.arrayValue?.count == 3)
            try expectConforms(orders, contract, try contract.schema(path: "/v2/orders", method: "get", status: "200"), "GET /v2/orders")
            let order = try await fakes.alpaca(.get, "/v2/orders/\(id)", token: token)
            try expectConforms(order, contract, try contract.schema(path: "/v2/orders/{order_id}", method: "get", status: "200"), "GET /v2/orders/{id}")

            let errorSchema = try contract.component("Error")
            let invalid = try await fakes.alpaca(.post, "/v2/orders", token: token, json: #"{"symbol":"AAPL"}"#)
            try expectConforms(invalid, contract, errorSchema, "422")
            try expectConforms(try await fakes.alpaca(.get, "/v2/account", token: "bad"), contract, errorSchema, "401")
            let canceledAgain = try await fakes.alpaca(.delete, "/v2/orders/\(id)", token: token)
            #expect(canceledAgain.status == 422)
            try expectConforms(canceledAgain, contract, errorSchema, "DELETE 422")
            // The 429 headers the contract names.
            let rateHeaders = try #require(contract.document["components"]?["responses"]?["429"]?["headers"]?.objectValue)
            for name in rateHeaders.keys { #expect(account.header(name) != nil, "missing \(name)") }
        }
    }

    @Test("Stripe: customers, Financial Connections, checkout, subscriptions, events, lists and errors")
    func stripeResponses() async throws {
        let contract = try Self.stripe.get()
        @Sendable func check(_ response: ReceivedResponse, _ path: String, _ method: String, status: String = "200") throws {
            #expect(response.status == (status == "default" ? response.status : 200), "\(method) \(path): \(response.status)")
            try expectConforms(response, contract, try contract.schema(path: path, method: method, status: status), "\(method.uppercased()) \(path) \(status)")
        }
        try await withFakes { fakes in
            let customer = try await fakes.stripe(.post, "/v1/customers", form: "email=c%40example.com&metadata[k]=v")
            try check(customer, "/v1/customers", "post")
            let customerID = try #require(customer.json?["id"]?.stringValue)
            try check(try await fakes.stripe(.get, "/v1/customers/\(customerID)"), "/v1/customers/{customer}", "get")

            let session = try await fakes.stripe(.post, "/v1/financial_connections/sessions",
                                                 form: "account_holder[type]=customer&account_holder[customer]=\(customerID)&permissions[]=balances&filters[countries][]=US")
            try check(session, "/v1/financial_connections/sessions", "post")
            let sessionID = try #require(session.json?["id"]?.stringValue)
            _ = try await fakes.send(.post, "/_fake/stripe/financial_connections/sessions/\(sessionID)/complete?accounts=3")
            try check(try await fakes.stripe(.get, "/v1/financial_connections/sessions/\(sessionID)"), "/v1/financial_connections/sessions/{session}", "get")
            let list = try await fakes.stripe(.get, "/v1/financial_connections/accounts?session=\(sessionID)&limit=2")
            try check(list, "/v1/financial_connections/accounts", "get")
            let accountID = try #require(list.json?["data"]?.arrayValue?.first?["id"]?.stringValue)
            try check(try await fakes.stripe(.get, "/v1/financial_connections/accounts/\(accountID)"), "/v1/financial_connections/accounts/{account}", "get")
            try check(try await fakes.stripe(.post, "/v1/financial_connections/accounts/\(accountID)/refresh", form: "features[]=balance"),
                      "/v1/financial_connections/accounts/{account}/refresh", "post")
            try check(try await fakes.stripe(.get, "/v1/financial_connections/accounts/\(accountID)"), "/v1/financial_connections/accounts/{account}", "get")
            try check(try await fakes.stripe(.post, "/v1/financial_connections/accounts/\(accountID)/disconnect", form: ""),
                      "/v1/financial_connections/accounts/{account}/disconnect", "post")

            let checkout = try await fakes.stripe(.post, "/v1/checkout/sessions",
                                                  form: "mode=subscription&customer=\(customerID)&success_url=https%3A%2F%2Fx.test%2Fok&cancel_url=https%3A%2F%2Fx.test%2Fno&line_items[0][price]=price_pro&line_items[0][quantity]=2")
            try check(checkout, "/v1/checkout/sessions", "post")
            let checkoutID = try #require(checkout.json?["id"]?.stringValue)
            let delivery = try await fakes.send(.post, "/_fake/stripe/checkout/sessions/\(checkoutID)/complete")
            let eventID = try #require(delivery.json?["event"]?["id"]?.stringValue)
            try check(try await fakes.stripe(.get, "/v1/checkout/sessions/\(checkoutID)"), "/v1/checkout/sessions/{session}", "get")
            try check(try await fakes.stripe(.get, "/v1/events/\(eventID)"), "/v1/events/{id}", "get")
            let subscriptionID = try #require(delivery.json?["event"]?["data"]?["object"]?["subscription"]?.stringValue)
            try check(try await fakes.stripe(.get, "/v1/subscriptions/\(subscriptionID)"), "/v1/subscriptions/{subscription_exposed_id}", "get")
            try check(try await fakes.stripe(.delete, "/v1/subscriptions/\(subscriptionID)"), "/v1/subscriptions/{subscription_exposed_id}", "delete")

            // Errors: every operation's `default` response is the `error` schema.
            try check(try await fakes.stripe(.get, "/v1/customers/cus_missing"), "/v1/customers/{customer}", "get", status: "default")
            try check(try await fakes.send(.post, "/v1/customers", body: "email=x"), "/v1/customers", "post", status: "default")
            _ = try await fakes.stripe(.post, "/v1/customers", form: "email=a", idempotencyKey: "k")
            try check(try await fakes.stripe(.post, "/v1/customers", form: "email=b", idempotencyKey: "k"), "/v1/customers", "post", status: "default")
            try check(try await fakes.stripe(.post, "/v1/financial_connections/sessions", form: "account_holder[type]=customer"),
                      "/v1/financial_connections/sessions", "post", status: "default")
        }
    }

    @Test("the checker catches drift: a missing required field, a number for a decimal string, an undeclared field, a bad enum")
    func checkerCatchesDrift() async throws {
        let alpaca = try Self.alpaca.get()
        let stripe = try Self.stripe.get()
        try await withFakes { fakes in
            let token = try await fakes.alpacaToken()
            let order = try #require(try await fakes.alpaca(.post, "/v2/orders", token: token,
                                                            json: #"{"symbol":"AAPL","qty":"1","side":"buy","type":"market","time_in_force":"day"}"#).json?.objectValue)
            let orderSchema = try alpaca.schema(path: "/v2/orders", method: "post", status: "200")
            #expect(alpaca.violations(of: .object(order), against: orderSchema).isEmpty)
            var drifted = order
            drifted["qty"] = .number(1)
            #expect(!alpaca.violations(of: .object(drifted), against: orderSchema).isEmpty)
            drifted = order
            drifted["time_in_force"] = nil
            #expect(!alpaca.violations(of: .object(drifted), against: orderSchema).isEmpty)
            drifted = order
            drifted["status"] = "done"
            #expect(!alpaca.violations(of: .object(drifted), against: orderSchema).isEmpty)
            drifted = order
            drifted["quantity"] = "1"
            #expect(!alpaca.violations(of: .object(drifted), against: orderSchema).isEmpty)

            let customer = try #require(try await fakes.stripe(.post, "/v1/customers", form: "email=a").json?.objectValue)
            let customerSchema = try stripe.schema(path: "/v1/customers", method: "post", status: "200")
            var driftedCustomer = customer
            driftedCustomer["created"] = "1700000000"
            #expect(!stripe.violations(of: .object(driftedCustomer), against: customerSchema).isEmpty)
            driftedCustomer = customer
            driftedCustomer["livemode"] = nil
            #expect(!stripe.violations(of: .object(driftedCustomer), against: customerSchema).isEmpty)
            let errorSchema = try stripe.schema(path: "/v1/customers", method: "post", status: "default")
            #expect(!stripe.violations(of: ["error": ["type": "auth_error"]], against: errorSchema).isEmpty)
            #expect(!stripe.violations(of: ["message": "flat"], against: errorSchema).isEmpty)
        }
    }

    @Test("the facts the contracts README lists: id prefixes, integer minor units, unix-second timestamps")
    func stripeFacts() async throws {
        try await withFakes { fakes in
            let customerID = try await fakes.createCustomer()
            #expect(customerID.hasPrefix("cus_"))
            let session = try await fakes.linkedSession(customer: customerID, accounts: 1)
            #expect(session["client_secret"]?.stringValue?.contains("_secret_") == true)
            let accountID = try #require(session["accounts"]?["data"]?.arrayValue?.first?["id"]?.stringValue)
            let account = try await fakes.stripe(.post, "/v1/financial_connections/accounts/\(accountID)/refresh", form: "features[]=balance")
            guard case .integer? = account.json?["balance"]?["current"]?["usd"] else {
                Issue.record("balance.current.usd is not an integer of minor units")
                return
            }
            guard case .integer(let created)? = account.json?["created"] else {
                Issue.record("created is not integer unix seconds")
                return
            }
            #expect(abs(created - Int64(Date().timeIntervalSince1970)) < 120)
        }
    }
}
