import ClauSupport
import Foundation
import RPC
import TestSupport
import Testing
@testable import AuthService

@Suite("Auth service process wiring", .timeLimit(.minutes(5)))
struct AuthSocketTests {
    private func configuration(database: TestDatabase, socketPath: String) async throws -> AuthConfiguration {
        var configuration = AuthConfiguration(socketPath: socketPath, database: database.clientConfiguration(role: "clau_auth"), signingKeys: [try await sharedRSAKey.value], serverSecret: .random())
        configuration.bcryptCost = 4
        configuration.allowWeakBcryptCostForTests = true
        configuration.bcryptThreads = 1
        configuration.edgeUIDs = [getuid()]
        configuration.database.options.maximumConnections = 2
        return configuration
    }

    @Test func servesOverUnixSocketAfterDatabaseCheck_X1() async throws {
        let database = try await PostgresHarness.shared.freshDatabase()
        let directory = try makeWorldReadableTemporaryDirectory(prefix: "clau-auth-sock")
        let service = try await AuthService.build(configuration: configuration(database: database, socketPath: directory + "/auth.sock"), logger: quietLogger)
        let client = UnixSocketClient(configuration: .init(path: directory + "/auth.sock"), logger: quietLogger)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await service.run() }
            await service.server.waitUntilListening()
            group.addTask { try await client.run() }
            await client.waitUntilConnected()
            let rpc = RPCClient(transport: client)
            var register = AuthRegisterRequest()
            register.email = "sock@example.com"
            register.password = goodPassword
            register.fullName = "Sock Et"
            _ = try await rpc.call(AuthAPI.register, register)
            var login = AuthLoginRequest()
            login.email = "sock@example.com"
            login.password = goodPassword
            let tokens = try await rpc.call(AuthAPI.login, login).tokens
            #expect(try service.handlers.issuer.verifier.verify(tokens.accessToken, now: Date()).sid == tokens.sessionID)
            #expect(try await rpc.call(AuthAPI.getJWKS, AuthGetJWKSRequest()).jwksJson.contains("\"kid\":\"test-rs256-1\""))
            group.cancelAll()
        }
    }

    @Test func startupFailsWhenDatabaseUnreachable() async throws {
        let database = try await PostgresHarness.shared.freshDatabase()
        let directory = try makeWorldReadableTemporaryDirectory(prefix: "clau-auth-sock")
        var configuration = try await configuration(database: database, socketPath: directory + "/auth.sock")
        configuration.database = .init(unixSocketPath: database.cluster.socketPath, username: "clau_auth", password: nil, database: "no_such_database")
        configuration.databaseStartupTimeout = .seconds(1)
        let service = try await AuthService.build(configuration: configuration, logger: quietLogger)
        let error = await #expect(throws: StartupError.self) { try await service.run() }
        #expect(error?.description.contains("PostgreSQL did not answer") == true)
    }

    @Test func productionRefusesWeakBcryptCost_C3() async throws {
        let database = try await PostgresHarness.shared.freshDatabase()
        var configuration = try await configuration(database: database, socketPath: "/unused")
        configuration.allowWeakBcryptCostForTests = false
        configuration.bcryptCost = 9
        await #expect(throws: StartupError.self) { try await AuthService.build(configuration: configuration, logger: quietLogger) }
        configuration.signingKeys = []
        await #expect(throws: StartupError.self) { try await AuthService.build(configuration: configuration, logger: quietLogger) }
    }
}
