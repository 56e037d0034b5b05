import Foundation
import Logging
import RPC

/// Fernet key rotation (R-11). `BeginKeyRotation` makes the vault add a key (it becomes the current
/// one); then `RewrapAll` is called until `done`: each call re-wraps one batch of the ciphertexts
/// still under an older key. Batches are picked by key id, so a crashed run is resumed by calling
/// again; once no ciphertext is under an old key, `RetireKey` takes it out of the vault.
extension BrokerHandlers {
    /// Items per `Rewrap` call when the request names no size.
    public static let defaultRewrapBatch = 500

    public func rewrapAll(_ request: BrokerRewrapAllRequest, _ context: ServerContext) async throws -> BrokerRewrapAllResponse {
        let limit = request.batchSize == 0 ? Self.defaultRewrapBatch : min(Int(request.batchSize), VaultAPI.maximumRewrapBatch)
        let options = context.downstreamOptions()
        let currentKeyID = try await vault.currentKeyID(options: options)
        let candidates = try await store.staleCiphertexts(currentKeyID: currentKeyID, limit: limit, logger: context.logger)
        // Cut the batch where it would pass the vault's byte limit (frames stay under 1 MiB).
        var batch: [StoredCiphertext] = []
        var bytes = 0
        for candidate in candidates {
            let cost = candidate.sealed.ciphertext.utf8.count + candidate.context.value.utf8.count
            if !batch.isEmpty, bytes + cost > VaultAPI.maximumRewrapBatchBytes { break }
            batch.append(candidate)
            bytes += cost
        }
        var rewrapped: UInt64 = 0
        var failed: UInt64 = 0
        if !batch.isEmpty {
            let results = try await vault.rewrap(batch, options: options)
            for (stored, result) in zip(batch, results) {
                if let result {
                    if try await store.replaceCiphertext(stored, with: result, logger: context.logger) { rewrapped += 1 }
                } else {
                    failed += 1
                    try await store.markUndecryptable(stored, logger: context.logger)
                }
            }
        }
        let counts = try await store.ciphertextCounts(currentKeyID: currentKeyID, logger: context.logger)
        context.logger.notice("fernet re-wrap batch", metadata: [
            "event": "key_rotation", "risk": "high", "rewrapped": "\(rewrapped)", "failed": "\(failed)",
            "remaining": "\(counts.stale)", "current_key_id": "\(currentKeyID)", "caller_uid": "\(context.peer.uid)",
        ])
        var response = BrokerRewrapAllResponse()
        response.rewrapped = rewrapped
        response.failed = failed
        response.remaining = counts.stale
        response.done = counts.stale == 0
        response.currentKeyID = currentKeyID
        return response
    }

    public func rotationStatus(_ request: BrokerRotationStatusRequest, _ context: ServerContext) async throws -> BrokerRotationStatusResponse {
        let currentKeyID = try await vault.currentKeyID(options: context.downstreamOptions())
        let counts = try await store.ciphertextCounts(currentKeyID: currentKeyID, logger: context.logger)
        var response = BrokerRotationStatusResponse()
        response.currentKeyID = currentKeyID
        response.ciphertextsByKeyID = counts.byKeyID
        response.stale = counts.stale
        return response
    }

    public func beginKeyRotation(_ request: BrokerBeginKeyRotationRequest, _ context: ServerContext) async throws -> BrokerBeginKeyRotationResponse {
        let options = context.downstreamOptions()
        let vault = self.vault
        let (addKey, currentKeyID, stale) = try await store.whileHoldingRotationLock(logger: context.logger) { counts in
            let currentKeyID = try await vault.currentKeyID(options: options)
            let before = try await counts(currentKeyID)
            // An unfinished re-wrap is finished first: adding a key now would leave ciphertexts
            // under two old keys, and a retried request would pile up keys.
            guard before.stale == 0 else { return (false, currentKeyID, before.stale) }
            let newKeyID = try await vault.addKey(options: options)[0]
            // Under the new key, every openable ciphertext is stale: no second count needed.
            return (true, newKeyID, before.openable)
        }
        context.logger.notice("fernet key rotation", metadata: [
            "event": "key_rotation", "risk": "high", "key_added": "\(addKey)", "current_key_id": "\(currentKeyID)",
            "stale": "\(stale)", "caller_uid": "\(context.peer.uid)",
        ])
        var response = BrokerBeginKeyRotationResponse()
        response.keyAdded = addKey
        response.currentKeyID = currentKeyID
        response.stale = stale
        return response
    }

    /// Only once no ciphertext that a key still opens is under `key_id`: retiring it earlier would
    /// lose those credentials for good.
    public func retireKey(_ request: BrokerRetireKeyRequest, _ context: ServerContext) async throws -> BrokerRetireKeyResponse {
        let keyID = request.keyID
        _ = try UntrustedText.check(keyID, field: "key_id", maximumLength: 64)
        let options = context.downstreamOptions()
        let currentKeyID = try await vault.currentKeyID(options: options)
        guard keyID != currentKeyID else { throw RPCError(code: .failedPrecondition, message: "current_key") }
        let counts = try await store.ciphertextCounts(currentKeyID: currentKeyID, logger: context.logger)
        let needed = counts.openableByKeyID[keyID] ?? 0
        guard needed == 0 else {
            context.logger.warning("fernet key retirement refused", metadata: [
                "event": "key_rotation", "risk": "high", "key_id": "\(keyID)", "ciphertexts": "\(needed)", "caller_uid": "\(context.peer.uid)",
            ])
            throw RPCError(code: .failedPrecondition, message: "key_in_use", details: ["ciphertexts": "\(needed)"])
        }
        let ids = try await vault.retireKey(keyID, options: options)
        context.logger.notice("fernet key retired", metadata: [
            "event": "key_rotation", "risk": "high", "key_id": "\(keyID)", "current_key_id": "\(ids.first ?? "")",
            "caller_uid": "\(context.peer.uid)",
        ])
        var response = BrokerRetireKeyResponse()
        response.currentKeyID = ids.first ?? ""
        response.keyIds = ids
        return response
    }
}
