import Crypto
import Foundation
import Testing
import _CryptoExtras
@testable import AuthService

private struct JWSVectors: Decodable {
    struct Vector: Decodable {
        var id: String
        var alg: String
        var compact: String
        var jwk: [String: String]?
    }
    struct Negative: Decodable {
        var id: String
        var compact: String?
        var compact_examples: [String]?
        var public_key_pem: String?
    }
    var vectors: [Vector]
    var derived_negative_vectors: [Negative]
}

private func loadVectors() throws -> JWSVectors {
    try JSONDecoder().decode(JWSVectors.self, from: fixtureData("jws_jwt_vectors.json"))
}

private func key(_ vector: JWSVectors.Vector, publicOnly: Bool = true) async throws -> VerificationKey {
    var jwk = try #require(vector.jwk)
    if publicOnly { for field in ["d", "p", "q", "dp", "dq", "qi"] { jwk[field] = nil } }
    let algorithm = try #require(AccessTokenAlgorithm(rawValue: vector.alg))
    return try await VerificationKey.fromJWK(json: JSONEncoder().encode(jwk), kid: vector.id, algorithm: algorithm)
}

@Suite("JWT issuing and verification", .timeLimit(.minutes(5)))
struct TokenIssuerTests {
    @Test func rfcJWSVectorsVerify_C2() async throws {
        let vectors = try loadVectors()
        var checked: [String] = []
        for vector in vectors.vectors {
            guard let algorithm = AccessTokenAlgorithm(rawValue: vector.alg), vector.jwk != nil else { continue }
            let verifier = try await key(vector, publicOnly: algorithm.isAsymmetric)
            _ = try AccessTokenVerifier.verifySignature(vector.compact, key: verifier)
            checked.append(vector.alg)
            // Deterministic algorithms: re-signing with the private key reproduces the signature.
            if algorithm != .es256 {
                let signer = try await key(vector, publicOnly: false)
                let input = vector.compact.split(separator: ".").prefix(2).joined(separator: ".")
                let signature = try signer.implementation.sign(Array(input.utf8))
                #expect(Base64URL.encode(signature) == String(vector.compact.split(separator: ".")[2]), "\(vector.id)")
            }
        }
        #expect(Set(checked) == ["HS256", "RS256", "ES256", "EdDSA"])
        // ES512 is not on the allowlist at all.
        #expect(AccessTokenAlgorithm(rawValue: "ES512") == nil)
    }

    @Test func tamperedPayloadRejected_C2() async throws {
        let vectors = try loadVectors()
        let hs = try #require(vectors.vectors.first { $0.alg == "HS256" })
        let tampered = try #require(vectors.derived_negative_vectors.first { $0.id.contains("tampered") }?.compact)
        let hsKey = try await key(hs, publicOnly: false)
        _ = try AccessTokenVerifier.verifySignature(hs.compact, key: hsKey)
        #expect(throws: AccessTokenError.badSignature) { try AccessTokenVerifier.verifySignature(tampered, key: hsKey) }
    }

    @Test func algNoneAndHSRSConfusionRejected_C2() async throws {
        let vectors = try loadVectors()
        let rs = try await key(try #require(vectors.vectors.first { $0.alg == "RS256" }))
        let none = try #require(vectors.vectors.first { $0.alg == "none" }).compact
        #expect(throws: AccessTokenError.algorithmNotAllowed) { try AccessTokenVerifier.verifySignature(none, key: rs) }
        let variants = try #require(vectors.derived_negative_vectors.first { $0.id.contains("case-variants") }?.compact_examples)
        #expect(variants.count == 3)
        for token in variants {
            #expect(throws: AccessTokenError.algorithmNotAllowed) { try AccessTokenVerifier.verifySignature(token, key: rs) }
        }
        let confusion = try #require(vectors.derived_negative_vectors.first { $0.id.contains("alg-confusion") })
        let confusionToken = try #require(confusion.compact)
        #expect(throws: AccessTokenError.algorithmNotAllowed) { try AccessTokenVerifier.verifySignature(confusionToken, key: rs) }

        // The same attack on our own tokens: an HS256 token keyed with our published RSA public
        // key, with our kid, and every claim right.
        let signing = try await sharedRSAKey.value
        let issuer = try TokenIssuer(current: signing, issuer: "clau-auth", audience: "clau-api")
        let now = Date()
        let genuine = try issuer.issue(userID: UUID(), role: "admin", sessionID: UUID(), now: now)
        let publicPEM = try publicKeyPEM(of: signing)
        let forgedKey = try await SigningKey.hmac(secret: Array(publicPEM.utf8), kid: signing.kid)
        let forged = try TokenIssuer.sign(genuine.claims, with: forgedKey)
        #expect(throws: AccessTokenError.algorithmNotAllowed) { try issuer.verifier.verify(forged, now: now) }
        // alg none with our kid and claims.
        let header = Base64URL.encode(Data(#"{"alg":"none","kid":"test-rs256-1","typ":"at+jwt"}"#.utf8))
        let payload = Base64URL.encode(try JSONEncoder().encode(genuine.claims))
        #expect(throws: AccessTokenError.algorithmNotAllowed) { try issuer.verifier.verify("\(header).\(payload).", now: now) }
        #expect(throws: (any Error).self) { try issuer.verifier.verify("\(header).\(payload)", now: now) }
        #expect(try issuer.verifier.verify(genuine.token, now: now).role == "admin")
    }

    @Test func everyAllowedAlgorithmRoundTripsAndKeysDoNotCross_C2() async throws {
        var issuers: [TokenIssuer] = []
        for algorithm in AccessTokenAlgorithm.allCases {
            let key = algorithm == .rs256 ? try await sharedRSAKey.value : try await SigningKey.generate(algorithm: algorithm, kid: "k-\(algorithm.rawValue)")
            issuers.append(try TokenIssuer(current: key, issuer: "clau-auth", audience: "clau-api"))
        }
        let now = Date()
        for issuer in issuers {
            let token = try issuer.issue(userID: UUID(), role: "user", sessionID: UUID(), now: now)
            #expect(try issuer.verifier.verify(token.token, now: now) == token.claims)
            #expect(issuer.current.algorithm.isAsymmetric == (issuer.current.publicJWK != nil), "HS256 secrets are never published")
            for other in issuers where other.current.kid != issuer.current.kid {
                #expect(throws: AccessTokenError.unknownKey) { try other.verifier.verify(token.token, now: now) }
            }
        }
        // Rotation: a new key signs, the old one still verifies.
        let old = issuers[0].current
        let rotated = try TokenIssuer(current: try await SigningKey.generate(algorithm: .es256, kid: "new"), previous: [old], issuer: "clau-auth", audience: "clau-api")
        let before = try issuers[0].issue(userID: UUID(), role: "user", sessionID: UUID(), now: now)
        #expect(try rotated.verifier.verify(before.token, now: now).jti == before.claims.jti)
        #expect(rotated.jwksJSON().contains("\"kid\":\"new\"") && rotated.jwksJSON().contains("\"kid\":\"\(old.kid)\""))
    }

    @Test func expiryNotBeforeIssuerAudienceWithInjectedClock_C2() async throws {
        let key = try await sharedRSAKey.value
        let issuer = try TokenIssuer(current: key, issuer: "clau-auth", audience: "clau-api")
        let t0 = Date(timeIntervalSince1970: 1_900_000_000)
        let token = try issuer.issue(userID: UUID(), role: "user", sessionID: UUID(), now: t0).token
        _ = try issuer.verifier.verify(token, now: t0.addingTimeInterval(899.9))
        #expect(throws: AccessTokenError.expired) { try issuer.verifier.verify(token, now: t0.addingTimeInterval(900)) }
        #expect(throws: AccessTokenError.notYetValid) { try issuer.verifier.verify(token, now: t0.addingTimeInterval(-1)) }
        let otherAudience = AccessTokenVerifier(keys: [key.verification], issuer: "clau-auth", audience: "someone-else")
        #expect(throws: AccessTokenError.wrongAudience) { try otherAudience.verify(token, now: t0) }
        let otherIssuer = AccessTokenVerifier(keys: [key.verification], issuer: "evil", audience: "clau-api")
        #expect(throws: AccessTokenError.wrongIssuer) { try otherIssuer.verify(token, now: t0) }
        // Lifetime: at most 30 minutes.
        #expect(throws: TokenKeyError.self) { try TokenIssuer(current: key, issuer: "i", audience: "a", lifetime: 1801) }
        _ = try TokenIssuer(current: key, issuer: "i", audience: "a", lifetime: 1800)
    }

    @Test func signingKeysLoadFromPEM_C2() async throws {
        let ec = P256.Signing.PrivateKey()
        let loaded = try await SigningKey.load(pem: ec.pemRepresentation, algorithm: .es256, kid: "pem-ec")
        #expect(loaded.publicJWK?["x"] == Base64URL.encode(ec.publicKey.rawRepresentation.prefix(32)))
        await #expect(throws: TokenKeyError.self) { try await SigningKey.load(pem: ec.pemRepresentation, algorithm: .rs256, kid: "wrong") }
        await #expect(throws: TokenKeyError.self) { try await SigningKey.load(pem: "short", algorithm: .hs256, kid: "short") }
        #expect(!"\(loaded)".contains("PRIVATE"))
    }
}

/// The SubjectPublicKeyInfo PEM of a signing key's public half (the attacker's HMAC secret).
private func publicKeyPEM(of key: SigningKey) throws -> String {
    guard let jwk = key.publicJWK, let n = jwk["n"].flatMap({ Base64URL.decode($0) }), let e = jwk["e"].flatMap({ Base64URL.decode($0) }) else {
        throw TokenKeyError("not an RSA key")
    }
    return try _RSA.Signing.PublicKey(n: n, e: e).pemRepresentation
}

@Suite("JWKS parsing for verifiers without secrets", .timeLimit(.minutes(5)))
struct JWKSParsingTests {
    @Test func onlyWellFormedAsymmetricSigningKeysAreTaken_C2() async throws {
        let rsa = try await SigningKey.generate(algorithm: .rs256, kid: "r")
        let ec = try await SigningKey.generate(algorithm: .es256, kid: "e")
        let ed = try await SigningKey.generate(algorithm: .edDSA, kid: "o")
        let issuer = try TokenIssuer(current: rsa, previous: [ec, ed], issuer: "i", audience: "a")
        var entries = try #require((try JSONSerialization.jsonObject(with: Data(issuer.jwksJSON().utf8)) as? [String: Any])?["keys"] as? [[String: Any]])
        #expect(entries.count == 3)
        // Hostile or broken entries: a symmetric key (would enable HS256 with a "public" secret),
        // an RSA key claiming ES256, no kid, an encryption key.
        entries.append(["kty": "oct", "kid": "h", "alg": "HS256", "k": Base64URL.encode(SecureRandom.bytes(32))])
        var mislabeled = entries[0]
        mislabeled["kid"] = "x"
        mislabeled["alg"] = "ES256"
        entries.append(mislabeled)
        var anonymous = entries[1]
        anonymous["kid"] = nil
        entries.append(anonymous)
        var encryption = entries[2]
        encryption["kid"] = "enc"
        encryption["use"] = "enc"
        entries.append(encryption)
        let json = String(decoding: try JSONSerialization.data(withJSONObject: ["keys": entries]), as: UTF8.self)
        let keys = await VerificationKey.publicKeys(fromJWKS: json)
        #expect(Set(keys.map(\.kid)) == ["r", "e", "o"])
        #expect(await VerificationKey.publicKeys(fromJWKS: "not json").isEmpty)

        // A verifier built from them accepts the issuer's tokens and nothing signed with HS256.
        let verifier = AccessTokenVerifier(keys: keys, issuer: "i", audience: "a")
        let now = Date()
        let token = try issuer.issue(userID: UUID(), role: "user", sessionID: UUID(), now: now).token
        #expect(try AccessTokenVerifier.keyID(of: token) == "r")
        _ = try verifier.verify(token, now: now)
        let hs = try TokenIssuer(current: try await SigningKey.generate(algorithm: .hs256, kid: "h"), issuer: "i", audience: "a")
        #expect(throws: AccessTokenError.unknownKey) { try verifier.verify(try hs.issue(userID: UUID(), role: "admin", sessionID: UUID(), now: now).token, now: now) }
    }
}
