import Foundation
import Logging
import RPC
import Testing

@testable import BrokerService

/// Provider bodies are decoded strictly in the fields the broker uses and leniently elsewhere; a
/// body of the wrong shape or over the size cap is a provider failure (UNAVAILABLE), not a crash or
/// a half-filled answer.
@Suite("Provider response decoding", .timeLimit(.minutes(2)))
struct ProviderDecodingTests {
    func json(_ text: String) throws -> ProviderJSON { try ProviderJSON.parse(Array(text.utf8)) }

    @Test func alpacaDecimalsAreStringsAndNullBecomesEmpty() throws {
        let order = try AlpacaClient.order(json(#"""
            {"id":"7b0a6c1e-4d0f-4c8e-9f55-0a4bbd0b8a11","client_order_id":"clau-x","symbol":"AAPL","side":"buy",
             "type":"limit","time_in_force":"day","qty":"2","notional":null,"limit_price":"150.25","status":"new",
             "filled_qty":"0","submitted_at":"2026-12-03T12:00:00.123456789Z","legs":null,"extra_field":{"nested":[1,2]}}
            """#))
        #expect(order.qty == "2")
        #expect(order.notional == "")
        #expect(order.limitPrice == "150.25")
        #expect(order.submittedAt == "2026-12-03T12:00:00.123456789Z")
    }

    @Test func anAlpacaDecimalSentAsANumberIsMalformed() throws {
        #expect(throws: ProviderJSON.Malformed.self) {
            try AlpacaClient.order(json(#"{"id":"a","symbol":"AAPL","status":"new","qty":2}"#))
        }
        // The fields the broker needs must be there.
        #expect(throws: ProviderJSON.Malformed.self) { try AlpacaClient.order(json(#"{"symbol":"AAPL","status":"new"}"#)) }
        #expect(throws: ProviderJSON.Malformed.self) { try json("<html>502 Bad Gateway</html>") }
    }

    @Test func stripeBalancesAreIntegerMinorUnits() throws {
        let account = try StripeClient.account(json(#"""
            {"id":"fca_123","institution_name":"Bank","last4":"6789","category":"cash",
             "balance":{"as_of":1764763200,"type":"cash","current":{"usd":1250000,"eur":-300},"cash":{"available":{"usd":1}}},
             "balance_refresh":{"status":"pending","last_attempted_at":1764763200},"ownership":null}
            """#))
        #expect(account.balance.current == ["usd": 1_250_000, "eur": -300])
        #expect(account.balance.asOf == 1_764_763_200)
        #expect(account.refreshStatus == "pending")
        #expect(throws: ProviderJSON.Malformed.self) {
            try StripeClient.account(json(#"{"id":"fca_1","balance":{"current":{"usd":"12.50"}}}"#))
        }
        #expect(throws: ProviderJSON.Malformed.self) {
            try StripeClient.account(json(#"{"id":"fca_1","balance":{"current":{"usd":12.5}}}"#))
        }
    }

    @Test func idsComingBackFromStripeAreCheckedLikeIdsGoingOut() throws {
        #expect(throws: ProviderJSON.Malformed.self) { try StripeClient.account(json(#"{"id":"fca_../x"}"#)) }
        #expect(throws: ProviderJSON.Malformed.self) {
            try StripeClient.session(json(#"{"id":"fcsess_1","client_secret":"s","accounts":{"data":[{"id":"cus_notAnAccount"}]}}"#))
        }
        let session = try StripeClient.session(json(
            #"{"id":"fcsess_1","client_secret":"fcsess_1_secret_2","account_holder":{"type":"customer","customer":{"id":"cus_9"}},"accounts":{"data":[{"id":"fca_7"}]}}"#
        ))
        #expect(session.customerID == "cus_9")
        #expect(session.accountIDs == ["fca_7"])
    }

    @Test func aResponseOverTheSizeCapIsUnavailable() async throws {
        let capture = LogCapture()
        try await withLiveFakes { live in
            let alpaca = try live.alpacaClient()
            let token = try await alpaca.exchangeCode(try await live.authorizationCode(), logger: capture.logger()).accessToken
            var policy = ProviderHTTPPolicy.fastTest
            policy.maximumResponseBytes = 64   // the account object is about 1 KiB
            let capped = try live.alpacaClient(policy: policy)
            let error = await rpcError { try await capped.account(token: token, logger: capture.logger()) }
            #expect(error == RPCError(code: .unavailable, message: "alpaca_unavailable"))
            #expect(capture.all.contains { $0.contains("responseTooLarge") && $0.contains("path=/v2/account") && $0.contains("status=200") })
        }
    }
}
