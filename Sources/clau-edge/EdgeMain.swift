import ArgumentParser
import ClauSupport
import Crypto
import EdgeProxy
import Foundation
import Logging
import RateLimiting
import ServiceLifecycle
import UnixSignals

/// `clau-edge`: reads configuration (flags, and secret files from `$CREDENTIALS_DIRECTORY` or
/// paths), then runs the edge until SIGTERM. Holds the TLS key, the JWT public keys (from auth)
/// and the admin-key hash — nothing else (SPEC §1).
@main
struct EdgeMain: AsyncParsableCommand {
    /// Swift Concurrency on NIO's event loops (see `EventLoopConcurrency`), then the command.
    @MainActor static func main() async {
        EventLoopConcurrency.install()
        await main(nil)
    }

    static let configuration = CommandConfiguration(
        commandName: "clau-edge",
        abstract: "The HTTPS API of Clau: TLS, limits, JWT verification, routes to auth and broker."
    )

    @Option(help: "Listen address (not bound when systemd passes an `api` socket: LISTEN_FDS).")
    var host: String = "0.0.0.0"

    @Option(help: "HTTPS port (or the plain port with --behind-proxy).")
    var port: Int = 8443

    @Option(help: "Plain-HTTP port that only redirects to HTTPS (301); 0 disables it.")
    var redirectPort: Int = 8080

    @Flag(help: "Plain HTTP on --host (use 127.0.0.1) behind nginx; X-Forwarded-* believed only from --trusted-proxy.")
    var behindProxy = false

    @Option(name: .customLong("trusted-proxy"), help: "Proxy address whose X-Forwarded-For/-Proto are believed. Repeatable.")
    var trustedProxies: [String] = []

    @Option(help: "TLS certificate chain (PEM). Default: $CREDENTIALS_DIRECTORY/tls-cert.")
    var tlsCertificate: String?

    @Option(help: "TLS private key (PEM, mode 0400/0600). Default: $CREDENTIALS_DIRECTORY/tls-key.")
    var tlsKey: String?

    @Option(help: "File holding the admin key (its SHA-256 is kept, C-8). Default: $CREDENTIALS_DIRECTORY/admin-key if present; none: admin routes answer 403.")
    var adminKeyFile: String?

    @Option(help: "auth.sock path.")
    var authSocket: String = "/run/clau/auth/auth.sock"

    @Option(help: "broker.sock path; an empty value (--broker-socket \"\") runs without a broker: its routes answer 503.")
    var brokerSocket: String = "/run/clau/broker/broker.sock"

    @Option(help: "Public HTTPS origin redirects point to, e.g. https://api.clau.example.")
    var publicBaseURL: String = "https://localhost:8443"

    @Option(help: "JWT iss.")
    var issuer: String = "clau-auth"

    @Option(help: "JWT aud.")
    var audience: String = "clau-api"

    @Option(help: "Requests in flight before shedding with 503 (R-16).")
    var maxInFlight: Int = 512

    @Option(help: "Body limit in bytes (R-18; at most 8 MiB).")
    var maxBodyBytes: Int = 1 << 20

    @Option(help: "Redis Unix socket shared by several edges for one rate-limit budget (X-3); default: in-process limits.")
    var redisSocket: String?

    @Option(help: "Redis host:port instead of a socket.")
    var redis: String?

    @Option(help: "File holding the Redis password (mode 0400/0600). Default: $CREDENTIALS_DIRECTORY/redis-password if present.")
    var redisPasswordFile: String?

    @Option(help: "Multiply every rate limit by N (1-100000; load tests and staging only — logged at start).")
    var rateLimitMultiplier: Int = 1

    @Option(help: "Port of the Prometheus /metrics listener (plain HTTP, loopback only, C-17); 0 disables it.")
    var metricsPort: Int = 0

    @Option(help: "Address of the /metrics listener: a loopback IP (127.0.0.0/8 or ::1); anything else is refused at startup.")
    var metricsHost: String = "127.0.0.1"

    @Option(help: "Log level.")
    var logLevel: String = "info"

    func run() async throws {
        try await ServiceProcess.run(name: "edge", logLevel: logLevel) { logger in
            var configuration = try makeConfiguration()
            var dependencies: [any Service] = []
            if let redisConfiguration = try makeRedisConfiguration() {
                let client = RedisClient(configuration: redisConfiguration, logger: logger)
                configuration.rateLimiter = RedisRateLimiter(client: client, logger: logger)
                dependencies.append(client)
            }
            let edge = try buildApplication(configuration: configuration, logger: logger, accessLogger: Logger(label: "clau-edge.access"), dependencies: dependencies)
            var services: [ServiceGroupConfiguration.ServiceConfiguration] = [.init(service: edge)]
            if !behindProxy {
                // SIGHUP (`systemctl reload clau-edge`): new connections get the new pair, open ones keep
                // theirs; a pair that does not load is logged and the old one stays. (systemd
                // credentials are copied at start, so renewed certificates need file paths.)
                services.append(.init(service: ReloadOnSignal(what: "tls certificate", logger: logger) { try edge.reloadTLS(try readTLSMaterial()) }))
            }
            if rateLimitMultiplier != 1 {
                logger.warning("rate limits multiplied: not for production", metadata: ["multiplier": "\(rateLimitMultiplier)"])
            }
            return ServiceProcess.Plan(services: services, startingMetadata: [
                "port": "\(port)", "mode": "\(behindProxy ? "behind-proxy" : "https")", "auth_socket": "\(authSocket)", "broker_socket": "\(brokerSocket.isEmpty ? "none" : brokerSocket)",
                "metrics": "\(metricsPort == 0 ? "off" : "\(metricsHost):\(metricsPort)")",
            ])
        }
    }

    func makeRedisConfiguration() throws -> RedisConfiguration? {
        let address: RedisConfiguration.Address
        if let redisSocket {
            address = .unixSocket(path: redisSocket)
        } else if let redis {
            let parts = redis.split(separator: ":")
            guard parts.count == 2, let port = Int(parts[1]) else { throw StartupError("--redis must be host:port") }
            address = .tcp(host: String(parts[0]), port: port)
        } else {
            return nil
        }
        var configuration = RedisConfiguration(address: address)
        if let path = redisPasswordFile ?? SecretFile.credentialPath("redis-password").flatMap({ FileManager.default.fileExists(atPath: $0) ? $0 : nil }) {
            configuration.password = try SecretFile.readString(at: path)
        }
        return configuration
    }

    /// The certificate chain and key from --tls-certificate/--tls-key or the credentials directory.
    /// Read at start and again on SIGHUP.
    func readTLSMaterial() throws -> EdgeConfiguration.TLSMaterial {
        guard let certificatePath = tlsCertificate ?? SecretFile.credentialPath("tls-cert"),
              let keyPath = tlsKey ?? SecretFile.credentialPath("tls-key")
        else { throw StartupError("no TLS certificate/key: pass --tls-certificate and --tls-key, or LoadCredential=tls-cert/tls-key") }
        // The certificate is public; the key must be readable by its owner only (C-11).
        guard let certificate = FileManager.default.contents(atPath: certificatePath).map(Array.init), !certificate.isEmpty else {
            throw StartupError("TLS certificate \(certificatePath): missing, empty or not readable by this user")
        }
        let key = try SecretFile.read(at: keyPath)
        return EdgeConfiguration.TLSMaterial(certificateChainPEM: certificate, privateKeyPEM: key)
    }

    func makeConfiguration() throws -> EdgeConfiguration {
        let listener: EdgeConfiguration.Listener
        if behindProxy {
            listener = .behindProxy(host: host, port: port, trustedProxies: trustedProxies)
        } else {
            listener = .https(host: host, port: port, tls: try readTLSMaterial(), redirectPort: redirectPort == 0 ? nil : redirectPort)
        }
        var configuration = EdgeConfiguration(listener: listener, authSocketPath: authSocket)
        configuration.publicBaseURL = publicBaseURL
        configuration.brokerSocketPath = brokerSocket.isEmpty ? nil : brokerSocket
        configuration.issuer = issuer
        configuration.audience = audience
        configuration.maximumInFlightRequests = maxInFlight
        configuration.maximumBodyBytes = maxBodyBytes
        configuration.metricsPort = metricsPort == 0 ? nil : metricsPort
        // validate() (in buildApplication) refuses a non-loopback --metrics-host, even with the listener off.
        configuration.metricsHost = metricsHost
        guard (1...100_000).contains(rateLimitMultiplier) else { throw StartupError("--rate-limit-multiplier must be 1-100000") }
        configuration.rateLimitRules = RateLimitRules.spec.multiplied(by: rateLimitMultiplier)
        // Sockets from clau-edge.socket (sd_listen_fds): served instead of binding --host/--port.
        configuration.inheritedSockets = try InheritedSockets.parse(environment: ProcessInfo.processInfo.environment, pid: getpid())
        for name in ["LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"] { unsetenv(name) }
        if let path = adminKeyFile ?? SecretFile.credentialPath("admin-key").flatMap({ FileManager.default.fileExists(atPath: $0) ? $0 : nil }) {
            let key = try SecretFile.readString(at: path)
            guard key.utf8.count >= 32 else { throw StartupError("\(path): admin key must be at least 32 bytes") }
            configuration.adminKeySHA256 = Array(SHA256.hash(data: Data(key.utf8)))
        }
        return configuration
    }
}
