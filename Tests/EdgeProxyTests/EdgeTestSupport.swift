import ClauSupport
import Crypto
import Foundation
import HTTPTypes
import HummingbirdTesting
import Logging
import ServiceLifecycle
import NIOCore
import NIOPosix
import NIOSSL
import RPC
import RateLimiting
import Synchronization
import TestSupport
import Testing
@testable import AuthService
@testable import EdgeProxy

let quietLogger: Logger = {
    var logger = Logger(label: "edge-test")
    logger.logLevel = .critical
    return logger
}()

let goodPassword = "Tq7!vexing-Walrus-orbit"
let adminKey = "admin-key-0123456789abcdef0123456789abcdef"

/// One RSA key for the whole suite: auth signs with it, tests mint hostile tokens with it.
let sharedSigningKey = Task { try await SigningKey.generate(algorithm: .rs256, kid: "edge-test-rs256") }

/// A throwaway CA and a server certificate for localhost / 127.0.0.1 (EC P-256, 90 days).
struct TestPKI: Sendable {
    let directory: String
    var caPath: String { directory + "/ca.crt" }
    var certificatePath: String { directory + "/server.crt" }
    var keyPath: String { directory + "/server.key" }

    static let shared = Task { try await TestPKI.make() }

    static func make() async throws -> TestPKI {
        let directory = try makeWorldReadableTemporaryDirectory(prefix: "clau-edge-pki")
        let openssl = "/usr/bin/openssl"
        try await Shell.run(openssl, ["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", directory + "/ca.key"])
        try await Shell.run(openssl, ["req", "-x509", "-new", "-key", directory + "/ca.key", "-sha256", "-days", "90", "-subj", "/CN=Clau Test CA",
                                      "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign", "-out", directory + "/ca.crt"])
        try await Shell.run(openssl, ["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", directory + "/server.ec.key"])
        try await Shell.run(openssl, ["pkcs8", "-topk8", "-nocrypt", "-in", directory + "/server.ec.key", "-out", directory + "/server.key"])
        try await Shell.run(openssl, ["req", "-new", "-key", directory + "/server.key", "-subj", "/CN=localhost", "-out", directory + "/server.csr"])
        try "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature\nbasicConstraints=critical,CA:FALSE\n".write(toFile: directory + "/ext.cnf", atomically: true, encoding: .utf8)
        try await Shell.run(openssl, ["x509", "-req", "-in", directory + "/server.csr", "-CA", directory + "/ca.crt", "-CAkey", directory + "/ca.key", "-CAcreateserial",
                                      "-days", "90", "-sha256", "-extfile", directory + "/ext.cnf", "-out", directory + "/server.crt"])
        chmod(directory + "/server.key", 0o600)
        return TestPKI(directory: directory)
    }

    /// A further server certificate from the same CA, with a new key and the given common name.
    func issueServerCertificate(commonName: String) async throws -> EdgeConfiguration.TLSMaterial {
        let openssl = "/usr/bin/openssl"
        let name = directory + "/" + UUID().uuidString
        try await Shell.run(openssl, ["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", name + ".ec.key"])
        try await Shell.run(openssl, ["pkcs8", "-topk8", "-nocrypt", "-in", name + ".ec.key", "-out", name + ".key"])
        try await Shell.run(openssl, ["req", "-new", "-key", name + ".key", "-subj", "/CN=\(commonName)", "-out", name + ".csr"])
        try await Shell.run(openssl, ["x509", "-req", "-in", name + ".csr", "-CA", caPath, "-CAkey", directory + "/ca.key", "-CAcreateserial",
                                      "-days", "90", "-sha256", "-extfile", directory + "/ext.cnf", "-out", name + ".crt"])
        return EdgeConfiguration.TLSMaterial(
            certificateChainPEM: Array(try Data(contentsOf: URL(fileURLWithPath: name + ".crt"))),
            privateKeyPEM: Array(try Data(contentsOf: URL(fileURLWithPath: name + ".key")))
        )
    }

    func material() throws -> EdgeConfiguration.TLSMaterial {
        EdgeConfiguration.TLSMaterial(
            certificateChainPEM: Array(try Data(contentsOf: URL(fileURLWithPath: certificatePath))),
            privateKeyPEM: try SecretFile.read(at: keyPath)
        )
    }

    func clientTLS(configure: (inout TLSConfiguration) -> Void = { _ in }) throws -> TLSConfiguration {
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(caPath))
        configure(&tls)
        return tls
    }
}

/// Log lines captured from the edge (access log and service log), to grep for secrets (C-17).
final class LogCapture: Sendable {
    private let lines = Mutex<[String]>([])
    func append(_ line: String) { lines.withLock { $0.append(line) } }
    var all: [String] { lines.withLock { $0 } }
    var text: String { all.joined(separator: "\n") }

    func logger(_ label: String, level: Logger.Level) -> Logger {
        var logger = Logger(label: label) { label in JSONLogHandler(label: label, level: .trace, sink: { [self] line in self.append(line) }) }
        logger.logLevel = level
        return logger
    }

    /// Access-log lines as objects.
    var accessEntries: [[String: String]] {
        all.compactMap { line in
            guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: String], object["message"] == "request", object["logger"] == "edge-access" else { return nil }
            return object
        }
    }
}

enum EdgeMode: Sendable {
    case https
    case behindProxy(trusted: [String])
}

struct EdgeHarness: Sendable {
    let auth: AuthService
    let edge: EdgeService
    let ports: EdgePorts
    let logs: LogCapture
    let pki: TestPKI
    let isTLS: Bool
    let signingKey: SigningKey
    /// Stops the auth service (its socket goes away) while the edge keeps running.
    let stopAuth: @Sendable () -> Void
    /// Auth's maildir (reset codes).
    let mailbox: URL

    /// The reset code in the newest mail to `address` (waits up to 5 s for delivery).
    func resetCode(for address: String) async throws -> String {
        for _ in 0..<250 {
            let mails = ((try? MaildirMailer.messages(in: mailbox)) ?? []).filter { $0.to == address }
            if let mail = mails.last,
               let line = mail.textBody.split(whereSeparator: \.isNewline).map({ $0.trimmingCharacters(in: .whitespaces) })
                   .first(where: { $0.count >= 6 && $0.allSatisfy(\.isNumber) }) {
                return line
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw HarnessError("no reset code mailed to \(address)")
    }

    var authHandlers: AuthHandlers { auth.handlers }

    /// One request on its own connection.
    func send(_ method: HTTPRequest.Method, _ path: String, headers: HTTPFields = [:], body: String? = nil, json: Bool = true,
              tls: ((inout TLSConfiguration) -> Void)? = nil) async throws -> TestClient.Response {
        var headers = headers
        if body != nil, json, headers[.contentType] == nil { headers[.contentType] = "application/json" }
        let configuration = TestClient.Configuration(
            tlsConfiguration: isTLS ? try pki.clientTLS(configure: tls ?? { _ in }) : nil,
            timeout: .seconds(20), serverName: isTLS ? "localhost" : nil
        )
        let request = TestClient.Request(path, method: method, authority: "localhost", headers: headers, body: body.map { ByteBuffer(string: $0) })
        return try await TestClient.withClient(host: "127.0.0.1", port: ports.api, configuration: configuration) { client in
            try await client.execute(request)
        }
    }

    func register(_ email: String, password: String = goodPassword, name: String = "Ada Lovelace") async throws {
        let response = try await send(.post, "/v1/auth/register", body: #"{"email":"\#(email)","password":"\#(password)","full_name":"\#(name)"}"#)
        #expect(response.status == .accepted)
    }

    struct Tokens: Sendable {
        let access: String
        let refresh: String
    }

    func login(_ email: String, password: String = goodPassword) async throws -> Tokens {
        let response = try await send(.post, "/v1/auth/login", body: #"{"email":"\#(email)","password":"\#(password)"}"#)
        #expect(response.status == .ok)
        let object = try response.jsonObject()
        return Tokens(access: object["access_token"] as? String ?? "", refresh: object["refresh_token"] as? String ?? "")
    }

    func registerAndLogin(_ email: String) async throws -> Tokens {
        try await register(email)
        return try await login(email)
    }

    func userID(of token: String) throws -> String {
        try authHandlers.issuer.verifier.verify(token, now: Date()).sub
    }
}

extension TestClient.Response {
    var text: String { body.map { String(buffer: $0) } ?? "" }

    func jsonObject() throws -> [String: Any] {
        let data = Data(text.utf8)
        guard let object = try JSONSerialization.jsonObject(with: data) as? [String: Any] else { throw HarnessError("not a JSON object: \(text)") }
        return object
    }

    /// The `{"error": {...}}` object; fails the test when the shape is wrong.
    func errorObject(sourceLocation: SourceLocation = #_sourceLocation) throws -> [String: Any] {
        try checkedErrorObject(text, requestIDHeader: headers[.requestID], sourceLocation: sourceLocation)
    }

    func errorCode(sourceLocation: SourceLocation = #_sourceLocation) throws -> String {
        try errorObject(sourceLocation: sourceLocation)["code"] as? String ?? ""
    }
}

/// The `{"error": {...}}` object of a response body, checked for the shape every error has (R-14).
func checkedErrorObject(_ text: String, requestIDHeader: String?, sourceLocation: SourceLocation) throws -> [String: Any] {
    guard let object = try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any] else { throw HarnessError("not a JSON object: \(text)") }
    guard let error = object["error"] as? [String: Any] else { throw HarnessError("no error object in \(text)") }
    #expect(object.count == 1, "only `error` at the top level", sourceLocation: sourceLocation)
    #expect((error["code"] as? String).map { !$0.isEmpty && $0.allSatisfy { $0.isLowercase || $0 == "_" } } == true, "snake_case code: \(text)", sourceLocation: sourceLocation)
    #expect((error["message"] as? String)?.isEmpty == false, sourceLocation: sourceLocation)
    #expect(error["request_id"] as? String == requestIDHeader, "request id in body = header", sourceLocation: sourceLocation)
    return error
}

func bearer(_ token: String) -> HTTPFields {
    [.authorization: "Bearer \(token)"]
}

/// A fresh database, a real auth service on a Unix socket (bcrypt cost 4, test-only), and the
/// edge on 127.0.0.1 port 0 in front of it — all running for the duration of `body`.
func withEdge<T: Sendable>(
    mode: EdgeMode = .https,
    redirect: Bool = false,
    configure: @Sendable (inout EdgeConfiguration) -> Void = { _ in },
    configureAuth: @Sendable (inout AuthConfiguration) -> Void = { _ in },
    edgeLogLevel: Logger.Level = .info,
    dependencies: [any Service] = [],
    signingKey: SigningKey? = nil,
    _ body: @Sendable (EdgeHarness) async throws -> T
) async throws -> T {
    let database = try await PostgresHarness.shared.freshDatabase()
    let directory = try makeWorldReadableTemporaryDirectory(prefix: "clau-edge")
    let key = if let signingKey { signingKey } else { try await sharedSigningKey.value }
    var authConfiguration = AuthConfiguration(socketPath: directory + "/auth.sock", database: database.clientConfiguration(role: "clau_auth"), signingKeys: [key], serverSecret: .random())
    authConfiguration.mailer = MaildirMailer(directory: URL(fileURLWithPath: directory + "/mail"), renderer: try MailRenderer(messageIDDomain: "clau.test"))
    authConfiguration.bcryptCost = 4
    authConfiguration.allowWeakBcryptCostForTests = true
    authConfiguration.bcryptThreads = 1
    authConfiguration.edgeUIDs = [getuid()]
    authConfiguration.database.options.maximumConnections = 4
    configureAuth(&authConfiguration)
    let auth = try await AuthService.build(configuration: authConfiguration, logger: quietLogger)

    let pki = try await TestPKI.shared.value
    let listener: EdgeConfiguration.Listener
    let isTLS: Bool
    switch mode {
    case .https:
        listener = .https(host: "127.0.0.1", port: 0, tls: try pki.material(), redirectPort: redirect ? 0 : nil)
        isTLS = true
    case .behindProxy(let trusted):
        listener = .behindProxy(host: "127.0.0.1", port: 0, trustedProxies: trusted)
        isTLS = false
    }
    var configuration = EdgeConfiguration(listener: listener, authSocketPath: directory + "/auth.sock")
    configuration.publicBaseURL = "https://api.clau.test"
    configuration.adminKeySHA256 = Array(SHA256.hash(data: Data(adminKey.utf8)))
    configuration.rateLimitRules = .relaxedForTests
    configure(&configuration)
    let logs = LogCapture()
    let edge = try buildApplication(configuration: configuration, logger: logs.logger("edge", level: edgeLogLevel), accessLogger: logs.logger("edge-access", level: .info), dependencies: dependencies)

    let authTask = Task { try await auth.run() }
    await auth.server.waitUntilListening()
    let edgeTask = Task { try await edge.run() }
    let ports = await edge.waitUntilListening()
    // The JWKS warm-up must have loaded auth's key before tokens can verify.
    let deadline = ContinuousClock.now + .seconds(10)
    while edge.state.jwks.keyCount == 0 && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
    let harness = EdgeHarness(auth: auth, edge: edge, ports: ports, logs: logs, pki: pki, isTLS: isTLS, signingKey: key, stopAuth: { authTask.cancel() }, mailbox: URL(fileURLWithPath: directory + "/mail"))
    let result: Result<T, any Error>
    do {
        result = .success(try await body(harness))
    } catch {
        result = .failure(error)
    }
    edgeTask.cancel()
    authTask.cancel()
    _ = await edgeTask.result
    _ = await authTask.result
    return try result.get()
}

// MARK: Hostile tokens

struct TestClaims: Encodable {
    var iss = "clau-auth"
    var aud = "clau-api"
    var sub: String
    var exp: Int64
    var iat: Int64
    var nbf: Int64
    var jti = UUID().uuidString.lowercased()
    var role = "user"
    var sid = UUID().uuidString.lowercased()
    var amr: [String]?
    var auth_time: Int64?

    init(sub: String, lifetime: Int64 = 600, now: Date = Date(), role: String = "user", amr: [String]? = nil, authTime: Date? = nil) {
        self.auth_time = authTime.map { Int64($0.timeIntervalSince1970) }
        let seconds = Int64(now.timeIntervalSince1970)
        self.sub = sub
        self.iat = seconds
        self.nbf = seconds
        self.exp = seconds + lifetime
        self.role = role
        self.amr = amr
    }
}

func b64url(_ data: some Sequence<UInt8>) -> String {
    Data(data).base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
}

func json(_ value: some Encodable) -> Data {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    return try! encoder.encode(value)
}

/// Signs `claims` with the suite's real key (so only the named property is wrong).
func signed(_ claims: TestClaims, key: SigningKey, type: String = "at+jwt") throws -> String {
    try TokenIssuer.sign(claims, with: key, type: type)
}

/// Raw bytes over a plain TCP socket: for requests a normal client will not send (slow bodies,
/// huge headers) and for reading exactly what the server wrote.
final class RawConnection: @unchecked Sendable {
    let fd: Int32

    init(port: Int, receiveTimeout: Int = 5) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw HarnessError("socket failed") }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var timeout = timeval(tv_sec: receiveTimeout, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        let result = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard result == 0 else { close(fd); throw HarnessError("connect failed") }
    }

    func send(_ text: String) {
        let bytes = Array(text.utf8)
        var offset = 0
        while offset < bytes.count {
            let n = bytes[offset...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { return }
            offset += n
        }
    }

    /// Reads until the peer closes, the timeout passes, or `until` matches what was read.
    func receive(until done: @escaping @Sendable (String) -> Bool = { _ in false }) async throws -> String {
        let fd = self.fd
        return try await offThePool {
            var data = [UInt8]()
            var chunk = [UInt8](repeating: 0, count: 65536)
            while true {
                let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
                if n <= 0 { break }
                data += chunk[0..<n]
                if done(String(decoding: data, as: UTF8.self)) { break }
            }
            return String(decoding: data, as: UTF8.self)
        }
    }

    deinit { close(fd) }
}

/// A whole response has arrived (headers and a Content-Length body).
func responseComplete(_ text: String) -> Bool {
    guard let end = text.range(of: "\r\n\r\n") else { return false }
    let head = text[..<end.lowerBound].lowercased()
    guard let line = head.split(separator: "\r\n").first(where: { $0.hasPrefix("content-length:") }),
          let length = Int(line.dropFirst("content-length:".count).trimmingCharacters(in: .whitespaces))
    else { return true }
    return text.utf8.count - text[..<end.upperBound].utf8.count >= length
}

extension RateLimitRules {
    /// Limits far above what a test sends; the rate-limit tests set `.spec`.
    static var relaxedForTests: RateLimitRules {
        RateLimitRules().mapRules { RateLimitRule(name: $0.name, limit: 100_000, window: .seconds(60)) }
    }
}
