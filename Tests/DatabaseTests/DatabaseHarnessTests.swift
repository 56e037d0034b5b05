import ClauDatabase
import Foundation
import PostgresNIO
import TestSupport
import Testing

@Suite("PostgreSQL harness and migrations", .timeLimit(.minutes(5)))
struct DatabaseHarnessTests {
    @Test func eachServiceRoleCanUseOnlyItsOwnSchema_C16() async throws {
        let database = try await PostgresHarness.shared.freshDatabase()
        let auth = try await database.connect(role: "clau_auth")
        let broker = try await database.connect(role: "clau_broker")
        defer { Task { try? await auth.close(); try? await broker.close() } }

        try await auth.query("CREATE TABLE auth.probe (id int)", logger: .init(label: "t"))
        try await broker.query("CREATE TABLE broker.probe (id int)", logger: .init(label: "t"))

        let brokerReadsAuth = await #expect(throws: PSQLError.self) {
            try await broker.query("SELECT * FROM auth.probe", logger: .init(label: "t"))
        }
        #expect(brokerReadsAuth?.serverInfo?[.sqlState] == "42501", "insufficient_privilege")
        let authReadsBroker = await #expect(throws: PSQLError.self) {
            try await auth.query("SELECT * FROM broker.probe", logger: .init(label: "t"))
        }
        #expect(authReadsBroker?.serverInfo?[.sqlState] == "42501")
        let authWritesPublic = await #expect(throws: PSQLError.self) {
            try await auth.query("CREATE TABLE public.sneaky (id int)", logger: .init(label: "t"))
        }
        #expect(authWritesPublic?.serverInfo?[.sqlState] == "42501")
    }

    @Test func migrationsAreRecordedAndRunOnlyOnce() async throws {
        let database = try await PostgresHarness.shared.freshDatabase()
        let auth = try await database.connect(role: "clau_auth")
        defer { Task { try? await auth.close() } }
        let migrations = try Migration.load(directory: repositoryRoot + "/migrations/auth")
        #expect(!migrations.isEmpty)
        // The template was migrated already: a second run applies nothing.
        let applied = try await MigrationRunner(schema: "auth").migrate(migrations, on: auth, logger: .init(label: "t"))
        #expect(applied.isEmpty)
        let rows = try await auth.query("SELECT max(version) FROM auth.schema_migrations", logger: .init(label: "t"))
        var maxVersion: Int?
        for try await (version) in rows.decode(Int?.self) { maxVersion = version }
        #expect(maxVersion == migrations.last?.version)
    }

    @Test func failedMigrationLeavesNothingBehind() async throws {
        let database = try await PostgresHarness.shared.freshDatabase()
        let auth = try await database.connect(role: "clau_auth")
        defer { Task { try? await auth.close() } }
        let broken = Migration(version: 9000, name: "broken", sql: "CREATE TABLE auth.half_done (id int);\nSELECT no_such_function();")
        await #expect(throws: MigrationError.self) {
            try await MigrationRunner(schema: "auth").migrate([broken], on: auth, logger: .init(label: "t"))
        }
        let rows = try await auth.query("SELECT count(*) FROM pg_tables WHERE schemaname = 'auth' AND tablename = 'half_done'", logger: .init(label: "t"))
        for try await count in rows.decode(Int.self) { #expect(count == 0) }
    }

    @Test func sqlScriptSplitterRespectsQuotesCommentsAndDollarBodies() {
        let script = """
        -- a comment; with a semicolon
        CREATE TABLE a (s text DEFAULT 'x;y', "odd;name" int);
        /* block; /* nested; */ still comment */
        CREATE FUNCTION f() RETURNS int AS $body$ BEGIN RETURN 1; END; $body$ LANGUAGE plpgsql;
        INSERT INTO a VALUES ('it''s; fine', 1);
        SELECT $$a;b$$
        """
        let statements = SQLScript.statements(in: script)
        #expect(statements.count == 4)
        #expect(statements[0] == "CREATE TABLE a (s text DEFAULT 'x;y', \"odd;name\" int)")
        #expect(statements[1].hasSuffix("$body$ LANGUAGE plpgsql"))
        #expect(statements[2] == "INSERT INTO a VALUES ('it''s; fine', 1)")
        #expect(statements[3] == "SELECT $$a;b$$")
    }

    @Test func badMigrationFileNamesAreRejected() throws {
        let directory = NSTemporaryDirectory() + "migrations-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try Data("SELECT 1".utf8).write(to: URL(fileURLWithPath: directory + "/init.sql"))
        #expect(throws: MigrationError.badFileName("init.sql")) { try Migration.load(directory: directory) }
        #expect(throws: MigrationError.badSchemaName("Auth; DROP")) { try MigrationRunner(schema: "Auth; DROP") }
    }
}
