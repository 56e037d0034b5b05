import AuthService
import BenchSupport
import Foundation
import HummingbirdBcrypt
import Logging
import NIOCore
import NIOPosix
import RPC
import TestSupport

/// Auth throughput, side by side in one run: bcrypt hashes/s at cost 10 and 12 on one
/// thread, login throughput through the real service (Unix socket, PostgreSQL, bcrypt pool of
/// one thread per core) against the bcrypt bound (threads ÷ time per verify), and JWT sign and
/// verify ops/s per algorithm.
/// Usage: swift build -c release --product auth-bench && .build/release/auth-bench [--seconds N]
@main
struct AuthBenchmark {
    static func main() async throws {
        let arguments = CommandLine.arguments
        let seconds = arguments.firstIndex(of: "--seconds").flatMap { Double(arguments[$0 + 1]) } ?? 3.0
        var logger = Logger(label: "auth-bench")
        logger.logLevel = .critical
        let password = "Tq7!vexing-Walrus-orbit"
        let cores = System.coreCount

        print("| measurement | result |")
        print("|---|---|")
        var verifySeconds: [Int: Double] = [:]
        for cost in [10, 12] {
            let hash = try Bcrypt.hash(password, cost: UInt8(cost))
            let hashes = Rates.perSecond(seconds) { _ = try? Bcrypt.hash(password, cost: UInt8(cost)) }
            let verifies = Rates.perSecond(seconds) { _ = try? Bcrypt.verify(password, hash: hash) }
            verifySeconds[cost] = 1 / verifies
            print("| bcrypt cost \(cost), one thread | \(format(hashes)) hashes/s, \(format(verifies)) verifies/s (\(String(format: "%.0f", 1000 / verifies)) ms each) |")
        }

        // The same work without the service, side by side: `cores` threads verifying in parallel.
        let costHash = try Bcrypt.hash(password, cost: 12)
        let parallelVerifies = await Rates.perSecondOnThreads(seconds * 2, threads: cores) { _ = try? Bcrypt.verify(password, hash: costHash) }

        // Login through the service: Unix socket → handlers → PostgreSQL + bcrypt pool.
        let cost = 12
        let database = try await PostgresHarness.shared.freshDatabase()
        let directory = "/tmp/clau-auth-bench-\(getpid())"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var configuration = AuthConfiguration(
            socketPath: directory + "/auth.sock", database: database.clientConfiguration(role: "clau_auth"),
            signingKeys: [try await SigningKey.generate(algorithm: .rs256, kid: "bench")], serverSecret: .random()
        )
        configuration.bcryptCost = cost
        configuration.bcryptThreads = cores
        configuration.edgeUIDs = [getuid()]
        let service = try await AuthService.build(configuration: configuration, logger: logger)
        let client = UnixSocketClient(configuration: .init(path: configuration.socketPath), logger: logger)
        let logins = try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await service.run() }
            await service.server.waitUntilListening()
            group.addTask { try await client.run() }
            await client.waitUntilConnected()
            let rpc = RPCClient(transport: client)
            var register = AuthRegisterRequest()
            register.email = "bench@example.com"
            register.password = password
            register.fullName = "Bench Mark"
            _ = try await rpc.call(AuthAPI.register, register, options: CallOptions(timeout: .seconds(30)))
            var login = AuthLoginRequest()
            login.email = register.email
            login.password = password
            let request = login
            // 4 logins in flight per bcrypt thread keep the pool busy without queueing for ever.
            let rate = try await Rates.perSecondAsync(seconds * 2, workers: cores * 4) {
                _ = try await rpc.call(AuthAPI.login, request, options: CallOptions(timeout: .seconds(60)))
            }
            group.cancelAll()
            return rate
        }
        try? await service.bcryptPool.shutdownGracefully()
        let bound = Double(cores) / (verifySeconds[cost] ?? 1)
        print("| bcrypt bound, computed: \(cores) cores ÷ \(String(format: "%.0f", (verifySeconds[cost] ?? 0) * 1000)) ms per verify | \(format(bound)) verifies/s |")
        print("| bcrypt bound, measured: \(cores) threads verifying in parallel (cost \(cost)) | \(format(parallelVerifies)) verifies/s |")
        print("| login through the service (cost \(cost), \(cores) bcrypt threads, \(cores * 4) in flight) | \(format(logins)) logins/s = \(String(format: "%.0f", 100 * logins / parallelVerifies)) % of the measured bound, \(String(format: "%.0f", 100 * logins / bound)) % of the computed one |")

        let now = Date()
        for algorithm in AccessTokenAlgorithm.allCases {
            let key = try await SigningKey.generate(algorithm: algorithm, kid: "bench-\(algorithm.rawValue)")
            let issuer = try TokenIssuer(current: key, issuer: "clau-auth", audience: "clau-api")
            let token = try issuer.issue(userID: UUID(), role: "user", sessionID: UUID(), now: now).token
            let signs = Rates.perSecond(seconds / 2) { _ = try? issuer.issue(userID: UUID(), role: "user", sessionID: UUID(), now: now) }
            let verifies = Rates.perSecond(seconds / 2) { _ = try? issuer.verifier.verify(token, now: now) }
            print("| JWT \(algorithm.rawValue) | sign \(format(signs))/s, verify \(format(verifies))/s |")
        }
    }

    static func format(_ value: Double) -> String {
        value >= 100 ? String(Int(value.rounded())) : String(format: "%.1f", value)
    }
}
