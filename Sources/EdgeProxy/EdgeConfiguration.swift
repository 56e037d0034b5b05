import ClauSupport
import Crypto
import Foundation
import NIOSSL
import RateLimiting
import Synchronization
import _CryptoExtras

/// Everything `buildApplication` needs. `clau-edge`'s `@main` fills it from flags and secret files;
/// tests fill it directly. The edge holds the TLS key, the JWT public keys (fetched from auth) and
/// the SHA-256 of the admin key — nothing else (SPEC §1).
public struct EdgeConfiguration: Sendable {
    /// How the edge faces clients (C-10, C-12).
    public enum Listener: Sendable {
        /// HTTPS on `host:port`, plus an optional plain-HTTP listener that only answers 301 to
        /// `publicBaseURL` (nil: no redirect listener).
        case https(host: String, port: Int, tls: TLSMaterial, redirectPort: Int?)
        /// Plain HTTP behind nginx on loopback: `X-Forwarded-For`/`X-Forwarded-Proto` are
        /// believed only from `trustedProxies`; otherwise the TCP peer is the client.
        case behindProxy(host: String, port: Int, trustedProxies: [String])
    }

    /// Certificate chain and private key, PEM. Read by the caller from `$CREDENTIALS_DIRECTORY`
    /// or files (SecretFile refuses group/world-readable keys).
    public struct TLSMaterial: Sendable {
        public var certificateChainPEM: [UInt8]
        public var privateKeyPEM: [UInt8]
        public init(certificateChainPEM: [UInt8], privateKeyPEM: [UInt8]) {
            self.certificateChainPEM = certificateChainPEM
            self.privateKeyPEM = privateKeyPEM
        }
    }

    public var listener: Listener
    /// auth.sock (RPC, Unix socket).
    public var authSocketPath: String
    /// broker.sock (RPC, Unix socket). nil: no broker — the Alpaca, Stripe, subscription and
    /// Fernet-rotation routes answer 503 `service_unavailable` and `/readyz` reports the broker as
    /// `not_configured`.
    public var brokerSocketPath: String?
    /// How long the Fernet-rotation route keeps calling the broker's `RewrapAll` (one batch per
    /// call) before it answers 202 with what remains. With the last batch's RPC deadline on top it
    /// stays under nginx's 30 s `proxy_read_timeout` (deploy/nginx/clau.conf).
    public var fernetRewrapBudget: Duration = .seconds(20)
    /// The Stripe webhook's raw body limit (Stripe's events are a few KiB): 413 beyond it.
    public var maximumWebhookBodyBytes = 64 * 1024
    /// Where redirects point, e.g. `https://api.clau.example` (never taken from `Host`: no open redirect).
    public var publicBaseURL: String = "https://localhost"
    /// JWT `iss` / `aud` the access tokens must carry (C-2).
    public var issuer: String = "clau-auth"
    public var audience: String = "clau-api"
    /// Clock skew tolerated on `exp`/`nbf`/`iat`, seconds.
    public var tokenLeewaySeconds: Int64 = 5
    /// A JWKS refresh on an unknown `kid` happens at most this often.
    public var jwksRefreshMinimumInterval: Duration = .seconds(10)
    /// SHA-256 of the admin key (C-8). nil: every admin route answers 403.
    public var adminKeySHA256: [UInt8]?
    /// Admin routes need an MFA-fresh token (`amr` containing `otp` or `mfa`, X-5).
    public var adminRequiresMFA = true
    /// …and the second factor (`auth_time`) must be at most this old.
    public var adminMFAMaximumAge: Int64 = 15 * 60
    /// How long a "not revoked" answer from auth is reused for the same `jti` (R-1 allows
    /// revocation to take up to 1 s to reach every edge). Zero: ask auth on every request.
    public var revocationCacheTTL: Duration = .milliseconds(500)
    /// Deadline given to every RPC call.
    public var rpcTimeout: Duration = .seconds(5)
    /// requests in flight beyond this are shed with 503 + Retry-After at once.
    public var maximumInFlightRequests = 512
    /// body limit (default 1 MiB, never above 8 MiB), header bytes, URI length.
    public var maximumBodyBytes = 1 << 20
    public static let bodyBytesCap = 8 << 20
    public var maximumHeaderBytes = 8 * 1024
    public var maximumURIBytes = 8 * 1024
    /// a connection with no traffic for this long is closed; a body must arrive within `bodyReadTimeout`.
    public var idleTimeout: Duration = .seconds(30)
    public var bodyReadTimeout: Duration = .seconds(10)
    /// C-9/R-15/X-3: the limiter (nil: an in-process one; several edges share a
    /// `RedisRateLimiter`) and the rule of each category.
    public var rateLimiter: (any RateLimiter)?
    public var rateLimitRules: RateLimitRules = .spec
    /// How often the admin-managed IP blocklist is fetched from auth.
    public var ipBlocklistRefreshInterval: Duration = .seconds(5)
    /// C-17/R-16: Prometheus `/metrics` (text format 0.0.4) on a separate plain-HTTP listener at
    /// `metricsHost:metricsPort`. nil: no metrics listener (`clau-edge --metrics-port 0`); 0: an
    /// ephemeral port (tests). The public HTTPS/HTTP listeners never serve `/metrics` (404).
    public var metricsPort: Int?
    /// Listening sockets from systemd (`clau-edge.socket`, sd_listen_fds): each role present is
    /// served on its socket instead of binding host:port, and a `redirect` or `metrics` socket
    /// turns that listener on. Nil: the edge binds everything itself.
    public var inheritedSockets: InheritedSockets?
    /// Address of the metrics listener: a loopback IP literal only (`127.0.0.0/8` or `::1`);
    /// `validate()` refuses anything else, hostnames included (`clau-edge --metrics-host`).
    public var metricsHost = "127.0.0.1"
    /// HSTS value sent on every HTTPS response (C-10).
    public var strictTransportSecurity = "max-age=63072000; includeSubDomains"

    public init(listener: Listener, authSocketPath: String) {
        self.listener = listener
        self.authSocketPath = authSocketPath
    }

    /// Refuses settings outside their bounds; the message names the setting.
    public func validate() throws(StartupError) {
        guard maximumBodyBytes > 0, maximumBodyBytes <= Self.bodyBytesCap else {
            throw StartupError("maximum body size must be 1 byte to 8 MiB (got \(maximumBodyBytes))")
        }
        guard revocationCacheTTL >= .zero, revocationCacheTTL < .seconds(1) else {
            throw StartupError("revocation cache TTL must be under 1 s (R-1)")
        }
        if case .behindProxy(_, _, let trusted) = listener, let notAnAddress = trusted.first(where: { IPAddress.canonical($0) == nil }) {
            throw StartupError("trusted proxy must be an IP address, got \"\(notAnAddress)\" (C-12)")
        }
        guard maximumInFlightRequests >= 1 else { throw StartupError("maximum in-flight requests must be at least 1") }
        guard (1024...65536).contains(maximumHeaderBytes) else { throw StartupError("maximum header bytes must be 1 KiB to 64 KiB") }
        if let hash = adminKeySHA256, hash.count != 32 { throw StartupError("admin key hash must be 32 bytes (SHA-256)") }
        guard publicBaseURL.hasPrefix("https://"), !publicBaseURL.dropFirst(8).contains("/") else {
            throw StartupError("public base URL must be https://host[:port] without a path")
        }
        // C-17: checked even with the listener off — a public metrics host is a deployment mistake.
        guard Self.isLoopback(metricsHost) else {
            throw StartupError("metrics host must be a loopback address (127.0.0.0/8 or ::1), got \"\(metricsHost)\": /metrics is never exposed beyond the machine (C-17)")
        }
        if let metricsPort, !(0...65535).contains(metricsPort) {
            throw StartupError("metrics port must be 0-65535 (got \(metricsPort))")
        }
        if let inheritedSockets {
            if case .behindProxy = listener, inheritedSockets.descriptors[.redirect] != nil {
                throw StartupError("an inherited redirect socket needs HTTPS mode: behind a proxy the proxy redirects")
            }
            try inheritedSockets.check()
        }
    }

    /// A loopback IP literal: IPv4 `127.0.0.0/8` or IPv6 `::1` (hostnames are refused, since
    /// resolving them could yield a public address).
    static func isLoopback(_ host: String) -> Bool {
        var v4 = in_addr()
        if inet_pton(AF_INET, host, &v4) == 1 {
            return UInt32(bigEndian: v4.s_addr) >> 24 == 127
        }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, host, &v6) == 1 {
            return withUnsafeBytes(of: &v6) { bytes in bytes.prefix(15).allSatisfy { $0 == 0 } && bytes[15] == 1 }
        }
        return false
    }
}


extension EdgeConfiguration.TLSMaterial {
    /// The certificates and key, parsed and checked: a non-empty chain whose first certificate
    /// belongs to the private key (a mismatched pair would fail every handshake).
    func parsed() throws -> (chain: [NIOSSLCertificate], key: NIOSSLPrivateKey) {
        let chain: [NIOSSLCertificate]
        let key: NIOSSLPrivateKey
        do {
            chain = try NIOSSLCertificate.fromPEMBytes(certificateChainPEM)
            key = try NIOSSLPrivateKey(bytes: privateKeyPEM, format: .pem)
        } catch {
            throw StartupError("TLS certificate or key is not valid PEM")
        }
        guard let leaf = chain.first else { throw StartupError("TLS certificate file holds no certificate") }
        if let keySPKI = Self.publicKeySPKI(ofPrivateKeyPEM: privateKeyPEM),
           let certificateSPKI = try? leaf.extractPublicKey().toSPKIBytes(),
           keySPKI != certificateSPKI {
            throw StartupError("TLS private key does not belong to the certificate")
        }
        return (chain, key)
    }

    /// The SPKI DER of the public half of a PEM private key, for the key types certificates use
    /// here (P-256, P-384, P-521, RSA); nil for any other (then only the handshake can tell).
    static func publicKeySPKI(ofPrivateKeyPEM pem: [UInt8]) -> [UInt8]? {
        let text = String(decoding: pem, as: UTF8.self)
        if let key = try? P256.Signing.PrivateKey(pemRepresentation: text) { return Array(key.publicKey.derRepresentation) }
        if let key = try? P384.Signing.PrivateKey(pemRepresentation: text) { return Array(key.publicKey.derRepresentation) }
        if let key = try? P521.Signing.PrivateKey(pemRepresentation: text) { return Array(key.publicKey.derRepresentation) }
        if let key = try? _RSA.Signing.PrivateKey(pemRepresentation: text) { return Array(key.publicKey.derRepresentation) }
        return nil
    }

    /// The server TLS configuration of C-10/C-12: TLS 1.2 minimum, 1.3 maximum, ECDHE with AEAD
    /// ciphers only (TLS 1.3 suites are AEAD by construction), groups X25519, P-256, P-384 only.
    /// With `certificates`, each handshake takes the certificate and key from it, so they can be
    /// replaced (SIGHUP) without a restart.
    public func serverConfiguration(certificates: TLSCertificateStore? = nil) throws -> TLSConfiguration {
        let (chain, key) = try parsed()
        var configuration = TLSConfiguration.makeServerConfiguration(certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key))
        configuration.minimumTLSVersion = .tlsv12
        configuration.maximumTLSVersion = .tlsv13
        configuration.cipherSuiteValues = Self.cipherSuites
        configuration.curves = [.x25519, .secp256r1, .secp384r1]
        configuration.applicationProtocols = ["http/1.1"]
        if let certificates {
            configuration.sslContextCallback = { _, promise in promise.succeed(certificates.current) }
        }
        return configuration
    }

    public static let cipherSuites: [NIOTLSCipher] = [
        .TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, .TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        .TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, .TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        .TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, .TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ]
}

/// The certificate chain and key that new TLS handshakes use. `replace(with:)` swaps them (the
/// edge does on SIGHUP); connections already open keep the ones they were set up with.
public final class TLSCertificateStore: Sendable {
    private let state: Mutex<NIOSSLContextConfigurationOverride>

    public init(_ material: EdgeConfiguration.TLSMaterial) throws {
        state = Mutex(try Self.override(for: material))
    }

    var current: NIOSSLContextConfigurationOverride { state.withLock { $0 } }

    /// Checks the new pair first: on any error the old one stays in use.
    public func replace(with material: EdgeConfiguration.TLSMaterial) throws {
        let next = try Self.override(for: material)
        state.withLock { $0 = next }
    }

    private static func override(for material: EdgeConfiguration.TLSMaterial) throws -> NIOSSLContextConfigurationOverride {
        let (chain, key) = try material.parsed()
        var override = NIOSSLContextConfigurationOverride()
        override.certificateChain = chain.map { .certificate($0) }
        override.privateKey = .privateKey(key)
        return override
    }
}
