import Foundation
import PostgresNIO
import RPC
import Testing
@testable import AuthService

extension AuthHarness {
    func attempt(_ email: String, password: String, ip: String = "", totp: String = "") async -> Result<AuthLoginResponse, RPCError> {
        var request = AuthLoginRequest()
        request.email = email
        request.password = password
        request.clientIp = ip
        request.totp = totp
        do {
            return .success(try await client().call(AuthAPI.login, request))
        } catch let error as RPCError {
            return .failure(error)
        } catch {
            return .failure(RPCError(code: .unknown, message: "\(error)"))
        }
    }

    func userID(_ email: String) async throws -> UUID {
        try #require(try await scalars("SELECT id FROM auth.users WHERE email_normalized = \(email.lowercased())", as: UUID.self).first)
    }

    func forgot(_ email: String) async throws {
        var request = AuthForgotPasswordRequest()
        request.email = email
        _ = try await client().call(AuthAPI.forgotPassword, request)
    }

    func reset(_ email: String, code: String, to password: String) async throws -> AuthResetPasswordResponse {
        var request = AuthResetPasswordRequest()
        request.email = email
        request.code = code
        request.newPassword = password
        return try await client().call(AuthAPI.resetPassword, request)
    }

    /// The code in the newest reset mail to `email`.
    func latestResetCode(_ email: String, mails: Int = 1) async throws -> String {
        let mail = try #require(try await self.mail(to: email, atLeast: mails).last { $0.subject.contains("reset code") })
        let line = try #require(mail.textBody.split(separator: "\n").first { $0.trimmingCharacters(in: .whitespaces).allSatisfy(\.isNumber) && !$0.trimmingCharacters(in: .whitespaces).isEmpty })
        return line.trimmingCharacters(in: .whitespaces)
    }
}

private func failure(_ result: Result<AuthLoginResponse, RPCError>) -> RPCError? {
    if case .failure(let error) = result { return error }
    return nil
}

@Suite("Account protection over PostgreSQL", .timeLimit(.minutes(5)))
struct AuthProtectionTests {
    static let newPassword = "Brisk!Otter-lantern-93"

    @Test func fiveFailuresLockForFifteenMinutesAndLockedLooksLikeWrongPassword_C4() async throws {
        try await withAuthService { auth in
            try await auth.register("lock@example.com")
            try await auth.register("other@example.com")
            for _ in 0..<5 {
                #expect(failure(await auth.attempt("lock@example.com", password: "wrong-password-1234"))?.message == "invalid_credentials")
            }
            // Locked: even the right password fails, with exactly the wrong-password error.
            let locked = try #require(failure(await auth.attempt("lock@example.com", password: goodPassword)))
            let wrong = try #require(failure(await auth.attempt("other@example.com", password: "wrong-password-1234")))
            #expect(locked == wrong, "a locked account must be indistinguishable from a wrong password (X-2)")
            #expect(try await auth.scalars("SELECT count(*) FROM auth.audit_events WHERE event_type = 'account_locked'", as: Int64.self) == [1])
            let lockMail = try await auth.mail(to: "lock@example.com")
            #expect(lockMail.contains { $0.subject.lowercased().contains("locked") })

            auth.clock.advance(15 * 60 - 1)
            #expect(failure(await auth.attempt("lock@example.com", password: goodPassword)) != nil, "still locked just before 15 min")
            auth.clock.advance(15 * 60 + 1)
            guard case .success = await auth.attempt("lock@example.com", password: goodPassword) else {
                Issue.record("the lock must end by itself")
                return
            }
            // The user is told about the successful login that followed the failures.
            let mails = try await auth.mail(to: "lock@example.com", atLeast: 2)
            #expect(mails.contains { $0.subject.lowercased().contains("sign") || $0.textBody.contains("failed") })
        }
    }

    @Test func adminUnlockEndsALockAtOnce_C4() async throws {
        try await withAuthService { auth in
            try await auth.register("unlock@example.com")
            for _ in 0..<5 { _ = await auth.attempt("unlock@example.com", password: "wrong-password-1234") }
            var request = AuthAdminUnlockUserRequest()
            request.userID = try await auth.userID("unlock@example.com").uuidString
            let response = try await auth.client(as: adminPeer).call(AuthAPI.adminUnlockUser, request)
            #expect(response.wasLocked)
            guard case .success = await auth.attempt("unlock@example.com", password: goodPassword) else {
                Issue.record("unlocked account must log in")
                return
            }
            // The edge (not an operator) may also call it; a stranger may not.
            await #expect(throws: RPCError.self) { try await auth.client(as: strangerPeer).call(AuthAPI.adminUnlockUser, request) }
        }
    }

    @Test func ipFailuresEscalateToDelayThenBlockAndExpire_R4() async throws {
        try await withAuthService { auth in
            try await auth.register("ipvictim@example.com")
            let ip = "203.0.113.7"
            // First failure: the next attempt must wait 1 s; an attempt inside the delay is refused
            // without checking the password, and says how long to wait.
            let first = try #require(failure(await auth.attempt("ipvictim@example.com", password: "wrong-password-1", ip: ip)))
            #expect(first.message == "invalid_credentials")
            #expect(first.details["retry_after"] == "1")
            let early = try #require(failure(await auth.attempt("ipvictim@example.com", password: goodPassword, ip: ip)))
            #expect(early.code == .resourceExhausted)
            #expect(early.message == "too_many_attempts")
            // Another address is not affected.
            guard case .success = await auth.attempt("ipvictim@example.com", password: goodPassword, ip: "198.51.100.1") else {
                Issue.record("other IPs must not be delayed")
                return
            }
            // Up to 5 failures (spaced past each delay) → MEDIUM: blocked 15 minutes.
            for _ in 0..<4 {
                auth.clock.advance(400)
                _ = await auth.attempt("nobody-\(UUID())@example.com", password: "wrong-password-1", ip: ip)
            }
            let blocked = try #require(failure(await auth.attempt("ipvictim@example.com", password: goodPassword, ip: ip)))
            #expect(blocked.code == .resourceExhausted)
            let retry = try #require(Int(blocked.details["retry_after"] ?? ""))
            #expect((14 * 60...15 * 60).contains(retry), "MEDIUM blocks for 15 min, got \(retry) s")
            #expect(try await auth.scalars("SELECT count(*) FROM auth.audit_events WHERE event_type = 'ip_blocked'", as: Int64.self) == [1])
            // Only keyed hashes are stored, never the address.
            let stored = try await auth.scalars("SELECT DISTINCT ip_hash FROM auth.ip_login_failures", as: String.self)
            #expect(stored.count == 1 && !stored[0].contains("203.0.113"))
            #expect(stored[0] != Hex.encode(AuthStore.tokenHash(ip)), "keyed, not a bare SHA-256")
            // The block ends by itself.
            auth.clock.advance(15 * 60 + 1)
            guard case .success = await auth.attempt("ipvictim@example.com", password: goodPassword, ip: ip) else {
                Issue.record("the block must expire")
                return
            }
        }
    }

    @Test func resetCodeWorksOnceExpiresAndCancelsOlder_C5() async throws {
        try await withAuthService { auth in
            try await auth.register("reset@example.com")
            let login = try await auth.login("reset@example.com")
            try await auth.forgot("reset@example.com")
            let oldCode = try await auth.latestResetCode("reset@example.com")
            #expect(oldCode.count >= 6)
            // The database holds an HMAC, not the code.
            let stored = try await auth.scalars("SELECT code_hmac FROM auth.reset_codes", as: String.self)
            #expect(stored.count == 1 && !stored[0].contains(oldCode))

            try await auth.forgot("reset@example.com")
            let newCode = try await auth.latestResetCode("reset@example.com", mails: 2)
            // A new code cancels the older one.
            await #expect(throws: RPCError.self) { try await auth.reset("reset@example.com", code: oldCode, to: Self.newPassword) }
            let response = try await auth.reset("reset@example.com", code: newCode, to: Self.newPassword)
            #expect(response.revokedSessions == 1)
            // Every session is gone, the new password works, the code is spent.
            await #expect(throws: RPCError.self) { try await auth.refresh(login.tokens.refreshToken) }
            _ = try await auth.login("reset@example.com", password: Self.newPassword)
            await #expect(throws: RPCError.self) { try await auth.reset("reset@example.com", code: newCode, to: "Another!fresh-Password77") }
            let notices = try await auth.mail(to: "reset@example.com", atLeast: 3)
            #expect(notices.contains { $0.subject.lowercased().contains("changed") })
            #expect(notices.allSatisfy { !$0.textBody.contains(Self.newPassword) }, "mail never carries the password")

            // Expiry: 10 minutes.
            try await auth.forgot("reset@example.com")
            let late = try await auth.latestResetCode("reset@example.com", mails: 4)
            auth.clock.advance(10 * 60)
            let expired = await #expect(throws: RPCError.self) { try await auth.reset("reset@example.com", code: late, to: "Another!fresh-Password77") }
            #expect(expired?.message == "invalid_reset_code")
        }
    }

    @Test func twentyConcurrentSubmissionsOfOneCodeSucceedOnce_C5() async throws {
        try await withAuthService { auth in
            try await auth.register("race@example.com")
            try await auth.forgot("race@example.com")
            let code = try await auth.latestResetCode("race@example.com")
            // The cap is per code: allow all 20 attempts so that only single use decides.
            let successes = await withTaskGroup(of: Bool.self) { group in
                for index in 0..<20 {
                    group.addTask { (try? await auth.reset("race@example.com", code: code, to: "Parallel!Walrus-\(index)-orbit")) != nil }
                }
                return await group.reduce(0) { $0 + ($1 ? 1 : 0) }
            }
            #expect(successes == 1)
        }
    } 

    @Test func fiveWrongAttemptsBurnTheCode_C5() async throws {
        try await withAuthService { auth in
            try await auth.register("guess@example.com")
            try await auth.forgot("guess@example.com")
            let code = try await auth.latestResetCode("guess@example.com")
            let wrong = code == "000000" ? "000001" : "000000"
            for _ in 0..<5 {
                await #expect(throws: RPCError.self) { try await auth.reset("guess@example.com", code: wrong, to: Self.newPassword) }
            }
            let sixth = await #expect(throws: RPCError.self) { try await auth.reset("guess@example.com", code: code, to: Self.newPassword) }
            #expect(sixth?.message == "invalid_reset_code", "after 5 attempts even the right code fails")
        }
    }

    @Test func forgotPasswordForUnknownEmailSendsNothingAndAnswersTheSame_X2_C5() async throws {
        try await withAuthService { auth in
            try await auth.register("known@example.com")
            var request = AuthForgotPasswordRequest()
            request.email = "known@example.com"
            let known = try await auth.client().call(AuthAPI.forgotPassword, request)
            request.email = "unknown@example.com"
            let unknown = try await auth.client().call(AuthAPI.forgotPassword, request)
            #expect(try known.serializedBytes() as [UInt8] == unknown.serializedBytes())
            _ = try await auth.mail(to: "known@example.com")
            try await Task.sleep(for: .milliseconds(200))
            #expect(try auth.mailNow(to: "unknown@example.com").isEmpty)
            // Locked accounts can still reset (C-5).
            for _ in 0..<5 { _ = await auth.attempt("known@example.com", password: "wrong-password-1234") }
            try await auth.forgot("known@example.com")
            let code = try await auth.latestResetCode("known@example.com", mails: 3)
            _ = try await auth.reset("known@example.com", code: code, to: Self.newPassword)
            _ = try await auth.login("known@example.com", password: Self.newPassword)
        }
    }

    @Test func resetWithAWeakPasswordAnswersTheSameForKnownAndUnknownEmails_X2() async throws {
        try await withAuthService { auth in
            try await auth.register("probe@example.com")
            let known = await #expect(throws: RPCError.self) { try await auth.reset("probe@example.com", code: "123456", to: "password") }
            let unknown = await #expect(throws: RPCError.self) { try await auth.reset("nobody@example.com", code: "123456", to: "password") }
            #expect(known == unknown)
            #expect(known?.code == .invalidArgument)
            // A strong password with a wrong code: also the same for both.
            let knownCode = await #expect(throws: RPCError.self) { try await auth.reset("probe@example.com", code: "123456", to: Self.newPassword) }
            let unknownCode = await #expect(throws: RPCError.self) { try await auth.reset("nobody@example.com", code: "123456", to: Self.newPassword) }
            #expect(knownCode == unknownCode)
        }
    }

    @Test func registeringAKnownEmailMailsTheOwner_X2() async throws {
        try await withAuthService { auth in
            try await auth.register("owner@example.com")
            try await auth.register("OWNER@example.com", password: "Another!unrelated-Phrase42")
            let mail = try await auth.mail(to: "OWNER@example.com")
            #expect(mail.count == 1)
            #expect(!mail[0].textBody.contains("Another!unrelated-Phrase42"))
        }
    }

    @Test func apiKeysAuthenticateExpireAndRevoke_R3() async throws {
        try await withAuthService { auth in
            try await auth.register("keys@example.com")
            let userID = try await auth.userID("keys@example.com")
            var create = AuthCreateAPIKeyRequest()
            create.userID = userID.uuidString
            create.name = "ci"
            let created = try await auth.client().call(AuthAPI.createAPIKey, create)
            #expect(created.secret.hasPrefix("clau_") && created.secret.utf8.count == 69)
            #expect(created.key.prefix == String(created.secret.dropFirst(5).prefix(8)))

            var authenticate = AuthAuthenticateAPIKeyRequest()
            authenticate.apiKey = created.secret
            let principal = try await auth.client().call(AuthAPI.authenticateAPIKey, authenticate).principal
            #expect(principal.userID == userID.uuidString.lowercased())
            #expect(principal.role == "user")
            #expect(principal.apiKeyID == created.key.id)

            // The database holds no usable key: not the key, and not its unkeyed hash.
            let rows = try await auth.scalars("SELECT key_hmac || ' ' || prefix || ' ' || name FROM auth.api_keys", as: String.self)
            #expect(rows.count == 1 && !rows[0].contains(created.secret.dropFirst(5)))
            #expect(!rows[0].contains(Hex.encode(AuthStore.tokenHash(created.secret))))

            // A near miss fails.
            var tampered = authenticate
            tampered.apiKey = String(created.secret.dropLast()) + (created.secret.hasSuffix("0") ? "1" : "0")
            await #expect(throws: RPCError.self) { try await auth.client().call(AuthAPI.authenticateAPIKey, tampered) }

            // Expiry: in the future, and not so far off that it cannot be stored.
            create.name = "far"
            create.expiresAt = .max
            let far = await #expect(throws: RPCError.self) { try await auth.client().call(AuthAPI.createAPIKey, create) }
            #expect(far?.code == .invalidArgument && far?.details["field"] == "expires_at")
            create.name = "short"
            create.expiresAt = Int64(auth.clock.now.timeIntervalSince1970) + 60
            let short = try await auth.client().call(AuthAPI.createAPIKey, create)
            auth.clock.advance(61)
            var expired = authenticate
            expired.apiKey = short.secret
            await #expect(throws: RPCError.self) { try await auth.client().call(AuthAPI.authenticateAPIKey, expired) }

            // Listing shows metadata only; revoking ends it.
            var list = AuthListAPIKeysRequest()
            list.userID = userID.uuidString
            let listed = try await auth.client().call(AuthAPI.listAPIKeys, list).keys
            #expect(listed.count == 2)
            #expect(listed.first { $0.id == created.key.id }?.lastUsedAt ?? 0 > 0)
            var revoke = AuthRevokeAPIKeyRequest()
            revoke.userID = userID.uuidString
            revoke.keyID = created.key.id
            _ = try await auth.client().call(AuthAPI.revokeAPIKey, revoke)
            let after = await #expect(throws: RPCError.self) { try await auth.client().call(AuthAPI.authenticateAPIKey, authenticate) }
            #expect(after?.message == "invalid_api_key")
            #expect(try await auth.scalars("SELECT count(*) FROM auth.audit_events WHERE event_type IN ('api_key_created', 'api_key_revoked')", as: Int64.self) == [3])
        }
    }

    @Test func anotherUsersKeyCannotBeRevoked_C7() async throws {
        try await withAuthService { auth in
            try await auth.register("alice@example.com")
            try await auth.register("mallory@example.com")
            var create = AuthCreateAPIKeyRequest()
            create.userID = try await auth.userID("alice@example.com").uuidString
            create.name = "alice"
            let key = try await auth.client().call(AuthAPI.createAPIKey, create)
            var revoke = AuthRevokeAPIKeyRequest()
            revoke.userID = try await auth.userID("mallory@example.com").uuidString
            revoke.keyID = key.key.id
            let error = await #expect(throws: RPCError.self) { try await auth.client().call(AuthAPI.revokeAPIKey, revoke) }
            #expect(error?.code == .notFound)
            var authenticate = AuthAuthenticateAPIKeyRequest()
            authenticate.apiKey = key.secret
            _ = try await auth.client().call(AuthAPI.authenticateAPIKey, authenticate)
        }
    }

    @Test func totpLoginGivesMFAClaimAndRejectsReplay_X5() async throws {
        try await withAuthService { auth in
            try await auth.register("mfa@example.com")
            let userID = try await auth.userID("mfa@example.com")
            var begin = AuthBeginTOTPEnrollmentRequest()
            begin.userID = userID.uuidString
            let enrolment = try await auth.client().call(AuthAPI.beginTOTPEnrollment, begin)
            #expect(enrolment.otpauthUri.hasPrefix("otpauth://totp/"))
            let totp = try TOTP(secret: try #require(Base32.decode(enrolment.secretBase32)))
            // Not active before confirmation.
            guard case .success = await auth.attempt("mfa@example.com", password: goodPassword) else {
                Issue.record("TOTP must not be required before enrolment is confirmed")
                return
            }
            var confirm = AuthConfirmTOTPEnrollmentRequest()
            confirm.userID = userID.uuidString
            confirm.code = "000000" == totp.code(at: auth.clock.now) ? "111111" : "000000"
            await #expect(throws: RPCError.self) { try await auth.client().call(AuthAPI.confirmTOTPEnrollment, confirm) }
            confirm.code = try #require(totp.code(at: auth.clock.now))
            _ = try await auth.client().call(AuthAPI.confirmTOTPEnrollment, confirm)
            // The secret is stored encrypted.
            let sealed = try await auth.scalars("SELECT encode(totp_secret_enc, 'hex') FROM auth.users", as: String.self)
            #expect(!sealed[0].contains(Hex.encode(try #require(Base32.decode(enrolment.secretBase32)))))

            // Without a code: mfa_required. With the code of the step used at confirmation: replay.
            #expect(failure(await auth.attempt("mfa@example.com", password: goodPassword))?.message == "mfa_required")
            #expect(failure(await auth.attempt("mfa@example.com", password: goodPassword, totp: confirm.code)) != nil, "a used code is refused")
            auth.clock.advance(30)
            let fresh = try #require(totp.code(at: auth.clock.now))
            guard case .success(let login) = await auth.attempt("mfa@example.com", password: goodPassword, totp: fresh) else {
                Issue.record("a fresh code must work")
                return
            }
            let claims = try auth.handlers.issuer.verifier.verify(login.tokens.accessToken, now: auth.clock.now)
            #expect(claims.amr == ["pwd", "otp"])
            #expect(claims.authTime == Int64(auth.clock.now.timeIntervalSince1970))
            // Refreshed tokens keep the session's second factor.
            let refreshed = try await auth.refresh(login.tokens.refreshToken)
            #expect(try auth.handlers.issuer.verifier.verify(refreshed.accessToken, now: auth.clock.now).hasMFA)
            // And the same code cannot be used twice.
            #expect(failure(await auth.attempt("mfa@example.com", password: goodPassword, totp: fresh)) != nil)
            #expect(try await auth.scalars("SELECT count(*) FROM auth.audit_events WHERE event_type = 'mfa_failure'", as: Int64.self).first ?? 0 >= 2)
        }
    }

    @Test func adminCreatedFromCLIGetsTOTPAndNoMFAWithoutIt_X5_R7() async throws {
        try await withAuthService { auth in
            var request = AuthCreateAdminRequest()
            request.email = "root@example.com"
            request.fullName = "Operator"
            request.password = goodPassword
            // Only an operator uid may create admins, never the edge (no admin over the network).
            await #expect(throws: RPCError.self) { try await auth.client(as: edgePeer).call(AuthAPI.createAdmin, request) }
            let created = try await auth.client(as: adminPeer).call(AuthAPI.createAdmin, request)
            let totp = try TOTP(secret: try #require(Base32.decode(created.totpSecretBase32)))
            #expect(failure(await auth.attempt("root@example.com", password: goodPassword))?.message == "mfa_required")
            auth.clock.advance(30)
            guard case .success(let login) = await auth.attempt("root@example.com", password: goodPassword, totp: try #require(totp.code(at: auth.clock.now))) else {
                Issue.record("admin login with TOTP must work")
                return
            }
            let claims = try auth.handlers.issuer.verifier.verify(login.tokens.accessToken, now: auth.clock.now)
            #expect(claims.role == "admin" && claims.hasMFA)
        }
    }

    @Test func profileDataOfOneUserIsInvisibleToAnother_C7() async throws {
        try await withAuthService { auth in
            try await auth.register("a@example.com")
            try await auth.register("b@example.com")
            let a = try await auth.userID("a@example.com"), b = try await auth.userID("b@example.com")
            var put = AuthPutNotificationPreferencesRequest()
            put.userID = a.uuidString
            put.preferences.marketingEmail = true
            put.preferences.securityEmail = true
            _ = try await auth.client().call(AuthAPI.putNotificationPreferences, put)
            var device = AuthRegisterDeviceRequest()
            device.userID = a.uuidString
            device.fcmToken = "fcm-token-of-a"
            device.platform = "ios"
            _ = try await auth.client().call(AuthAPI.registerDevice, device)

            var get = AuthGetNotificationPreferencesRequest()
            get.userID = a.uuidString
            #expect(try await auth.client().call(AuthAPI.getNotificationPreferences, get).preferences.marketingEmail)
            get.userID = b.uuidString
            #expect(try await auth.client().call(AuthAPI.getNotificationPreferences, get).preferences.marketingEmail == false)
            // B cannot remove A's device by naming its token.
            var remove = AuthRemoveDeviceRequest()
            remove.userID = b.uuidString
            remove.fcmToken = "fcm-token-of-a"
            #expect(try await auth.client().call(AuthAPI.removeDevice, remove).removed == false)
            remove.userID = a.uuidString
            #expect(try await auth.client().call(AuthAPI.removeDevice, remove).removed)
        }
    }

    @Test func adminIPBlocklistIsListedUntilItExpires_R4() async throws {
        try await withAuthService { auth in
            var block = AuthBlockIPRequest()
            block.ip = "2001:DB8::0:1"
            block.durationSeconds = 3600
            block.reason = "credential stuffing"
            _ = try await auth.client(as: adminPeer).call(AuthAPI.blockIP, block)
            let listed = try await auth.client().call(AuthAPI.listIPBlocks, AuthListIPBlocksRequest()).blocks
            #expect(listed.map(\.ip) == ["2001:db8::1"], "canonical form, so the edge can compare")
            #expect(listed.first?.reason == "credential_stuffing")
            block.ip = "not-an-ip"
            await #expect(throws: RPCError.self) { try await auth.client(as: adminPeer).call(AuthAPI.blockIP, block) }
            auth.clock.advance(3601)
            #expect(try await auth.client().call(AuthAPI.listIPBlocks, AuthListIPBlocksRequest()).blocks.isEmpty)
        }
    }

    @Test func auditEventsCarryTypeAndRisk_R19() async throws {
        try await withAuthService { auth in
            try await auth.register("audit@example.com")
            _ = await auth.attempt("audit@example.com", password: "wrong-password-1234")
            _ = try await auth.login("audit@example.com")
            let events = try await auth.client(as: adminPeer).call(AuthAPI.listAuditEvents, AuthListAuditEventsRequest()).events
            #expect(events.map(\.eventType) == ["login_failure", "login_success"])
            #expect(events.map(\.risk) == ["low", "low"])
            #expect(events.allSatisfy { !$0.detailsJson.contains(goodPassword) && !$0.detailsJson.contains("wrong-password") })
        }
    }
}

@Suite("Secrets never reach the log", .timeLimit(.minutes(5)))
struct AuthLogRedactionTests {
    @Test func passwordsKeysCodesAndTokensNeverAppearInLogs_C17_R3() async throws {
        let log = CapturedLog()
        try await withAuthService(logger: log.logger) { auth in
            try await auth.register("quiet@example.com")
            _ = await auth.attempt("quiet@example.com", password: "Wrong!guess-Password-77", ip: "192.0.2.44")
            let login = try await auth.login("quiet@example.com")
            var create = AuthCreateAPIKeyRequest()
            create.userID = login.user.id
            create.name = "ci"
            let key = try await auth.client().call(AuthAPI.createAPIKey, create)
            var authenticate = AuthAuthenticateAPIKeyRequest()
            authenticate.apiKey = key.secret
            _ = try await auth.client().call(AuthAPI.authenticateAPIKey, authenticate)
            try await auth.forgot("quiet@example.com")
            let code = try await auth.latestResetCode("quiet@example.com")
            _ = try await auth.reset("quiet@example.com", code: code, to: AuthProtectionTests.newPassword)

            let text = log.text
            #expect(text.contains("login_failure") && text.contains("api_key_created"), "the log is being captured")
            for secret in [goodPassword, "Wrong!guess-Password-77", AuthProtectionTests.newPassword, key.secret, String(key.secret.dropFirst(5)),
                           login.tokens.refreshToken, login.tokens.accessToken, code, "192.0.2.44"] {
                #expect(!text.contains(secret), "a secret reached the log")
            }
        }
    }

    @Test func resetCodesStopAtTheDailyCap_C5() async throws {
        try await withAuthService { auth in
            try await auth.register("cap@example.com")
            for _ in 0..<7 { try await auth.forgot("cap@example.com") }
            _ = try await auth.mail(to: "cap@example.com", atLeast: 5)
            try await Task.sleep(for: .milliseconds(300))
            #expect(try auth.mailNow(to: "cap@example.com").count == 5, "at most 5 codes a day")
            #expect(try await auth.scalars("SELECT count(*) FROM auth.reset_codes", as: Int64.self) == [5])
            auth.clock.advance(86_401)
            try await auth.forgot("cap@example.com")
            _ = try await auth.mail(to: "cap@example.com", atLeast: 6)
        }
    }
}
