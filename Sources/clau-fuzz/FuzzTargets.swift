import AccessTokens
import BrokerService
import Crypto
import EdgeProxy
import Foundation
import HTTPTypes
import NIOCore
import NIOEmbedded
import RPC
import RateLimiting

/// The parsers that read bytes from the network or from another process, each behind one entry
/// point that takes arbitrary bytes. A target must never crash, hang or grow without bound; where
/// a parser has a property stronger than "does not crash", the target checks it with
/// `fuzzInvariant` (a failed check aborts, so libFuzzer keeps the input).
enum FuzzTargets {
    static let all: [String: @Sendable (UnsafeRawBufferPointer) -> Void] = [
        "rpc-frames": rpcFrames,
        "resp": resp,
        "access-token": accessToken,
        "jwks": jwks,
        "json-body": jsonBody,
        "forwarded-for": forwardedFor,
        "stripe-signature": stripeSignature,
    ]

    /// What a service reads from a Unix-socket peer (SPEC §2): length-prefixed frames, cut into
    /// two reads where the first byte says, then each frame's protobuf envelope and deadline.
    @Sendable static func rpcFrames(_ bytes: UnsafeRawBufferPointer) {
        let maximumFrameLength = 64 << 10
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(RPCFrameDecoder(maximumFrameLength: maximumFrameLength)))
        defer { _ = try? channel.finish() }
        let cut = bytes.isEmpty ? 0 : Int(bytes[0]) % bytes.count
        for part in [UnsafeRawBufferPointer(rebasing: bytes[..<cut]), UnsafeRawBufferPointer(rebasing: bytes[cut...])] {
            // A length over the maximum is an error at once (the connection closes), never a buffer.
            guard (try? channel.writeInbound(ByteBuffer(bytes: part))) != nil else { return }
            while let frame = try? channel.readInbound(as: ByteBuffer.self) {
                fuzzInvariant(frame.readableBytes <= maximumFrameLength, "a frame over the maximum was passed on")
                guard let envelope = try? RPCWireFrame(serializedBytes: Array(frame.readableBytesView)) else { continue }
                if case .request(let request) = envelope.kind {
                    _ = RPCServerCore.deadline(of: request)
                }
            }
        }
    }

    /// What the edge reads from Redis: RESP2 replies. Every value parsed must write back to the
    /// same bytes' meaning: parsing its own encoding gives the same value.
    @Sendable static func resp(_ bytes: UnsafeRawBufferPointer) {
        var buffer = ByteBuffer(bytes: bytes)
        let parser = RESPParser()
        while let value = try? parser.parse(&buffer) {
            var encoded = ByteBuffer()
            value.write(into: &encoded)
            let reparsed = try? parser.parse(&encoded)
            fuzzInvariant(reparsed == value && encoded.readableBytes == 0, "a parsed RESP value does not survive its own encoding")
        }
    }

    /// A fixed test secret: the harness signs the claims it generates with it.
    static let tokenSecret = [UInt8](repeating: 0x42, count: 32)
    static let tokenVerifier: AccessTokenVerifier = {
        let key = blockingWait { try await VerificationKey.hmac(secret: tokenSecret, kid: "fuzz") }
        return AccessTokenVerifier(keys: [key], issuer: "clau-auth", audience: "clau-api")
    }()
    static let tokenNow = Date(timeIntervalSince1970: 1_800_000_000)

    /// What the edge reads from a client's `Authorization` header. An even first byte: the rest
    /// is the token as sent. An odd one: the rest is a claims document, correctly signed, so the
    /// claim checks behind the signature are reached too. A token that verifies must carry the
    /// claims the verifier promises.
    @Sendable static func accessToken(_ bytes: UnsafeRawBufferPointer) {
        guard let mode = bytes.first else { return }
        let rest = UnsafeRawBufferPointer(rebasing: bytes.dropFirst())
        let token: String
        if mode & 1 == 0 {
            token = String(decoding: rest, as: UTF8.self)
            _ = try? AccessTokenVerifier.header(of: token)
        } else {
            let header = Base64URL.encode(Array(#"{"alg":"HS256","kid":"fuzz","typ":"at+jwt"}"#.utf8))
            let signingInput = header + "." + Base64URL.encode(Array(rest))
            let signature = HMAC<SHA256>.authenticationCode(for: Array(signingInput.utf8), using: SymmetricKey(data: tokenSecret))
            token = signingInput + "." + Base64URL.encode(Array(signature))
        }
        guard let claims = try? tokenVerifier.verify(token, now: tokenNow) else { return }
        let now = Int64(tokenNow.timeIntervalSince1970)
        fuzzInvariant(claims.iss == "clau-auth" && claims.aud == "clau-api", "a token for another issuer or audience verified")
        fuzzInvariant(claims.exp > now && claims.nbf <= now && claims.iat <= now, "a token outside its validity window verified")
        fuzzInvariant(UUID(uuidString: claims.sub) != nil && UUID(uuidString: claims.jti) != nil, "a token with a malformed subject or id verified")
    }

    /// What the edge reads from auth at start and on an unknown `kid`: the JWKS document. Only
    /// asymmetric, allowlisted keys with a sane `kid` may come out of it, never a shared secret.
    @Sendable static func jwks(_ bytes: UnsafeRawBufferPointer) {
        let document = String(decoding: bytes, as: UTF8.self)
        let keys = blockingWait { await VerificationKey.publicKeys(fromJWKS: document) }
        for key in keys {
            fuzzInvariant(key.algorithm.isAsymmetric, "a JWKS yielded a symmetric key")
            fuzzInvariant(!key.kid.isEmpty && key.kid.utf8.count <= 128, "a JWKS yielded a key with an unusable kid")
        }
    }

    /// What the edge reads as a request body: the strict decoders of the routes whose bodies
    /// carry the most formats (e-mail, E.164 phone, lengths, enums, decimals, unknown and duplicate fields).
    @Sendable static func jsonBody(_ bytes: UnsafeRawBufferPointer) {
        let data = Data(bytes)
        if let register = try? StrictJSON.decode(RegisterBody.self, from: data) {
            fuzzInvariant(register.problems().isEmpty, "a register body with problems was accepted")
        }
        if let login = try? StrictJSON.decode(LoginBody.self, from: data) {
            fuzzInvariant(login.problems().isEmpty, "a login body with problems was accepted")
        }
        _ = try? StrictJSON.decode(UpdateMeBody.self, from: data)
        if let order = try? StrictJSON.decode(PlaceOrderBody.self, from: data) {
            fuzzInvariant(order.problems().isEmpty, "an order body with problems was accepted")
        }
    }

    static let trustedProxies: Set<String> = ["10.0.0.1", "::1"]

    /// What the edge reads from a proxy: the peer address, then `X-Forwarded-For` and
    /// `X-Forwarded-Proto` values, one per line. The client address is the peer's canonical
    /// form, or a canonical hop that is not a trusted proxy.
    @Sendable static func forwardedFor(_ bytes: UnsafeRawBufferPointer) {
        let lines = String(decoding: bytes, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        guard let rawPeer = lines.first else { return }
        var headers = HTTPFields()
        for (index, line) in lines.dropFirst().enumerated() {
            headers.append(HTTPField(name: index % 3 == 2 ? .forwardedProto : .forwardedFor, value: line))
        }
        for peer in [rawPeer, "10.0.0.1", "::ffff:10.0.0.1"] {
            let (client, _) = IPAddress.clientAddress(peer: peer, headers: headers, trustedProxies: trustedProxies)
            if let canonicalPeer = IPAddress.canonical(peer) {
                fuzzInvariant(IPAddress.canonical(client) == client, "a client address came back in a non-canonical spelling")
                fuzzInvariant(client == canonicalPeer || (trustedProxies.contains(canonicalPeer) && !trustedProxies.contains(client)),
                              "the client address came from an untrusted peer's header, or is a trusted proxy")
            } else {
                fuzzInvariant(client == peer, "a peer that is not an IP literal was rewritten")
            }
        }
    }

    /// What the broker reads from the public webhook route (SPEC §3), passed on by the edge: the
    /// `Stripe-Signature` header (first line) and the raw body (the rest). A header that verifies
    /// carries the body's real signature for its timestamp, and a header the verifier signs itself
    /// always verifies.
    @Sendable static func stripeSignature(_ bytes: UnsafeRawBufferPointer) {
        let input = Array(bytes)
        let lineEnd = input.firstIndex(of: 0x0A) ?? input.count
        let header = String(decoding: input[..<lineEnd], as: UTF8.self)
        let payload = Array(input[min(lineEnd + 1, input.count)...])
        let verifier = StripeWebhookSignature(secret: "whsec_fuzz")
        let now: Int64 = 1_800_000_000
        if let timestamp = try? verifier.verify(payload: payload, header: header, now: now) {
            let signed = verifier.header(payload: payload, timestamp: timestamp)
            let signature = signed.components(separatedBy: ",v1=").last ?? signed
            fuzzInvariant(header.contains("v1=" + signature), "a header without the body's signature verified")
            fuzzInvariant(abs(timestamp - now) <= StripeWebhookSignature.defaultTolerance, "a stale timestamp verified")
        }
        let fresh = verifier.header(payload: payload, timestamp: now)
        fuzzInvariant((try? verifier.verify(payload: payload, header: fresh, now: now)) == now, "a correctly signed body was refused")
    }
}

extension HTTPField.Name {
    static let forwardedFor = HTTPField.Name("X-Forwarded-For")!
    static let forwardedProto = HTTPField.Name("X-Forwarded-Proto")!
}

/// Aborts with `message` when a property a parser promises does not hold (libFuzzer then keeps
/// the input as a crash artifact).
func fuzzInvariant(_ condition: Bool, _ message: StaticString) {
    if !condition { fatalError("\(message)") }
}

/// Runs async set-up code from the synchronous fuzzing callback's world (once per target).
func blockingWait<T: Sendable>(_ work: @escaping @Sendable () async throws -> T) -> T {
    let done = DispatchSemaphore(value: 0)
    nonisolated(unsafe) var result: Result<T, any Error>?
    Task {
        do { result = .success(try await work()) } catch { result = .failure(error) }
        done.signal()
    }
    done.wait()
    switch result! {
    case .success(let value): return value
    case .failure(let error): fatalError("fuzz set-up failed: \(error)")
    }
}
