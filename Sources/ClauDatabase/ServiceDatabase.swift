import ClauSupport
import Foundation
import Logging
import PostgresNIO

extension PostgresClient.Configuration {
    /// A service's connection to its own schema: a Unix socket, its own role, a fixed local pool,
    /// and the password from `passwordFile`, else from the systemd credential `db-password` when
    /// present, else none (peer or trust authentication on the socket).
    public static func service(socket: String, user: String, database: String, connections: Int, passwordFile: String?) throws -> Self {
        guard (1...100).contains(connections) else { throw StartupError("--db-connections must be between 1 and 100") }
        var password: String?
        if let passwordFile {
            password = try SecretFile.readString(at: passwordFile)
        } else if let path = SecretFile.credentialPath("db-password"), FileManager.default.fileExists(atPath: path) {
            password = try SecretFile.readString(at: path)
        }
        var configuration = Self(unixSocketPath: socket, username: user, password: password, database: database)
        configuration.useFixedLocalPool(connections: connections)
        return configuration
    }
}

extension PostgresClient {
    /// Waits for `schema`'s migration table to answer. postgres-nio's client retries forever on a
    /// wrong password or a missing database: this fails the start instead, with a message that
    /// names the problem but no credential. The client must be running.
    public func checkMigrated(schema: String, timeout: Duration) async throws {
        let logger = Logger(label: "clau.database.startup")
        try await withThrowingTaskGroup(of: Bool.self) { group in
            group.addTask {
                try await self.query(PostgresQuery(unsafeSQL: "SELECT count(*) FROM \(schema).schema_migrations"), logger: logger)
                return true
            }
            group.addTask {
                try await Task.sleep(for: timeout)
                return false
            }
            defer { group.cancelAll() }
            guard let first = try await group.next(), first else {
                throw StartupError("PostgreSQL did not answer within \(timeout) (check the socket path, role, password and that `clauctl migrate --schema \(schema)` ran)")
            }
        }
    }
}
