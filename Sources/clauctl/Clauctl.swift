import ArgumentParser
import ClauDatabase
import ClauSupport
import Foundation
import Logging
import NIOPosix
import PostgresNIO

/// The operator's tool (SPEC §5, C-19): migrate the database, generate and rotate keys, back up
/// and restore (C-18).
@main
struct Clauctl: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "clauctl",
        abstract: "Administer a Clau backend: database migrations, key management, backups.",
        subcommands: [Migrate.self, VaultCommand.self, AuthCommand.self, BrokerCommand.self, BackupCommand.self, Restore.self]
    )
}

struct DatabaseOptions: ParsableArguments {
    @Option(help: "PostgreSQL Unix socket path, e.g. /run/postgresql/.s.PGSQL.5432.")
    var socket: String?

    @Option(help: "PostgreSQL host, when not using --socket.")
    var host: String?

    @Option(help: "PostgreSQL port.")
    var port: Int = 5432

    @Option(help: "Database name.")
    var database: String = "clau"

    @Option(help: "Role to connect as (default: migrate: the schema's owner clau_<schema>; backup: clau_backup; restore: postgres).")
    var user: String?

    @Option(help: "File holding the role's password (must not be group/world-readable). Omit for peer/trust auth.")
    var passwordFile: String?

    func connect(defaultUser: String, logger: Logger) async throws -> PostgresConnection {
        let password = try passwordFile.map { try SecretFile.readString(at: $0) }
        let username = user ?? defaultUser
        let configuration: PostgresConnection.Configuration
        if let socket {
            configuration = .init(unixSocketPath: socket, username: username, password: password, database: database)
        } else if let host {
            configuration = .init(host: host, port: port, username: username, password: password, database: database, tls: .disable)
        } else {
            throw ValidationError("give --socket or --host")
        }
        return try await PostgresConnection.connect(configuration: configuration, id: 1, logger: logger)
    }
}

struct Migrate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Apply pending migrations to one schema, as its owner role.")

    @Option(help: "Schema to migrate: auth or broker.")
    var schema: String

    @Option(help: "Directory holding one folder of NNNN_name.sql files per schema.")
    var migrations: String = "migrations"

    @OptionGroup var database: DatabaseOptions

    func run() async throws {
        var logger = Logger(label: "clauctl")
        logger.logLevel = .warning
        let runner = try MigrationRunner(schema: schema)
        let files = try Migration.load(directory: migrations + "/" + schema)
        let connection = try await database.connect(defaultUser: "clau_" + schema, logger: logger)
        do {
            let applied = try await runner.migrate(files, on: connection, logger: logger)
            try await connection.close()
            print(applied.isEmpty ? "\(schema): up to date (\(files.count) migrations)" : "\(schema): applied \(applied.map(String.init).joined(separator: ", "))")
        } catch {
            try? await connection.close()
            throw error
        }
    }
}
