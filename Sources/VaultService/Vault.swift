import ClauSupport
import Logging
import RPC
import ServiceLifecycle

/// The vault process: its keys, its handlers and its socket server. `clau-vault`'s `@main` only
/// parses configuration and runs `buildVault(configuration:logger:)`; tests call it too.
public struct Vault: Sendable {
    public let handlers: VaultHandlers
    public let server: UnixSocketServer
    public let configuration: VaultConfiguration

    /// Loads the keys (refusing unsafe key files) and builds the server. Throws an error that
    /// names the setting or file at fault, never key material.
    public static func build(configuration: VaultConfiguration, logger: Logger) throws -> Vault {
        let keys = try loadKeys(configuration.keySource)
        let keyFile: String? = if case .file(let path) = configuration.keySource { path } else { nil }
        let handlers = try VaultHandlers(keys: keys, keyFile: keyFile, decryptsPerMinutePerCaller: configuration.decryptsPerMinutePerCaller, logger: logger)
        var serverConfiguration = UnixSocketServer.Configuration(path: configuration.socketPath)
        serverConfiguration.socketMode = configuration.socketMode
        serverConfiguration.socketGroup = configuration.socketGroup
        serverConfiguration.maximumFrameLength = configuration.maximumFrameLength
        let core = RPCServerCore(
            router: handlers.router(),
            accessPolicy: VaultHandlers.accessPolicy(brokerUIDs: configuration.brokerUIDs, adminUIDs: configuration.adminUIDs),
            logger: logger
        )
        return Vault(handlers: handlers, server: UnixSocketServer(configuration: serverConfiguration, core: core, logger: logger), configuration: configuration)
    }

    /// Re-reads the key source (on SIGHUP, after `clauctl vault rotate`).
    public func reloadKeys() throws {
        try handlers.reload(keys: Self.loadKeys(configuration.keySource))
    }

    static func loadKeys(_ source: VaultConfiguration.KeySource) throws -> [FernetKey] {
        switch source {
        case .file(let path):
            return try FernetKeyFile.load(path: path)
        case .developmentKey(let encoded):
            do {
                return [try FernetKey(base64URL: encoded)]
            } catch {
                throw StartupError("CLAU_VAULT_DEV_KEY is not a valid Fernet key (32 bytes, URL-safe base64)")
            }
        }
    }
}

