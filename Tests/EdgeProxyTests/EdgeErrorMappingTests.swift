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
}
