import Foundation
import ProviderFakes
import Testing

@Suite("Stripe webhook signing", .timeLimit(.minutes(5)))
struct WebhookSigningTests {
    static func vectors() throws -> JSONValue {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures/webhook_signature_vectors.json")
        return try JSONValue.decode(Array(try Data(contentsOf: url)))
    }

    @Test("HMAC-SHA256 matches the stripe-node primitive vectors")
    func hmacPrimitive() throws {
        let vectors = try Self.vectors()
        let key = try #require(vectors["hmac_primitive"]?["key"]?.stringValue)
        let cases = try #require(vectors["hmac_primitive"]?["cases"]?.arrayValue)
        #expect(cases.count == 3)
        for testCase in cases {
            let payload = try #require(testCase["payload"]?.stringValue)
            #expect(StripeWebhookSigner.hmacSHA256Hex(key: Array(key.utf8), message: Array(payload.utf8)) == testCase["hmac_sha256_hex"]?.stringValue)
        }
    }

    /// Our signature is among a case's `v1` values exactly when the case's signature is valid
    /// (cases refused only for their age carry a correct signature too).
    @Test("signatures agree with every header case")
    func headerCases() throws {
        let vectors = try Self.vectors()
        let secret = try #require(vectors["secret"]?.stringValue)
        let payload = try #require(vectors["payload"]?.stringValue)
        let cases = try #require(vectors["header_cases"]?.arrayValue)
        #expect(cases.count >= 10)
        for testCase in cases {
            let header = try #require(testCase["header"]?.stringValue)
            let body = testCase["payload_override"]?.stringValue ?? payload
            var timestamp: Int64?
            var v1: [String] = []
            for part in header.split(separator: ",") {
                let pair = part.split(separator: "=", maxSplits: 1)
                guard pair.count == 2 else { continue }
                if pair[0] == "t" { timestamp = Int64(pair[1]) }
                if pair[0] == "v1" { v1.append(String(pair[1])) }
            }
            let signatureMatches = timestamp.map { v1.contains(StripeWebhookSigner.signature(payload: Array(body.utf8), secret: secret, timestamp: $0)) } ?? false
            let expectedMatch = testCase["valid"] == true || testCase["error"] == "Timestamp outside the tolerance zone"
            #expect(signatureMatches == expectedMatch, "\(testCase["name"]?.stringValue ?? "?")")
        }
        #expect(StripeWebhookSigner.signatureHeader(payload: Array(payload.utf8), secret: secret, timestamp: 1_700_000_000)
            == "t=1700000000,v1=3bfab77baf5f7b6991a46c9b53b6547d7afc56148b10468fcad9f35c1992ffbd")
    }

    @Test("POST /_fake/stripe/webhooks/sign signs the raw body with the configured secret")
    func signEndpoint() async throws {
        let vectors = try Self.vectors()
        let payload = try #require(vectors["payload"]?.stringValue)
        var configuration = testConfiguration()
        configuration.stripe.webhookSecret = try #require(vectors["secret"]?.stringValue)
        try await withFakes(configuration) { fakes in
            let response = try await fakes.send(.post, "/_fake/stripe/webhooks/sign?timestamp=1700000000", body: payload)
            #expect(response.status == 200)
            let expected = "t=1700000000,v1=3bfab77baf5f7b6991a46c9b53b6547d7afc56148b10468fcad9f35c1992ffbd"
            #expect(response.header("Stripe-Signature") == expected)
            #expect(response.json?["stripe_signature"]?.stringValue == expected)
            #expect(try await fakes.send(.post, "/_fake/stripe/webhooks/sign?timestamp=soon", body: payload).status == 400)
        }
    }
}

@Suite("Fault injection", .timeLimit(.minutes(5)))
struct FaultInjectionTests {
    @Test("the next N requests to a path answer the injected status, then the fake answers normally")
    func injectedFailures() async throws {
        try await withFakes { fakes in
            let token = try await fakes.alpacaToken()
            let added = try await fakes.send(.post, "/_fake/faults", body: #"{"path":"/v2/account","method":"GET","status":500,"count":2}"#)
            #expect(added.status == 201)
            for _ in 0..<2 {
                let failed = try await fakes.alpaca(.get, "/v2/account", token: token)
                #expect(failed.status == 500)
                #expect(failed.json?["code"] != nil)
            }
            #expect(try await fakes.alpaca(.get, "/v2/positions", token: token).status == 200)
            #expect(try await fakes.alpaca(.get, "/v2/account", token: token).status == 200)

            _ = try await fakes.send(.post, "/_fake/faults", body: #"{"path":"/v2/orders","status":429,"count":1}"#)
            let limited = try await fakes.alpaca(.get, "/v2/orders", token: token)
            #expect(limited.status == 429)
            #expect(limited.header("X-RateLimit-Remaining") == "0")
            #expect(limited.header("X-RateLimit-Reset") != nil)

            _ = try await fakes.send(.post, "/_fake/faults", body: #"{"path":"/v1/customers","status":503,"count":1}"#)
            let stripeFailure = try await fakes.stripe(.post, "/v1/customers", form: "email=a%40b.c")
            #expect(stripeFailure.status == 503)
            #expect(stripeFailure.json?["error"]?["type"] == "api_error")
            #expect(try await fakes.stripe(.post, "/v1/customers", form: "email=a%40b.c").status == 200)

            _ = try await fakes.send(.post, "/_fake/faults", body: #"{"path":"/v2/account","status":500,"count":5}"#)
            #expect(try await fakes.send(.delete, "/_fake/faults").status == 204)
            #expect(try await fakes.alpaca(.get, "/v2/account", token: token).status == 200)
        }
    }

    @Test("bad fault rules are refused with a clear message", arguments: [
        #"{"path":"/v2/account","status":404,"count":1}"#,
        #"{"path":"/v2/account","status":500,"count":0}"#,
        #"{"path":"v2/account","status":500,"count":1}"#,
        #"{"status":500}"#,
        #"not json"#,
    ])
    func badRules(body: String) async throws {
        try await withFakes { fakes in
            let response = try await fakes.send(.post, "/_fake/faults", body: body)
            #expect(response.status == 400)
            #expect(response.json?["error"]?.stringValue?.isEmpty == false)
        }
    }
}
