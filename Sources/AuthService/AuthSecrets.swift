import ClauSupport
import Crypto
import Foundation

/// Keys derived from the auth process's one secret (HKDF-SHA256, one label per use), so a key
/// for one purpose never doubles as another. `description` never shows key material.
public struct AuthSecrets: Sendable, CustomStringConvertible {
    public static let minimumSecretBytes = 32

    /// HMAC key of reset codes (C-5).
    public let resetCodeKey: SymmetricKey
    /// HMAC key of API keys.
    public let apiKeyKey: SymmetricKey
    /// HMAC key of client IPs.
    public let ipHashKey: SymmetricKey
    /// AES-GCM key of TOTP secrets at rest.
    public let totpEncryptionKey: SymmetricKey

    public var description: String { "AuthSecrets(<redacted>)" }

    public init(secret: [UInt8]) throws {
        guard secret.count >= Self.minimumSecretBytes else {
            throw StartupError("the auth secret must be at least \(Self.minimumSecretBytes) bytes (got \(secret.count))")
        }
        let input = SymmetricKey(data: secret)
        func derive(_ label: String) -> SymmetricKey {
            HKDF<SHA256>.deriveKey(inputKeyMaterial: input, salt: Array("clau-auth-v1".utf8), info: Array(label.utf8), outputByteCount: 32)
        }
        resetCodeKey = derive("reset-code")
        apiKeyKey = derive("api-key")
        ipHashKey = derive("ip-hash")
        totpEncryptionKey = derive("totp-secret")
    }

    /// A random secret, for tests and development.
    public static func random() -> AuthSecrets {
        // Cannot fail: 32 random bytes.
        try! AuthSecrets(secret: SecureRandom.bytes(32))
    }

    /// Encrypts a TOTP secret for storage, bound to its user (AAD): a row copied to another user
    /// does not decrypt.
    func sealTOTPSecret(_ secret: [UInt8], userID: UUID) throws -> Data {
        let box = try AES.GCM.seal(secret, using: totpEncryptionKey, authenticating: Array(userID.uuidString.lowercased().utf8))
        guard let combined = box.combined else { throw StartupError("AES-GCM produced no combined form") }
        return combined
    }

    func openTOTPSecret(_ sealed: Data, userID: UUID) -> [UInt8]? {
        guard let box = try? AES.GCM.SealedBox(combined: sealed),
              let plain = try? AES.GCM.open(box, using: totpEncryptionKey, authenticating: Array(userID.uuidString.lowercased().utf8))
        else { return nil }
        return Array(plain)
    }
}
