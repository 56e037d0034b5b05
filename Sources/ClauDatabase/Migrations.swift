import Foundation
import Logging
import PostgresNIO

/// One versioned SQL file, `NNNN_description.sql`.
public struct Migration: Sendable, Equatable {
    public var version: Int
    public var name: String
    public var sql: String

    public init(version: Int, name: String, sql: String) {
        self.version = version
        self.name = name
        self.sql = sql
    }

    /// Reads `NNNN_name.sql` files from a directory, in version order. Duplicate versions and
    /// badly named `.sql` files are errors, not silently skipped.
    public static func load(directory: String) throws -> [Migration] {
        let names: [String]
        do {
            names = try FileManager.default.contentsOfDirectory(atPath: directory)
        } catch {
            throw MigrationError.directoryUnreadable(directory)
        }
        var migrations: [Migration] = []
        for name in names where name.hasSuffix(".sql") {
            let stem = name.dropLast(4)
            guard let underscore = stem.firstIndex(of: "_"), let version = Int(stem[..<underscore]), version > 0 else {
                throw MigrationError.badFileName(name)
            }
            let path = directory + "/" + name
            guard let data = FileManager.default.contents(atPath: path) else { throw MigrationError.directoryUnreadable(path) }
            migrations.append(Migration(version: version, name: String(stem[stem.index(after: underscore)...]), sql: String(decoding: data, as: UTF8.self)))
        }
        migrations.sort { $0.version < $1.version }
        for (a, b) in zip(migrations, migrations.dropFirst()) where a.version == b.version {
            throw MigrationError.duplicateVersion(a.version)
        }
        return migrations
    }
}

public enum MigrationError: Error, Equatable, CustomStringConvertible {
    case directoryUnreadable(String)
    case badFileName(String)
    case duplicateVersion(Int)
    case badSchemaName(String)
    case failed(version: Int, name: String, reason: String)

    public var description: String {
        switch self {
        case .directoryUnreadable(let path): "cannot read migrations at \(path)"
        case .badFileName(let name): "migration file \(name) is not named NNNN_description.sql"
        case .duplicateVersion(let version): "two migrations have version \(version)"
        case .badSchemaName(let name): "schema name '\(name)' must be lower-case letters and underscores"
        case .failed(let version, let name, let reason): "migration \(version)_\(name) failed: \(reason)"
        }
    }
}

/// Applies pending migrations to one schema, each in its own transaction, recording them in
/// `<schema>.schema_migrations`. An advisory lock serialises concurrent runners.
public struct MigrationRunner: Sendable {
    public let schema: String

    public init(schema: String) throws(MigrationError) {
        guard !schema.isEmpty, schema.allSatisfy({ $0 == "_" || ("a"..."z").contains($0) }) else {
            throw MigrationError.badSchemaName(schema)
        }
        self.schema = schema
    }

    /// Returns the versions it applied (empty when the schema was up to date).
    @discardableResult
    public func migrate(_ migrations: [Migration], on connection: PostgresConnection, logger: Logger) async throws -> [Int] {
        // `schema` is validated to [a-z_]+ in init, so interpolating it is safe.
        try await connection.query(PostgresQuery(unsafeSQL: """
            CREATE TABLE IF NOT EXISTS \(schema).schema_migrations (
                version integer PRIMARY KEY,
                name text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now()
            )
            """), logger: logger)
        var applied: [Int] = []
        for migration in migrations {
            let didApply: Bool
            do {
                didApply = try await apply(migration, on: connection, logger: logger)
            } catch let error as PostgresTransactionError {
                // Report the migration's own failure, not the transaction wrapper.
                throw (error.closureError as? MigrationError) ?? MigrationError.failed(version: migration.version, name: migration.name, reason: "transaction failed")
            }
            if didApply {
                logger.info("migration applied", metadata: ["schema": "\(schema)", "version": "\(migration.version)", "name": "\(migration.name)"])
                applied.append(migration.version)
            }
        }
        return applied
    }

    private func apply(_ migration: Migration, on connection: PostgresConnection, logger: Logger) async throws -> Bool {
        try await connection.withTransaction(logger: logger) { connection -> Bool in
            try await connection.query("SELECT pg_advisory_xact_lock(hashtext(\(schema)))", logger: logger)
            let rows = try await connection.query(PostgresQuery(unsafeSQL: "SELECT 1 FROM \(schema).schema_migrations WHERE version = $1", binds: Self.binds(migration.version)), logger: logger)
            for try await _ in rows { return false }
            for statement in SQLScript.statements(in: migration.sql) {
                do {
                    try await connection.query(PostgresQuery(unsafeSQL: statement), logger: logger)
                } catch let error as PSQLError {
                    throw MigrationError.failed(version: migration.version, name: migration.name, reason: error.serverInfo?[.message] ?? "\(error.code)")
                }
            }
            try await connection.query(PostgresQuery(unsafeSQL: "INSERT INTO \(schema).schema_migrations (version, name) VALUES ($1, $2)", binds: Self.binds(migration.version, migration.name)), logger: logger)
            return true
        }
    }

    private static func binds(_ version: Int, _ name: String? = nil) -> PostgresBindings {
        var binds = PostgresBindings()
        binds.append(version)
        if let name { binds.append(name) }
        return binds
    }
}
