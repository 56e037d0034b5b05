import Crypto
import Foundation
import JWTKit

// Access-token verification shared by the auth service (which signs) and the edge (which
// verifies with public keys only): one implementation of the algorithm allowlist, the claim
// checks and the JWKS parsing, so the two processes cannot drift apart (C-2 / R-1).
/// The algorithms an access token may be signed with (C-2 / R-1). Exactly one per key; the
/// header's `alg` must equal the key's algorithm byte for byte (an allowlist, case-sensitive):
/// `none`, `None`, and an `HS256` header on an RSA key (key confusion) are all refused.
public enum AccessTokenAlgorithm: String, Sendable, CaseIterable, Codable {
    case rs256 = "RS256"
    case es256 = "ES256"
    case edDSA = "EdDSA"
    case hs256 = "HS256"

    public var isAsymmetric: Bool { self != .hs256 }

    /// The JWK `kty` of keys of this algorithm.
    public var keyType: String {
        switch self {
        case .rs256: "RSA"
        case .es256: "EC"
        case .edDSA: "OKP"
        case .hs256: "oct"
        }
    }
}

/// A key that can verify access tokens: an algorithm from jwt-kit bound to one `kid` and one
/// algorithm name.
public struct VerificationKey: Sendable {
    public let kid: String
    public let algorithm: AccessTokenAlgorithm
    package let implementation: any JWTAlgorithm

    /// A key from a JWK (e.g. a published JWKS, or a test vector). `kid` overrides the JWK's own.
    public static func fromJWK(json: Data, kid: String, algorithm: AccessTokenAlgorithm) async throws -> VerificationKey {
        guard var object = try JSONSerialization.jsonObject(with: json) as? [String: Any] else {
            throw TokenKeyError("JWK is not a JSON object")
        }
        if object["kty"] as? String == "oct" {
            // jwt-kit's JWK type has no symmetric keys.
            guard algorithm == .hs256, let k = (object["k"] as? String).flatMap({ Base64URL.decode($0) }) else {
                throw TokenKeyError("JWK \(kid) is not an HS256 key")
            }
            return try await hmac(secret: k, kid: kid)
        }
        object["kid"] = kid
        object["alg"] = algorithm.rawValue
        let jwk = try JSONDecoder().decode(JWK.self, from: JSONSerialization.data(withJSONObject: object))
        let collection = JWTKeyCollection()
        try await collection.add(jwk: jwk)
        let implementation = try await collection.getKey(for: JWKIdentifier(string: kid), alg: algorithm.rawValue)
        return try VerificationKey(kid: kid, algorithm: algorithm, implementation: implementation)
    }

    /// HS256 with a secret of at least 256 bits (only auth ever holds one).
    package static func hmac(secret: [UInt8], kid: String) async throws -> VerificationKey {
        guard secret.count >= 32 else { throw TokenKeyError("HS256 secret \(kid) is shorter than 32 bytes") }
        let collection = JWTKeyCollection()
        await collection.add(hmac: HMACKey(from: secret), digestAlgorithm: .sha256, kid: JWKIdentifier(string: kid))
        return try VerificationKey(kid: kid, algorithm: .hs256, implementation: try await collection.getKey(for: JWKIdentifier(string: kid)))
    }

    /// The keys of a published JWKS (RFC 7517) that a verifier without secrets may use: only
    /// asymmetric keys with a `kid`, an allowlisted `alg` and the matching `kty`, `use` = `sig`
    /// when present. Symmetric (`oct`) keys are never taken from a JWKS; bad entries are skipped.
    public static func publicKeys(fromJWKS json: String) async -> [VerificationKey] {
        guard let object = try? JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any],
              let entries = object["keys"] as? [[String: Any]]
        else { return [] }
        var keys: [VerificationKey] = []
        for entry in entries {
            guard let kid = entry["kid"] as? String, !kid.isEmpty, kid.utf8.count <= 128,
                  let algorithm = (entry["alg"] as? String).flatMap(AccessTokenAlgorithm.init(rawValue:)), algorithm.isAsymmetric,
                  entry["kty"] as? String == algorithm.keyType,
                  (entry["use"] as? String).map({ $0 == "sig" }) ?? true,
                  let data = try? JSONSerialization.data(withJSONObject: entry),
                  let key = try? await fromJWK(json: data, kid: kid, algorithm: algorithm)
            else { continue }
            keys.append(key)
        }
        return keys
    }

    package init(kid: String, algorithm: AccessTokenAlgorithm, implementation: any JWTAlgorithm) throws {
        guard implementation.name == algorithm.rawValue else {
            throw TokenKeyError("key \(kid) is not an \(algorithm.rawValue) key")
        }
        self.kid = kid
        self.algorithm = algorithm
        self.implementation = implementation
    }
}

public struct TokenKeyError: Error, Sendable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// The claims of a Clau access token (RFC 9068 profile: `typ` = `at+jwt` in the header).
/// Timestamps are integer Unix seconds (jwt-kit's default encoder writes fractions).
public struct AccessTokenClaims: Codable, Sendable, Equatable {
    public var iss: String
    public var aud: String
    public var sub: String
    public var exp: Int64
    public var iat: Int64
    public var nbf: Int64
    public var jti: String
    public var role: String
    /// The refresh family (session) the token was minted for.
    public var sid: String
    /// Authentication methods (RFC 8176): `["pwd"]`, or `["pwd", "otp"]` when TOTP was checked
    /// at the session's login. Admin routes require `otp`.
    public var amr: [String]?
    /// When the session's TOTP check happened (OIDC `auth_time`): admin routes require it to be recent.
    public var authTime: Int64?

    enum CodingKeys: String, CodingKey {
        case iss, aud, sub, exp, iat, nbf, jti, role, sid, amr
        case authTime = "auth_time"
    }

    public init(iss: String, aud: String, sub: String, exp: Int64, iat: Int64, nbf: Int64, jti: String, role: String, sid: String) {
        self.iss = iss; self.aud = aud; self.sub = sub; self.exp = exp; self.iat = iat; self.nbf = nbf
        self.jti = jti; self.role = role; self.sid = sid
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        iss = try c.decode(String.self, forKey: .iss)
        // `aud` may be a string or an array (RFC 7519 4.1.3); we accept ours in either form.
        if let single = try? c.decode(String.self, forKey: .aud) {
            aud = single
        } else {
            let many = try c.decode([String].self, forKey: .aud)
            guard many.count == 1 else {
                throw DecodingError.dataCorruptedError(forKey: .aud, in: c, debugDescription: "one audience expected")
            }
            aud = many[0]
        }
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

    /// True when the session's login checked a second factor.
    public var hasMFA: Bool { amr?.contains("otp") == true }
}

/// Why a token was refused. Callers map every case to one UNAUTHENTICATED error.
public enum AccessTokenError: Error, Sendable, Equatable {
    case malformed
    case algorithmNotAllowed
    case unknownKey
    case badSignature
    case wrongType
    case wrongIssuer
    case wrongAudience
    case expired
    case notYetValid
}

/// Verifies access tokens: structure, header (`alg` allowlisted per `kid`, `typ`), signature,
/// then `iss`, `aud`, `exp`, `nbf`, `iat` against an injected clock.
public struct AccessTokenVerifier: Sendable {
    public let keys: [String: VerificationKey]
    public let issuer: String
    public let audience: String
    /// Clock skew tolerated on `exp`/`nbf`/`iat`, seconds.
    public var leeway: Int64 = 0
    public static let maximumTokenBytes = 8192

    public init(keys: [VerificationKey], issuer: String, audience: String) {
        self.keys = Dictionary(keys.map { ($0.kid, $0) }, uniquingKeysWith: { first, _ in first })
        self.issuer = issuer
        self.audience = audience
    }

    public func verify(_ token: String, now: Date) throws(AccessTokenError) -> AccessTokenClaims {
        let header = try Self.decodeHeader(token)
        guard let kid = header["kid"] as? String, let key = keys[kid] else { throw .unknownKey }
        let payload = try Self.verifySignature(token, key: key, header: header)
        guard header["typ"] as? String == "at+jwt" else { throw .wrongType }
        let claims: AccessTokenClaims
        do {
            claims = try JSONDecoder().decode(AccessTokenClaims.self, from: payload)
        } catch {
            throw .malformed
        }
        let seconds = Int64(now.timeIntervalSince1970.rounded(.down))
        guard claims.iss == issuer else { throw .wrongIssuer }
        guard claims.aud == audience else { throw .wrongAudience }
        guard seconds < claims.exp + leeway else { throw .expired }
        guard claims.nbf <= seconds + leeway, claims.iat <= seconds + leeway else { throw .notYetValid }
        guard UUID(uuidString: claims.sub) != nil, UUID(uuidString: claims.sid) != nil, UUID(uuidString: claims.jti) != nil else { throw .malformed }
        return claims
    }

    /// The signature layer alone (JWS, RFC 7515): the header's `alg` must equal the key's
    /// algorithm exactly, then the key's jwt-kit algorithm checks the signature. Returns the
    /// payload bytes, unparsed.
    public static func verifySignature(_ token: String, key: VerificationKey) throws(AccessTokenError) -> Data {
        try verifySignature(token, key: key, header: decodeHeader(token))
    }

    static func verifySignature(_ token: String, key: VerificationKey, header: [String: Any]) throws(AccessTokenError) -> Data {
        guard let alg = header["alg"] as? String, alg == key.algorithm.rawValue else { throw .algorithmNotAllowed }
        // We understand no critical extensions (RFC 7515 4.1.11).
        guard header["crit"] == nil else { throw .malformed }
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, let signature = Base64URL.decode(parts[2]), let payload = Base64URL.decode(parts[1]),
              !signature.isEmpty
        else { throw .malformed }
        let signingInput = Array(token.utf8.prefix(parts[0].utf8.count + 1 + parts[1].utf8.count))
        let valid: Bool
        do {
            valid = try key.implementation.verify(signature, signs: signingInput)
        } catch {
            throw .badSignature
        }
        guard valid else { throw .badSignature }
        return Data(payload)
    }

    /// The `alg` and `kid` a token's header names, unverified: a verifier uses them to pick the
    /// key (or to hand an HS256 token to the service that holds the secret).
    public static func header(of token: String) throws(AccessTokenError) -> (alg: String, kid: String) {
        let header = try decodeHeader(token)
        guard let alg = header["alg"] as? String else { throw .algorithmNotAllowed }
        guard let kid = header["kid"] as? String, !kid.isEmpty, kid.utf8.count <= 128 else { throw .unknownKey }
        return (alg, kid)
    }

    /// The `kid` a token names, read before any verification so that a verifier can fetch an
    /// unknown key first (the edge refreshes its JWKS on an unknown `kid`).
    public static func keyID(of token: String) throws(AccessTokenError) -> String {
        guard let kid = try decodeHeader(token)["kid"] as? String, !kid.isEmpty, kid.utf8.count <= 128 else { throw .unknownKey }
        return kid
    }

    static func decodeHeader(_ token: String) throws(AccessTokenError) -> [String: Any] {
        guard token.utf8.count <= maximumTokenBytes else { throw .malformed }
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, let bytes = Base64URL.decode(parts[0]),
              let object = try? JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any]
        else { throw .malformed }
        return object
    }
}

public enum Base64URL {
    public static func encode<D: Sequence>(_ bytes: D) -> String where D.Element == UInt8 {
        Data(bytes).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-")
            .replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    /// Strict: the URL-safe alphabet only, no padding.
    public static func decode<S: StringProtocol>(_ text: S) -> [UInt8]? {
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
