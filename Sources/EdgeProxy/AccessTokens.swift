import Foundation
import JWTKit
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

/// Why a bearer token was refused. Every case answers the same 401 `invalid_token`.
public enum TokenRejection: Error, Sendable, Equatable {
    case malformed, algorithmNotAllowed, unknownKey, badSignature, wrongType, wrongIssuer, wrongAudience, expired, notYetValid
}

/// Algorithms the edge verifies itself from the JWKS (C-2): asymmetric only. `none` and HS256 are
/// never accepted here (HS256 would mean asking auth, which is not configured).
enum AllowedAlgorithm: String, Sendable, CaseIterable {
    case rs256 = "RS256", es256 = "ES256", edDSA = "EdDSA"

    var keyType: String {
        switch self {
        case .rs256: "RSA"
        case .es256: "EC"
        case .edDSA: "OKP"
        }
    }
}

/// One public key from auth's JWKS, bound to its `kid` and exactly one algorithm.
struct PublicKey: Sendable {
    let kid: String
    let algorithm: AllowedAlgorithm
    let implementation: any JWTAlgorithm
}

/// The JWKS fetched from auth (`GetJWKS`) at start and again when a token names an unknown `kid`
/// — at most once per `minimumRefreshInterval`, so garbage `kid`s cannot make the edge hammer auth.
public final class JWKSCache: Sendable {
    private struct State {
        var keys: [String: PublicKey] = [:]
        var jwksJSON: String?
        var lastRefresh: ContinuousClock.Instant?
    }

    private let rpc: RPCClient
    private let timeout: Duration
    private let minimumRefreshInterval: Duration
    private let logger: Logger
    private let state = Mutex(State())
    /// Serialises refreshes (one RPC at a time).
    private let refreshing = AsyncLock()

    init(rpc: RPCClient, timeout: Duration, minimumRefreshInterval: Duration, logger: Logger) {
        self.rpc = rpc
        self.timeout = timeout
        self.minimumRefreshInterval = minimumRefreshInterval
        self.logger = logger
    }

    var jwksJSON: String? { state.withLock { $0.jwksJSON } }
    var keyCount: Int { state.withLock { $0.keys.count } }

    func key(for kid: String, requestID: String) async -> PublicKey? {
        if let key = state.withLock({ $0.keys[kid] }) { return key }
        await refresh(requestID: requestID, force: false)
        return state.withLock { $0.keys[kid] }
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
                let response = try await rpc.call(AuthAPI.getJWKS, AuthGetJWKSRequest(), options: CallOptions(requestID: requestID, timeout: timeout))
                let keys = try await Self.parse(jwks: response.jwksJson)
                state.withLock { state in
                    state.keys = keys
                    state.jwksJSON = response.jwksJson
                }
                logger.info("jwks loaded", metadata: ["kids": "\(keys.keys.sorted().joined(separator: ","))", "request_id": "\(requestID)"])
            } catch {
                logger.warning("jwks refresh failed", metadata: ["error": "\(error)", "request_id": "\(requestID)"])
            }
        }
    }

    /// Keeps only asymmetric keys with a `kid` and an allowed `alg` whose `kty` matches; symmetric
    /// (`oct`) keys are never accepted from a JWKS.
    static func parse(jwks: String) async throws -> [String: PublicKey] {
        guard let object = try JSONSerialization.jsonObject(with: Data(jwks.utf8)) as? [String: Any],
              let entries = object["keys"] as? [[String: Any]]
        else { throw TokenRejection.malformed }
        var keys: [String: PublicKey] = [:]
        for entry in entries {
            guard let kid = entry["kid"] as? String, !kid.isEmpty,
                  let alg = (entry["alg"] as? String).flatMap(AllowedAlgorithm.init(rawValue:)),
                  entry["kty"] as? String == alg.keyType
            else { continue }
            if let use = entry["use"] as? String, use != "sig" { continue }
            do {
                let jwk = try JSONDecoder().decode(JWK.self, from: JSONSerialization.data(withJSONObject: entry))
                let collection = JWTKeyCollection()
                try await collection.add(jwk: jwk)
                let implementation = try await collection.getKey(for: JWKIdentifier(string: kid), alg: alg.rawValue)
                guard implementation.name == alg.rawValue else { continue }
                keys[kid] = PublicKey(kid: kid, algorithm: alg, implementation: implementation)
            } catch {
                continue
            }
        }
        return keys
    }
}

/// Verifies bearer access tokens at the edge (C-2, R-1): header `alg` allowlisted and equal to
/// the key's algorithm, signature, `typ`, then `iss`, `aud`, `exp`, `nbf`, `iat`.
struct AccessTokenVerifier: Sendable {
    let cache: JWKSCache
    let issuer: String
    let audience: String
    let leeway: Int64
    static let maximumTokenBytes = 8192

    func verify(_ token: String, now: Date, requestID: String) async throws(TokenRejection) -> AccessClaims {
        guard token.utf8.count <= Self.maximumTokenBytes else { throw .malformed }
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3,
              let headerBytes = Base64URL.decode(parts[0]),
              let header = try? JSONSerialization.jsonObject(with: Data(headerBytes)) as? [String: Any]
        else { throw .malformed }
        // The allowlist comes first: `none`, `HS256` and anything unknown never reach a key.
        guard let alg = (header["alg"] as? String).flatMap(AllowedAlgorithm.init(rawValue:)) else { throw .algorithmNotAllowed }
        guard header["crit"] == nil else { throw .malformed }
        guard let kid = header["kid"] as? String, !kid.isEmpty, kid.utf8.count <= 128 else { throw .unknownKey }
        guard let key = await cache.key(for: kid, requestID: requestID) else { throw .unknownKey }
        guard key.algorithm == alg else { throw .algorithmNotAllowed }
        guard let signature = Base64URL.decode(parts[2]), !signature.isEmpty, let payload = Base64URL.decode(parts[1]) else { throw .malformed }
        let signingInput = Array(token.utf8.prefix(parts[0].utf8.count + 1 + parts[1].utf8.count))
        let valid = (try? key.implementation.verify(signature, signs: signingInput)) ?? false
        guard valid else { throw .badSignature }
        guard header["typ"] as? String == "at+jwt" else { throw .wrongType }

        guard let claims = try? JSONDecoder().decode(WireClaims.self, from: Data(payload)) else { throw .malformed }
        guard claims.iss == issuer else { throw .wrongIssuer }
        guard claims.aud == [audience] else { throw .wrongAudience }
        let seconds = Int64(now.timeIntervalSince1970.rounded(.down))
        guard seconds < claims.exp + leeway else { throw .expired }
        guard claims.nbf <= seconds + leeway, claims.iat <= seconds + leeway else { throw .notYetValid }
        guard UUID(uuidString: claims.sub) != nil, UUID(uuidString: claims.sid) != nil, UUID(uuidString: claims.jti) != nil else { throw .malformed }
        return AccessClaims(sub: claims.sub.lowercased(), sid: claims.sid.lowercased(), role: claims.role, jti: claims.jti.lowercased(), exp: claims.exp, amr: claims.amr ?? [], authTime: claims.authTime)
    }

    /// The payload as auth writes it: integer seconds (a fraction fails to decode), `aud` a
    /// string or an array (RFC 7519 4.1.3).
    struct WireClaims: Decodable {
        var iss: String
        var aud: [String]
        var sub: String
        var exp: Int64
        var iat: Int64
        var nbf: Int64
        var jti: String
        var role: String
        var sid: String
        var amr: [String]?
        var authTime: Int64?

        enum CodingKeys: String, CodingKey { case iss, aud, sub, exp, iat, nbf, jti, role, sid, amr, authTime = "auth_time" }

        init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            iss = try c.decode(String.self, forKey: .iss)
            if let single = try? c.decode(String.self, forKey: .aud) { aud = [single] } else { aud = try c.decode([String].self, forKey: .aud) }
            sub = try c.decode(String.self, forKey: .sub)
            exp = try c.decode(Int64.self, forKey: .exp)
            iat = try c.decode(Int64.self, forKey: .iat)
            nbf = try c.decode(Int64.self, forKey: .nbf)
            jti = try c.decode(String.self, forKey: .jti)
            role = try c.decode(String.self, forKey: .role)
            sid = try c.decode(String.self, forKey: .sid)
            amr = try c.decodeIfPresent([String].self, forKey: .amr)
            authTime = try c.decodeIfPresent(Int64.self, forKey: .authTime)
        }
    }
}

enum Base64URL {
    /// Strict: the URL-safe alphabet only, no padding.
    static func decode<S: StringProtocol>(_ text: S) -> [UInt8]? {
        var base64 = ""
        base64.reserveCapacity(text.utf8.count + 3)
        for scalar in text.unicodeScalars {
            switch scalar {
            case "A"..."Z", "a"..."z", "0"..."9": base64.unicodeScalars.append(scalar)
            case "-": base64.append("+")
            case "_": base64.append("/")
            default: return nil
            }
        }
        switch base64.utf8.count % 4 {
        case 0: break
        case 2: base64 += "=="
        case 3: base64 += "="
        default: return nil
        }
        return Data(base64Encoded: base64).map(Array.init)
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
