import Crypto
import Foundation
import HTTPTypes
import HummingbirdTesting
import RPC
import Testing
@testable import AuthService
@testable import EdgeProxy

@Suite("Edge: accounts and access tokens through a real auth service")
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

    @Test func wrongPasswordAndUnknownEmailAnswerTheSame401_X2() async throws {
        try await withEdge { edge in
            try await edge.register("known@example.com")
            let wrong = try await edge.send(.post, "/v1/auth/login", body: #"{"email":"known@example.com","password":"Not-the-right-one-42"}"#)
            let unknown = try await edge.send(.post, "/v1/auth/login", body: #"{"email":"nobody@example.com","password":"Not-the-right-one-42"}"#)
            for response in [wrong, unknown] {
                #expect(response.status == .unauthorized)
                #expect(try response.errorCode() == "invalid_credentials")
            }
            let a = try wrong.errorObject(), b = try unknown.errorObject()
            #expect(a["message"] as? String == b["message"] as? String)
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
            for token in [none1, none2, relabelled] + confused {
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
            var tamperedClaims = try JSONSerialization.jsonObject(with: Data(try #require(EdgeProxy.Base64URL.decode(parts[1])))) as! [String: Any]
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
        // not pass without a revocation answer.
        try await withEdge { edge in
            let tokens = try await edge.registerAndLogin("closed@example.com")
            #expect(try await edge.send(.get, "/v1/me", headers: bearer(tokens.access)).status == .ok)
            edge.stopAuth()
            try await Task.sleep(for: .milliseconds(200))
            let response = try await edge.send(.get, "/v1/me", headers: bearer(tokens.access))
            #expect(response.status == .serviceUnavailable)
            #expect(try response.errorCode() == "service_unavailable")
            #expect(response.headers[.retryAfter] != nil)
            let ready = try await edge.send(.get, "/readyz")
            #expect(ready.status == .serviceUnavailable)
            #expect(try await edge.send(.get, "/healthz").status == .ok)
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

    @Test func apiKeysAreRefusedUntilAuthServesThem_R3() async throws {
        try await withEdge { edge in
            let key = "clau_" + String(repeating: "ab", count: 32)
            for headers: HTTPFields in [bearer(key), [.init("X-API-Key")!: key]] {
                let response = try await edge.send(.get, "/v1/me", headers: headers)
                #expect(response.status == .unauthorized)
                #expect(try response.errorCode() == "unauthenticated")
            }
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
