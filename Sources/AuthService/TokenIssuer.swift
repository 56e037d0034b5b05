import Crypto
import Foundation
import JWTKit
@_exported import AccessTokens
import _CryptoExtras

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
        SigningKey(verification: try await VerificationKey.hmac(secret: secret, kid: kid), publicJWK: nil)
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
