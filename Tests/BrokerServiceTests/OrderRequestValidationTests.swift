import Foundation
import RPC
import Testing

@testable import BrokerService

/// Orders are checked before Alpaca is called (SPEC §3 order shape; contracts/alpaca POST /v2/orders).
@Suite("Alpaca order validation", .timeLimit(.minutes(5)))
struct OrderRequestValidationTests {
    func draft(
        symbol: String = "AAPL", side: String = "buy", type: String = "market", timeInForce: String = "day",
        qty: String = "", notional: String = "", limitPrice: String = ""
    ) -> AlpacaOrderDraft {
        AlpacaOrderDraft(symbol: symbol, side: side, type: type, timeInForce: timeInForce, qty: qty, notional: notional, limitPrice: limitPrice)
    }

    func refusal(_ draft: AlpacaOrderDraft) -> FieldValidationError? {
        do throws(FieldValidationError) {
            _ = try OrderRequestValidation.validate(draft)
            return nil
        } catch {
            return error
        }
    }

    @Test func marketOrderByQuantityPasses() throws {
        let order = try OrderRequestValidation.validate(draft(qty: "10"))
        #expect(order.symbol == "AAPL")
        #expect(order.side == .buy)
        #expect(order.type == .market)
        #expect(order.timeInForce == .day)
        #expect(order.amount == .quantity("10"))
        #expect(order.limitPrice == nil)
    }

    @Test func limitOrderAndNotionalOrderPass() throws {
        let limit = try OrderRequestValidation.validate(draft(symbol: "BRK.B", side: "sell", type: "limit", timeInForce: "gtc", qty: "2", limitPrice: "412.35"))
        #expect(limit.limitPrice == "412.35")
        #expect(limit.side == .sell)
        #expect(limit.timeInForce == .gtc)
        let notional = try OrderRequestValidation.validate(draft(notional: "250.5"))
        #expect(notional.amount == .notional("250.5"))
        let fractional = try OrderRequestValidation.validate(draft(qty: "0.123456789"))
        #expect(fractional.amount == .quantity("0.123456789"))
    }

    @Test func everyTimeInForceOfAlpacaIsAccepted() throws {
        #expect(AlpacaTimeInForce.allCases.map(\.rawValue) == ["day", "gtc", "opg", "cls", "ioc", "fok"])
        for timeInForce in AlpacaTimeInForce.allCases {
            #expect(try OrderRequestValidation.validate(draft(timeInForce: timeInForce.rawValue, qty: "1")).timeInForce == timeInForce)
        }
    }

    @Test(arguments: [
        ("", "missing"), ("aapl", "invalid_format"), ("AAPL1", "invalid_format"), (".A", "invalid_format"),
        ("A.", "invalid_format"), ("BRK..B", "invalid_format"), ("ETH/USD", "invalid_format"), ("ABCDEFGHIJK", "too_long"),
        ("AAPL ", "invalid_format"), ("ÄAPL", "invalid_format"), ("AAPL\u{0}", "control_character"), ("AA\u{85}PL", "control_character"),
    ])
    func malformedSymbolsAreRefused(_ symbol: String, _ problem: String) {
        #expect(refusal(draft(symbol: symbol, qty: "1")) == FieldValidationError(field: "symbol", problem: .init(rawValue: problem)!))
    }

    @Test func tenCharacterSymbolIsTheLongestAccepted() throws {
        #expect(try OrderRequestValidation.validate(draft(symbol: "ABCDE.FGHI", qty: "1")).symbol == "ABCDE.FGHI")
    }

    @Test func sideTypeAndTimeInForceComeFromAlpacasEnums() {
        #expect(refusal(draft(side: "short", qty: "1")) == FieldValidationError(field: "side", problem: .unsupportedValue))
        #expect(refusal(draft(side: "BUY", qty: "1")) == FieldValidationError(field: "side", problem: .unsupportedValue))
        #expect(refusal(draft(side: "", qty: "1")) == FieldValidationError(field: "side", problem: .missing))
        #expect(refusal(draft(type: "stop", qty: "1")) == FieldValidationError(field: "type", problem: .unsupportedValue))
        #expect(refusal(draft(type: "trailing_stop", qty: "1")) == FieldValidationError(field: "type", problem: .unsupportedValue))
        #expect(refusal(draft(timeInForce: "gtd", qty: "1")) == FieldValidationError(field: "time_in_force", problem: .unsupportedValue))
        #expect(refusal(draft(timeInForce: "", qty: "1")) == FieldValidationError(field: "time_in_force", problem: .missing))
    }

    @Test func exactlyOneOfQuantityAndNotional() {
        #expect(refusal(draft()) == FieldValidationError(field: "qty", problem: .missing))
        #expect(refusal(draft(qty: "1", notional: "100")) == FieldValidationError(field: "notional", problem: .conflictsWithOtherField))
    }

    @Test(arguments: [
        ("0", "not_positive"), ("0.000", "not_positive"), ("-1", "invalid_format"), ("+1", "invalid_format"), ("1e3", "invalid_format"),
        ("1E3", "invalid_format"), (".5", "invalid_format"), ("5.", "invalid_format"), ("1.2.3", "invalid_format"), ("01", "invalid_format"),
        ("1,000", "invalid_format"), (" 1", "invalid_format"), ("NaN", "invalid_format"), ("Infinity", "invalid_format"), ("0x10", "invalid_format"),
        ("١", "invalid_format"), ("1234567890", "too_many_digits"), ("1.1234567890", "too_many_digits"),
        ("1\u{0}", "control_character"), ("1\n", "control_character"), (String(repeating: "1", count: 33), "too_long"),
    ])
    func malformedQuantitiesAreRefused(_ qty: String, _ problem: String) {
        #expect(refusal(draft(qty: qty)) == FieldValidationError(field: "qty", problem: .init(rawValue: problem)!))
        #expect(refusal(draft(notional: qty)) == FieldValidationError(field: "notional", problem: .init(rawValue: problem)!))
        #expect(refusal(draft(type: "limit", qty: "1", limitPrice: qty)) == FieldValidationError(field: "limit_price", problem: .init(rawValue: problem)!))
    }

    @Test func boundaryDecimalsAreAccepted() throws {
        for value in ["999999999", "0.000000001", "999999999.999999999", "1.0"] {
            #expect(try OrderRequestValidation.validate(draft(qty: value)).amount == .quantity(value), "\(value)")
        }
    }

    @Test func limitPriceIsRequiredForLimitAndRefusedForMarket() {
        #expect(refusal(draft(type: "limit", qty: "1")) == FieldValidationError(field: "limit_price", problem: .missing))
        #expect(refusal(draft(type: "market", qty: "1", limitPrice: "10")) == FieldValidationError(field: "limit_price", problem: .notAllowed))
    }

    @Test func notionalAndFractionalOrdersMustBeMarketDayOrders() throws {
        #expect(refusal(draft(type: "limit", notional: "100", limitPrice: "10")) == FieldValidationError(field: "notional", problem: .requiresMarketDayOrder))
        #expect(refusal(draft(timeInForce: "gtc", notional: "100")) == FieldValidationError(field: "time_in_force", problem: .requiresMarketDayOrder))
        #expect(refusal(draft(type: "limit", qty: "0.5", limitPrice: "10")) == FieldValidationError(field: "qty", problem: .requiresMarketDayOrder))
        #expect(refusal(draft(timeInForce: "ioc", qty: "1.25")) == FieldValidationError(field: "time_in_force", problem: .requiresMarketDayOrder))
        // A whole number written with a zero fraction is not fractional.
        #expect(try OrderRequestValidation.validate(draft(type: "limit", timeInForce: "gtc", qty: "3.00", limitPrice: "10")).amount == .quantity("3.00"))
    }

    @Test func controlCharactersAreRefusedInEveryField_C15() {
        let nul = "\u{0}"
        #expect(refusal(draft(side: "buy" + nul, qty: "1"))?.problem == .controlCharacter)
        #expect(refusal(draft(type: "market\u{7F}", qty: "1")) == FieldValidationError(field: "type", problem: .controlCharacter))
        #expect(refusal(draft(timeInForce: "\u{1B}day", qty: "1")) == FieldValidationError(field: "time_in_force", problem: .controlCharacter))
        #expect(refusal(draft(type: "market", qty: "1", limitPrice: "\r")) == FieldValidationError(field: "limit_price", problem: .controlCharacter))
    }

    @Test func refusalBecomesAFieldErrorForTheEdge() {
        let error = FieldValidationError(field: "limit_price", problem: .missing).rpcError
        #expect(error.code == .invalidArgument)
        #expect(error.message == "missing")
        #expect(error.details == ["field": "limit_price"])
    }

    @Test func aResubmissionKeepsItsClientOrderIDAndForeignIDsAreRefused() throws {
        let first = try OrderRequestValidation.validate(draft(qty: "1"))
        #expect(try OrderRequestValidation.validate(draft(qty: "1"), clientOrderID: first.clientOrderID).clientOrderID == first.clientOrderID)
        for bad in ["", "a b", "id\u{0}", "x/y", String(repeating: "a", count: 49)] {
            #expect(throws: FieldValidationError(field: "client_order_id", problem: .invalidFormat)) {
                try OrderRequestValidation.validate(draft(qty: "1"), clientOrderID: bad)
            }
        }
    }

    @Test func clientOrderIDsAreRandomURLSafeAndWithinAlpacasLimit() throws {
        var seen = Set<String>()
        for _ in 0..<1000 {
            let id = OrderRequestValidation.makeClientOrderID()
            #expect(id.utf8.count <= OrderRequestValidation.maximumClientOrderIDLength)
            #expect(id.utf8.count == 37)
            #expect(id.hasPrefix("clau-"))
            #expect(id.utf8.allSatisfy { ($0 >= 0x41 && $0 <= 0x5A) || ($0 >= 0x61 && $0 <= 0x7A) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x2D || $0 == 0x5F })
            seen.insert(id)
        }
        #expect(seen.count == 1000)
        let first = try OrderRequestValidation.validate(draft(qty: "1"))
        let second = try OrderRequestValidation.validate(draft(qty: "1"))
        #expect(first.clientOrderID != second.clientOrderID)
    }
}
