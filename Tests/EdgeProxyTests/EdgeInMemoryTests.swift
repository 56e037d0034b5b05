import Foundation
import HTTPTypes
import HummingbirdTesting
import NIOCore
import RPC
import RateLimiting
import Testing
@testable import AuthService
@testable import EdgeProxy

/// The edge's HTTP behaviour on its own: each stage of the pipeline against a scripted auth over
/// the in-process transport, in milliseconds. The process tests (`withEdge`) keep covering the
/// same paths end to end against the real auth service.
@Suite("Edge in memory: pipeline stages and the auth gateway", .timeLimit(.minutes(1)))
struct EdgeInMemoryTests {
    // MARK: Admission (R-16, R-18)

    @Test func oversizedURIHeadersAndBodiesAreRefused_R18() async throws {
        let edge = try await InMemoryEdge { $0.maximumBodyBytes = 1024 }
        try await edge.test { client in
            let longURI = try await client.execute(uri: "/v1/me?" + String(repeating: "a", count: 9000), method: .get)
            #expect(longURI.status == .uriTooLong)
            #expect(try longURI.errorCode() == "uri_too_long")

            let bigHeaders = try await client.execute(uri: "/healthz", method: .get, headers: [.init("X-Padding")!: String(repeating: "p", count: 9000)])
            #expect(bigHeaders.status == .requestHeaderFieldsTooLarge)
            #expect(try bigHeaders.errorCode() == "headers_too_large")

            let bigBody = try await client.execute(uri: "/v1/auth/register", method: .post, headers: [.contentType: "application/json"],
                                                   body: ByteBuffer(string: #"{"email":""# + String(repeating: "x", count: 2000) + #""}"#))
            #expect(bigBody.status == .contentTooLarge)
            #expect(try bigBody.errorCode() == "payload_too_large")
        }
    }

    @Test func pastTheInFlightBoundRequestsAreShedButLivenessIsNot_R16() async throws {
        let edge = try await InMemoryEdge { $0.maximumInFlightRequests = 0 }
        try await edge.test { client in
            let shed = try await client.execute(uri: "/openapi.json", method: .get)
            #expect(shed.status == .serviceUnavailable)
            #expect(try shed.errorCode() == "service_unavailable")
            #expect(shed.headers[.retryAfter] == "1")
            #expect(try await client.execute(uri: "/healthz", method: .get).status == .ok, "liveness is exempt")
        }
        #expect(edge.state.metrics.render().contains("clau_edge_admission_rejections_total 1\n"))
    }

    @Test func unknownPathIs404AndOtherMethodIs405WithAllow_R14() async throws {
        let edge = try await InMemoryEdge()
        try await edge.test { client in
            let missing = try await client.execute(uri: "/v1/nope", method: .get)
            #expect(missing.status == .notFound)
            #expect(try missing.errorCode() == "not_found")
            let wrongMethod = try await client.execute(uri: "/healthz", method: .post)
            #expect(wrongMethod.status == .methodNotAllowed)
            #expect(wrongMethod.headers[.allow] == "GET")
        }
        #expect(edge.auth.calls.isEmpty, "refused before auth is asked anything")
    }

    // MARK: Client address and blocklist (R-4)

    @Test func blocklistedClientIsRefused_R4() async throws {
        let edge = try await InMemoryEdge()
        let until = Int64(Date().timeIntervalSince1970) + 3600
        edge.auth.script { script in
            var block = AuthIPBlock()
            block.ip = "::ffff:203.0.113.7"
            block.blockedUntil = until
            script.blocks = [block]
        }
        await edge.state.blocklist.refresh(requestID: "test")
        try await edge.test(from: "203.0.113.7") { client in
            let refused = try await client.execute(uri: "/openapi.json", method: .get)
            #expect(refused.status == .forbidden)
            #expect(try refused.errorCode() == "ip_blocked")
            #expect(try await client.execute(uri: "/healthz", method: .get).status == .ok, "liveness is exempt")
        }
        try await edge.test(from: "203.0.113.8") { client in
            let other = try await client.execute(uri: "/openapi.json", method: .get)
            #expect(other.status == .ok)
        }
        #expect(edge.logs.accessEntries.first?["client_ip"] == "203.0.113.7")
    }

    // MARK: Authentication (C-2, R-1, R-3)

    @Test func missingOrInvalidCredentialsAre401_C2() async throws {
        let edge = try await InMemoryEdge()
        let revokedJTI = UUID().uuidString.lowercased()
        edge.auth.script { $0.revokedJTIs = [revokedJTI] }
        let otherKey = try await SigningKey.generate(algorithm: .es256, kid: "in-memory-es256")
        try await edge.test { client in
            let missing = try await client.execute(uri: "/v1/me", method: .get)
            #expect(missing.status == .unauthorized)
            #expect(try missing.errorCode() == "unauthenticated")
            #expect(missing.headers[.wwwAuthenticate] == "Bearer")

            let basic = try await client.execute(uri: "/v1/me", method: .get, headers: [.authorization: "Basic dXNlcjpwYXNz"])
            #expect(try basic.errorCode() == "unauthenticated")

            let rejected: [(String, String)] = [
                ("garbage", "not.a.token"),
                ("another key with the same kid", try signed(TestClaims(sub: UUID().uuidString.lowercased()), key: otherKey)),
                ("expired", try edge.token(lifetime: 60, now: Date().addingTimeInterval(-3600))),
                ("revoked", try edge.token(jti: revokedJTI)),
            ]
            for (name, token) in rejected {
                let response = try await client.execute(uri: "/v1/me", method: .get, headers: bearer(token))
                #expect(response.status == .unauthorized, "\(name)")
                #expect(try response.errorCode() == "invalid_token", "\(name)")
                #expect(response.headers[.wwwAuthenticate] == #"Bearer error="invalid_token""#, "\(name)")
            }

            let unknownKey = try await client.execute(uri: "/v1/me", method: .get, headers: [.init("X-API-Key")!: "clau_unknown"])
            #expect(unknownKey.status == .unauthorized)
            #expect(try unknownKey.errorCode() == "invalid_api_key")

            let userID = UUID().uuidString.lowercased()
            let me = try await client.execute(uri: "/v1/me", method: .get, headers: bearer(try edge.token(for: userID)))
            #expect(me.status == .ok)
            #expect((try JSONSerialization.jsonObject(with: Data(me.text.utf8)) as? [String: Any])?["id"] as? String == userID)
        }
        #expect(edge.state.metrics.render().contains("clau_edge_token_rejections_total 4\n"))
    }

    @Test func apiKeysAreRefusedWhereOnlyATokenWillDo_R3() async throws {
        let edge = try await InMemoryEdge()
        var principal = AuthPrincipal()
        principal.userID = UUID().uuidString.lowercased()
        principal.role = "user"
        principal.apiKeyID = "key-1"
        edge.auth.script { $0.apiKeys["clau_good"] = principal }
        try await edge.test { client in
            #expect(try await client.execute(uri: "/v1/me", method: .get, headers: [.authorization: "Bearer clau_good"]).status == .ok)
            let tokenOnly = try await client.execute(uri: "/v1/me/password", method: .post, headers: [.authorization: "Bearer clau_good"])
            #expect(tokenOnly.status == .forbidden)
            #expect(try tokenOnly.errorCode() == "access_token_required")
        }
    }

    /// The gateway fails closed: auth not answering a check the request depends on is 503, never
    /// a pass, and each such call is counted by method (C-17).
    @Test func authUnavailableFailsClosed_R1() async throws {
        let edge = try await InMemoryEdge()
        var principal = AuthPrincipal()
        principal.userID = UUID().uuidString.lowercased()
        edge.auth.script { $0.apiKeys["clau_good"] = principal }
        let token = try edge.token()
        try await edge.test { client in
            edge.auth.script { $0.unavailable = ["CheckRevoked", "AuthenticateAPIKey"] }
            for headers: HTTPFields in [bearer(token), [.init("X-API-Key")!: "clau_good"]] {
                let refused = try await client.execute(uri: "/v1/me", method: .get, headers: headers)
                #expect(refused.status == .serviceUnavailable)
                #expect(try refused.errorCode() == "service_unavailable")
                #expect(refused.headers[.retryAfter] == "1")
            }

            edge.auth.script { $0.unavailable = ["GetUser"] }
            let routeCall = try await client.execute(uri: "/v1/me", method: .get, headers: bearer(token))
            #expect(routeCall.status == .serviceUnavailable)
            #expect(try routeCall.errorCode() == "service_unavailable")
        }
        let metrics = edge.state.metrics.render()
        for method in ["CheckRevoked", "AuthenticateAPIKey", "GetUser"] {
            #expect(metrics.contains(#"clau_edge_auth_rpc_failures_total{method="\#(method)"} 1"#), "\(method)")
        }
    }

    // MARK: Rate limits (C-9, R-15)

    @Test func pastTheBudgetIs429WithRetryAfter_C9() async throws {
        let edge = try await InMemoryEdge { configuration in
            configuration.rateLimitRules = .spec
            configuration.rateLimiter = InProcessRateLimiter(clock: StoppedClock())
        }
        let body = ByteBuffer(string: #"{"email":"new@example.com","password":"\#(goodPassword)","full_name":"Ada"}"#)
        try await edge.test { client in
            for remaining in [2, 1, 0] {
                let accepted = try await client.execute(uri: "/v1/auth/register", method: .post, headers: [.contentType: "application/json"], body: body)
                #expect(accepted.status == .accepted)
                #expect(accepted.headers[.init("X-RateLimit-Limit")!] == "3")
                #expect(accepted.headers[.init("X-RateLimit-Remaining")!] == "\(remaining)")
            }
            let refused = try await client.execute(uri: "/v1/auth/register", method: .post, headers: [.contentType: "application/json"], body: body)
            #expect(refused.status == .tooManyRequests)
            #expect(try refused.errorCode() == "rate_limited")
            #expect(refused.headers[.retryAfter].flatMap(Int.init).map { $0 >= 1 } == true)
            #expect(refused.headers[.init("X-RateLimit-Remaining")!] == "0")
        }
        #expect(edge.auth.calls.filter { $0.method.hasSuffix("/Register") }.count == 3, "the refused request never reached auth")
        #expect(edge.state.metrics.render().contains(#"clau_edge_rate_limited_total{category="register"} 1"#))
    }

    // MARK: Owner checks (C-7)

    @Test func aForeignUserIdInThePathIs404BeforeAnyRPC_C7() async throws {
        let edge = try await InMemoryEdge()
        let token = try edge.token(for: UUID().uuidString.lowercased())
        try await edge.test { client in
            let foreign = try await client.execute(uri: "/v1/users/\(UUID().uuidString.lowercased())/subscription", method: .get, headers: bearer(token))
            #expect(foreign.status == .notFound)
            #expect(try foreign.errorCode() == "not_found")
        }
        #expect(edge.auth.calls.allSatisfy { !$0.method.contains("Subscription") })
    }

    // MARK: Request id, access log (R-14, C-17)

    @Test func requestIDIsEchoedAndCarriedToAuthWithTheDeadline_R14() async throws {
        let edge = try await InMemoryEdge { $0.rpcTimeout = .seconds(3) }
        let token = try edge.token()
        let started = ContinuousClock.now
        try await edge.test { client in
            let kept = try await client.execute(uri: "/v1/me", method: .get, headers: bearer(token) + [.requestID: "trace-1.a_B"])
            #expect(kept.status == .ok)
            #expect(kept.headers[.requestID] == "trace-1.a_B")
            let replaced = try await client.execute(uri: "/v1/nope", method: .get, headers: [.requestID: "not sane!"])
            #expect(replaced.headers[.requestID]?.count == 36)
            #expect(try replaced.errorObject()["request_id"] as? String == replaced.headers[.requestID])
        }
        let calls = edge.auth.calls.filter { $0.requestID == "trace-1.a_B" }
        #expect(Set(calls.map { String($0.method.split(separator: "/").last ?? "") }) == ["GetJWKS", "CheckRevoked", "GetUser"])
        // Each deadline is its call's moment plus the configured 3 s: no earlier than 3 s after
        // the test began, no later than 3 s from now (a slow machine moves both ends alike).
        let checked = ContinuousClock.now
        for call in calls {
            let deadline = try #require(call.deadline)
            #expect(deadline >= started + .seconds(3) && deadline <= checked + .seconds(3), "the configured rpcTimeout, not another")
        }
        // Every call auth received is counted once, by method (what scripts/edge-bench divides
        // by the requests it sent).
        let metrics = edge.state.metrics.render()
        let received = Dictionary(grouping: edge.auth.calls) { String($0.method.split(separator: "/").last ?? "") }.mapValues(\.count)
        #expect(!received.isEmpty)
        for (method, count) in received {
            #expect(metrics.contains(#"clau_edge_rpc_calls_total{service="auth",method="\#(method)"} \#(count)\#n"#), "\(method): \(metrics)")
        }
    }

    @Test func accessLogLineHasItsFieldsAndNoSecrets_C17() async throws {
        let edge = try await InMemoryEdge()
        let userID = UUID().uuidString.lowercased()
        let token = try edge.token(for: userID)
        try await edge.test { client in
            let headers: HTTPFields = bearer(token) + [.init("X-Admin-Key")!: "admin-secret-value", .cookie: "session=cookie-secret", .requestID: "log-test"]
            let response = try await client.execute(uri: "/v1/me?password=query-secret", method: .get, headers: headers)
            #expect(response.status == .ok)
        }
        let entry = try #require(edge.logs.accessEntries.first { $0["request_id"] == "log-test" })
        let fields = Set(entry.keys).subtracting(["time", "level", "logger", "message"])
        #expect(fields == ["request_id", "client_ip", "method", "route", "status", "latency_ms", "user_id", "bytes_in", "bytes_out"])
        #expect(entry["route"] == "/v1/me", "the template, not the path")
        #expect(entry["user_id"] == userID)
        #expect(entry["client_ip"] == "198.51.100.20")
        #expect(entry["status"] == "200")
        #expect(entry["method"] == "GET")
        for secret in [token, "admin-secret-value", "cookie-secret", "query-secret"] {
            #expect(!edge.logs.text.contains(secret), "\(secret.prefix(12))… stays out of every log")
        }
    }
}

/// Time that does not move: a budget spent in the test is not refilled during it.
private struct StoppedClock: RateLimiterClock {
    func now() -> Duration { .seconds(1000) }
}
