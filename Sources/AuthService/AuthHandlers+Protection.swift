import Foundation
import Logging
import RPC

/// Lockout, per-IP threat levels, mail and TOTP settings of the handlers.
public struct ProtectionSettings: Sendable {
    public var secrets: AuthSecrets
    public var lockout: AccountLockout
    public var ipPolicy: IPThreatPolicy
    public var ipHasher: IPHasher
    public var resetCodes: ResetCodePolicy
    public var outbox: MailOutbox
    public var productName: String
    public var totpIssuer: String

    public init(secrets: AuthSecrets, lockoutPolicy: AccountLockoutPolicy = AccountLockoutPolicy(), ipPolicy: IPThreatPolicy = IPThreatPolicy(), resetCodes: ResetCodePolicy = ResetCodePolicy(), outbox: MailOutbox, productName: String = "Clau", totpIssuer: String = "Clau") {
        self.secrets = secrets
        self.lockout = AccountLockout(policy: lockoutPolicy)
        self.ipPolicy = ipPolicy
        self.ipHasher = IPHasher(key: secrets.ipHashKey)
        self.resetCodes = resetCodes
        self.outbox = outbox
        self.productName = productName
        self.totpIssuer = totpIssuer
    }
}

extension AuthHandlers {
    static func tooManyAttempts(retryAfter seconds: Int) -> RPCError {
        RPCError(code: .resourceExhausted, message: "too_many_attempts", details: ["retry_after": "\(max(1, seconds))"])
    }

    /// The failure every bad login gets, with the delay the edge should ask for.
    static func invalidCredentials(retryAfter seconds: Int?) -> RPCError {
        guard let seconds, seconds > 0 else { return invalidCredentials }
        return RPCError(code: .unauthenticated, message: "invalid_credentials", details: ["retry_after": "\(seconds)"])
    }

    /// Refuses the attempt while the IP is delayed or blocked: the service never sleeps,
    /// the edge answers 429 with Retry-After. Returns the IP's hash for recording.
    func checkClientIP(_ ip: String, _ context: ServerContext) async throws -> String? {
        guard !ip.isEmpty else { return nil }
        let now = now()
        let hash = protection.ipHasher.hash(ip)
        let failures = try await store.ipFailures(ipHash: hash, since: now.addingTimeInterval(-protection.ipPolicy.window), logger: context.logger)
        switch protection.ipPolicy.decision(failures: failures, now: now) {
        case .allowed:
            return hash
        case .delayed(let until):
            throw Self.tooManyAttempts(retryAfter: Int(until.timeIntervalSince(now).rounded(.up)))
        case .blocked(let until, _):
            throw Self.tooManyAttempts(retryAfter: Int(until.timeIntervalSince(now).rounded(.up)))
        }
    }

    /// Counts a failed attempt for the IP; logs `ip_blocked` when this failure raised the threat
    /// level to a block. Returns the delay before the IP may try again.
    func recordIPFailure(_ hash: String?, _ context: ServerContext) async throws -> Int? {
        guard let hash else { return nil }
        let now = now()
        try await store.recordIPFailure(ipHash: hash, at: now, logger: context.logger)
        let failures = try await store.ipFailures(ipHash: hash, since: now.addingTimeInterval(-protection.ipPolicy.window), logger: context.logger)
        let policy = protection.ipPolicy
        let level = policy.threatLevel(failureCount: failures.count)
        if level > .low, policy.threatLevel(failureCount: failures.count - 1) < level {
            await recordAudit("ip_blocked", risk: level >= .high ? "high" : "medium", userID: nil, context, details: ["ip_hash": hash, "level": "\(level)"])
        }
        switch policy.decision(failures: failures, now: now) {
        case .allowed: return nil
        case .delayed(let until), .blocked(let until, _): return Int(until.timeIntervalSince(now).rounded(.up))
        }
    }

    /// One audit event: a JSON log line always, and a row in `auth.audit_events`. A
    /// failed insert is logged, never turned into a failed request.
    func recordAudit(_ event: String, risk: String, userID: UUID?, _ context: ServerContext, details: [String: String] = [:]) async {
        var metadata: Logger.Metadata = ["event": "\(event)", "risk": "\(risk)", "request_id": "\(context.requestID)", "caller_uid": "\(context.peer.uid)"]
        if let userID { metadata["user_id"] = "\(userID)" }
        for (key, value) in details { metadata[key] = "\(value)" }
        audit.log(level: risk == "low" ? .info : .notice, "\(event)", metadata: metadata)
        do {
            try await store.audit(event: event, risk: risk, userID: userID, requestID: context.requestID, details: details, logger: context.logger)
        } catch {
            audit.error("audit event not stored", metadata: ["event": "\(event)", "error": "\(String(reflecting: type(of: error)))"])
        }
    }

    /// Queues a security e-mail; delivery happens off the request path so that sending mail
    /// takes no visible time (X-2: a registration for a known address answers as fast).
    func mail(_ template: MailTemplate, to address: String, _ context: ServerContext) {
        protection.outbox.enqueue(to: address, template: template, requestID: context.requestID)
    }

    // MARK: Login (C-4, R-4, X-2, X-5)

    public func login(_ request: AuthLoginRequest, _ context: ServerContext) async throws -> AuthLoginResponse {
        let ipHash = try await checkClientIP(request.clientIp, context)
        let email = Validation.normalizedEmail(request.email)
        // Addresses that cannot have been registered are looked up no further (same error, same bcrypt time).
        // An address PostgreSQL cannot hold (NUL) or no account can have (controls) is looked up
        // as no account at all: the same 401 as a wrong password, never a 500.
        let found = email.isEmpty || email.utf8.count > 254 || !Validation.isStorableText(email) ? nil : try await store.findUser(emailNormalized: email, logger: context.logger)
        let matched: Bool
        if let found {
            matched = try await hasher.verify(request.password, against: found.passwordHash)
        } else {
            matched = try await hasher.dummyVerify(request.password)
        }
        let now = now()
        let locked = found.map { protection.lockout.isLocked($0.lockout, now: now) } ?? false
        guard matched, !locked, let user = found, user.status == "active" else {
            try await loginFailed(found, ipHash: ipHash, reason: locked ? "locked" : "bad_credentials", context)
        }
        let mfaAt = try await checkSecondFactor(user, code: request.totp, ipHash: ipHash, context)

        let success = protection.lockout.recordSuccess(user.lockout, now: now)
        if success.state != user.lockout {
            try await store.saveLockout(userID: user.id, success.state, logger: context.logger)
        }
        if success.notifyUser {
            mail(.loginAfterFailures(failedAttempts: success.failuresBeforeSuccess, time: now), to: user.email, context)
        }
        if hasher.needsRehash(user.passwordHash) {
            let upgraded = try await hasher.hash(request.password)
            try await store.upgradePasswordHash(userID: user.id, from: user.passwordHash, to: upgraded, now: now, logger: context.logger)
            audit.info("password hash upgraded", metadata: ["event": "password_rehash", "risk": "low", "user_id": "\(user.id)", "cost": "\(hasher.cost)"])
        }
        let fingerprint = request.deviceHeaders.isEmpty ? nil : DeviceBinding.fingerprint(headers: request.deviceHeaders.map { ($0.key, $0.value) })
        let tokens = try await startSession(for: user, mfaAt: mfaAt, deviceFingerprint: fingerprint, context)
        await recordAudit("login_success", risk: "low", userID: user.id, context, details: ["session_id": tokens.sessionID, "mfa": mfaAt == nil ? "false" : "true"])
        var response = AuthLoginResponse()
        response.tokens = tokens
        response.user = Self.publicUser(user)
        return response
    }

    /// Counts the failure against the account (C-4) and the IP, then throws the one error
    /// every failure gets. A locked account answers exactly like a wrong password.
    func loginFailed(_ user: UserRecord?, ipHash: String?, reason: String, _ context: ServerContext) async throws -> Never {
        let now = now()
        if let user, user.status == "active" {
            let outcome = protection.lockout.recordFailure(user.lockout, now: now)
            if outcome.state != user.lockout {
                try await store.saveLockout(userID: user.id, outcome.state, logger: context.logger)
            }
            if outcome.justLocked, let until = outcome.state.lockedUntil {
                await recordAudit("account_locked", risk: "medium", userID: user.id, context, details: ["locked_until": "\(Int64(until.timeIntervalSince1970))"])
                mail(.accountLocked(until: until), to: user.email, context)
            }
        }
        let retryAfter = try await recordIPFailure(ipHash, context)
        await recordAudit("login_failure", risk: "low", userID: user?.id, context, details: ["reason": reason])
        throw Self.invalidCredentials(retryAfter: retryAfter)
    }

    /// a user with TOTP must present a fresh code; an admin without one gets a token
    /// without `otp` in `amr`, which admin routes refuse. Returns the time of the check.
    func checkSecondFactor(_ user: UserRecord, code: String, ipHash: String?, _ context: ServerContext) async throws -> Date? {
        guard let sealed = user.totpSecretSealed else { return nil }
        guard !code.isEmpty else {
            throw RPCError(code: .unauthenticated, message: "mfa_required")
        }
        let now = now()
        guard let secret = protection.secrets.openTOTPSecret(sealed, userID: user.id), let totp = try? TOTP(secret: secret) else {
            audit.error("stored TOTP secret does not open", metadata: ["user_id": "\(user.id)"])
            throw RPCError(code: .internalError, message: "internal error")
        }
        switch totp.verify(code: code, at: now, lastUsedStep: user.totpLastStep.map { UInt64(max(0, $0)) }) {
        case .valid(let step):
            // The conditional UPDATE is the replay guard between concurrent logins.
            if try await store.acceptTOTPStep(userID: user.id, step: Int64(step), logger: context.logger) {
                return now
            }
            await recordAudit("mfa_failure", risk: "medium", userID: user.id, context, details: ["reason": "replayed"])
        case .replayed:
            await recordAudit("mfa_failure", risk: "medium", userID: user.id, context, details: ["reason": "replayed"])
        case .invalid:
            await recordAudit("mfa_failure", risk: "medium", userID: user.id, context, details: ["reason": "invalid"])
        }
        // A wrong second factor counts like a wrong password: six digits must not be guessable.
        try await loginFailed(user, ipHash: ipHash, reason: "mfa", context)
    }
}
