import ClauSupport
import Foundation
import PostgresNIO
import RPC
import Testing
@testable import AuthService

@Suite("Account management over PostgreSQL", .timeLimit(.minutes(5)))
struct AuthAccountTests {
    @Test func updateUserChangesOnlyGivenFieldsAndValidates_C15() async throws {
        try await withAuthService { auth in
            try await auth.register("upd@example.com")
            let id = try await auth.userID("upd@example.com")
            var request = AuthUpdateUserRequest()
            request.userID = id.uuidString
            request.phone = "+14155550100"
            let updated = try await auth.client().call(AuthAPI.updateUser, request).user
            #expect(updated.phone == "+14155550100")
            #expect(updated.fullName == "Ada Lovelace", "unset fields stay")
            request.phone = "555-0100"
            let bad = await #expect(throws: RPCError.self) { try await auth.client().call(AuthAPI.updateUser, request) }
            #expect(bad?.code == .invalidArgument)
            #expect(bad?.details["field"] == "phone")
            request.phone = ""
            request.removePhone = true
            request.fullName = "Augusta Ada King"
            let cleared = try await auth.client().call(AuthAPI.updateUser, request).user
            #expect(cleared.phone == "" && cleared.fullName == "Augusta Ada King")
        }
    }

    /// A NUL in the e-mail used to reach PostgreSQL (22021) and come back as an internal error:
    /// at login it is now an unknown account, the same 401 as a wrong password; removing a
    /// device with a NUL in its token is a typed INVALID_ARGUMENT, as adding one is (C-15).
    @Test func controlCharactersNeverReachPostgreSQL_C15_X2() async throws {
        try await withAuthService { auth in
            try await auth.register("nul@example.com")
            for email in ["nul\u{0}@example.com", "a\u{0}@example.com", "nul@example.com\u{1}"] {
                let refused = await #expect(throws: RPCError.self) { try await auth.login(email) }
                #expect(refused?.code == .unauthenticated, "\(email.debugDescription): \(String(describing: refused))")
            }
            var remove = AuthRemoveDeviceRequest()
            remove.userID = try await auth.userID("nul@example.com").uuidString
            remove.fcmToken = "a\u{0}"
            let bad = await #expect(throws: RPCError.self) { try await auth.client().call(AuthAPI.removeDevice, remove) }
            #expect(bad?.code == .invalidArgument)
            #expect(bad?.details["field"] == "fcm_token")
            #expect(try await auth.login("nul@example.com").tokens.accessToken.isEmpty == false, "the account itself still works")
        }
    }

    @Test func deleteUserNeedsPasswordRevokesEverythingAndErasesPersonalData_X6() async throws {
        try await withAuthService { auth in
            try await auth.register("gone@example.com")
            let login = try await auth.login("gone@example.com")
            let id = try await auth.userID("gone@example.com")
            var create = AuthCreateAPIKeyRequest()
            create.userID = id.uuidString
            create.name = "k"
            let key = try await auth.client().call(AuthAPI.createAPIKey, create)

            var request = AuthDeleteUserRequest()
            request.userID = id.uuidString
            request.password = "not-the-password-123"
            let refused = await #expect(throws: RPCError.self) { try await auth.client().call(AuthAPI.deleteUser, request) }
            #expect(refused?.message == "invalid_credentials")
            request.password = goodPassword
            _ = try await auth.client().call(AuthAPI.deleteUser, request)

            await #expect(throws: RPCError.self) { try await auth.refresh(login.tokens.refreshToken) }
            #expect(try await auth.isRevoked(accessToken: login.tokens.accessToken))
            var authenticate = AuthAuthenticateAPIKeyRequest()
            authenticate.apiKey = key.secret
            await #expect(throws: RPCError.self) { try await auth.client().call(AuthAPI.authenticateAPIKey, authenticate) }
            await #expect(throws: RPCError.self) { try await auth.login("gone@example.com") }
            var get = AuthGetUserRequest()
            get.userID = id.uuidString
            let missing = await #expect(throws: RPCError.self) { try await auth.client().call(AuthAPI.getUser, get) }
            #expect(missing?.code == .notFound)
            let rows = try await auth.scalars("SELECT email || full_name || coalesce(phone, '') FROM auth.users", as: String.self)
            #expect(rows.count == 1 && !rows[0].contains("gone@example.com") && !rows[0].contains("Ada"))
            // The address is free again.
            try await auth.register("gone@example.com")
            _ = try await auth.login("gone@example.com")
        }
    }

    @Test func listSessionsShowsLiveSessionsAndMarksTheCurrentOne_X6() async throws {
        try await withAuthService { auth in
            try await auth.register("sessions@example.com")
            let first = try await auth.login("sessions@example.com")
            let second = try await auth.login("sessions@example.com")
            let third = try await auth.login("sessions@example.com")
            var logout = AuthLogoutRequest()
            logout.accessToken = third.tokens.accessToken
            _ = try await auth.client().call(AuthAPI.logout, logout)

            var request = AuthListSessionsRequest()
            request.userID = try await auth.userID("sessions@example.com").uuidString
            request.currentSessionID = second.tokens.sessionID
            let sessions = try await auth.client().call(AuthAPI.listSessions, request).sessions
            #expect(Set(sessions.map(\.id)) == [first.tokens.sessionID, second.tokens.sessionID])
            #expect(sessions.filter(\.current).map(\.id) == [second.tokens.sessionID])
            #expect(sessions.allSatisfy { $0.absoluteExpiresAt - $0.createdAt == 90 * 86_400 && $0.idleExpiresAt - $0.lastUsedAt == 30 * 86_400 })
            // Past the idle timeout a session is no longer listed.
            auth.clock.advance(30 * 86_400 + 1)
            #expect(try await auth.client().call(AuthAPI.listSessions, request).sessions.isEmpty)
        }
    }

    @Test func rotatedKeySignsAndOldKeyStillVerifiesUntilItsTokensExpire_C2() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("clau-keys-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: false, attributes: [.posixPermissions: 0o700])
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let initial = try await SigningKeyDirectory(path: directory).load(generate: .es256)
        try await withAuthService(signingKey: initial[0], configure: { $0.signingKeyDirectory = directory }) { auth in
            try await auth.register("rot@example.com")
            let before = try await auth.login("rot@example.com")
            let oldKid = initial[0].kid

            var rotate = AuthRotateSigningKeyRequest()
            rotate.algorithm = "EdDSA"
            // Only operators and the edge's admin route may rotate.
            await #expect(throws: RPCError.self) { try await auth.client(as: strangerPeer).call(AuthAPI.rotateSigningKey, rotate) }
            let rotated = try await auth.client(as: adminPeer).call(AuthAPI.rotateSigningKey, rotate)
            #expect(rotated.kid != oldKid && rotated.algorithm == "EdDSA")
            #expect(Set(rotated.verifyingKids) == [rotated.kid, oldKid])

            let after = try await auth.login("rot@example.com")
            let headerBytes = try #require(Base64URL.decode(after.tokens.accessToken.split(separator: ".")[0]))
            let header = try #require(try JSONSerialization.jsonObject(with: Data(headerBytes)) as? [String: String])
            #expect(header["kid"] == rotated.kid && header["alg"] == "EdDSA")
            // Both verify; the JWKS publishes both public keys and no private part.
            _ = try auth.handlers.issuer.verifier.verify(before.tokens.accessToken, now: auth.clock.now)
            _ = try auth.handlers.issuer.verifier.verify(after.tokens.accessToken, now: auth.clock.now)
            let jwks = try await auth.client().call(AuthAPI.getJWKS, AuthGetJWKSRequest()).jwksJson
            #expect(jwks.contains(rotated.kid) && jwks.contains(oldKid) && !jwks.contains("\"d\""))

            // The key survives a restart: the directory names the new one as current.
            let reloaded = try await SigningKeyDirectory(path: directory).load(generate: nil)
            #expect(reloaded.map(\.kid) == [rotated.kid, oldKid])
            let files = try FileManager.default.contentsOfDirectory(atPath: directory).filter { $0.hasSuffix(".pem") }
            for file in files {
                let mode = try #require(try FileManager.default.attributesOfItem(atPath: "\(directory)/\(file)")[.posixPermissions] as? Int)
                #expect(mode == 0o400)
            }

            // A later rotation, after the old key's tokens have all expired, drops it.
            auth.clock.advance(31 * 60)
            rotate.algorithm = ""
            let third = try await auth.client(as: adminPeer).call(AuthAPI.rotateSigningKey, rotate)
            #expect(third.algorithm == "EdDSA", "empty algorithm keeps the current one")
            #expect(Set(third.verifyingKids) == [third.kid, rotated.kid])
            #expect(try FileManager.default.contentsOfDirectory(atPath: directory).filter { $0.hasPrefix(oldKid) }.isEmpty)
        }
    }

    @Test func rotationIsRefusedClearlyWhenKeysComeFromConfiguration() async throws {
        try await withAuthService { auth in
            let error = await #expect(throws: RPCError.self) { try await auth.client(as: adminPeer).call(AuthAPI.rotateSigningKey, AuthRotateSigningKeyRequest()) }
            #expect(error?.code == .failedPrecondition)
            #expect(error?.message.contains("--signing-key-dir") == true)
        }
    }

    @Test func revokeEverythingEndsEverySessionOfEveryUser_C19() async throws {
        try await withAuthService { auth in
            try await auth.register("one@example.com")
            try await auth.register("two@example.com")
            let one = try await auth.login("one@example.com")
            let two = try await auth.login("two@example.com")
            let response = try await auth.client(as: adminPeer).call(AuthAPI.revokeEverything, AuthRevokeEverythingRequest())
            #expect(response.revokedSessions == 2)
            #expect(try await auth.isRevoked(accessToken: one.tokens.accessToken))
            #expect(try await auth.isRevoked(accessToken: two.tokens.accessToken))
            await #expect(throws: RPCError.self) { try await auth.refresh(two.tokens.refreshToken) }
            #expect(try await auth.scalars("SELECT count(*) FROM auth.audit_events WHERE event_type = 'admin_action' AND risk = 'critical'", as: Int64.self) == [1])
        }
    }

    @Test func signingKeyDirectoryMustBePrivate_R10() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("clau-keys-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: false, attributes: [.posixPermissions: 0o750])
        defer { try? FileManager.default.removeItem(atPath: directory) }
        await #expect(throws: StartupError.self) { try await SigningKeyDirectory(path: directory).load(generate: .es256) }
    }
}

@Suite("HS256 verification by auth", .timeLimit(.minutes(5)))
struct AuthHS256Tests {
    @Test func hs256TokensAreVerifiedByAuthIncludingRevocation_C2_R1() async throws {
        let key = try await SigningKey.generate(algorithm: .hs256, kid: "hs-1")
        try await withAuthService(signingKey: key) { auth in
            try await auth.register("hs@example.com")
            let login = try await auth.login("hs@example.com")
            // The HS256 secret is never published: the JWKS has no key to verify with.
            let jwks = try await auth.client().call(AuthAPI.getJWKS, AuthGetJWKSRequest()).jwksJson
            #expect(!jwks.contains("hs-1"))
            var request = AuthVerifyAccessTokenRequest()
            request.accessToken = login.tokens.accessToken
            let verified = try await auth.client().call(AuthAPI.verifyAccessToken, request)
            #expect(verified.principal.userID == login.user.id)
            #expect(verified.sessionID == login.tokens.sessionID)
            #expect(verified.amr == ["pwd"])
            // A flipped signature character and a revoked token both fail.
            var tampered = request
            // The signature's first character: its 6 bits are all signature bits. (The last one's
            // low bits are base64url padding, so flipping A↔B there can leave the bytes unchanged.)
            let signatureStart = try #require(request.accessToken.lastIndex(of: ".")).utf16Offset(in: request.accessToken) + 1
            var characters = Array(request.accessToken)
            characters[signatureStart] = characters[signatureStart] == "A" ? "Q" : "A"
            tampered.accessToken = String(characters)
            await #expect(throws: RPCError.self) { try await auth.client().call(AuthAPI.verifyAccessToken, tampered) }
            var logout = AuthLogoutRequest()
            logout.accessToken = login.tokens.accessToken
            _ = try await auth.client().call(AuthAPI.logout, logout)
            let revoked = await #expect(throws: RPCError.self) { try await auth.client().call(AuthAPI.verifyAccessToken, request) }
            #expect(revoked?.code == .unauthenticated)
        }
    }
}
