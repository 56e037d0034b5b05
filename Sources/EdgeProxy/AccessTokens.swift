import AccessTokens
import Foundation
import Logging
import RPC
import Synchronization

/// The claims the edge reads from a Clau access token (Sources/AuthService/TokenIssuer.swift;
/// RFC 9068 profile, `typ` = `at+jwt` in the header).
public struct AccessClaims: Sendable, Equatable {
    public var sub: String
    public var sid: String
    public var role: String
    public var jti: String
    public var exp: Int64
    /// Authentication methods (`amr`), e.g. ["pwd","otp"]: admin routes need a second factor.
    public var amr: [String]
    /// When the session's TOTP check happened (`auth_time`), Unix seconds.
    public var authTime: Int64?
    /// Set when the caller authenticated with an API key instead of an access token;
    /// `sid`/`jti` are then empty.
    public var apiKeyID: String? = nil
}

/// The JWKS fetched from auth (`GetJWKS`) at start and again when a token names an unknown `kid`
/// — at most once per `minimumRefreshInterval`, so garbage `kid`s cannot make the edge hammer auth.
/// Keys are parsed by the shared `AccessTokens` module: asymmetric keys only, never `oct`.
public final class JWKSCache: Sendable {
    private struct State {
        var verifier: AccessTokenVerifier
        var jwksJSON: String?
        var lastRefresh: ContinuousClock.Instant?
    }

    private let auth: AuthGateway
    private let minimumRefreshInterval: Duration
    private let logger: Logger
    private let state: Mutex<State>
    /// Serialises refreshes (one RPC at a time).
    private let refreshing = AsyncLock()

    init(auth: AuthGateway, issuer: String, audience: String, leeway: Int64, minimumRefreshInterval: Duration, logger: Logger) {
        self.auth = auth
        self.minimumRefreshInterval = minimumRefreshInterval
        self.logger = logger
        var verifier = AccessTokenVerifier(keys: [], issuer: issuer, audience: audience)
        verifier.leeway = leeway
        self.state = Mutex(State(verifier: verifier))
    }

    var jwksJSON: String? { state.withLock { $0.jwksJSON } }
    var keyCount: Int { state.withLock { $0.verifier.keys.count } }

    /// The verifier, refreshed first when it does not know `kid`.
    func verifier(knowing kid: String, requestID: String) async -> AccessTokenVerifier {
        let current = state.withLock { $0.verifier }
        if current.keys[kid] != nil { return current }
        await refresh(requestID: requestID, force: false)
        return state.withLock { $0.verifier }
    }

    /// Fetches the JWKS unless a refresh happened within the minimum interval (or `force`).
    func refresh(requestID: String, force: Bool) async {
        await refreshing.withLock {
            let due = state.withLock { state in
                guard !force, let last = state.lastRefresh else { return true }
                return ContinuousClock.now - last >= minimumRefreshInterval
            }
            guard due else { return }
            state.withLock { $0.lastRefresh = .now }
            do {
                let response = try await auth.call(AuthAPI.getJWKS, AuthGetJWKSRequest(), requestID: requestID)
                let keys = await VerificationKey.publicKeys(fromJWKS: response.jwksJson)
                state.withLock { state in
                    var verifier = AccessTokenVerifier(keys: keys, issuer: state.verifier.issuer, audience: state.verifier.audience)
                    verifier.leeway = state.verifier.leeway
                    state.verifier = verifier
                    state.jwksJSON = response.jwksJson
                }
                logger.info("jwks loaded", metadata: ["kids": "\(keys.map(\.kid).sorted().joined(separator: ","))", "request_id": "\(requestID)"])
            } catch {
                logger.warning("jwks refresh failed", metadata: ["error": "\(error)", "request_id": "\(requestID)"])
            }
        }
    }
}

/// Verifies bearer access tokens at the edge (C-2, R-1) with the shared `AccessTokenVerifier`:
/// header `alg` equal to the key's, signature, `typ`, `iss`, `aud`, `exp`, `nbf`, `iat`. HS256
/// tokens, whose secret only auth holds, are verified by auth (`VerifyAccessToken`, which also
/// checks revocation).
struct EdgeTokenVerifier: Sendable {
    let cache: JWKSCache
    let auth: AuthGateway
    /// Tokens whose signature was already checked: a client sends the same token for up to 15 min,
    /// and RSA verification is most of the edge's CPU per request. A hit needs the byte-identical
    /// token and still has its time claims checked; revocation is checked as usual.
    let verified = VerifiedTokenCache()

    /// The claims, and whether auth already checked revocation.
    func verify(_ token: String, now: Date, requestID: String) async throws -> (claims: AccessClaims, revocationChecked: Bool) {
        let seconds = Int64(now.timeIntervalSince1970.rounded(.down))
        if let claims = verified.claims(for: token, at: seconds) { return (claims, false) }
        let header = try AccessTokenVerifier.header(of: token)
        if header.alg == AccessTokenAlgorithm.hs256.rawValue {
            return (try await verifyWithAuth(token, requestID: requestID), true)
        }
        let verifier = await cache.verifier(knowing: header.kid, requestID: requestID)
        let claims = try verifier.verify(token, now: now)
        let result = AccessClaims(sub: claims.sub.lowercased(), sid: claims.sid.lowercased(), role: claims.role, jti: claims.jti.lowercased(), exp: claims.exp, amr: claims.amr ?? [], authTime: claims.authTime, apiKeyID: nil)
        verified.remember(token, claims: result, notBefore: max(claims.nbf, claims.iat) - verifier.leeway, notAfter: claims.exp + verifier.leeway)
        return (result, false)
    }

    private func verifyWithAuth(_ token: String, requestID: String) async throws -> AccessClaims {
        var request = AuthVerifyAccessTokenRequest()
        request.accessToken = token
        // Fail closed: no answer from auth, no access.
        let response = try await auth.guardCall(AuthAPI.verifyAccessToken, request, requestID: requestID, refusal: AccessTokenError.badSignature,
                                                unavailable: "cannot verify the session right now, retry shortly")
        return AccessClaims(
            sub: response.principal.userID.lowercased(), sid: response.sessionID.lowercased(), role: response.principal.role,
            jti: response.jti.lowercased(), exp: response.expiresAt, amr: response.amr,
            authTime: response.authTime == 0 ? nil : response.authTime, apiKeyID: nil
        )
    }
}

/// Claims of access tokens whose signature and claims were verified, by the exact token text,
/// with the window in which they are valid. Bounded: when full, everything is dropped (the next
/// requests simply verify again). JWKS changes do not matter: a key leaves the JWKS only after
/// every token it signed has expired.
final class VerifiedTokenCache: Sendable {
    private struct Entry {
        var claims: AccessClaims
        var notBefore: Int64
        var notAfter: Int64
    }

    private let entries = Mutex<[String: Entry]>([:])
    private let capacity: Int

    init(capacity: Int = 20_000) {
        self.capacity = capacity
    }

    func claims(for token: String, at seconds: Int64) -> AccessClaims? {
        entries.withLock { entries in
            guard let entry = entries[token] else { return nil }
            guard entry.notBefore <= seconds, seconds < entry.notAfter else {
                entries[token] = nil
                return nil
            }
            return entry.claims
        }
    }

    func remember(_ token: String, claims: AccessClaims, notBefore: Int64, notAfter: Int64) {
        entries.withLock { entries in
            if entries.count >= capacity { entries.removeAll(keepingCapacity: true) }
            entries[token] = Entry(claims: claims, notBefore: notBefore, notAfter: notAfter)
        }
    }
}

/// A minimal async mutex (FIFO waiters) for serialising JWKS refreshes.
final class AsyncLock: Sendable {
    private struct State {
        var locked = false
        var waiters: [CheckedContinuation<Void, Never>] = []
    }
    private let state = Mutex(State())

    func withLock<T: Sendable>(_ body: () async throws -> T) async rethrows -> T {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let acquired = state.withLock { state -> Bool in
                if state.locked { state.waiters.append(continuation); return false }
                state.locked = true
                return true
            }
            if acquired { continuation.resume() }
        }
        defer {
            let next = state.withLock { state -> CheckedContinuation<Void, Never>? in
                if state.waiters.isEmpty { state.locked = false; return nil }
                return state.waiters.removeFirst()
            }
            next?.resume()
        }
        return try await body()
    }
}

/// "Not revoked" answers from auth, kept for less than a second per `jti` (R-1: revocation reaches
/// every edge within 1 s). A logout through this edge forgets its `jti` at once. Bounded: when
/// full, everything is dropped (the next requests simply ask auth again).
final class RevocationCache: Sendable {
    private let entries = Mutex<[String: ContinuousClock.Instant]>([:])
    private let ttl: Duration
    private let capacity: Int

    init(ttl: Duration, capacity: Int = 100_000) {
        self.ttl = ttl
        self.capacity = capacity
    }

    func isKnownLive(_ jti: String) -> Bool {
        guard ttl > .zero else { return false }
        let now = ContinuousClock.now
        return entries.withLock { entries in
            guard let until = entries[jti] else { return false }
            if until > now { return true }
            entries[jti] = nil
            return false
        }
    }

    func rememberLive(_ jti: String) {
        guard ttl > .zero else { return }
        let until = ContinuousClock.now + ttl
        entries.withLock { entries in
            if entries.count >= capacity { entries.removeAll(keepingCapacity: true) }
            entries[jti] = until
        }
    }

    func forget(_ jti: String) {
        _ = entries.withLock { $0.removeValue(forKey: jti) }
    }
}
