import BrokerService
import Foundation
import Logging
import PostgresNIO
import RPC
import TestSupport
import Testing
import VaultService

@testable import AuthService

/// `clauctl backup` and `clauctl restore` (C-18, runbook C-19), run as the built executable against
/// real PostgreSQL clusters, with data written through the real auth handlers and a real vault.
@Suite("Backups that restore", .serialized, .timeLimit(.minutes(8)))
struct BackupRestoreTests {
    static let clauctl = repositoryRoot + "/.build/debug/clauctl"
    static let pgBindir = "/usr/lib/postgresql/15/bin"
    static let brokerPeer = PeerCredentials(pid: 22, uid: 31_003, gid: 31_003)
    static let quiet = Logger(label: "backup-test") { _ in SwiftLogNoOpLogHandler() }

    /// Users and sessions through AuthService, an Alpaca token sealed by the vault in `broker`,
    /// a backup by the executable, a restore into a second cluster, and then: the user logs in
    /// and refreshes a pre-backup session there, and the stored token decrypts to the original.
    @Test func backupRestoresIntoAFreshClusterAndLoginWorks_C18() async throws {
        let files = try Self.files()
        let source = try await Self.sourceDatabase()
        let signingKey = try await SigningKey.generate(algorithm: .es256, kid: "backup-test-es256")
        let secret = AuthSecrets.random()
        let alpacaToken = "alpaca-access-\(UUID().uuidString)"

        let (userID, refreshToken) = try await withAuthService(signingKey: signingKey, database: source, configure: { $0.serverSecret = secret }) { auth in
            try await auth.register("ada@example.com")
            try await auth.register("grace@example.com")
            _ = try await auth.login("grace@example.com")
            let login = try await auth.login("ada@example.com")
            return (login.user.id, login.tokens.refreshToken)
        }
        let user = try #require(UUID(uuidString: userID))
        let sealed = try await Self.vault(keyFile: files.fernetKeys).seal(alpacaToken, for: CredentialContext(provider: .alpaca, userID: user), options: CallOptions())
        try await Self.execute(on: source, role: "clau_broker", """
            INSERT INTO broker.alpaca_connections (user_id, token_ciphertext, key_id, scope, status, connected_at, updated_at)
            VALUES (\(user), \(sealed.ciphertext), \(sealed.keyID), 'trading', 'connected', now(), now())
            """)

        // Retention: older backups beyond --keep go, anything not named like a backup stays.
        try Data().write(to: URL(fileURLWithPath: files.backups + "/clau-20200101T000000Z.clau-backup"))
        try Data().write(to: URL(fileURLWithPath: files.backups + "/clau-20210101T000000Z.clau-backup"))
        try Data("keep me".utf8).write(to: URL(fileURLWithPath: files.backups + "/notes.txt"))
        let backupOutput = try await Self.backup(source, files, to: ["--output-dir", files.backups, "--keep", "2", "--password-file", files.dbPassword])
        #expect(backupOutput.contains("removed old backup \(files.backups)/clau-20200101T000000Z.clau-backup"))
        let remaining = try FileManager.default.contentsOfDirectory(atPath: files.backups).sorted()
        #expect(remaining.count == 3 && remaining.contains("notes.txt") && remaining.contains("clau-20210101T000000Z.clau-backup"))
        let backup = try #require(remaining.first { $0 != "notes.txt" && $0 != "clau-20210101T000000Z.clau-backup" }.map { files.backups + "/" + $0 })
        #expect(try Self.mode(backup) == 0o600)
        // The dump is encrypted: no row data in the clear.
        let raw = try Data(contentsOf: URL(fileURLWithPath: backup))
        #expect(raw.prefix(8) == Data("CLAUBKUP".utf8))
        #expect(raw.range(of: Data("ada@example.com".utf8)) == nil && raw.range(of: Data(sealed.ciphertext.utf8)) == nil)

        try await PostgresHarness.withSeparateCluster { cluster in
            let target = TestDatabase(cluster: cluster, name: "clau")
            let restored = try await Shell.run(Self.clauctl, [
                "restore", backup, "--key-file", files.backupKey,
                "--socket", cluster.socketPath, "--database", "clau", "--pg-bindir", Self.pgBindir,
            ])
            #expect(restored.contains("restored \(backup)"))

            try await withAuthService(signingKey: signingKey, database: target, configure: { $0.serverSecret = secret }) { auth in
                let login = try await auth.login("ada@example.com")
                #expect(login.user.id == userID)
                #expect(try await !auth.refresh(refreshToken).accessToken.isEmpty)
                _ = try await auth.login("grace@example.com")
            }
            let row = try await Self.query(on: target, role: "clau_broker", "SELECT token_ciphertext, key_id FROM broker.alpaca_connections WHERE user_id = \(user)", as: (String, String).self)
            #expect(row.count == 1)
            let stored = try #require(row.first)
            // A vault started afresh from the same key file opens the restored ciphertext.
            let opened = try await Self.vault(keyFile: files.fernetKeys).open(SealedCredential(ciphertext: stored.0, keyID: stored.1), for: CredentialContext(provider: .alpaca, userID: user), options: CallOptions())
            #expect(opened == alpacaToken)
        }
    }

    /// A flipped byte, a cut-off file, a wrong key and a loose key file are refused with a message
    /// saying which, before anything reaches the target; the same target then takes the intact file.
    @Test func corruptedTruncatedOrWrongKeyBackupIsRefusedAndNothingRestored_C18() async throws {
        let files = try Self.files()
        let source = try await Self.sourceDatabase()
        try await Self.execute(on: source, role: "clau_auth", Self.insertUsers(2000))
        let backup = files.backups + "/one.clau-backup"
        _ = try await Self.backup(source, files, to: ["--output", backup])
        let target = try await Self.emptyDatabase(source.cluster)
        let original = try Data(contentsOf: URL(fileURLWithPath: backup))

        var corrupted = original
        corrupted[corrupted.count / 2] ^= 0x01
        let corruptedPath = try Self.write(corrupted, to: files.backups + "/corrupted.clau-backup")
        let truncatedPath = try Self.write(original.prefix(original.count - 1000), to: files.backups + "/truncated.clau-backup")
        let otherKey = files.directory + "/other-key"
        _ = try await Shell.run(Self.clauctl, ["backup", "keygen", "--output", otherKey])
        let looseKey = files.directory + "/loose-key"
        try FileManager.default.copyItem(atPath: files.backupKey, toPath: looseKey)
        chmod(looseKey, 0o644)

        for (file, key, expected) in [
            (corruptedPath, files.backupKey, "corrupted: the SHA-256 checksum does not match"),
            (truncatedPath, files.backupKey, "truncated"),
            (backup, otherKey, "not with this key"),
            (backup, looseKey, "must not be readable or writable by group or others"),
        ] {
            let refusal = try await Self.refused(["restore", file, "--key-file", key, "--socket", target.cluster.socketPath, "--database", target.name, "--pg-bindir", Self.pgBindir])
            #expect(refusal.contains(expected), "\(file) with \(key): \(refusal)")
            #expect(try await Self.objectsInSchemas(target) == 0, "\(file) touched the target")
        }
        #expect(try await Self.refused(["backup", "verify", corruptedPath, "--key-file", files.backupKey]).contains("corrupted"))
        #expect(try await Shell.run(Self.clauctl, ["backup", "verify", backup, "--key-file", files.backupKey]).contains("intact"))

        _ = try await Shell.run(Self.clauctl, ["restore", backup, "--key-file", files.backupKey, "--socket", target.cluster.socketPath, "--database", target.name, "--pg-bindir", Self.pgBindir])
        let users = try await Self.query(on: target, role: "clau_auth", "SELECT count(*) FROM auth.users", as: Int64.self)
        #expect(users == [2000])
    }

    /// A target holding rows, or migrated (tables, no rows), is refused and left as it was.
    @Test func restoreIntoANonEmptyTargetIsRefused_C18() async throws {
        let files = try Self.files()
        let source = try await Self.sourceDatabase()
        try await Self.execute(on: source, role: "clau_auth", Self.insertUsers(1))
        let backup = files.backups + "/one.clau-backup"
        _ = try await Self.backup(source, files, to: ["--output", backup])
        let refusal = try await Self.refused(["restore", backup, "--key-file", files.backupKey, "--socket", source.cluster.socketPath, "--database", source.name, "--pg-bindir", Self.pgBindir])
        #expect(refusal.contains("is not empty: it already holds rows: auth.users (1 rows)"), "\(refusal)")
        #expect(try await Self.query(on: source, role: "clau_auth", "SELECT count(*) FROM auth.users", as: Int64.self) == [1])

        let migrated = try await PostgresHarness.shared.freshDatabase()
        let migratedRefusal = try await Self.refused(["restore", backup, "--key-file", files.backupKey, "--socket", migrated.cluster.socketPath, "--database", migrated.name, "--pg-bindir", Self.pgBindir])
        #expect(migratedRefusal.contains("is not empty") && migratedRefusal.contains("no rows: migrated?"), "\(migratedRefusal)")
        #expect(try await Self.query(on: migrated, role: "clau_auth", "SELECT count(*) FROM auth.users", as: Int64.self) == [0])
    }

    // MARK: Helpers

    struct Files {
        let directory: String
        let backupKey: String
        let fernetKeys: String
        let dbPassword: String
        let backups: String
    }

    /// A private directory with a backup key (made by `clauctl backup keygen`), a vault key file,
    /// a password file (trust authentication ignores it; it exercises the PGPASSFILE path) and a
    /// backup directory.
    static func files() throws -> Files {
        let directory = try makeWorldReadableTemporaryDirectory(prefix: "clau-backup-test")
        chmod(directory, 0o700)
        let backupKey = directory + "/backup-key"
        _ = try Shell.run(clauctl, ["backup", "keygen", "--output", backupKey]) as String
        let fernetKeys = directory + "/fernet-keys"
        try Data((FernetKey.generate().base64URLEncoded + "\n").utf8).write(to: URL(fileURLWithPath: fernetKeys))
        chmod(fernetKeys, 0o400)
        let dbPassword = directory + "/db-password"
        try Data("not:a\\real password".utf8).write(to: URL(fileURLWithPath: dbPassword))
        chmod(dbPassword, 0o400)
        let backups = directory + "/backups"
        try FileManager.default.createDirectory(atPath: backups, withIntermediateDirectories: false)
        return Files(directory: directory, backupKey: backupKey, fernetKeys: fernetKeys, dbPassword: dbPassword, backups: backups)
    }

    /// A migrated database of the shared cluster that the backup role (as deploy/README.md sets it
    /// up: LOGIN, member of pg_read_all_data) may connect to.
    static func sourceDatabase() async throws -> TestDatabase {
        let database = try await PostgresHarness.shared.freshDatabase()
        try await execute(on: database, role: "postgres", """
            DO $$ BEGIN CREATE ROLE clau_backup LOGIN IN ROLE pg_read_all_data;
            EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$
            """)
        try await execute(on: database, role: "postgres", PostgresQuery(unsafeSQL: "GRANT CONNECT ON DATABASE \(database.name) TO clau_backup"))
        return database
    }

    /// A new database without the auth and broker schemas (the roles exist cluster-wide).
    static func emptyDatabase(_ cluster: PostgresHarness.Cluster) async throws -> TestDatabase {
        let name = "restore_\(UInt32.random(in: 0...UInt32.max))"
        let admin = try await TestDatabase(cluster: cluster, name: "postgres").connect(role: "postgres", logger: quiet)
        do {
            try await admin.query(PostgresQuery(unsafeSQL: "CREATE DATABASE \(name)"), logger: quiet)
            try await admin.close()
        } catch {
            try? await admin.close()
            throw error
        }
        return TestDatabase(cluster: cluster, name: name)
    }

    static func objectsInSchemas(_ database: TestDatabase) async throws -> Int64 {
        try await query(on: database, role: "postgres", """
            SELECT (SELECT count(*) FROM pg_namespace WHERE nspname IN ('auth', 'broker'))
                 + (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname IN ('auth', 'broker'))
            """, as: Int64.self).first ?? -1
    }

    /// Rows straight into auth.users (no bcrypt): bulk data for tests that do not log in.
    static func insertUsers(_ count: Int) -> PostgresQuery {
        PostgresQuery(unsafeSQL: """
            INSERT INTO auth.users (id, email, email_normalized, full_name, password_hash)
            SELECT gen_random_uuid(), 'u' || i || '@example.com', 'u' || i || '@example.com', 'User ' || i, '$2b$04$notarealhash'
            FROM generate_series(1, \(count)) AS i
            """)
    }

    static func execute(on database: TestDatabase, role: String, _ sql: PostgresQuery) async throws {
        let connection = try await database.connect(role: role, logger: quiet)
        do {
            try await connection.query(sql, logger: quiet)
            try await connection.close()
        } catch {
            try? await connection.close()
            throw error
        }
    }

    static func query<T: PostgresDecodable & Sendable>(on database: TestDatabase, role: String, _ sql: PostgresQuery, as: T.Type) async throws -> [T] {
        let connection = try await database.connect(role: role, logger: quiet)
        do {
            var values: [T] = []
            for try await value in try await connection.query(sql, logger: quiet).decode(T.self) { values.append(value) }
            try await connection.close()
            return values
        } catch {
            try? await connection.close()
            throw error
        }
    }

    static func query(on database: TestDatabase, role: String, _ sql: PostgresQuery, as: (String, String).Type) async throws -> [(String, String)] {
        let connection = try await database.connect(role: role, logger: quiet)
        do {
            var values: [(String, String)] = []
            for try await value in try await connection.query(sql, logger: quiet).decode((String, String).self) { values.append(value) }
            try await connection.close()
            return values
        } catch {
            try? await connection.close()
            throw error
        }
    }

    /// `clauctl backup` of `database` with the test's key into `output` (--output or --output-dir).
    static func backup(_ database: TestDatabase, _ files: Files, to output: [String]) async throws -> String {
        try await Shell.run(clauctl, ["backup", "--key-file", files.backupKey, "--socket", database.cluster.socketPath, "--database", database.name, "--pg-bindir", pgBindir] + output)
    }

    /// Runs clauctl expecting it to fail; returns what it said.
    static func refused(_ arguments: [String]) async throws -> String {
        do {
            let output = try await Shell.run(clauctl, arguments)
            Issue.record("clauctl \(arguments.joined(separator: " ")) succeeded: \(output)")
            return output
        } catch let error as HarnessError {
            return error.description
        }
    }

    static func write(_ data: Data, to path: String) throws -> String {
        try data.write(to: URL(fileURLWithPath: path))
        return path
    }

    static func mode(_ path: String) throws -> Int {
        ((try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions]) as? Int) ?? -1
    }

    static func vault(keyFile: String) throws -> CredentialVault {
        let vault = try Vault.build(configuration: VaultConfiguration(socketPath: "/unused", keySource: .file(path: keyFile), brokerUIDs: [brokerPeer.uid]), logger: quiet)
        let core = RPCServerCore(router: vault.handlers.router(), accessPolicy: VaultHandlers.accessPolicy(brokerUIDs: [brokerPeer.uid], adminUIDs: []), logger: quiet)
        return CredentialVault(client: VaultRPCClient(RPCClient(transport: InProcessTransport(server: core, peer: brokerPeer))))
    }
}
