import ArgumentParser
import Foundation
import Logging
import RPC
import SwiftProtobuf
import VaultService

struct VaultCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vault",
        abstract: "Fernet keys of the vault (C-14, R-9, R-11).",
        subcommands: [Keygen.self, Rotate.self, Status.self]
    )

    struct Keygen: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print a new random Fernet key (URL-safe base64) and its public id on stderr.")

        func run() throws {
            let key = FernetKey.generate()
            print(key.base64URLEncoded)
            FileHandle.standardError.write(Data("key id: \(key.id)\n".utf8))
        }
    }

    struct Rotate: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Prepend a new key to the vault's key file (it encrypts from now on; old keys still decrypt).",
            discussion: """
            Writes a temp file, fsyncs it, renames it over the old one and leaves it mode 0400.
            Then send SIGHUP to clau-vault (systemctl reload clau-vault) and re-wrap stored tokens
            so the oldest key can eventually be removed.
            """
        )

        @Option(help: "The key file (e.g. /etc/clau/credentials/fernet-keys).")
        var keyFile: String

        func run() throws {
            let key = FernetKey.generate()
            try FernetKeyFile.rotate(path: keyFile, newKey: key)
            let keys = try FernetKeyFile.load(path: keyFile)
            print("new current key id: \(key.id); key ids now: \(keys.map(\.id).joined(separator: ", "))")
        }
    }

    struct Status: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Ask a running vault which key ids it holds.")

        @Option(help: "The vault's socket.")
        var socket: String = "/run/clau/vault/vault.sock"

        func run() async throws {
            let status = try await callOnce(socket: socket, VaultAPI.keyStatus, VaultKeyStatusRequest())
            print("current key id: \(status.currentKeyID); all: \(status.keyIds.joined(separator: ", "))")
        }
    }
}

/// One call to a service over its socket: connect (3 s), call, disconnect. Operators run
/// clauctl as a uid the service's allowlist names (X-1).
func callOnce<Request: SwiftProtobuf.Message, Response: SwiftProtobuf.Message>(socket: String, _ method: MethodDescriptor<Request, Response>, _ request: Request, timeout: Duration = .seconds(10)) async throws -> Response {
    var logger = Logger(label: "clauctl")
    logger.logLevel = .critical
    let client = UnixSocketClient(configuration: .init(path: socket), logger: logger)
    return try await withThrowingTaskGroup(of: Response?.self) { group in
        group.addTask { try await client.run(); return nil }
        group.addTask {
            try await withTimeout(.seconds(3)) { await client.waitUntilConnected() }
            return try await RPCClient(transport: client).call(method, request, options: CallOptions(timeout: timeout))
        }
        defer { group.cancelAll() }
        while let result = try await group.next() {
            if let result { return result }
        }
        throw RPCError(code: .unavailable, message: "\(method.service) unavailable at \(socket)")
    }
}

/// Runs `body`, failing with UNAVAILABLE when it takes longer than `timeout`.
func withTimeout(_ timeout: Duration, _ body: @escaping @Sendable () async throws -> Void) async throws {
    try await withThrowingTaskGroup(of: Bool.self) { group in
        group.addTask { try await body(); return true }
        group.addTask { try await Task.sleep(for: timeout); return false }
        defer { group.cancelAll() }
        guard try await group.next() == true else {
            throw RPCError(code: .unavailable, message: "no answer within \(timeout)")
        }
    }
}
