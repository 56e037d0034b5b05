import ArgumentParser
import ClauSupport
import Foundation
import Logging
import PostgresNIO
#if canImport(Glibc)
import Glibc
#endif

/// Encrypted backups of the `auth` and `broker` schemas (C-18). Format: BackupArchive.swift.
struct BackupCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "backup",
        abstract: "Encrypted pg_dump backups of the auth and broker schemas (C-18); see also `clauctl restore`.",
        subcommands: [Create.self, Keygen.self, Verify.self],
        defaultSubcommand: Create.self
    )

    struct Create: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "pg_dump -Fc of the auth and broker schemas, encrypted with the backup key, written atomically (mode 0600).",
            discussion: """
            Connects as --user (default clau_backup: a role with pg_read_all_data, see deploy/README.md).
            pg_dump writes into a pipe: the plaintext dump never touches the disk. With --output-dir
            the file is named clau-YYYYMMDDTHHMMSSZ.clau-backup and --keep N then deletes the oldest
            such files beyond N, only after the new one is safely written.
            """
        )

        @Option(help: "The backup key file (from `clauctl backup keygen`; 0400/0600).")
        var keyFile: String

        @Option(help: "Write the backup to this file (refused if it exists).")
        var output: String?

        @Option(help: "Write the backup into this directory under a timestamped name.")
        var outputDir: String?

        @Option(help: "With --output-dir: keep only the N newest backups there.")
        var keep: Int?

        @OptionGroup var tools: PostgresTools
        @OptionGroup var database: DatabaseOptions

        func validate() throws {
            guard (output == nil) != (outputDir == nil) else { throw ValidationError("give exactly one of --output and --output-dir") }
            if let keep {
                guard outputDir != nil else { throw ValidationError("--keep needs --output-dir") }
                guard keep >= 1 else { throw ValidationError("--keep must be at least 1") }
            }
        }

        func run() throws {
            let key = try BackupKey.load(path: keyFile)
            let pgDump = try tools.executable("pg_dump")
            let connection = try database.toolConnection(defaultUser: "clau_backup")
            let scratch = try ScratchDirectory(parent: tools.scratchDir)
            let environment = try connection.environment(scratch: scratch)
            let path = output ?? "\(outputDir!)/\(BackupRetention.fileName(for: Date()))"

            let writer = try AtomicFileWriter(path: path)
            let errors = try scratch.createFile("pg_dump.err")
            defer { close(errors) }
            let pipe = try ChildProcess.makePipe()
            let arguments = ["--format=custom", "--schema=auth", "--schema=broker", "--lock-wait-timeout=60s"] + connection.arguments
            let pid: pid_t
            do {
                pid = try ChildProcess.spawn(pgDump, arguments, environment: environment, stdout: pipe.write, stderr: errors)
            } catch {
                close(pipe.read)
                close(pipe.write)
                throw error
            }
            close(pipe.write)
            let encrypted = Result { try BackupArchive.encrypt(from: pipe.read, key: key, to: writer) }
            // Closing our end first: a pg_dump still writing (we failed) gets EPIPE and exits.
            close(pipe.read)
            let status = try ChildProcess.wait(pid, executable: pgDump)
            if case .failure(let error) = encrypted {
                writer.discard()
                throw error
            }
            guard status.succeeded else {
                writer.discard()
                throw BackupError("pg_dump failed (\(status)); no backup written: \(scratch.tail("pg_dump.err"))")
            }
            let (length, checksum) = try encrypted.get()
            guard length > 0 else {
                writer.discard()
                throw BackupError("pg_dump wrote nothing; no backup written")
            }
            try writer.commit(mode: 0o600, replacing: false)
            print("backup written: \(path) (\(length) bytes of pg_dump output, key id \(key.id), sha256 \(checksum))")

            if let outputDir, let keep {
                for removed in try BackupRetention.prune(directory: outputDir, keep: keep) {
                    print("removed old backup \(removed)")
                }
            }
        }
    }

    struct Keygen: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write a new random backup key (32 bytes, base64) to a new file, mode 0400.",
            discussion: "Refuses to replace an existing file. Keep a copy off the machine: without the key no backup can be restored."
        )

        @Option(help: "The key file to create (e.g. /etc/clau/credentials/clau-backup/backup-key).")
        var output: String

        func run() throws {
            let key = BackupKey.generate()
            let writer = try AtomicFileWriter(path: output)
            try writer.write(key.fileContents)
            try writer.commit(mode: 0o400, replacing: false)
            print("backup key written to \(output) (key id \(key.id))")
        }
    }

    struct Verify: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Check a backup without restoring it: checksum, key id, and every chunk decrypted (the plaintext is discarded)."
        )

        @Argument(help: "The backup file.")
        var backup: String

        @Option(help: "The backup key file.")
        var keyFile: String

        func run() throws {
            let key = try BackupKey.load(path: keyFile)
            let fd = try openBackup(backup)
            defer { close(fd) }
            let header = try BackupArchive.verify(fd: fd, path: backup, key: key)
            try BackupArchive.decrypt(fd: fd, path: backup, header: header, key: key) { _ in }
            print("\(backup): intact, key id \(key.id), \(header.plaintextLength) bytes of pg_dump output")
        }
    }
}

struct Restore: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Restore a backup into a database whose auth and broker schemas are absent or empty (C-18).",
        discussion: """
        In this order, and touching nothing until the last step: the file's checksum and key id are
        checked, every chunk is decrypted into a 0600 file in a private temporary directory, and
        the target is checked — the roles clau_auth and clau_broker must exist, and the schemas
        auth and broker must hold no table (create them empty or not at all: the dump carries the
        tables; do not migrate the target first). Then pg_restore runs in one transaction: on any
        error nothing is restored. Connects as --user (default postgres: the restore creates
        objects owned by both roles). Run `clauctl migrate` afterwards for newer migrations.
        """
    )

    @Argument(help: "The backup file.")
    var backup: String

    @Option(help: "The backup key file the backup was made with.")
    var keyFile: String

    @OptionGroup var tools: PostgresTools
    @OptionGroup var database: DatabaseOptions

    func run() async throws {
        var logger = Logger(label: "clauctl")
        logger.logLevel = .warning
        let key = try BackupKey.load(path: keyFile)
        let pgRestore = try tools.executable("pg_restore")
        let connection = try database.toolConnection(defaultUser: "postgres")
        let scratch = try ScratchDirectory(parent: tools.scratchDir)
        let environment = try connection.environment(scratch: scratch)
        let backup = self.backup
        let dump = scratch.path + "/dump"

        // Verify and decrypt (blocking file work, off the concurrency pool).
        let header = try await onOwnThread {
            let fd = try openBackup(backup)
            defer { close(fd) }
            let header = try BackupArchive.verify(fd: fd, path: backup, key: key)
            let writer = try AtomicFileWriter(path: dump)
            try BackupArchive.decrypt(fd: fd, path: backup, header: header, key: key) { try writer.write($0) }
            try writer.commit(mode: 0o600, replacing: false)
            return header
        }

        let existingSchemas = try await checkTargetIsEmpty(logger: logger)

        let summary = try await onOwnThread {
            // The dump creates the schemas; where they exist already (empty), that entry is left out.
            let listing = try runTool(pgRestore, ["--list", dump], environment: environment, scratch: scratch, name: "list")
            var list = ""
            var tables: [String: Int] = [:]
            for line in listing.split(separator: "\n", omittingEmptySubsequences: false) {
                let fields = line.split(separator: " ")
                // "217; 2615 16386 SCHEMA - auth clau_auth", "218; 1259 16387 TABLE auth users clau_auth"
                if fields.count >= 6, fields[3] == "SCHEMA", fields[4] == "-", existingSchemas.contains(String(fields[5])) {
                    list += ";\(line)\n"
                    continue
                }
                if fields.count >= 6, fields[3] == "TABLE", fields[4] != "DATA" { tables[String(fields[4]), default: 0] += 1 }
                list += "\(line)\n"
            }
            let listPath = scratch.path + "/list"
            let listWriter = try AtomicFileWriter(path: listPath)
            try listWriter.write(Array(list.utf8))
            try listWriter.commit(mode: 0o600, replacing: false)
            _ = try runTool(pgRestore, ["--single-transaction", "--exit-on-error", "--use-list=\(listPath)"] + connection.arguments + [dump],
                        environment: environment, scratch: scratch, name: "restore")
            return tables.sorted { $0.key < $1.key }.map { "\($0.key) (\($0.value) tables)" }.joined(separator: ", ")
        }
        print("restored \(backup) (\(header.plaintextLength) bytes of pg_dump output) into database \(database.database): \(summary)")
        print("next: clauctl migrate --schema auth and --schema broker, for migrations newer than the backup")
    }

    /// Refuses (touching nothing) a target that lacks the roles or whose auth/broker schemas hold
    /// anything. Returns the schemas that exist (empty).
    private func checkTargetIsEmpty(logger: Logger) async throws -> Set<String> {
        let connection = try await database.connect(defaultUser: "postgres", logger: logger)
        do {
            var roles: Set<String> = []
            for try await role in try await connection.query("SELECT rolname::text FROM pg_roles WHERE rolname IN ('clau_auth', 'clau_broker')", logger: logger).decode(String.self) {
                roles.insert(role)
            }
            let missing = ["clau_auth", "clau_broker"].filter { !roles.contains($0) }
            guard missing.isEmpty else {
                throw BackupError("target has no role \(missing.joined(separator: ", ")): create the roles first (deploy/README.md, install step 2); nothing was restored")
            }
            var schemas: Set<String> = []
            for try await schema in try await connection.query("SELECT nspname::text FROM pg_namespace WHERE nspname IN ('auth', 'broker')", logger: logger).decode(String.self) {
                schemas.insert(schema)
            }
            var relations: [(String, String, String)] = []
            let query: PostgresQuery = """
                SELECT n.nspname::text, c.relname::text, c.relkind::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE n.nspname IN ('auth', 'broker') UNION ALL
                SELECT n.nspname::text, p.proname::text, 'f' FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                WHERE n.nspname IN ('auth', 'broker') ORDER BY 1, 2
                """
            for try await row in try await connection.query(query, logger: logger).decode((String, String, String).self) {
                relations.append(row)
            }
            if !relations.isEmpty {
                var withRows: [String] = []
                // schema_migrations is bookkeeping: a migrated, unused target reads as "no rows".
                for (schema, name, kind) in relations where (kind == "r" || kind == "p") && name != "schema_migrations" {
                    let quoted = "\"\(schema.replacingOccurrences(of: "\"", with: "\"\""))\".\"\(name.replacingOccurrences(of: "\"", with: "\"\""))\""
                    for try await count in try await connection.query(PostgresQuery(unsafeSQL: "SELECT count(*) FROM ONLY \(quoted)"), logger: logger).decode(Int64.self) where count > 0 {
                        withRows.append("\(schema).\(name) (\(count) rows)")
                    }
                }
                let what = withRows.isEmpty
                    ? "its auth/broker schemas already hold \(relations.count) objects (no rows: migrated?), e.g. \(relations.prefix(3).map { "\($0.0).\($0.1)" }.joined(separator: ", "))"
                    : "it already holds rows: \(withRows.prefix(5).joined(separator: ", "))"
                throw BackupError("target database \(database.database) is not empty: \(what). Restore only into a database whose auth and broker schemas are absent or empty (not migrated); nothing was restored")
            }
            try await connection.close()
            return schemas
        } catch {
            try? await connection.close()
            throw error
        }
    }
}

/// Where pg_dump / pg_restore are, and where scratch files go.
struct PostgresTools: ParsableArguments {
    @Option(help: "Directory of pg_dump/pg_restore (default: the first on PATH). They must be at least the server's version.")
    var pgBindir: String?

    @Option(help: "Parent of the private temporary directory (0700) for the decrypted dump and pg_dump's messages.")
    var scratchDir: String = ProcessInfo.processInfo.environment["TMPDIR"] ?? "/tmp"

    func executable(_ name: String) throws -> String {
        if let pgBindir {
            let path = "\(pgBindir)/\(name)"
            guard pgBindir.hasPrefix("/"), access(path, X_OK) == 0 else { throw BackupError("no executable \(path) (--pg-bindir must be an absolute directory holding \(name))") }
            return path
        }
        let searchPath = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
        guard let path = ChildProcess.find(name, searchPath: searchPath) else {
            throw BackupError("\(name) not found on PATH (install postgresql-client, or give --pg-bindir)")
        }
        return path
    }
}

/// libpq arguments and environment for pg_dump/pg_restore, from clauctl's usual database options.
struct ToolConnection {
    var arguments: [String]
    var password: String?

    /// A fixed environment (none of ours is passed on); the password goes into a 0600 PGPASSFILE
    /// in the scratch directory, never onto a command line.
    func environment(scratch: ScratchDirectory) throws -> [String] {
        var environment = ["PATH=/usr/local/bin:/usr/bin:/bin", "LC_ALL=C", "PGCONNECT_TIMEOUT=15", "PGAPPNAME=clauctl"]
        if let password {
            let escaped = password.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: ":", with: "\\:")
            let path = scratch.path + "/pgpass"
            let writer = try AtomicFileWriter(path: path)
            try writer.write(Array("*:*:*:*:\(escaped)\n".utf8))
            try writer.commit(mode: 0o600, replacing: false)
            environment.append("PGPASSFILE=\(path)")
        }
        return environment
    }
}

extension DatabaseOptions {
    func toolConnection(defaultUser: String) throws -> ToolConnection {
        let username = user ?? defaultUser
        for (name, value) in [("--user", username), ("--database", database)] {
            // Plain identifiers only: anything else could read as a connection string or option.
            guard let first = value.unicodeScalars.first, first == "_" || CharacterSet.letters.contains(first), value.count <= 63,
                  value.unicodeScalars.allSatisfy({ $0.isASCII && (CharacterSet.alphanumerics.contains($0) || $0 == "_") }) else {
                throw ValidationError("\(name) must be a plain identifier (letters, digits, _)")
            }
        }
        var arguments: [String]
        if let socket {
            // clauctl takes the socket file; libpq wants its directory and port.
            guard let slash = socket.lastIndex(of: "/"), socket.hasPrefix("/"),
                  socket[socket.index(after: slash)...].hasPrefix(".s.PGSQL."),
                  let socketPort = Int(socket[socket.index(after: slash)...].dropFirst(9)), (1...65535).contains(socketPort) else {
                throw ValidationError("--socket must be a PostgreSQL socket path like /run/postgresql/.s.PGSQL.5432")
            }
            arguments = ["--host=\(slash == socket.startIndex ? "/" : String(socket[..<slash]))", "--port=\(socketPort)"]
        } else if let host {
            guard !host.isEmpty, !host.contains(where: { $0.isWhitespace || $0 == "\0" }), (1...65535).contains(port) else {
                throw ValidationError("--host must be a host name or address, --port 1-65535")
            }
            arguments = ["--host=\(host)", "--port=\(port)"]
        } else {
            throw ValidationError("give --socket or --host")
        }
        arguments += ["--username=\(username)", "--dbname=\(database)", "--no-password"]
        let password = try passwordFile.map { try SecretFile.readString(at: $0) }
        if let password, password.contains(where: \.isNewline) { throw ValidationError("the password file must hold one line") }
        return ToolConnection(arguments: arguments, password: password)
    }
}

/// A private (0700) temporary directory, removed with everything in it when released.
final class ScratchDirectory: @unchecked Sendable {
    let path: String

    init(parent: String) throws {
        var template = Array("\(parent)/clauctl-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else {
            throw BackupError("cannot create a temporary directory in \(parent): \(String(cString: strerror(errno)))")
        }
        path = String(cString: made)
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }

    /// A new 0600 file for a child's messages.
    func createFile(_ name: String) throws -> Int32 {
        let fd = open(path + "/" + name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard fd >= 0 else { throw BackupError("cannot create \(path)/\(name): \(String(cString: strerror(errno)))") }
        return fd
    }

    /// The last lines of a message file, for an error.
    func tail(_ name: String) -> String {
        let text = (try? String(contentsOfFile: path + "/" + name, encoding: .utf8)) ?? ""
        return text.split(separator: "\n").suffix(5).joined(separator: " | ")
    }
}

/// The timestamped names of `--output-dir` and the pruning of `--keep`.
enum BackupRetention {
    static func fileName(for date: Date) -> String {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC")!
        let c = calendar.dateComponents([.year, .month, .day, .hour, .minute, .second], from: date)
        func digits(_ value: Int?, _ width: Int) -> String {
            let text = String(value ?? 0)
            return String(repeating: "0", count: max(0, width - text.count)) + text
        }
        return "clau-\(digits(c.year, 4))\(digits(c.month, 2))\(digits(c.day, 2))T\(digits(c.hour, 2))\(digits(c.minute, 2))\(digits(c.second, 2))Z.clau-backup"
    }

    /// Only names `fileName` makes: nothing else in the directory is ever deleted.
    static func isBackupName(_ name: String) -> Bool {
        let bytes = Array(name.utf8)
        guard bytes.count == 33, name.hasPrefix("clau-"), name.hasSuffix("Z.clau-backup") else { return false }
        let stamp = bytes[5..<20]
        return stamp.enumerated().allSatisfy { offset, byte in offset == 8 ? byte == UInt8(ascii: "T") : (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) }
    }

    /// Deletes all but the `keep` newest backups in `directory`; returns the paths deleted.
    static func prune(directory: String, keep: Int) throws -> [String] {
        let names = try FileManager.default.contentsOfDirectory(atPath: directory).filter(isBackupName).sorted()
        let old = names.dropLast(keep).map { "\(directory)/\($0)" }
        for path in old where unlink(path) != 0 {
            throw BackupError("cannot remove old backup \(path): \(String(cString: strerror(errno)))")
        }
        return old
    }
}

func openBackup(_ path: String) throws -> Int32 {
    let fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK)
    guard fd >= 0 else { throw BackupError("\(path): cannot open: \(String(cString: strerror(errno)))") }
    return fd
}

/// Runs a PostgreSQL tool to completion; its stdout as text, or an error with its last messages.
private func runTool(_ executable: String, _ arguments: [String], environment: [String], scratch: ScratchDirectory, name: String) throws -> String {
    let output = try scratch.createFile(name + ".out")
    let errors = try scratch.createFile(name + ".err")
    let pid: pid_t
    do {
        pid = try ChildProcess.spawn(executable, arguments, environment: environment, stdout: output, stderr: errors)
    } catch {
        close(output)
        close(errors)
        throw error
    }
    close(output)
    close(errors)
    let status = try ChildProcess.wait(pid, executable: executable)
    guard status.succeeded else {
        throw BackupError("\(URL(fileURLWithPath: executable).lastPathComponent) failed (\(status)); nothing was restored: \(scratch.tail(name + ".err"))")
    }
    return (try? String(contentsOfFile: scratch.path + "/" + name + ".out", encoding: .utf8)) ?? ""
}

/// Blocking work (files, children) on a thread of its own, not on the Swift concurrency pool.
private func onOwnThread<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        Thread.detachNewThread { continuation.resume(with: Result { try work() }) }
    }
}
