import Foundation
import Logging
import RPC

/// The broker's side of the vault: seal a provider credential for one owner and purpose, open it
/// for the one call that needs it, re-wrap stored ciphertexts. The plaintext is returned to the
/// caller and never stored, logged or put in an error.
public struct CredentialVault: Sendable {
    public let client: VaultRPCClient

    public init(client: VaultRPCClient) {
        self.client = client
    }

    /// A stored ciphertext the vault refused to open: tampered, copied from another owner's row
    /// or sealed under a key the vault no longer holds.
    public struct UnopenableCredential: Error, Sendable {}

    public func seal(_ secret: String, for context: CredentialContext, options: CallOptions) async throws -> SealedCredential {
        var request = VaultEncryptRequest()
        request.plaintext = Data(secret.utf8)
        request.context = context.value
        do {
            let response = try await client.encrypt(request, options: options)
            return SealedCredential(ciphertext: response.token, keyID: response.keyID)
        } catch let error as RPCError {
            throw Self.unavailable(error)
        }
    }

    public func open(_ sealed: SealedCredential, for context: CredentialContext, options: CallOptions) async throws -> String {
        var request = VaultDecryptRequest()
        request.token = sealed.ciphertext
        request.context = context.value
        let response: VaultDecryptResponse
        do {
            response = try await client.decrypt(request, options: options)
        } catch let error as RPCError where error.code == .invalidArgument {
            throw UnopenableCredential()
        } catch let error as RPCError {
            throw Self.unavailable(error)
        }
        guard let plaintext = String(data: response.plaintext, encoding: .utf8) else { throw UnopenableCredential() }
        return plaintext
    }

    public func currentKeyID(options: CallOptions) async throws -> String {
        do {
            return try await client.keyStatus(VaultKeyStatusRequest(), options: options).currentKeyID
        } catch let error as RPCError {
            throw Self.unavailable(error)
        }
    }

    /// Re-wraps `items` under the vault's current key: one result per item, nil where the vault
    /// could not open it.
    public func rewrap(_ items: [StoredCiphertext], options: CallOptions) async throws -> [SealedCredential?] {
        var request = VaultRewrapRequest()
        request.items = items.map { item in
            var entry = VaultRewrapItem()
            entry.token = item.sealed.ciphertext
            entry.context = item.context.value
            return entry
        }
        let response: VaultRewrapResponse
        do {
            response = try await client.rewrap(request, options: options)
        } catch let error as RPCError {
            throw Self.unavailable(error)
        }
        guard response.results.count == items.count else {
            throw RPCError(code: .internalError, message: "vault answered \(response.results.count) results for \(items.count) items")
        }
        return response.results.map { $0.ok ? SealedCredential(ciphertext: $0.token, keyID: $0.toKeyID) : nil }
    }

    /// Asks the vault for a new current key; the key ids now held, current first. The
    /// vault's refusals (read-only key source, too many keys) come back as FAILED_PRECONDITION
    /// whose message is the reason's code.
    public func addKey(options: CallOptions) async throws -> [String] {
        do {
            return try await client.addKey(VaultAddKeyRequest(), options: options).keyIds
        } catch let error as RPCError {
            throw Self.keyChangeError(error)
        }
    }

    /// Removes a key that is not current from the vault; the key ids now held, current first.
    public func retireKey(_ keyID: String, options: CallOptions) async throws -> [String] {
        var request = VaultRetireKeyRequest()
        request.keyID = keyID
        do {
            return try await client.retireKey(request, options: options).keyIds
        } catch let error as RPCError {
            throw Self.keyChangeError(error)
        }
    }

    static func keyChangeError(_ error: RPCError) -> RPCError {
        switch error.code {
        case .failedPrecondition: RPCError(code: .failedPrecondition, message: error.details["reason"] ?? "key_change_refused")
        case .notFound: RPCError(code: .notFound, message: "unknown_key")
        default: unavailable(error)
        }
    }

    /// The vault's own errors are not the user's: a refused or failing vault is the broker being
    /// unavailable (its rate limit included), with a deadline passed on as such.
    static func unavailable(_ error: RPCError) -> RPCError {
        switch error.code {
        case .deadlineExceeded: error
        default: RPCError(code: .unavailable, message: "vault_unavailable")
        }
    }
}
