import Foundation
import Logging
import RPC
import Testing

@testable import BrokerService

/// `AlpacaClient` over real HTTP against the Alpaca fake, live on 127.0.0.1.
@Suite("Alpaca client against the live fake", .timeLimit(.minutes(3)))
struct AlpacaClientTests {
    let capture = LogCapture()
    var logger: Logger { capture.logger() }

    @Test func oauthCodeExchangeGrantsAToken() async throws {
        try await withLiveFakes { live in
            let alpaca = try live.alpacaClient()
            let grant = try await alpaca.exchangeCode(try await live.authorizationCode(), logger: logger)
            #expect(!grant.accessToken.isEmpty)
            #expect(grant.tokenType == "bearer")
            #expect(grant.scope == "trading")
            let account = try await alpaca.account(token: grant.accessToken, logger: logger)
            #expect(account.status == "ACTIVE")
        }
    }

    @Test func aReusedCodeIsInvalidGrant() async throws {
        try await withLiveFakes { live in
            let alpaca = try live.alpacaClient()
            let code = try await live.authorizationCode()
            _ = try await alpaca.exchangeCode(code, logger: logger)
            let error = await rpcError { try await alpaca.exchangeCode(code, logger: logger) }
            #expect(error == RPCError(code: .invalidArgument, message: "invalid_grant"))
        }
    }

    @Test func wrongClientSecretIsInvalidGrantAndTheSecretIsNotInTheError_C11() async throws {
        try await withLiveFakes { live in
            var configuration = live.alpacaConfiguration()
            configuration.clientSecret = "wrong-secret-value-91ab"
            let alpaca = try AlpacaClient(configuration: configuration, http: ProviderHTTP(name: "alpaca", client: live.client, policy: .fastTest))
            let error = await rpcError { try await alpaca.exchangeCode(try await live.authorizationCode(), logger: logger) }
            #expect(error == RPCError(code: .invalidArgument, message: "invalid_grant"))
            #expect(!capture.all.joined().contains("wrong-secret-value-91ab"))
        }
    }

    @Test func accountPositionsOrdersPlaceAndCancelRoundTrip() async throws {
        try await withLiveFakes { live in
            let alpaca = try live.alpacaClient()
            let token = try await alpaca.exchangeCode(try await live.authorizationCode(), logger: logger).accessToken

            let before = try await alpaca.account(token: token, logger: logger)
            #expect(before.currency == "USD")
            #expect(before.cash == "100000")
            #expect(!before.id.isEmpty)
            #expect(try await alpaca.positions(token: token, logger: logger).isEmpty)

            // Market by quantity: fills at once at the fake's price (AAPL 190).
            let market = try OrderRequestValidation.validate(AlpacaOrderDraft(symbol: "AAPL", side: "buy", type: "market", timeInForce: "day", qty: "2"))
            let filled = try await alpaca.placeOrder(token: token, order: market, logger: logger)
            #expect(filled.clientOrderID == market.clientOrderID)
            #expect(filled.symbol == "AAPL")
            #expect(filled.qty == "2")
            #expect(filled.notional == "")
            #expect(filled.limitPrice == "")
            #expect(filled.status == "filled")
            #expect(filled.type == "market")
            #expect(filled.filledQty == "2")
            #expect(!filled.submittedAt.isEmpty)

            let positions = try await alpaca.positions(token: token, logger: logger)
            #expect(positions.count == 1)
            #expect(positions.first?.symbol == "AAPL")
            #expect(positions.first?.qty == "2")
            #expect(positions.first?.side == "long")
            #expect(positions.first?.marketValue == "380")
            #expect(try await alpaca.account(token: token, logger: logger).cash == "99620")

            // Limit: rests open until canceled.
            let limit = try OrderRequestValidation.validate(
                AlpacaOrderDraft(symbol: "MSFT", side: "buy", type: "limit", timeInForce: "gtc", qty: "1", limitPrice: "300.5")
            )
            let resting = try await alpaca.placeOrder(token: token, order: limit, logger: logger)
            #expect(resting.status == "new")
            #expect(resting.limitPrice == "300.5")
            #expect(resting.timeInForce == "gtc")

            let open = try await alpaca.orders(token: token, query: try AlpacaOrderListQuery(status: "open", limit: 0), logger: logger)
            #expect(open.map(\.id) == [resting.id])
            let all = try await alpaca.orders(token: token, query: try AlpacaOrderListQuery(status: "all", limit: 10), logger: logger)
            #expect(Set(all.map(\.id)) == [resting.id, filled.id])

            try await alpaca.cancelOrder(token: token, orderID: resting.id, logger: logger)
            let closed = try await alpaca.orders(token: token, query: try AlpacaOrderListQuery(status: "closed", limit: 0), logger: logger)
            #expect(closed.first { $0.id == resting.id }?.status == "canceled")

            // A filled order cannot be canceled: Alpaca's 422 reason reaches the user.
            let notCancelable = await rpcError { try await alpaca.cancelOrder(token: token, orderID: filled.id, logger: logger) }
            #expect(notCancelable?.code == .invalidArgument)
            // Someone else's or an unknown order: one answer (C-7).
            let unknown = await rpcError { try await alpaca.cancelOrder(token: token, orderID: UUID().uuidString, logger: logger) }
            #expect(unknown == RPCError(code: .notFound, message: "not found"))
        }
    }

    @Test func aMalformedOrderIDNeverReachesTheURL() async throws {
        try await withLiveFakes { live in
            let alpaca = try live.alpacaClient()
            let error = await rpcError { try await alpaca.cancelOrder(token: "t", orderID: "../account", logger: logger) }
            #expect(error?.code == .invalidArgument)
            #expect(error?.details["field"] == "order_id")
        }
    }

    @Test func aBadTokenMeansTheConnectionIsLost() async throws {
        try await withLiveFakes { live in
            let alpaca = try live.alpacaClient()
            let error = await rpcError { try await alpaca.account(token: "not-a-token-the-fake-issued", logger: logger) }
            #expect(error?.code == .conflict)
            #expect(error?.message == "alpaca_connection_lost")
        }
    }

    @Test func buyingBeyondTheCashIsPermissionDeniedWithAlpacasReason() async throws {
        try await withLiveFakes { live in
            let alpaca = try live.alpacaClient()
            let token = try await alpaca.exchangeCode(try await live.authorizationCode(), logger: logger).accessToken
            let order = try OrderRequestValidation.validate(AlpacaOrderDraft(symbol: "SPY", side: "buy", type: "market", timeInForce: "day", qty: "1000"))
            let error = await rpcError { try await alpaca.placeOrder(token: token, order: order, logger: logger) }
            #expect(error?.code == .permissionDenied)
            #expect(error?.message == "insufficient buying power")
        }
    }
}
