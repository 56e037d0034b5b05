import Crypto
import Foundation
import HTTPTypes
import HummingbirdTesting
import RPC
import Testing
@testable import AuthService
@testable import EdgeProxy

@Suite("Edge: accounts and access tokens through a real auth service", .timeLimit(.minutes(5)))
struct EdgeAuthTests {
    @Test func registerLoginMeRefreshLogout_C2() async throws {
        try await withEdge { edge in
            let register = try await edge.send(.post, "/v1/auth/register", body: #"{"email":"ada@example.com","password":"\#(goodPassword)","full_name":"Ada Lovelace","phone":"+14155550100"}"#)
            #expect(register.status == .accepted)
            #expect(register.text == #"{"status":"accepted"}"#)
            // X-2: the same bytes for an e-mail that already exists.
            let again = try await edge.send(.post, "/v1/auth/register", body: #"{"email":"ada@example.com","password":"\#(goodPassword)","full_name":"Someone Else"}"#)
            #expect(again.status == .accepted)
            #expect(again.text == register.text)

            let login = try await edge.send(.post, "/v1/auth/login", body: #"{"email":"ada@example.com","password":"\#(goodPassword)"}"#)
            #expect(login.status == .ok)
            let tokens = try login.jsonObject()
            #expect(Set(tokens.keys) == ["access_token", "refresh_token", "token_type", "expires_in"])
            #expect(tokens["token_type"] as? String == "Bearer")
            #expect(((tokens["expires_in"] as? Int) ?? 0) > 800)
            let access = try #require(tokens["access_token"] as? String)
            let refresh = try #require(tokens["refresh_token"] as? String)

            let me = try await edge.send(.get, "/v1/me", headers: bearer(access))
            #expect(me.status == .ok)
            let user = try me.jsonObject()
            #expect(user["email"] as? String == "ada@example.com")
            #expect(user["full_name"] as? String == "Ada Lovelace")
            #expect(user["phone"] as? String == "+14155550100")
            #expect(user["role"] as? String == "user")
            #expect(user["id"] as? String == (try edge.userID(of: access)))
            #expect((user["created_at"] as? String)?.hasSuffix("Z") == true)
            #expect(user["password_hash"] == nil && user["status"] == nil)

            let rotated = try await edge.send(.post, "/v1/auth/refresh", body: #"{"refresh_token":"\#(refresh)"}"#)
            #expect(rotated.status == .ok)
            let next = try rotated.jsonObject()
            #expect(next["refresh_token"] as? String != refresh)
            let newAccess = try #require(next["access_token"] as? String)

            let logout = try await edge.send(.post, "/v1/auth/logout", headers: bearer(newAccess))
            #expect(logout.status == .noContent)
            #expect(logout.text.isEmpty)
        }
    }

    @Test func revokedTokenAfterLogoutIsRejected_R1() async throws {
        try await withEdge { edge in
            let tokens = try await edge.registerAndLogin("rev@example.com")
            #expect(try await edge.send(.get, "/v1/me", headers: bearer(tokens.access)).status == .ok)
            #expect(try await edge.send(.post, "/v1/auth/logout", headers: bearer(tokens.access)).status == .noContent)
            let after = try await edge.send(.get, "/v1/me", headers: bearer(tokens.access))
            #expect(after.status == .unauthorized)
            #expect(try after.errorCode() == "invalid_token")
            // The refresh token of the logged-out family is dead too.
            let refresh = try await edge.send(.post, "/v1/auth/refresh", body: #"{"refresh_token":"\#(tokens.refresh)"}"#)
            #expect(refresh.status == .unauthorized)
            #expect(try refresh.errorCode() == "invalid_refresh_token")
        }
    }

    @Test func logoutThroughOneEdgeReachesAnotherWithinOneSecond_R1() async throws {
        try await withEdge(mode: .behindProxy(trusted: [])) { edgeA in
            var configuration = EdgeConfiguration(listener: .behindProxy(host: "127.0.0.1", port: 0, trustedProxies: []), authSocketPath: edgeA.edge.state.configuration.authSocketPath)
            configuration.rateLimitRules = .relaxedForTests
            let edgeB = try buildApplication(configuration: configuration, logger: quietLogger)
            let task = Task { try await edgeB.run() }
            defer { task.cancel() }
            let portB = await edgeB.waitUntilListening().api
            let viaB = { @Sendable (token: String) async throws -> HTTPResponse.Status in
                try await TestClient.withClient(host: "127.0.0.1", port: portB) { try await $0.get("/v1/me", headers: bearer(token)) }.status
            }
            let tokens = try await edgeA.registerAndLogin("two-edges@example.com")
            #expect(try await viaB(tokens.access) == .ok, "B has now cached the token as live")
            #expect(try await edgeA.send(.post, "/v1/auth/logout", headers: bearer(tokens.access)).status == .noContent)
            let loggedOut = ContinuousClock.now
            var status = HTTPResponse.Status.ok
            // When each request was sent, not when its answer came back: on a machine running
            // every suite at once one request can take longer than the whole budget.
            var lastServedSentAt = loggedOut
            while status == .ok && ContinuousClock.now - loggedOut < .seconds(5) {
                let sentAt = ContinuousClock.now
                status = try await viaB(tokens.access)
                if status == .ok {
                    lastServedSentAt = sentAt
                    try await Task.sleep(for: .milliseconds(50))
                }
            }
            #expect(status == .unauthorized)
            #expect(lastServedSentAt - loggedOut < .seconds(1), "revocation effective at every edge within 1 s")
        }
    }

    @Test func wrongPasswordAndUnknownEmailAnswerTheSame401_X2() async throws {
        // Each attempt from its own client address: auth delays an address after a failure (R-4).
        // A 60 s first delay (default 1 s), so a loaded CI machine cannot outlast it between two
        // requests (it did once: 401 instead of 429).
        try await withEdge(mode: .behindProxy(trusted: ["127.0.0.1"]), configureAuth: { $0.ipThreatPolicy.delays = [60] }) { edge in
            try await edge.register("known@example.com")
            let unknown = try await edge.send(.post, "/v1/auth/login", headers: [.init("X-Forwarded-For")!: "198.51.100.32"], body: #"{"email":"nobody@example.com","password":"Not-the-right-one-42"}"#)
            let wrong = try await edge.send(.post, "/v1/auth/login", headers: [.init("X-Forwarded-For")!: "198.51.100.31"], body: #"{"email":"known@example.com","password":"Not-the-right-one-42"}"#)
            // Auth's per-IP delay after a failure is honoured as 429 + Retry-After.
            let again = try await edge.send(.post, "/v1/auth/login", headers: [.init("X-Forwarded-For")!: "198.51.100.31"], body: #"{"email":"known@example.com","password":"Not-the-right-one-43"}"#)
            for response in [wrong, unknown] {
                #expect(response.status == .unauthorized)
                #expect(try response.errorCode() == "invalid_credentials")
            }
            let a = try wrong.errorObject(), b = try unknown.errorObject()
            #expect(a["message"] as? String == b["message"] as? String)
            #expect(again.status == .tooManyRequests)
            #expect(try again.errorCode() == "too_many_attempts")
            #expect(again.headers[.retryAfter].flatMap(Int.init).map { $0 >= 1 } == true)
        }
    }

    @Test func expiredTokenIsRejected_C2() async throws {
        try await withEdge { edge in
            let tokens = try await edge.registerAndLogin("exp@example.com")
            let sub = try edge.userID(of: tokens.access)
            let expired = try signed(TestClaims(sub: sub, lifetime: 900, now: Date().addingTimeInterval(-3600)), key: edge.signingKey)
            let notYet = try signed(TestClaims(sub: sub, lifetime: 900, now: Date().addingTimeInterval(3600)), key: edge.signingKey)
            let fresh = try signed(TestClaims(sub: sub), key: edge.signingKey)
            #expect(try await edge.send(.get, "/v1/me", headers: bearer(fresh)).status == .ok, "control: a fresh token of the same shape passes")
            for token in [expired, notYet] {
                let response = try await edge.send(.get, "/v1/me", headers: bearer(token))
                #expect(response.status == .unauthorized)
                #expect(try response.errorCode() == "invalid_token")
                #expect(response.headers[.wwwAuthenticate]?.hasPrefix("Bearer") == true)
            }
        }
    }

    @Test func wrongAudienceIssuerOrTypeIsRejected_C2() async throws {
        try await withEdge { edge in
            let tokens = try await edge.registerAndLogin("aud@example.com")
            let sub = try edge.userID(of: tokens.access)
            var wrongAudience = TestClaims(sub: sub)
            wrongAudience.aud = "another-api"
            var wrongIssuer = TestClaims(sub: sub)
            wrongIssuer.iss = "evil-auth"
            let cases = [
                ("aud", try signed(wrongAudience, key: edge.signingKey)),
                ("iss", try signed(wrongIssuer, key: edge.signingKey)),
                ("typ", try signed(TestClaims(sub: sub), key: edge.signingKey, type: "JWT")),
            ]
            for (name, token) in cases {
                let response = try await edge.send(.get, "/v1/me", headers: bearer(token))
                #expect(response.status == .unauthorized, "\(name)")
                #expect(try response.errorCode() == "invalid_token", "\(name)")
            }
        }
    }

    @Test func hs256TokensAreVerifiedByAuthAndRevocationHolds_C2_R1() async throws {
        let key = try await SigningKey.generate(algorithm: .hs256, kid: "edge-hs256")
        try await withEdge(signingKey: key) { edge in
            let tokens = try await edge.registerAndLogin("hs@example.com")
            // The edge holds no HS256 secret (the JWKS publishes none) and still serves the user.
            #expect(edge.edge.state.jwks.keyCount == 0)
            let me = try await edge.send(.get, "/v1/me", headers: bearer(tokens.access))
            #expect(me.status == .ok)
            #expect(try me.jsonObject()["email"] as? String == "hs@example.com")
            // A forged HS256 token (wrong secret) is refused.
            let parts = tokens.access.split(separator: ".")
            let forgedMAC = HMAC<SHA256>.authenticationCode(for: Data("\(parts[0]).\(parts[1])".utf8), using: SymmetricKey(size: .bits256))
            let forged = "\(parts[0]).\(parts[1]).\(b64url(Data(forgedMAC)))"
            #expect(try await edge.send(.get, "/v1/me", headers: bearer(forged)).status == .unauthorized)
            // Logout revokes: auth's answer includes the revocation check.
            #expect(try await edge.send(.post, "/v1/auth/logout", headers: bearer(tokens.access)).status == .noContent)
            #expect(try await edge.send(.get, "/v1/me", headers: bearer(tokens.access)).status == .unauthorized)
        }
    }

    @Test func algNoneAndHS256KeyConfusionAreRejected_C2() async throws {
        try await withEdge { edge in
            let tokens = try await edge.registerAndLogin("alg@example.com")
            let sub = try edge.userID(of: tokens.access)
            let payload = b64url(json(TestClaims(sub: sub)))
            let kid = edge.signingKey.kid
            // alg none, with and without a signature.
            let noneHeader = b64url(Data(#"{"alg":"none","kid":"\#(kid)","typ":"at+jwt"}"#.utf8))
            let none1 = "\(noneHeader).\(payload)."
            let none2 = "\(noneHeader).\(payload).\(b64url(Data("x".utf8)))"
            // HS256 keyed with the public key material an attacker can read from the JWKS.
            let jwks = try #require(edge.edge.state.jwks.jwksJSON)
            let hsHeader = b64url(Data(#"{"alg":"HS256","kid":"\#(kid)","typ":"at+jwt"}"#.utf8))
            var confused: [String] = []
            for secret in [Data(jwks.utf8), Data((edge.signingKey.publicJWK?["n"] ?? "").utf8)] {
                let mac = HMAC<SHA256>.authenticationCode(for: Data("\(hsHeader).\(payload)".utf8), using: SymmetricKey(data: secret))
                confused.append("\(hsHeader).\(payload).\(b64url(Data(mac)))")
            }
            // A valid RS256 token whose header claims another algorithm on the same key.
            let real = tokens.access.split(separator: ".")
            let es256Header = b64url(Data(#"{"alg":"ES256","kid":"\#(kid)","typ":"at+jwt"}"#.utf8))
            let relabelled = "\(es256Header).\(real[1]).\(real[2])"
            // Signed by the real RSA key, over a header that claims ES256: the header's `alg` must
            // equal the key's algorithm, not merely be on the allowlist.
            let mislabelledInput = "\(es256Header).\(payload)"
            let mislabelled = mislabelledInput + "." + b64url(try edge.signingKey.verification.implementation.sign(Array(mislabelledInput.utf8)))
            for token in [none1, none2, relabelled, mislabelled] + confused {
                let response = try await edge.send(.get, "/v1/me", headers: bearer(token))
                #expect(response.status == .unauthorized, "\(token.prefix(40))")
                #expect(try response.errorCode() == "invalid_token")
            }
        }
    }

    @Test func garbageAndTamperedTokensAreRejected_C2() async throws {
        try await withEdge { edge in
            let tokens = try await edge.registerAndLogin("garbage@example.com")
            let parts = tokens.access.split(separator: ".").map(String.init)
            var tamperedClaims = try JSONSerialization.jsonObject(with: Data(try #require(Base64URL.decode(parts[1])))) as! [String: Any]
            tamperedClaims["role"] = "admin"
            let tampered = "\(parts[0]).\(b64url(try JSONSerialization.data(withJSONObject: tamperedClaims))).\(parts[2])"
            let unknownKid = try TokenIssuer.sign(TestClaims(sub: try edge.userID(of: tokens.access)), with: try await SigningKey.generate(algorithm: .es256, kid: "not-published"))
            let cases: [(String, HTTPFields)] = [
                ("garbage", bearer("garbage")),
                ("three dots", bearer("a.b.c")),
                ("tampered payload", bearer(tampered)),
                ("unknown kid", bearer(unknownKid)),
                ("long garbage", bearer(String(repeating: "A", count: 7900) + ".e30.x")),
                ("basic scheme", [.authorization: "Basic \(Data("u:p".utf8).base64EncodedString())"]),
                ("no credentials", [:]),
            ]
            for (name, headers) in cases {
                let response = try await edge.send(.get, "/v1/me", headers: headers)
                #expect(response.status == .unauthorized, "\(name)")
                let code = try response.errorCode()
                #expect(code == "invalid_token" || code == "unauthenticated", "\(name): \(code)")
            }
            #expect(try await edge.send(.get, "/v1/me", headers: bearer(tokens.access)).status == .ok, "control")
        }
    }

    @Test func revocationCheckFailureFailsClosed_R1() async throws {
        // Auth is stopped after the edge has its keys: a correctly signed, unexpired token must
        // not pass without a revocation answer. No reuse of "not revoked" answers here (default
        // 500 ms), so every request below needs auth whatever the machine's speed.
        try await withEdge(configure: { $0.revocationCacheTTL = .zero }) { edge in
            let tokens = try await edge.registerAndLogin("closed@example.com")
            #expect(try await edge.send(.get, "/v1/me", headers: bearer(tokens.access)).status == .ok)
            edge.stopAuth()
            // Auth closes its connections once its task has ended: until then a call may still
            // be answered (10 s at most).
            var response = try await edge.send(.get, "/v1/me", headers: bearer(tokens.access))
            let stopped = ContinuousClock.now + .seconds(10)
            while response.status == .ok && ContinuousClock.now < stopped {
                try await Task.sleep(for: .milliseconds(50))
                response = try await edge.send(.get, "/v1/me", headers: bearer(tokens.access))
            }
            #expect(response.status == .serviceUnavailable)
            #expect(try response.errorCode() == "service_unavailable")
            #expect(response.headers[.retryAfter] != nil)
            // A route that needs no further auth RPC: only the revocation check can refuse it.
            let stub = try await edge.send(.get, "/v1/alpaca/account", headers: bearer(tokens.access))
            #expect(stub.status == .serviceUnavailable)
            #expect((try stub.errorObject()["message"] as? String)?.contains("cannot verify the session") == true, "refused by the revocation check, not by the stub")
            let ready = try await edge.send(.get, "/readyz")
            #expect(ready.status == .serviceUnavailable)
            #expect(try await edge.send(.get, "/healthz").status == .ok)
        }
    }

    /// C-6: every route the table does not mark public refuses a caller without credentials and
    /// one with a bogus token or API key, before any service sees the request (the routes whose
    /// service does not exist yet must answer 401 too, not their 503).
    @Test func everyNonPublicRouteRefusesCallersWithoutValidCredentials_C6() async throws {
        try await withEdge { edge in
            // Exactly SPEC §3's public list (plus the OpenAPI document) is public.
            let publicRoutes = Set(RouteTable.clau().routes.filter { $0.auth == .public }.map { "\($0.method) \($0.template)" })
            #expect(publicRoutes == [
                "POST /v1/auth/register", "POST /v1/auth/login", "POST /v1/auth/refresh",
                "POST /v1/auth/password/forgot", "POST /v1/auth/password/reset", "GET /.well-known/jwks.json",
                "POST /v1/stripe/webhook", "GET /healthz", "GET /readyz", "GET /openapi.json",
            ])
            let protected = RouteTable.clau().routes.filter { $0.auth != .public }
            for route in protected {
                let path = route.template
                    .replacingOccurrences(of: "{userId}", with: UUID().uuidString.lowercased())
                    .replacingOccurrences(of: "{orderId}", with: UUID().uuidString.lowercased())
                    .replacingOccurrences(of: "{ip}", with: "203.0.113.7")
                #expect(!path.contains("{"), "unfilled parameter in \(route.template)")
                let body: String? = [.post, .put, .patch].contains(route.method) ? "{}" : nil
                let name = "\(route.method) \(route.template)"
                let anonymous = try await edge.send(route.method, path, body: body)
                #expect(anonymous.status == .unauthorized, "\(name) without credentials")
                #expect(try anonymous.errorCode() == "unauthenticated", "\(name)")
                #expect(anonymous.headers[.wwwAuthenticate]?.hasPrefix("Bearer") == true, "\(name)")
                let forged = try await edge.send(route.method, path, headers: bearer("eyJhbGciOiJFUzI1NiJ9.e30.AAAA"), body: body)
                #expect(forged.status == .unauthorized, "\(name) with a bogus token")
                #expect(try forged.errorCode() == "invalid_token", "\(name)")
                // Routes an API key may never call refuse any key outright (403, without asking
                // auth); the others ask auth, which knows no such key (401).
                let key = try await edge.send(route.method, path, headers: [.init("X-API-Key")!: "clau_" + String(repeating: "x", count: 40)], body: body)
                if route.allowsAPIKey {
                    #expect(key.status == .unauthorized, "\(name) with an unknown API key")
                    #expect(try key.errorCode() == "invalid_api_key", "\(name)")
                } else {
                    #expect(key.status == .forbidden, "\(name) with an API key")
                    #expect(try key.errorCode() == "access_token_required", "\(name)")
                }
            }
        }
    }

    @Test func foreignUserIdAnswers404_C7() async throws {
        try await withEdge { edge in
            let alice = try await edge.registerAndLogin("alice@example.com")
            let bob = try await edge.registerAndLogin("bob@example.com")
            let bobID = try edge.userID(of: bob.access)
            let aliceID = try edge.userID(of: alice.access)
            let foreign = try await edge.send(.get, "/v1/users/\(bobID)/subscription", headers: bearer(alice.access))
            #expect(foreign.status == .notFound)
            #expect(try foreign.errorCode() == "not_found")
            let notAnID = try await edge.send(.get, "/v1/users/..%2F..%2Fadmin/subscription", headers: bearer(alice.access))
            #expect(notAnID.status == .notFound)
            // Their own id passes the owner check and reaches the (not yet built) service.
            let own = try await edge.send(.get, "/v1/users/\(aliceID.uppercased())/subscription", headers: bearer(alice.access))
            #expect(own.status == .serviceUnavailable)
            // No access log line shows a user reading another's data with a 2xx.
            #expect(!edge.logs.accessEntries.contains { $0["route"] == "/v1/users/{userId}/subscription" && $0["status"]?.hasPrefix("2") == true })
        }
    }

    @Test func apiKeyLifecycleAndLimits_R3() async throws {
        try await withEdge { edge in
            let tokens = try await edge.registerAndLogin("keys@example.com")
            // An expiry past year 9999 cannot be stored (it once crashed auth): 422 naming it.
            let far = try await edge.send(.post, "/v1/me/api-keys", headers: bearer(tokens.access), body: #"{"name":"far","expires_at":9223372036854775807}"#)
            #expect(far.status == .unprocessableContent && far.text.contains(#""name":"expires_at","problem":"out_of_range""#), "\(far.text)")
            let created = try await edge.send(.post, "/v1/me/api-keys", headers: bearer(tokens.access), body: #"{"name":"ci"}"#)
            #expect(created.status == .created)
            let object = try created.jsonObject()
            let secret = try #require(object["secret"] as? String)
            let id = try #require((object["api_key"] as? [String: Any])?["id"] as? String)
            #expect(secret.hasPrefix("clau_"))
            let apiKeyHeader = HTTPField.Name("X-API-Key")!
            for headers: HTTPFields in [[apiKeyHeader: secret], bearer(secret)] {
                let me = try await edge.send(.get, "/v1/me", headers: headers)
                #expect(me.status == .ok)
                #expect(try me.jsonObject()["email"] as? String == "keys@example.com")
            }
            // An API key cannot mint more keys, change the password, or reach admin routes.
            for (method, path, body) in [(HTTPRequest.Method.post, "/v1/me/api-keys", #"{"name":"x"}"#), (.post, "/v1/me/password", #"{"current_password":"a","new_password":"b"}"#),
                                         (.post, "/v1/admin/ip-blocks", #"{"ip":"198.51.100.1","duration_seconds":60}"#)] {
                let refused = try await edge.send(method, path, headers: [apiKeyHeader: secret, .init("X-Admin-Key")!: adminKey], body: body)
                #expect(refused.status == .forbidden, "\(path)")
                #expect(try refused.errorCode() == "access_token_required")
            }
            let listed = try await edge.send(.get, "/v1/me/api-keys", headers: bearer(tokens.access))
            #expect(listed.status == .ok)
            #expect(!listed.text.contains(secret), "the secret is shown once")
            #expect(listed.text.contains(id))
            #expect(try await edge.send(.delete, "/v1/me/api-keys", headers: bearer(tokens.access), body: #"{"id":"\#(id)"}"#).status == .noContent)
            for key in [secret, "clau_" + String(repeating: "ab", count: 32), "clau_short"] {
                let refused = try await edge.send(.get, "/v1/me", headers: [apiKeyHeader: key])
                #expect(refused.status == .unauthorized)
                #expect(try refused.errorCode() == "invalid_api_key")
            }
        }
    }

    @Test func forgotAndResetPasswordThroughTheEdge_C5() async throws {
        try await withEdge { edge in
            let tokens = try await edge.registerAndLogin("reset@example.com")
            let known = try await edge.send(.post, "/v1/auth/password/forgot", body: #"{"email":"reset@example.com"}"#)
            let unknown = try await edge.send(.post, "/v1/auth/password/forgot", body: #"{"email":"ghost@example.com"}"#)
            #expect(known.status == .accepted && unknown.status == .accepted)
            #expect(known.text == unknown.text, "X-2")
            let code = try await edge.resetCode(for: "reset@example.com")
            let wrong = try await edge.send(.post, "/v1/auth/password/reset", body: #"{"email":"reset@example.com","code":"000000","new_password":"Brand!new-Pass-Word-9"}"#)
            #expect(wrong.status == .unprocessableContent)
            #expect(try wrong.errorCode() == "invalid_reset_code")
            let reset = try await edge.send(.post, "/v1/auth/password/reset", body: #"{"email":"reset@example.com","code":"\#(code)","new_password":"Brand!new-Pass-Word-9"}"#)
            #expect(reset.status == .noContent)
            // Every session was revoked (X-6); the new password works.
            #expect(try await edge.send(.post, "/v1/auth/refresh", body: #"{"refresh_token":"\#(tokens.refresh)"}"#).status == .unauthorized)
            #expect(try await edge.login("reset@example.com", password: "Brand!new-Pass-Word-9").access.isEmpty == false)
        }
    }

    @Test func profilePreferencesAndDevicesAreTheCallersOwn_C7() async throws {
        try await withEdge { edge in
            let alice = try await edge.registerAndLogin("profile-a@example.com")
            let bob = try await edge.registerAndLogin("profile-b@example.com")
            let patched = try await edge.send(.patch, "/v1/me", headers: bearer(alice.access), body: #"{"full_name":"Alice A","phone":"+447700900123"}"#)
            #expect(patched.status == .ok)
            #expect(try patched.jsonObject()["phone"] as? String == "+447700900123")
            let removed = try await edge.send(.patch, "/v1/me", headers: bearer(alice.access), body: #"{"phone":null}"#)
            #expect(try removed.jsonObject()["phone"] is NSNull)
            #expect(try await edge.send(.patch, "/v1/me", headers: bearer(alice.access), body: #"{"role":"admin"}"#).status == .unprocessableContent)
            let defaults = try await edge.send(.get, "/v1/me/notification-preferences", headers: bearer(bob.access)).jsonObject() as? [String: Bool] ?? [:]
            #expect(defaults.count == 4)
            let flipped = defaults.mapValues { !$0 }
            let prefs = String(decoding: try JSONSerialization.data(withJSONObject: flipped), as: UTF8.self)
            #expect(try await edge.send(.put, "/v1/me/notification-preferences", headers: bearer(alice.access), body: prefs).status == .ok)
            let mine = try await edge.send(.get, "/v1/me/notification-preferences", headers: bearer(alice.access))
            #expect(try mine.jsonObject() as? [String: Bool] == flipped)
            let bobs = try await edge.send(.get, "/v1/me/notification-preferences", headers: bearer(bob.access))
            #expect(try bobs.jsonObject() as? [String: Bool] == defaults, "Bob's preferences are his own")
            let device = try await edge.send(.post, "/v1/me/devices", headers: bearer(alice.access), body: #"{"fcm_token":"fcm-token-alice-1","platform":"ios"}"#)
            #expect(device.status == .created)
            // Bob cannot remove Alice's device: it is not his.
            #expect(try await edge.send(.delete, "/v1/me/devices", headers: bearer(bob.access), body: #"{"fcm_token":"fcm-token-alice-1"}"#).status == .notFound)
            #expect(try await edge.send(.delete, "/v1/me/devices", headers: bearer(alice.access), body: #"{"fcm_token":"fcm-token-alice-1"}"#).status == .noContent)
            let deleted = try await edge.send(.delete, "/v1/me", headers: bearer(bob.access), body: #"{"password":"\#(goodPassword)"}"#)
            #expect(deleted.status == .noContent)
            #expect(try await edge.send(.get, "/v1/me", headers: bearer(bob.access)).status == .unauthorized)
        }
    }

    @Test func adminRoutesNeedRoleMFAAndAdminKey_C8() async throws {
        try await withEdge { edge in
            let victim = try await edge.registerAndLogin("victim@example.com")
            let victimID = try edge.userID(of: victim.access)
            let path = "/v1/admin/users/\(victimID)/sessions/revoke"
            let adminSub = UUID().uuidString.lowercased()
            let userToken = try signed(TestClaims(sub: adminSub, role: "user", amr: ["pwd", "otp"], authTime: Date()), key: edge.signingKey)
            let adminNoMFA = try signed(TestClaims(sub: adminSub, role: "admin", amr: ["pwd"]), key: edge.signingKey)
            let adminStaleMFA = try signed(TestClaims(sub: adminSub, role: "admin", amr: ["pwd", "otp"], authTime: Date().addingTimeInterval(-3600)), key: edge.signingKey)
            let admin = try signed(TestClaims(sub: adminSub, role: "admin", amr: ["pwd", "otp"], authTime: Date()), key: edge.signingKey)
            let keyHeader = HTTPField.Name("X-Admin-Key")!
            let cases: [(String, HTTPFields, HTTPResponse.Status)] = [
                ("no token", [keyHeader: adminKey], .unauthorized),
                ("user role", [.authorization: "Bearer \(userToken)", keyHeader: adminKey], .forbidden),
                ("no mfa", [.authorization: "Bearer \(adminNoMFA)", keyHeader: adminKey], .forbidden),
                ("stale mfa", [.authorization: "Bearer \(adminStaleMFA)", keyHeader: adminKey], .forbidden),
                ("no admin key", [.authorization: "Bearer \(admin)"], .forbidden),
                ("wrong admin key", [.authorization: "Bearer \(admin)", keyHeader: adminKey + "x"], .forbidden),
            ]
            for (name, headers, status) in cases {
                let response = try await edge.send(.post, path, headers: headers, body: "{}")
                #expect(response.status == status, "\(name)")
                _ = try response.errorObject()
            }
            #expect(try await edge.send(.get, "/v1/me", headers: bearer(victim.access)).status == .ok, "nothing revoked yet")
            let ok = try await edge.send(.post, path, headers: [.authorization: "Bearer \(admin)", keyHeader: adminKey], body: #"{"reason":"admin"}"#)
            #expect(ok.status == .ok)
            #expect(try ok.jsonObject()["revoked_sessions"] as? Int == 1)
            let refresh = try await edge.send(.post, "/v1/auth/refresh", body: #"{"refresh_token":"\#(victim.refresh)"}"#)
            #expect(refresh.status == .unauthorized)
        }
    }

    @Test func adminBlockedIPIsRefusedByTheEdge_R4() async throws {
        try await withEdge(mode: .behindProxy(trusted: ["127.0.0.1"])) { edge in
            let admin = try signed(TestClaims(sub: UUID().uuidString.lowercased(), role: "admin", amr: ["pwd", "otp"], authTime: Date()), key: edge.signingKey)
            let adminHeaders: HTTPFields = [.authorization: "Bearer \(admin)", .init("X-Admin-Key")!: adminKey, .init("X-Forwarded-For")!: "192.0.2.1"]
            let from = { (ip: String) -> HTTPFields in [.init("X-Forwarded-For")!: ip] }
            #expect(try await edge.send(.get, "/openapi.json", headers: from("203.0.113.66")).status == .ok)
            var blockHeaders = adminHeaders
            blockHeaders[.init("X-Request-ID")!] = "block-req-4711"
            let block = try await edge.send(.post, "/v1/admin/ip-blocks", headers: blockHeaders, body: #"{"ip":"203.0.113.66","duration_seconds":600,"reason":"abuse"}"#)
            #expect(block.status == .noContent)
            let refused = try await edge.send(.get, "/openapi.json", headers: from("203.0.113.66"))
            #expect(refused.status == .forbidden)
            #expect(try refused.errorCode() == "ip_blocked")
            #expect(try await edge.send(.get, "/openapi.json", headers: from("203.0.113.67")).status == .ok)
            let audit = try await edge.send(.get, "/v1/admin/audit-log?limit=50", headers: adminHeaders)
            #expect(audit.status == .ok)
            #expect(audit.text.contains("block_ip"), "the admin action is in auth's audit trail: \(audit.text.prefix(300))")
            #expect(audit.text.contains("block-req-4711"), "the edge's request id reached auth with the RPC")
            #expect(try await edge.send(.delete, "/v1/admin/ip-blocks/203.0.113.66", headers: adminHeaders).status == .noContent)
            #expect(try await edge.send(.get, "/openapi.json", headers: from("203.0.113.66")).status == .ok)

            // A block holds however the address is spelt, in the block or in the request.
            for (blocked, seenAs) in [("2001:DB8:0:0::66", "2001:db8::66"), ("::ffff:203.0.113.70", "203.0.113.70"), ("198.51.100.8", "::ffff:198.51.100.8")] {
                let block = try await edge.send(.post, "/v1/admin/ip-blocks", headers: adminHeaders, body: #"{"ip":"\#(blocked)","duration_seconds":600}"#)
                #expect(block.status == .noContent, "\(blocked)")
                let refused = try await edge.send(.get, "/openapi.json", headers: from(seenAs))
                #expect(refused.status == .forbidden, "blocked \(blocked), request from \(seenAs)")
            }
        }
    }

    @Test func changePasswordReportsPolicyViolationsAsFields_R6() async throws {
        try await withEdge { edge in
            let tokens = try await edge.registerAndLogin("pw@example.com")
            let weak = try await edge.send(.post, "/v1/me/password", headers: bearer(tokens.access), body: #"{"current_password":"\#(goodPassword)","new_password":"password1234"}"#)
            #expect(weak.status == .unprocessableContent)
            let error = try weak.errorObject()
            #expect(error["code"] as? String == "validation_failed")
            let fields = try #require(error["fields"] as? [[String: String]])
            #expect(!fields.isEmpty && fields.allSatisfy { $0["name"] == "new_password" && $0["problem"]?.isEmpty == false })
            let wrongCurrent = try await edge.send(.post, "/v1/me/password", headers: bearer(tokens.access), body: #"{"current_password":"Wrong-current-pass-9","new_password":"Another!strong-Pass-77"}"#)
            #expect(wrongCurrent.status == .unauthorized)
            #expect(try wrongCurrent.errorCode() == "invalid_credentials")
            let changed = try await edge.send(.post, "/v1/me/password", headers: bearer(tokens.access), body: #"{"current_password":"\#(goodPassword)","new_password":"Another!strong-Pass-77"}"#)
            #expect(changed.status == .noContent)
            #expect(try await edge.login("pw@example.com", password: "Another!strong-Pass-77").access.isEmpty == false)
        }
    }

    @Test func jwksIsServedFromAuth() async throws {
        try await withEdge { edge in
            let response = try await edge.send(.get, "/.well-known/jwks.json")
            #expect(response.status == .ok)
            let keys = try #require(try response.jsonObject()["keys"] as? [[String: Any]])
            #expect(keys.contains { $0["kid"] as? String == edge.signingKey.kid })
            #expect(!response.text.contains("\"d\""), "no private parts")
        }
    }
}

@Suite("Verified-token cache", .timeLimit(.minutes(5)))
struct VerifiedTokenCacheTests {
    static let claims = AccessClaims(sub: "s", sid: "i", role: "user", jti: "j", exp: 200, amr: [], authTime: nil, apiKeyID: nil)

    @Test func hitsOnlyTheExactTokenInsideItsValidityWindow_C2() {
        let cache = VerifiedTokenCache()
        cache.remember("a.b.c", claims: Self.claims, notBefore: 100, notAfter: 200)
        #expect(cache.claims(for: "a.b.c", at: 150) == Self.claims)
        #expect(cache.claims(for: "a.b.d", at: 150) == nil, "another signature is another token")
        #expect(cache.claims(for: "a.b.c", at: 99) == nil, "not yet valid")
        cache.remember("a.b.c", claims: Self.claims, notBefore: 100, notAfter: 200)
        #expect(cache.claims(for: "a.b.c", at: 200) == nil, "expired at exp")
        #expect(cache.claims(for: "a.b.c", at: 150) == nil, "an expired entry is dropped")
    }

    @Test func staysBounded() {
        let cache = VerifiedTokenCache(capacity: 10)
        for i in 0..<25 { cache.remember("t\(i)", claims: Self.claims, notBefore: 0, notAfter: 1_000) }
        let kept = (0..<25).filter { cache.claims(for: "t\($0)", at: 1) != nil }.count
        #expect(kept <= 10)
    }
}
