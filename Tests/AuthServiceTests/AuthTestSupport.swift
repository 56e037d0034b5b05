import Foundation
import Logging
import NIOPosix
import PostgresNIO
import RPC
import Synchronization
import TestSupport
@testable import AuthService

let quietLogger: Logger = {
    var logger = Logger(label: "auth-test")
    logger.logLevel = .critical
    return logger
}()

let edgePeer = PeerCredentials(pid: 20, uid: 981, gid: 981)
let adminPeer = PeerCredentials(pid: 21, uid: 982, gid: 982)
let strangerPeer = PeerCredentials(pid: 22, uid: 983, gid: 983)

/// A strong password under the R-6 policy, used throughout.
let goodPassword = "Tq7!vexing-Walrus-orbit"

/// RSA key generation takes a while: one key for the whole suite.
let sharedRSAKey = Task { try await SigningKey.generate(algorithm: .rs256, kid: "test-rs256-1") }

/// A settable clock for expiry, grace-window and idle tests.
final class TestClock: Sendable {
    private let current: Mutex<Date>
    init(_ start: Date = Date(timeIntervalSince1970: TimeInterval(Int(Date().timeIntervalSince1970)))) { current = Mutex(start) }
    var now: Date { current.withLock { $0 } }
    func advance(_ seconds: TimeInterval) { current.withLock { $0 = $0.addingTimeInterval(seconds) } }
}

func fixtureData(_ name: String) throws -> Data {
    try Data(contentsOf: URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures/\(name)"))
}

struct AuthHarness: Sendable {
    let service: AuthService
    let database: TestDatabase
    let clock: TestClock
    /// The maildir the service's security mail goes to.
    let mailbox: URL

    /// Mail delivered so far (the outbox delivers in the background: waits up to 5 s for `count`).
    func mail(to address: String, atLeast count: Int = 1) async throws -> [ReceivedMail] {
        for _ in 0..<250 {
            let received = ((try? MaildirMailer.messages(in: mailbox)) ?? []).filter { $0.to == address }
            if received.count >= count { return received }
            try await Task.sleep(for: .milliseconds(20))
        }
        return ((try? MaildirMailer.messages(in: mailbox)) ?? []).filter { $0.to == address }
    }

    /// Mail to `address` right now, without waiting.
    func mailNow(to address: String) throws -> [ReceivedMail] {
        ((try? MaildirMailer.messages(in: mailbox)) ?? []).filter { $0.to == address }
    }

    var handlers: AuthHandlers { service.handlers }

    func client(as peer: PeerCredentials = edgePeer) -> RPCClient {
        RPCClient(transport: InProcessTransport(server: service.core, peer: peer))
    }

    func register(_ email: String, password: String = goodPassword, name: String = "Ada Lovelace") async throws {
        var request = AuthRegisterRequest()
        request.email = email
        request.password = password
        request.fullName = name
        _ = try await client().call(AuthAPI.register, request)
    }

    func login(_ email: String, password: String = goodPassword) async throws -> AuthLoginResponse {
        var request = AuthLoginRequest()
        request.email = email
        request.password = password
        return try await client().call(AuthAPI.login, request)
    }

    func refresh(_ token: String) async throws -> AuthTokenPair {
        var request = AuthRefreshRequest()
        request.refreshToken = token
        return try await client().call(AuthAPI.refresh, request).tokens
    }

    func isRevoked(accessToken: String) async throws -> Bool {
        let claims = try handlers.issuer.verifier.verify(accessToken, now: clock.now)
        var request = AuthCheckRevokedRequest()
        request.jti = claims.jti
        return try await client().call(AuthAPI.checkRevoked, request).revoked
    }

    /// Runs a query as the service's role and returns the first column of each row.
    func scalars<T: PostgresDecodable & Sendable>(_ query: PostgresQuery, as: T.Type) async throws -> [T] {
        let connection = try await database.connect(role: "clau_auth", logger: quietLogger)
        do {
            var values: [T] = []
            for try await value in try await connection.query(query, logger: quietLogger).decode(T.self) { values.append(value) }
            try await connection.close()
            return values
        } catch {
            try? await connection.close()
            throw error
        }
    }
}

/// A fresh database, an auth service on it (bcrypt cost 4, test-only), its PostgreSQL client
/// running for the duration of `body`.
/// Every log line (message and metadata) the service writes, for redaction tests.
final class CapturedLog: Sendable {
    private let lines = Mutex<[String]>([])
    var text: String { lines.withLock { $0.joined(separator: "\n") } }

    var logger: Logger {
        Logger(label: "captured") { _ in Handler(sink: self) }
    }

    struct Handler: LogHandler {
        let sink: CapturedLog
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .trace
        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }
        func log(level: Logger.Level, message: Logger.Message, metadata: Logger.Metadata?, source: String, file: String, function: String, line: UInt) {
            let all = self.metadata.merging(metadata ?? [:]) { $1 }
            sink.lines.withLock { $0.append("\(message) \(all)") }
        }
    }
}

/// An auth service (bcrypt cost 4, test-only) on a fresh database, or on `database` (a restored
/// backup), its PostgreSQL client and outbox running for the duration of `body`.
func withAuthService<T: Sendable>(
    signingKey: SigningKey? = nil,
    database existing: TestDatabase? = nil,
    logger: Logger = quietLogger,
    bcryptCost: Int = 4,
    configure: (inout AuthConfiguration) -> Void = { _ in },
    _ body: @Sendable (AuthHarness) async throws -> T
) async throws -> T {
    let database = if let existing { existing } else { try await PostgresHarness.shared.freshDatabase() }
    let key = if let signingKey { signingKey } else { try await sharedRSAKey.value }
    var configuration = AuthConfiguration(socketPath: "/unused", database: database.clientConfiguration(role: "clau_auth"), signingKeys: [key], serverSecret: .random())
    let mailbox = FileManager.default.temporaryDirectory.appendingPathComponent("clau-mail-\(UUID().uuidString)")
    defer { try? FileManager.default.removeItem(at: mailbox) }
    configuration.mailer = MaildirMailer(directory: mailbox, renderer: try MailRenderer(messageIDDomain: "clau.test"))
    configuration.bcryptCost = bcryptCost
    configuration.allowWeakBcryptCostForTests = true
    configuration.bcryptThreads = 2
    configuration.database.options.maximumConnections = 4
    configuration.edgeUIDs = [edgePeer.uid]
    configuration.adminUIDs = [adminPeer.uid]
    configure(&configuration)
    let clock = TestClock()
    let service = try await AuthService.build(configuration: configuration, logger: logger, now: { clock.now })
    let harness = AuthHarness(service: service, database: database, clock: clock, mailbox: mailbox)
    let result: Result<T, any Error> = await withTaskGroup(of: Void.self) { group in
        group.addTask { await service.postgres.run() }
        group.addTask { try? await service.outbox.run() }
        let result: Result<T, any Error>
        do {
            result = .success(try await body(harness))
        } catch {
            result = .failure(error)
        }
        group.cancelAll()
        return result
    }
    try? await service.bcryptPool.shutdownGracefully()
    return try result.get()
}
