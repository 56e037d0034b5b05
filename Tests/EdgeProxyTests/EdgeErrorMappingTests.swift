import RPC
import Testing
@testable import EdgeProxy

/// RPC status → HTTP error body (SPEC §2, §3): what a client reads in `fields`.
@Suite("Edge: RPC errors as HTTP errors", .timeLimit(.minutes(5)))
struct EdgeErrorMappingTests {
    /// A field's `problem` is always a snake_case code; auth's sentence stays in `message` (C-15).
    @Test func fieldProblemsAreSnakeCaseCodes() {
        let sentence = RPCError(code: .invalidArgument, message: "platform must be ios or android", details: ["field": "platform"])
        let error = sentence.edgeError
        #expect(error.status == .unprocessableContent)
        #expect(error.fields.map(\.name) == ["platform"])
        #expect(error.fields.map(\.problem) == ["invalid"])
        #expect(error.message == "platform must be ios or android")

        let word = RPCError(code: .invalidArgument, message: "invalid_reset_code", details: ["field": "code"])
        #expect(word.edgeError.fields.map(\.problem) == ["invalid_reset_code"])
    }

    /// A 422 names the field the client sent (`id`), not auth's RPC field (`key_id`).
    @Test func fieldNamesFollowTheRequestBody() {
        let rpc = RPCError(code: .invalidArgument, message: "key_id must be a UUID", details: ["field": "key_id"])
        #expect(rpc.edgeError(passwordField: "password", fieldNames: ["key_id": "id"]).fields.map(\.name) == ["id"])
        #expect(rpc.edgeError.fields.map(\.name) == ["key_id"], "renamed only where the route says so")
    }

    /// SPEC §3: a broker failure is a 500 only when the broker itself said INTERNAL; an unreachable
    /// or outdated broker is 503 with Retry-After, so clients retry.
    @Test func brokerErrorsAre500OnlyForInternal() {
        for raw in UInt32(1)...17 {
            let code = RPCError.Code(rawValue: raw)
            let error = RPCError(code: code, message: "something happened").brokerEdgeError()
            #expect((error.status == .internalServerError) == (code == .internalError), "\(code) → \(error.status.code)")
            if error.status == .serviceUnavailable || error.status == .tooManyRequests {
                #expect(error.headers.contains { $0.0 == .retryAfter }, "\(code) carries Retry-After")
            }
        }
    }

    /// The broker's machine words are the HTTP codes of SPEC §3.
    @Test func brokerCodesBecomeTheirHTTPCodes() {
        let invalid = { (message: String) in RPCError(code: .invalidArgument, message: message).brokerEdgeError() }
        for word in ["invalid_state", "invalid_signature", "invalid_grant"] {
            #expect(invalid(word).status == .badRequest && invalid(word).code == word)
        }
        let field = RPCError(code: .invalidArgument, message: "too_many_digits", details: ["field": "limit_price"]).brokerEdgeError()
        #expect(field.status == .unprocessableContent && field.code == "validation_failed")
        #expect(field.fields == [FieldProblem(name: "limit_price", problem: "too_many_digits")])
        for word in ["alpaca_not_connected", "alpaca_connection_lost"] {
            let conflict = RPCError(code: .conflict, message: word).brokerEdgeError()
            #expect(conflict.status == .conflict && conflict.code == word)
        }
        let limited = RPCError(code: .resourceExhausted, message: "Slow down!", details: ["retry_after": "12"]).brokerEdgeError()
        #expect(limited.status == .tooManyRequests && limited.code == "rate_limited")
        #expect(limited.headers.first { $0.0 == .retryAfter }?.1 == "12")
        #expect(RPCError(code: .notFound, message: "order ord_1 of user x").brokerEdgeError().message == "no such resource", "no broker detail in a 404")
    }
}
