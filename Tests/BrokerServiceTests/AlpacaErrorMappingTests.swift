import Foundation
import RPC
import Testing

@testable import BrokerService

/// Alpaca's statuses and `{"code","message"}` bodies become clean RPC errors; only 403/422 text
/// reaches the user, and never internals (R-14).
@Suite("Alpaca error mapping", .timeLimit(.minutes(5)))
struct AlpacaErrorMappingTests {
    func body(_ json: String) -> [UInt8] { Array(json.utf8) }

    @Test func unauthorizedMeansTheConnectionIsLostNotTheUsersSession() {
        let error = AlpacaErrorMapping.rpcError(status: 401, body: body(#"{"code":40110000,"message":"access key verification failed"}"#))
        #expect(error.code == .conflict)
        #expect(error.code != .unauthenticated)
        #expect(error.message == "alpaca_connection_lost")
        #expect(!error.description.contains("access key"))
    }

    @Test func insufficientBuyingPowerIsPassedToTheUser() {
        let error = AlpacaErrorMapping.rpcError(status: 403, body: body(#"{"code":40310000,"message":"insufficient buying power"}"#))
        #expect(error.code == .permissionDenied)
        #expect(error.message == "insufficient buying power")
        #expect(error.details == ["alpaca_code": "40310000"])
    }

    @Test func unprocessableOrderKeepsAlpacasReason() {
        let error = AlpacaErrorMapping.rpcError(status: 422, body: body(#"{"code":42210000,"message":"order is not cancelable"}"#))
        #expect(error.code == .invalidArgument)
        #expect(error.message == "order is not cancelable")
    }

    @Test func notFoundSaysNothingAboutWhoseOrderItWas_C7() {
        let error = AlpacaErrorMapping.rpcError(status: 404, body: body(#"{"code":40410000,"message":"order not found for 6f5e…"}"#))
        #expect(error == RPCError(code: .notFound, message: "not found"))
    }

    @Test func rateLimitedCarriesABoundedRetryAfter() {
        #expect(AlpacaErrorMapping.rpcError(status: 429, body: body("Too many requests"), retryAfterSeconds: 7)
            == RPCError(code: .resourceExhausted, message: "rate_limited", details: ["retry_after": "7"]))
        #expect(AlpacaErrorMapping.rpcError(status: 429, body: [UInt8]()).details["retry_after"] == "1")
        #expect(AlpacaErrorMapping.rpcError(status: 429, body: [UInt8](), retryAfterSeconds: 100_000).details["retry_after"] == "60")
        #expect(AlpacaErrorMapping.retryAfter(rateLimitReset: "1800000030", now: 1_800_000_000) == 30)
        #expect(AlpacaErrorMapping.retryAfter(rateLimitReset: "1799999990", now: 1_800_000_000) == nil)
        #expect(AlpacaErrorMapping.retryAfter(rateLimitReset: "soon", now: 1_800_000_000) == nil)
        #expect(AlpacaErrorMapping.retryAfter(rateLimitReset: nil, now: 1_800_000_000) == nil)
    }

    @Test(arguments: [500, 502, 503, 504, 599])
    func serverErrorsAreUnavailableWithAFixedMessage(_ status: Int) {
        let error = AlpacaErrorMapping.rpcError(status: status, body: body(#"{"code":50010000,"message":"internal: db timeout at pod-7"}"#))
        #expect(error.code == .unavailable)
        #expect(!error.message.contains("pod-7"))
    }

    @Test(arguments: [400, 405, 409, 418, 207, 302])
    func unexpectedStatusesAreAGenericInternalError(_ status: Int) {
        #expect(AlpacaErrorMapping.rpcError(status: status, body: body(#"{"message":"bad json at line 1"}"#)) == RPCError(code: .internalError, message: "internal error"))
    }

    @Test(arguments: [
        #"{"message":"<script>alert(1)</script>"}"#, #"{"message":"{\"raw\":1}"}"#, #"{"message":"line\nbreak"}"#,
        #"{"message":"caf\u00e9"}"#, #"{"message":"   "}"#, #"{"code":1}"#, "not json", "",
    ])
    func unsafeOrMissingMessagesAreReplaced(_ json: String) {
        let error = AlpacaErrorMapping.rpcError(status: 422, body: body(json))
        #expect(error.code == .invalidArgument)
        #expect(error.message == "the brokerage could not process the request")
    }

    @Test func longMessagesAreCutAndHugeBodiesIgnored() {
        let long = String(repeating: "a", count: 500)
        #expect(AlpacaErrorMapping.rpcError(status: 403, body: body(#"{"message":"\#(long)"}"#)).message.count == 200)
        let huge = #"{"message":"x","pad":""# + String(repeating: "a", count: 20_000) + #""}"#
        #expect(AlpacaErrorMapping.rpcError(status: 403, body: body(huge)).message == "the brokerage refused the request")
    }
}
