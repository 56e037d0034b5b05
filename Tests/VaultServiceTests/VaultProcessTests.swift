import Foundation
import RPC
import TestSupport
import Testing

/// The real `clau-vault` binary, run as its own system user, called by clients running as other
/// users (privilege separation, SPEC §1). Needs root to create users; skips with a reason otherwise.
@Suite("clau-vault process", .serialized, .timeLimit(.minutes(5)))
struct VaultProcessTests {
    static let vaultUser = "clau-test-vault"
    static let brokerUser = "clau-test-broker"

    struct Deployment {
        var directory: String
        var binary: String
        var keyFile: String
        var socket: String
        var client: String
    }

    /// Binary, key file and socket directory readable by the vault user only where they must be.
    func deploy(keyFileMode: mode_t = 0o400) throws -> Deployment {
        let directory = try makeWorldReadableTemporaryDirectory(prefix: "clau-vault-proc")
        let binary = try SpawnedProcess.installBuiltProduct("clau-vault", in: directory)
        let vaultUser = try ensureSystemUser(Self.vaultUser)
        let keyFile = directory + "/fernet-keys"
        let key = try Shell.run(repositoryRoot + "/.build/debug/clauctl", ["vault", "keygen"])
        try Data(key.utf8).write(to: URL(fileURLWithPath: keyFile))
        chown(keyFile, vaultUser.uid, vaultUser.gid)
        chmod(keyFile, keyFileMode)
        let runDirectory = directory + "/run"
        try FileManager.default.createDirectory(atPath: runDirectory, withIntermediateDirectories: false)
        chown(runDirectory, vaultUser.uid, vaultUser.gid)
        chmod(runDirectory, 0o755)
        return Deployment(directory: directory, binary: binary, keyFile: keyFile, socket: runDirectory + "/vault.sock", client: try copyFixtureToWorldReadableDirectory("rpc_call.py"))
    }

    func startVault(_ deployment: Deployment) throws -> SpawnedProcess {
        try SpawnedProcess.start(as: Self.vaultUser, deployment.binary, [
            "--socket", deployment.socket, "--socket-mode", "0666",
            "--key-file", deployment.keyFile, "--broker-user", Self.brokerUser,
        ], outputPath: deployment.directory + "/vault.log")
    }

    /// Calls the vault with the Python client (written from docs/rpc.md) as `user`.
    func call(_ deployment: Deployment, as user: String?, group: String? = nil, _ method: String, _ payload: [UInt8]) async throws -> (code: Int, payload: [UInt8]) {
        let hex = payload.map { String(format: "%02x", $0) }.joined()
        let command = user.map { ["--reuid=\($0)", "--regid=\(group ?? $0)", "--init-groups", "--no-new-privs", "/usr/bin/python3"] } ?? []
        let output = user == nil
            ? try await Shell.run("/usr/bin/python3", [deployment.client, deployment.socket, method, hex])
            : try await Shell.run("/usr/bin/setpriv", command + [deployment.client, deployment.socket, method, hex])
        let reply = try #require(try JSONSerialization.jsonObject(with: Data(output.utf8)) as? [String: Any])
        let payloadHex = reply["payload_hex"] as? String ?? ""
        var bytes: [UInt8] = []
        var index = payloadHex.startIndex
        while index < payloadHex.endIndex {
            let next = payloadHex.index(index, offsetBy: 2)
            bytes.append(UInt8(payloadHex[index..<next], radix: 16)!)
            index = next
        }
        return (reply["code"] as? Int ?? -1, bytes)
    }

    @Test func onlyTheBrokerUidCanDecryptAcrossProcesses_X1() async throws {
        guard getuid() == 0 else {
            print("SKIP onlyTheBrokerUidCanDecryptAcrossProcesses_X1: needs root to create service users (uid \(getuid()))")
            return
        }
        let brokerUser = try ensureSystemUser(Self.brokerUser)
        defer { removeSystemUser(Self.brokerUser); removeSystemUser(Self.vaultUser) }
        let deployment = try deploy()
        defer { try? FileManager.default.removeItem(atPath: deployment.directory) }
        let vault = try startVault(deployment)
        defer { vault.kill() }
        try await waitForFile(deployment.socket)

        var encrypt = VaultEncryptRequest()
        encrypt.plaintext = Data("alpaca-oauth-secret-123".utf8)
        encrypt.context = "alpaca:user:42"
        let sealed = try await call(deployment, as: Self.brokerUser, VaultAPI.encrypt.fullName, try encrypt.serializedBytes())
        #expect(sealed.code == 0)
        let token = try VaultEncryptResponse(serializedBytes: sealed.payload).token

        var decrypt = VaultDecryptRequest()
        decrypt.token = token
        decrypt.context = "alpaca:user:42"
        let request: [UInt8] = try decrypt.serializedBytes()
        let asBroker = try await call(deployment, as: Self.brokerUser, VaultAPI.decrypt.fullName, request)
        #expect(asBroker.code == 0)
        #expect(String(decoding: try VaultDecryptResponse(serializedBytes: asBroker.payload).plaintext, as: UTF8.self) == "alpaca-oauth-secret-123")

        // Anyone else — another user, and even root — is refused by uid.
        let asNobody = try await call(deployment, as: "nobody", group: "nogroup", VaultAPI.decrypt.fullName, request)
        #expect(asNobody.code == Int(RPCError.Code.permissionDenied.rawValue))
        let asRoot = try await call(deployment, as: nil, VaultAPI.decrypt.fullName, request)
        #expect(asRoot.code == Int(RPCError.Code.permissionDenied.rawValue))

        // Hardened: no core dumps (C-11).
        let limits = try String(contentsOfFile: "/proc/\(vault.pid)/limits", encoding: .utf8)
        let coreLine = limits.split(separator: "\n").first { $0.hasPrefix("Max core file size") }
        #expect(coreLine?.split(separator: " ", omittingEmptySubsequences: true).dropFirst(4).first == "0", "\(coreLine ?? "")")

        vault.signal(SIGTERM)
        #expect(try await vault.waitForExit() == 0)
        #expect(!FileManager.default.fileExists(atPath: deployment.socket), "socket removed on shutdown")

        // Audit: one line per decrypt with the caller; never the secret or the key.
        let log = vault.output
        let key = try String(contentsOfFile: deployment.keyFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(log.contains("\"event\":\"vault_decrypt\""))
        #expect(log.contains("\"caller_uid\":\"\(brokerUser.uid)\""))
        #expect(log.contains("\"event\":\"permission_denied\""))
        #expect(!log.contains("alpaca-oauth-secret-123"))
        #expect(!log.contains(key))
    }

    @Test func refusesToStartWithAGroupReadableKeyFile_R10() async throws {
        guard getuid() == 0 else {
            print("SKIP refusesToStartWithAGroupReadableKeyFile_R10: needs root to create service users (uid \(getuid()))")
            return
        }
        try ensureSystemUser(Self.brokerUser)
        defer { removeSystemUser(Self.brokerUser); removeSystemUser(Self.vaultUser) }
        let deployment = try deploy(keyFileMode: 0o644)
        defer { try? FileManager.default.removeItem(atPath: deployment.directory) }
        let vault = try startVault(deployment)
        defer { vault.kill() }
        #expect(try await vault.waitForExit() == 1)
        #expect(vault.output.contains(deployment.keyFile))
        #expect(vault.output.contains("644"))
        #expect(!FileManager.default.fileExists(atPath: deployment.socket))
    }
}
