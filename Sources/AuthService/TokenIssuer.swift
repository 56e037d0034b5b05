import Crypto
import Foundation
import JWTKit
import _CryptoExtras

/// The algorithms an access token may be signed with (C-2 / R-1). Exactly one per key; the
/// header's `alg` must equal the key's algorithm byte for byte (an allowlist, case-sensitive):
/// `none`, `None`, and an `HS256` header on an RSA key (key confusion) are all refused.
public enum AccessTokenAlgorithm: String, Sendable, CaseIterable, Codable {
    case rs256 = "RS256"
    case es256 = "ES256"
    case edDSA = "EdDSA"
    case hs256 = "HS256"

    public var isAsymmetric: Bool { self != .hs256 }
}

/// A key that can verify access tokens: an algorithm from jwt-kit bound to one `kid` and one
/// algorithm name.
public struct VerificationKey: Sendable {
    public let kid: String
    public let algorithm: AccessTokenAlgorithm
    let implementation: any JWTAlgorithm

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
            return try await SigningKey.hmac(secret: k, kid: kid).verification
        }
        object["kid"] = kid
        object["alg"] = algorithm.rawValue
        let jwk = try JSONDecoder().decode(JWK.self, from: JSONSerialization.data(withJSONObject: object))
        let collection = JWTKeyCollection()
        try await collection.add(jwk: jwk)
        let implementation = try await collection.getKey(for: JWKIdentifier(string: kid), alg: algorithm.rawValue)
        return try VerificationKey(kid: kid, algorithm: algorithm, implementation: implementation)
    }

    init(kid: String, algorithm: AccessTokenAlgorithm, implementation: any JWTAlgorithm) throws {
        guard implementation.name == algorithm.rawValue else {
            throw TokenKeyError("key \(kid) is not an \(algorithm.rawValue) key")
        }
        self.kid = kid
        self.algorithm = algorithm
        self.implementation = implementation
    }
}

/// A signing key. Private material comes from a PEM file or a systemd credential, never from
/// the database (only the public JWK is published). `description` never shows key material.
public struct SigningKey: Sendable, CustomStringConvertible {
    public let verification: VerificationKey
    /// The public JWK (RFC 7517) for the JWKS; nil for HS256, whose secret is never published.
    public let publicJWK: [String: String]?

    public var kid: String { verification.kid }
    public var algorithm: AccessTokenAlgorithm { verification.algorithm }
    public var description: String { "SigningKey(kid: \(kid), alg: \(algorithm.rawValue))" }

    /// Loads a private key in PEM (PKCS#8 or the algorithm's traditional format). For HS256 the
    /// "PEM" is the secret itself (at least 32 bytes).
    public static func load(pem: String, algorithm: AccessTokenAlgorithm, kid: String) async throws -> SigningKey {
        do {
            switch algorithm {
            case .rs256:
                let key = try JWTKit.Insecure.RSA.PrivateKey(pem: pem)
                return try await make(kid: kid, algorithm: algorithm, rsa: key)
            case .es256:
                return try await make(kid: kid, algorithm: algorithm, ecdsa: try ES256PrivateKey(pem: pem))
            case .edDSA:
                return try await make(kid: kid, algorithm: algorithm, eddsa: try EdDSA.PrivateKey(pem: pem))
            case .hs256:
                return try await hmac(secret: Array(pem.utf8), kid: kid)
            }
        } catch let error as TokenKeyError {
            throw error
        } catch {
            throw TokenKeyError("signing key \(kid) is not a valid \(algorithm.rawValue) private key")
        }
    }

    /// HS256 with a secret of at least 256 bits.
    public static func hmac(secret: [UInt8], kid: String) async throws -> SigningKey {
        guard secret.count >= 32 else { throw TokenKeyError("HS256 secret \(kid) is shorter than 32 bytes") }
        let collection = JWTKeyCollection()
        await collection.add(hmac: HMACKey(from: secret), digestAlgorithm: .sha256, kid: JWKIdentifier(string: kid))
        let implementation = try await collection.getKey(for: JWKIdentifier(string: kid))
        return SigningKey(verification: try VerificationKey(kid: kid, algorithm: .hs256, implementation: implementation), publicJWK: nil)
    }

    /// A fresh key, for development and tests (production keys come from files).
    public static func generate(algorithm: AccessTokenAlgorithm, kid: String) async throws -> SigningKey {
        switch algorithm {
        case .rs256:
            return try await make(kid: kid, algorithm: algorithm, rsa: try JWTKit.Insecure.RSA.PrivateKey(backing: _RSA.Signing.PrivateKey(keySize: .bits2048)))
        case .es256:
            return try await make(kid: kid, algorithm: algorithm, ecdsa: try ES256PrivateKey(backing: P256.Signing.PrivateKey()))
        case .edDSA:
            return try await make(kid: kid, algorithm: algorithm, eddsa: try EdDSA.PrivateKey(curve: .ed25519))
        case .hs256:
            return try await hmac(secret: SecureRandom.bytes(32), kid: kid)
        }
    }

    private static func make(kid: String, algorithm: AccessTokenAlgorithm, rsa key: JWTKit.Insecure.RSA.PrivateKey) async throws -> SigningKey {
        let collection = JWTKeyCollection()
        await collection.add(rsa: key, digestAlgorithm: .sha256, kid: JWKIdentifier(string: kid))
        let primitives = try key.publicKey.getKeyPrimitives()
        let jwk = ["kty": "RSA", "n": Base64URL.encode(primitives.modulus), "e": Base64URL.encode(primitives.publicExponent)]
        return try await finish(collection, kid: kid, algorithm: algorithm, jwk: jwk)
    }

    private static func make(kid: String, algorithm: AccessTokenAlgorithm, ecdsa key: ES256PrivateKey) async throws -> SigningKey {
        let collection = JWTKeyCollection()
        await collection.add(ecdsa: key, kid: JWKIdentifier(string: kid))
        guard let parameters = key.publicKey.parameters else { throw TokenKeyError("ES256 key \(kid) has no public parameters") }
        let jwk = ["kty": "EC", "crv": "P-256", "x": parameters.x, "y": parameters.y]
        return try await finish(collection, kid: kid, algorithm: algorithm, jwk: jwk)
    }

    private static func make(kid: String, algorithm: AccessTokenAlgorithm, eddsa key: EdDSA.PrivateKey) async throws -> SigningKey {
        let collection = JWTKeyCollection()
        await collection.add(eddsa: key, kid: JWKIdentifier(string: kid))
        let jwk = ["kty": "OKP", "crv": "Ed25519", "x": Base64URL.encode(key.publicKey.rawRepresentation)]
        return try await finish(collection, kid: kid, algorithm: algorithm, jwk: jwk)
    }

    private static func finish(_ collection: JWTKeyCollection, kid: String, algorithm: AccessTokenAlgorithm, jwk: [String: String]) async throws -> SigningKey {
        let implementation = try await collection.getKey(for: JWKIdentifier(string: kid))
        var published = jwk
        published["kid"] = kid
        published["alg"] = algorithm.rawValue
        published["use"] = "sig"
        return SigningKey(verification: try VerificationKey(kid: kid, algorithm: algorithm, implementation: implementation), publicJWK: published)
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
    /// at the session's login (X-5). Admin routes require `otp`.
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

    static func decodeHeader(_ token: String) throws(AccessTokenError) -> [String: Any] {
        guard token.utf8.count <= maximumTokenBytes else { throw .malformed }
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, let bytes = Base64URL.decode(parts[0]),
              let object = try? JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any]
        else { throw .malformed }
        return object
    }
}

/// What `TokenIssuer.issue` minted.
public struct IssuedAccessToken: Sendable {
    public let token: String
    public let jti: UUID
    public let expiresAt: Date
    public let claims: AccessTokenClaims
}

/// Mints access tokens with the current key; old keys still verify (rotation: a new key signs,
/// old keys verify until their tokens expire).
public struct TokenIssuer: Sendable {
    public static let defaultLifetime: TimeInterval = 15 * 60
    public static let maximumLifetime: TimeInterval = 30 * 60

    public let current: SigningKey
    public let previous: [SigningKey]
    public let issuer: String
    public let audience: String
    public let lifetime: TimeInterval
    public let verifier: AccessTokenVerifier

    public init(current: SigningKey, previous: [SigningKey] = [], issuer: String, audience: String, lifetime: TimeInterval = defaultLifetime) throws {
        guard lifetime > 0, lifetime <= Self.maximumLifetime else {
            throw TokenKeyError("access token lifetime must be 1-1800 seconds")
        }
        let kids = [current.kid] + previous.map(\.kid)
        guard Set(kids).count == kids.count else { throw TokenKeyError("duplicate signing key id") }
        self.current = current
        self.previous = previous
        self.issuer = issuer
        self.audience = audience
        self.lifetime = lifetime
        self.verifier = AccessTokenVerifier(keys: ([current] + previous).map(\.verification), issuer: issuer, audience: audience)
    }

    public func issue(userID: UUID, role: String, sessionID: UUID, mfaAt: Date? = nil, now: Date) throws -> IssuedAccessToken {
        let iat = Int64(now.timeIntervalSince1970.rounded(.down))
        let exp = iat + Int64(lifetime)
        let jti = UUID()
        var claims = AccessTokenClaims(
            iss: issuer, aud: audience, sub: userID.uuidString.lowercased(), exp: exp, iat: iat, nbf: iat,
            jti: jti.uuidString.lowercased(), role: role, sid: sessionID.uuidString.lowercased()
        )
        claims.amr = mfaAt == nil ? ["pwd"] : ["pwd", "otp"]
        claims.authTime = mfaAt.map { Int64($0.timeIntervalSince1970.rounded(.down)) }
        let token = try Self.sign(claims, with: current)
        return IssuedAccessToken(token: token, jti: jti, expiresAt: Date(timeIntervalSince1970: TimeInterval(exp)), claims: claims)
    }

    static func sign(_ claims: some Encodable, with key: SigningKey, type: String = "at+jwt") throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let header = try encoder.encode(["alg": key.algorithm.rawValue, "kid": key.kid, "typ": type])
        let payload = try encoder.encode(claims)
        let signingInput = Base64URL.encode(header) + "." + Base64URL.encode(payload)
        let signature = try key.verification.implementation.sign(Array(signingInput.utf8))
        return signingInput + "." + Base64URL.encode(signature)
    }

    /// The JWKS (RFC 7517) of every asymmetric key that may still verify tokens.
    public func jwksJSON() -> String {
        let keys = ([current] + previous).compactMap(\.publicJWK)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let data = (try? encoder.encode(["keys": keys])) ?? Data(#"{"keys":[]}"#.utf8)
        return String(decoding: data, as: UTF8.self)
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
