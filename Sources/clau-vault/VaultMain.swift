import ArgumentParser
import ClauSupport
import Foundation
import Logging
import ServiceLifecycle
import UnixSignals
import VaultService

/// `clau-vault`: reads configuration, hardens the process, runs the vault until SIGTERM.
@main
struct VaultMain: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "clau-vault",
        abstract: "The only holder of the Fernet keys: Encrypt/Decrypt/Rewrap over a Unix socket."
    )

    @Option(help: "Socket path.")
    var socket: String = "/run/clau/vault/vault.sock"

    @Option(help: "Socket file mode, octal.")
    var socketMode: String = "0660"

    @Option(help: "Group owning the socket file (name or gid): the broker's and operators' group.")
    var socketGroup: String?

    @Option(help: "Fernet key file (default: $CREDENTIALS_DIRECTORY/fernet-keys). Must be mode 0400/0600.")
    var keyFile: String?

    @Option(name: .customLong("broker-user"), help: "User (name or uid) allowed to call Decrypt. Repeatable.")
    var brokerUsers: [String] = []

    @Option(name: .customLong("admin-user"), help: "User (name or uid) allowed to call Encrypt/Rewrap/KeyStatus, never Decrypt. Repeatable.")
    var adminUsers: [String] = []

    @Option(help: "Decrypt calls per minute per caller before RESOURCE_EXHAUSTED.")
    var decryptsPerMinute: Int = 600

    @Flag(help: "Development mode: allows the key from CLAU_VAULT_DEV_KEY. Never in production.")
    var dev = false

    @Option(help: "Log level.")
    var logLevel: String = "info"

    func run() async throws {
        try await ServiceProcess.run(name: "vault", logLevel: logLevel) { logger in
            let vault = try Vault.build(configuration: try makeConfiguration(), logger: logger)
            let keyReloader = ReloadOnSignal(what: "vault keys", logger: logger) { try vault.reloadKeys() }
            return ServiceProcess.Plan(services: [.init(service: vault.server), .init(service: keyReloader)], startingMetadata: [
                "socket": "\(socket)", "key_ids": "\(vault.handlers.keyIDs.joined(separator: ","))",
            ])
        }
    }

    func makeConfiguration() throws -> VaultConfiguration {
        let environment = ProcessInfo.processInfo.environment
        let keySource: VaultConfiguration.KeySource
        if let keyFile {
            keySource = .file(path: keyFile)
        } else if let path = SecretFile.credentialPath("fernet-keys") {
            keySource = .file(path: path)
        } else if dev, let key = environment["CLAU_VAULT_DEV_KEY"] {
            keySource = .developmentKey(key)
        } else {
            throw StartupError("no Fernet keys: pass --key-file, or run under systemd with LoadCredential=fernet-keys (CLAU_VAULT_DEV_KEY is read only with --dev)")
        }
        if !dev, environment["CLAU_VAULT_DEV_KEY"] != nil {
            throw StartupError("CLAU_VAULT_DEV_KEY is set but --dev is not: refusing to run with a development key in the environment")
        }
        guard let mode = mode_t(socketMode, radix: 8), mode <= 0o777 else { throw StartupError("--socket-mode \(socketMode) is not an octal file mode") }
        let brokers = try Set(brokerUsers.map(UserLookup.uid(of:)))
        guard !brokers.isEmpty else { throw StartupError("--broker-user is required: without it nobody may call Decrypt") }
        var configuration = VaultConfiguration(socketPath: socket, keySource: keySource, brokerUIDs: brokers)
        configuration.socketMode = mode
        configuration.socketGroup = try socketGroup.map(UserLookup.gid(of:))
        configuration.adminUIDs = try Set(adminUsers.map(UserLookup.uid(of:)))
        guard decryptsPerMinute > 0 else { throw StartupError("--decrypts-per-minute must be positive") }
        configuration.decryptsPerMinutePerCaller = decryptsPerMinute
        return configuration
    }
}
