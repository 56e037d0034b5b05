import Foundation
import Logging
import NIOPosix
import RPC
import Synchronization

/// The vault's RPC methods over a `ContextBoundCipher`. Keys can be reloaded (after
/// `clauctl vault rotate`) without a restart; calls in flight keep the keys they started with.
public final class VaultHandlers: VaultRPCHandler {
    private let cipher: Mutex<ContextBoundCipher>
    private let decryptLimiter: PerCallerRateLimiter
    private let audit: Logger
    /// The key file `AddKey`/`RetireKey` rewrite; nil when the keys cannot be written (the
    /// development key).
    private let keyFile: String?
    /// Serialises key-file changes with the reload that follows each, so the keys in memory are
    /// always those of the file's latest version.
    private let keyFileChange = Mutex(())

    public init(keys: [FernetKey], keyFile: String? = nil, decryptsPerMinutePerCaller: Int, logger: Logger) throws {
        self.cipher = Mutex(try ContextBoundCipher(keys: keys))
        self.keyFile = keyFile
        self.decryptLimiter = PerCallerRateLimiter(limit: decryptsPerMinutePerCaller, window: .seconds(60))
        var audit = logger
        audit[metadataKey: "audit"] = "true"
        self.audit = audit
    }

    public var keyIDs: [String] { cipher.withLock { $0.fernet.keys.map(\.id) } }

    /// Replaces the key set (first key encrypts). Audited as a key rotation (R-19).
    public func reload(keys: [FernetKey]) throws {
        let new = try ContextBoundCipher(keys: keys)
        let previous = cipher.withLock { cipher in
            defer { cipher = new }
            return cipher.fernet.currentKeyID
        }
        audit.notice("vault keys loaded", metadata: [
            "event": "key_rotation", "risk": "medium",
            "previous_key_id": "\(previous)", "current_key_id": "\(new.fernet.currentKeyID)", "key_count": "\(keys.count)",
        ])
    }

    /// A key generated here becomes current only once the key file holds it (fsynced), so no
    /// token is ever sealed under a key that a restart would lose. File I/O runs on NIO's thread
    /// pool, not on the caller's event loop.
    public func addKey(_ request: VaultAddKeyRequest, _ context: ServerContext) async throws -> VaultAddKeyResponse {
        let ids = try await changeKeyFile(context: context, event: "vault_key_added") { path, keys in
            guard keys.count < VaultAPI.maximumKeys else {
                throw KeyFileRefusal(code: "too_many_keys", message: "the vault holds \(keys.count) keys, the most it takes: retire an old key first")
            }
            try FernetKeyFile.rotate(path: path, newKey: FernetKey.generate())
        }
        var response = VaultAddKeyResponse()
        response.currentKeyID = ids[0]
        response.keyIds = ids
        return response
    }

    /// Removes a key that is not current. The broker calls this only after checking that no
    /// stored ciphertext is under the key.
    public func retireKey(_ request: VaultRetireKeyRequest, _ context: ServerContext) async throws -> VaultRetireKeyResponse {
        let keyID = request.keyID
        let ids = try await changeKeyFile(context: context, event: "vault_key_retired") { path, keys in
            try FernetKeyFile.remove(path: path, keyID: keyID)
        }
        var response = VaultRetireKeyResponse()
        response.currentKeyID = ids[0]
        response.keyIds = ids
        return response
    }

    /// A refusal that is the caller's to fix (FAILED_PRECONDITION with a code).
    struct KeyFileRefusal: Error {
        var code: String
        var message: String
    }

    /// Runs `change` on the key file, then reloads it; audited either way (R-19). Returns the
    /// key ids now in use, current first.
    private func changeKeyFile(
        context: ServerContext, event: String,
        _ change: @escaping @Sendable (String, [FernetKey]) throws -> Void
    ) async throws -> [String] {
        var metadata: Logger.Metadata = [
            "event": "\(event)", "risk": "high", "caller_uid": "\(context.peer.uid)", "caller_pid": "\(context.peer.pid)",
            "request_id": "\(context.requestID)",
        ]
        guard let keyFile else {
            throw RPCError(code: .failedPrecondition, message: "the development key cannot be rotated", details: ["reason": "key_source_read_only"])
        }
        do {
            let ids = try await NIOThreadPool.singleton.runIfActive { [self] in
                try keyFileChange.withLock { _ in
                    try change(keyFile, cipher.withLock { $0.fernet.keys })
                    let keys = try FernetKeyFile.load(path: keyFile)
                    try reload(keys: keys)
                    return keys.map(\.id)
                }
            }
            metadata["result"] = "ok"
            metadata["current_key_id"] = "\(ids[0])"
            metadata["key_count"] = "\(ids.count)"
            audit.notice("vault key file changed", metadata: metadata)
            return ids
        } catch {
            let rpcError: RPCError = switch error {
            case let refusal as KeyFileRefusal:
                RPCError(code: .failedPrecondition, message: refusal.message, details: ["reason": refusal.code])
            case FernetKeyFileError.unknownKey:
                RPCError(code: .notFound, message: "the vault holds no such key")
            case FernetKeyFileError.currentKey:
                RPCError(code: .failedPrecondition, message: "the current key cannot be retired", details: ["reason": "current_key"])
            case FernetKeyFileError.writeFailed, FernetKeyFileError.unreadable:
                // e.g. a read-only systemd credential: the operator rotates the source file instead.
                RPCError(code: .failedPrecondition, message: "the vault cannot write its key file; rotate it with `clauctl vault rotate` and restart the vault", details: ["reason": "key_source_read_only"])
            default:
                RPCError(code: .internalError, message: "internal error")
            }
            metadata["result"] = "refused"
            metadata["reason"] = "\(rpcError.details["reason"] ?? rpcError.code.description)"
            metadata["error"] = "\(error)"
            audit.warning("vault key file change refused", metadata: metadata)
            throw rpcError
        }
    }

    /// Every method of Protos/vault.proto's `service Vault` (generated: vault.rpc.swift).
    public func router() -> RPCRouter { rpcRouter() }

    /// Ids and count only, never keys.
    public func keyStatus(_ request: VaultKeyStatusRequest, _ context: ServerContext) throws -> VaultKeyStatusResponse {
        let ids = keyIDs
        var response = VaultKeyStatusResponse()
        response.currentKeyID = ids[0]
        response.keyIds = ids
        return response
    }

    /// Decrypt for the broker only; Encrypt/Rewrap/KeyStatus for the broker and operators (X-1), as
    /// the proto's `callers:` lines say.
    public static func accessPolicy(brokerUIDs: Set<UInt32>, adminUIDs: Set<UInt32>) -> RPCAccessPolicy {
        VaultAPI.accessPolicy(callers: VaultRPCCallers(broker: CallerAllowlist(uids: brokerUIDs), admin: CallerAllowlist(uids: adminUIDs)))
    }

    private var currentCipher: ContextBoundCipher { cipher.withLock { $0 } }

    public func encrypt(_ request: VaultEncryptRequest, _ context: ServerContext) throws -> VaultEncryptResponse {
        guard request.plaintext.count <= VaultAPI.maximumPlaintextBytes else {
            throw RPCError(code: .invalidArgument, message: "plaintext is over \(VaultAPI.maximumPlaintextBytes) bytes", details: ["field": "plaintext"])
        }
        let cipher = currentCipher
        do {
            var response = VaultEncryptResponse()
            response.token = try cipher.encrypt(plaintext: Array(request.plaintext), context: request.context)
            response.keyID = cipher.fernet.currentKeyID
            return response
        } catch {
            throw Self.rpcError(for: error)
        }
    }

    public func decrypt(_ request: VaultDecryptRequest, _ context: ServerContext) throws -> VaultDecryptResponse {
        var event: Logger.Metadata = [
            "event": "vault_decrypt", "caller_uid": "\(context.peer.uid)", "caller_pid": "\(context.peer.pid)",
            "context": "\(Self.loggableContext(request.context))", "request_id": "\(context.requestID)",
        ]
        guard decryptLimiter.admit(caller: context.peer.uid) else {
            event["result"] = "rate_limited"
            event["risk"] = "high"
            audit.warning("vault decrypt refused: rate limit", metadata: event)
            throw RPCError(code: .resourceExhausted, message: "decrypt rate limit exceeded", details: ["retry_after_seconds": "60"])
        }
        do {
            let opened = try currentCipher.decrypt(token: request.token, context: request.context)
            event["result"] = "ok"
            event["risk"] = "low"
            event["key_id"] = "\(opened.keyID)"
            audit.info("vault decrypt", metadata: event)
            var response = VaultDecryptResponse()
            response.plaintext = Data(opened.plaintext)
            response.keyID = opened.keyID
            return response
        } catch {
            event["result"] = "invalid_token"
            event["risk"] = "medium"
            audit.warning("vault decrypt failed", metadata: event)
            throw Self.rpcError(for: error)
        }
    }

    public func rewrap(_ request: VaultRewrapRequest, _ context: ServerContext) throws -> VaultRewrapResponse {
        guard request.items.count <= VaultAPI.maximumRewrapBatch else {
            throw RPCError(code: .invalidArgument, message: "at most \(VaultAPI.maximumRewrapBatch) items per Rewrap call")
        }
        guard request.items.reduce(0, { $0 + VaultAPI.rewrapCost(of: $1) }) <= VaultAPI.maximumRewrapBatchBytes else {
            throw RPCError(code: .invalidArgument, message: "at most \(VaultAPI.maximumRewrapBatchBytes) bytes of tokens per Rewrap call")
        }
        let cipher = currentCipher
        var response = VaultRewrapResponse()
        response.results.reserveCapacity(request.items.count)
        var failed = 0
        var fromKeys: [String: Int] = [:]
        for item in request.items {
            var result = VaultRewrapResult()
            if let rewrapped = try? cipher.rewrap(token: item.token, context: item.context) {
                result.ok = true
                result.token = rewrapped.token
                result.fromKeyID = rewrapped.oldKeyID
                result.toKeyID = rewrapped.newKeyID
                fromKeys[rewrapped.oldKeyID, default: 0] += 1
            } else {
                failed += 1
            }
            response.results.append(result)
        }
        // One audit line per call: a rotation over 100,000 tokens is 50 lines, not 100,000.
        audit.notice("vault rewrap", metadata: [
            "event": "vault_rewrap", "risk": failed > 0 ? "medium" : "low",
            "caller_uid": "\(context.peer.uid)", "caller_pid": "\(context.peer.pid)", "request_id": "\(context.requestID)",
            "items": "\(request.items.count)", "failed": "\(failed)",
            "from_key_ids": "\(fromKeys.keys.sorted().map { "\($0):\(fromKeys[$0]!)" }.joined(separator: ","))",
            "to_key_id": "\(cipher.fernet.currentKeyID)",
            "result": failed == 0 ? "ok" : "partial",
        ])
        return response
    }

    static func rpcError(for error: any Error) -> RPCError {
        switch error as? FernetError {
        case .invalidContext: RPCError(code: .invalidArgument, message: "context must be 1-255 visible ASCII characters")
        case .invalidToken: RPCError(code: .invalidArgument, message: "token is not valid for this context")
        default: RPCError(code: .internalError, message: "internal error")
        }
    }

    /// Contexts are identifiers like `alpaca:user:<uuid>`, not secrets, but they come from the
    /// caller: keep them short and printable in the log.
    static func loggableContext(_ context: String) -> String {
        String(context.unicodeScalars.prefix(80).filter { $0.isASCII && $0.value > 0x20 && $0.value < 0x7F }.map(Character.init))
    }
}

/// Sliding-window limit per caller uid, approximated with two fixed windows (the previous
/// window's count weighted by how much of it still overlaps): O(1) time and memory per caller
/// whatever the limit.
final class PerCallerRateLimiter: Sendable {
    private struct Counter {
        var windowStart: ContinuousClock.Instant
        var current: Int = 0
        var previous: Int = 0
    }

    private let limit: Int
    private let window: Duration
    private let counters = Mutex<[UInt32: Counter]>([:])

    init(limit: Int, window: Duration) {
        self.limit = limit
        self.window = window
    }

    func admit(caller: UInt32, now: ContinuousClock.Instant = .now) -> Bool {
        counters.withLock { counters in
            var counter = counters[caller] ?? Counter(windowStart: now)
            let elapsed = now - counter.windowStart
            if elapsed >= window {
                counter.previous = elapsed < window * 2 ? counter.current : 0
                counter.current = 0
                counter.windowStart = elapsed < window * 2 ? counter.windowStart + window : now
            }
            let overlap = 1 - (now - counter.windowStart) / window
            let estimate = Double(counter.previous) * max(0, overlap) + Double(counter.current)
            guard estimate < Double(limit) else {
                counters[caller] = counter
                return false
            }
            counter.current += 1
            counters[caller] = counter
            return true
        }
    }
}
