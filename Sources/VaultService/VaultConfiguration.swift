#if canImport(Glibc)
import Glibc
#endif

/// Everything `clau-vault` reads at start. Each key is documented; the executable maps its
/// command-line options onto this one-to-one.
public struct VaultConfiguration: Sendable {
    /// Where the vault listens, e.g. /run/clau/vault.sock.
    public var socketPath: String
    /// Mode of the socket file. Default 0660: owner and the socket group only.
    public var socketMode: mode_t = 0o660
    /// Group owning the socket file: the group of the processes allowed to connect (the broker and
    /// the operators who run clauctl). Nil keeps the vault's own group.
    public var socketGroup: gid_t?
    /// Where the Fernet keys come from: a key file (one key per line, newest first) that only the
    /// vault's user can read, or, in development mode only, a single key from the environment.
    public var keySource: KeySource
    /// uids allowed to call Decrypt (the broker's), and Encrypt/Rewrap/KeyStatus.
    public var brokerUIDs: Set<uid_t>
    /// uids allowed to call Encrypt/Rewrap/KeyStatus but never Decrypt (operators running clauctl).
    public var adminUIDs: Set<uid_t> = []
    /// Decrypt calls each caller uid may make per minute before RESOURCE_EXHAUSTED, so that a
    /// compromised broker cannot bulk-export every stored token unnoticed. Default 600.
    public var decryptsPerMinutePerCaller: Int = 600
    /// Largest RPC frame accepted. Default 1 MiB.
    public var maximumFrameLength: Int = 1 << 20

    public enum KeySource: Sendable, Equatable {
        /// A key file: `$CREDENTIALS_DIRECTORY/fernet-keys` under systemd, or `--key-file`.
        case file(path: String)
        /// Development only: one base64url key from `CLAU_VAULT_DEV_KEY`.
        case developmentKey(String)
    }

    public init(socketPath: String, keySource: KeySource, brokerUIDs: Set<uid_t>) {
        self.socketPath = socketPath
        self.keySource = keySource
        self.brokerUIDs = brokerUIDs
    }
}
