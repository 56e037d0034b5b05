import Foundation
import ProviderFakes
import Testing

@Suite("Alpaca fake: OAuth", .timeLimit(.minutes(5)))
struct AlpacaOAuthTests {
    @Test("authorize redirects with code and state; the code buys a token that reads the account")
    func wholeFlow() async throws {
        try await withFakes { fakes in
            let (authorize, query) = try await fakes.authorize(state: "a b&c=d")
            #expect(authorize.status == 302)
            #expect(authorize.header("Location")?.hasPrefix(FakesClient.redirectURI + "?code=") == true)
            #expect(query["state"] == "a b&c=d")
            let code = try #require(query["code"])

            let token = try await fakes.exchange(code: code)
            #expect(token.status == 200)
            #expect(token.json?["token_type"] == "bearer")
            #expect(token.json?["scope"] == "trading")
            let accessToken = try #require(token.json?["access_token"]?.stringValue)

            let account = try await fakes.alpaca(.get, "/v2/account", token: accessToken)
            #expect(account.status == 200)
            #expect(account.json?["status"] == "ACTIVE")
            #expect(account.json?["cash"] == "100000")
        }
    }

    @Test("a wrong client secret, a wrong redirect URI and a reused code are refused in Alpaca's error shape")
    func refusals() async throws {
        try await withFakes { fakes in
            let code = try #require(try await fakes.authorize().query["code"])
            let badSecret = try await fakes.exchange(code: code, secret: "wrong")
            #expect(badSecret.status == 401)
            #expect(badSecret.json?["code"]?.integerValue != nil)
            #expect(badSecret.json?["message"]?.stringValue != nil)

            let badRedirect = try await fakes.exchange(code: code, redirectURI: "http://127.0.0.1:9/other")
            #expect(badRedirect.status == 400)
            #expect(badRedirect.json?["message"] == "redirect_uri does not match the authorization request")

            #expect(try await fakes.exchange(code: code).status == 200)
            let reused = try await fakes.exchange(code: code)
            #expect(reused.status == 400)
            #expect(reused.json?["message"] == "authorization code has already been used")

            let unregistered = try await fakes.authorize(redirectURI: "https://evil.example/cb")
            #expect(unregistered.response.status == 400)
            #expect(unregistered.response.header("Location") == nil)

            let unknownClient = try await fakes.send(.get, "/oauth/authorize?response_type=code&client_id=nobody&redirect_uri=\(percentEncoded(FakesClient.redirectURI))")
            #expect(unknownClient.status == 401)
        }
    }

    @Test("a code not exchanged within its lifetime is refused")
    func expiredCode() async throws {
        let clock = TestClock()
        try await withFakes(testConfiguration(clock: clock)) { fakes in
            let code = try #require(try await fakes.authorize().query["code"])
            clock.advance(by: 601)
            let expired = try await fakes.exchange(code: code)
            #expect(expired.status == 400)
            #expect(expired.json?["message"] == "authorization code has expired")
        }
    }
}

@Suite("Alpaca fake: trading", .timeLimit(.minutes(5)))
struct AlpacaTradingTests {
    @Test("a missing, malformed or unknown bearer token is 401 with Alpaca's error body")
    func unauthorized() async throws {
        try await withFakes { fakes in
            for headers in [[:], ["Authorization": "Bearer nope"], ["Authorization": "Basic Zm9vOmJhcg=="]] {
                let response = try await fakes.send(.get, "/v2/account", headers: headers)
                #expect(response.status == 401)
                #expect(response.json?["code"] == 40110000)
            }
        }
    }

    @Test("a market order by quantity fills, moves cash and opens a position")
    func marketOrderFills() async throws {
        try await withFakes { fakes in
            let token = try await fakes.alpacaToken()
            let placed = try await fakes.alpaca(.post, "/v2/orders", token: token,
                                                json: #"{"symbol":"AAPL","qty":"2","side":"buy","type":"market","time_in_force":"day"}"#)
            #expect(placed.status == 200)
            #expect(placed.json?["status"] == "filled")
            #expect(placed.json?["filled_qty"] == "2")
            #expect(placed.json?["filled_avg_price"] == "190")
            #expect(placed.json?["notional"] == .null)
            #expect(placed.json?["limit_price"] == .null)

            let account = try await fakes.alpaca(.get, "/v2/account", token: token)
            #expect(account.json?["cash"] == "99620")
            let positions = try await fakes.alpaca(.get, "/v2/positions", token: token)
            let position = try #require(positions.json?.arrayValue?.first)
            #expect(position["symbol"] == "AAPL")
            #expect(position["qty"] == "2")
            #expect(position["cost_basis"] == "380")

            let notional = try await fakes.alpaca(.post, "/v2/orders", token: token,
                                                  json: #"{"symbol":"SPY","notional":"250","side":"buy","type":"market","time_in_force":"day"}"#)
            #expect(notional.status == 200)
            #expect(notional.json?["qty"] == .null)
            #expect(notional.json?["notional"] == "250")
            #expect(notional.json?["filled_qty"] == "0.5")
        }
    }

    @Test("a limit order rests, lists as open, cancels once (204), then cannot be canceled again (422)")
    func limitOrderCancel() async throws {
        try await withFakes { fakes in
            let token = try await fakes.alpacaToken()
            let placed = try await fakes.alpaca(.post, "/v2/orders", token: token,
                                                json: #"{"symbol":"MSFT","qty":"1.5","side":"buy","type":"limit","limit_price":"400.25","time_in_force":"gtc","client_order_id":"mine-1"}"#)
            #expect(placed.status == 200)
            #expect(placed.json?["status"] == "new")
            #expect(placed.json?["limit_price"] == "400.25")
            #expect(placed.json?["client_order_id"] == "mine-1")
            let id = try #require(placed.json?["id"]?.stringValue)

            let open = try await fakes.alpaca(.get, "/v2/orders", token: token)
            #expect(open.json?.arrayValue?.count == 1)
            let fetched = try await fakes.alpaca(.get, "/v2/orders/\(id)", token: token)
            #expect(fetched.json?["id"]?.stringValue == id)

            #expect(try await fakes.alpaca(.delete, "/v2/orders/\(id)", token: token).status == 204)
            let again = try await fakes.alpaca(.delete, "/v2/orders/\(id)", token: token)
            #expect(again.status == 422)
            #expect(again.json?["code"] != nil)
            #expect(try await fakes.alpaca(.get, "/v2/orders?status=open", token: token).json?.arrayValue?.count == 0)
            let closed = try await fakes.alpaca(.get, "/v2/orders?status=closed", token: token)
            #expect(closed.json?.arrayValue?.first?["status"] == "canceled")

            let duplicate = try await fakes.alpaca(.post, "/v2/orders", token: token,
                                                   json: #"{"symbol":"MSFT","qty":"1","side":"buy","type":"limit","limit_price":"1","time_in_force":"gtc","client_order_id":"mine-1"}"#)
            #expect(duplicate.status == 422)
            #expect(duplicate.json?["message"] == "client_order_id must be unique")

            let unknown = try await fakes.alpaca(.get, "/v2/orders/\(UUID().uuidString.lowercased())", token: token)
            #expect(unknown.status == 404)
        }
    }

    @Test("invalid orders answer 422 (or 403) with Alpaca's {code, message}", arguments: [
        (#"{"symbol":"AAPL","qty":"1","side":"buy","time_in_force":"day"}"#, 422, "type is required"),
        (#"{"symbol":"AAPL","qty":"1","side":"buy","type":"market"}"#, 422, "time_in_force is required"),
        (#"{"symbol":"AAPL","qty":"1","side":"buy","type":"limit","time_in_force":"day"}"#, 422, "limit_price is required for limit orders"),
        (#"{"symbol":"AAPL","qty":"1","notional":"5","side":"buy","type":"market","time_in_force":"day"}"#, 422, "only one of qty or notional can be specified"),
        (#"{"symbol":"AAPL","side":"buy","type":"market","time_in_force":"day"}"#, 422, "qty or notional is required"),
        (#"{"symbol":"AAPL","qty":"-1","side":"buy","type":"market","time_in_force":"day"}"#, 422, "qty must be a positive decimal string"),
        (#"{"symbol":"AAPL","qty":"0.0000000001","side":"buy","type":"market","time_in_force":"day"}"#, 422, "qty must be a positive decimal string"),
        (#"{"symbol":"AAPL","qty":1,"side":"buy","type":"market","time_in_force":"day"}"#, 422, "qty must be a string"),
        (#"{"symbol":"aapl; drop","qty":"1","side":"buy","type":"market","time_in_force":"day"}"#, 422, "symbol is required and must be a valid symbol"),
        (#"{"symbol":"AAPL","notional":"5","side":"buy","type":"limit","limit_price":"1","time_in_force":"day"}"#, 422, "notional orders must be market orders with time_in_force day"),
        (#"{"symbol":"AAPL","qty":"1","side":"hold","type":"market","time_in_force":"day"}"#, 422, "invalid side"),
        (#"{"symbol":"AAPL","qty":"1","side":"buy","type":"market","time_in_force":"week"}"#, 422, "invalid time_in_force"),
        (#"{"symbol":"AAPL","qty":"100000","side":"buy","type":"market","time_in_force":"day"}"#, 403, "insufficient buying power"),
        (#"{"symbol":"AAPL","qty":"1","side":"sell","type":"market","time_in_force":"day"}"#, 403, "insufficient qty available for order (requested: 1, available: 0)"),
        (#"not json"#, 400, "request body format is invalid"),
    ])
    func invalidOrders(body: String, status: Int, message: String) async throws {
        try await withFakes { fakes in
            let token = try await fakes.alpacaToken()
            let response = try await fakes.alpaca(.post, "/v2/orders", token: token, json: body)
            #expect(response.status == status)
            #expect(response.json?["message"]?.stringValue == message)
            #expect(response.json?["code"]?.integerValue != nil)
            #expect(try await fakes.alpaca(.get, "/v2/orders?status=all", token: token).json?.arrayValue?.isEmpty == true)
        }
    }

    @Test("past the per-token limit: 429 with X-RateLimit-Limit/Remaining/Reset; the next window is open again")
    func rateLimit() async throws {
        let clock = TestClock()
        try await withFakes(testConfiguration(clock: clock, requestsPerMinute: 3)) { fakes in
            clock.advanceToStartOfMinute()
            let token = try await fakes.alpacaToken()
            let other = try await fakes.alpacaToken()
            var remaining: [String?] = []
            for _ in 0..<3 {
                let response = try await fakes.alpaca(.get, "/v2/account", token: token)
                #expect(response.status == 200)
                remaining.append(response.header("X-RateLimit-Remaining"))
            }
            #expect(remaining == ["2", "1", "0"])
            let limited = try await fakes.alpaca(.get, "/v2/account", token: token)
            #expect(limited.status == 429)
            #expect(limited.header("X-RateLimit-Limit") == "3")
            #expect(limited.header("X-RateLimit-Remaining") == "0")
            let reset = try #require(limited.header("X-RateLimit-Reset").flatMap { Int64($0) })
            #expect(reset > Int64(clock.now().timeIntervalSince1970) - 1)
            #expect(limited.json?["code"] == 42910000)
            #expect(try await fakes.alpaca(.get, "/v2/account", token: other).status == 200)
            clock.advance(by: 61)
            #expect(try await fakes.alpaca(.get, "/v2/account", token: token).status == 200)
        }
    }

    @Test("list orders: status, limit, direction, symbols")
    func listOrders() async throws {
        try await withFakes { fakes in
            let token = try await fakes.alpacaToken()
            for (index, symbol) in ["AAPL", "MSFT", "TSLA"].enumerated() {
                let response = try await fakes.alpaca(.post, "/v2/orders", token: token,
                                                      json: #"{"symbol":"\#(symbol)","qty":"1","side":"buy","type":"limit","limit_price":"\#(index + 1)","time_in_force":"day"}"#)
                #expect(response.status == 200)
            }
            let newestFirst = try await fakes.alpaca(.get, "/v2/orders?limit=2", token: token)
            #expect(newestFirst.json?.arrayValue?.map { $0["symbol"] } == ["TSLA", "MSFT"])
            let oldestFirst = try await fakes.alpaca(.get, "/v2/orders?direction=asc", token: token)
            #expect(oldestFirst.json?.arrayValue?.map { $0["symbol"] } == ["AAPL", "MSFT", "TSLA"])
            let filtered = try await fakes.alpaca(.get, "/v2/orders?symbols=AAPL,TSLA", token: token)
            #expect(filtered.json?.arrayValue?.count == 2)
            #expect(try await fakes.alpaca(.get, "/v2/orders?status=bogus", token: token).status == 422)
            #expect(try await fakes.alpaca(.get, "/v2/orders?limit=0", token: token).status == 422)
            let malformed = try await fakes.alpaca(.get, "/v2/orders?status=%ZZ", token: token)
            #expect(malformed.status == 400)
            #expect(malformed.json?["code"] == 40010000)
        }
    }
}
