/// The vault's methods (Protos/vault.proto). Here, not in VaultService, so that callers (broker,
/// clauctl) can call the vault without linking the module that holds the keys.
public enum VaultAPI {
    public static let service = "clau.vault.Vault"
    /// Callers: broker, admin CLI.
    public static let encrypt = MethodDescriptor<VaultEncryptRequest, VaultEncryptResponse>(service: service, method: "Encrypt")
    /// Callers: broker only.
    public static let decrypt = MethodDescriptor<VaultDecryptRequest, VaultDecryptResponse>(service: service, method: "Decrypt")
    /// Callers: broker, admin CLI. At most `maximumRewrapBatch` items per call.
    public static let rewrap = MethodDescriptor<VaultRewrapRequest, VaultRewrapResponse>(service: service, method: "Rewrap")
    /// Callers: broker, admin CLI.
    public static let keyStatus = MethodDescriptor<VaultKeyStatusRequest, VaultKeyStatusResponse>(service: service, method: "KeyStatus")

    // 2,000 tokens of a 200-byte secret (≈420 bytes each) fit a 1 MiB frame with room to spare.
    public static let maximumRewrapBatch = 2000
}
