import Foundation
import Logging
import RPC
import TestSupport
import Testing
@testable import VaultService

private let quietLogger: Logger = {
    var logger = Logger(label: "vault-test")
    logger.logLevel = .critical
    return logger
}()

/// Writes keys to a 0400 key file in a fresh directory.
private func makeKeyFile(_ keys: [FernetKey], mode: mode_t = 0o400) throws -> String {
    let directory = try makeWorldReadableTemporaryDirectory(prefix: "clau-vault-keys")
    let path = directory + "/fernet-keys"
    let text = keys.map(\.base64URLEncoded).joined(separator: "\n") + "\n"
    try Data(text.utf8).write(to: URL(fileURLWithPath: path))
    chmod(path, mode)
    return path
}

private let broker = PeerCredentials(pid: 10, uid: 991, gid: 991)
private let operatorCLI = PeerCredentials(pid: 11, uid: 992, gid: 992)
private let edge = PeerCredentials(pid: 12, uid: 993, gid: 993)

private func inProcessVault(keyFile: String, decryptsPerMinute: Int = 600) throws -> Vault {
    var configuration = VaultConfiguration(socketPath: "/unused", keySource: .file(path: keyFile), brokerUIDs: [broker.uid])
    configuration.adminUIDs = [operatorCLI.uid]
    configuration.decryptsPerMinutePerCaller = decryptsPerMinute
    return try Vault.build(configuration: configuration, logger: quietLogger)
}

private func client(_ vault: Vault, as peer: PeerCredentials) -> RPCClient {
    let core = RPCServerCore(router: vault.handlers.router(), accessPolicy: VaultHandlers.accessPolicy(brokerUIDs: vault.configuration.brokerUIDs, adminUIDs: vault.configuration.adminUIDs), logger: quietLogger)
    return RPCClient(transport: InProcessTransport(server: core, peer: peer))
}

private func encryptRequest(_ secret: String, _ context: String) -> VaultEncryptRequest {
    var request = VaultEncryptRequest()
    request.plaintext = Data(secret.utf8)
    request.context = context
    return request
}

private func decryptRequest(_ token: String, _ context: String) -> VaultDecryptRequest {
    var request = VaultDecryptRequest()
    request.token = token
    request.context = context
    return request
}

@Suite("Vault service", .timeLimit(.minutes(5)))
struct VaultServiceTests {
    @Test func brokerEncryptsAndDecryptsBoundToContext_X4() async throws {
        let key = FernetKey.generate()
        let vault = try inProcessVault(keyFile: makeKeyFile([key]))
        let rpc = client(vault, as: broker)
        let sealed = try await rpc.call(VaultAPI.encrypt, encryptRequest("alpaca-oauth-token", "alpaca:user:A"))
        #expect(sealed.keyID == key.id)
        #expect(!sealed.token.contains("alpaca-oauth-token"))
        let opened = try await rpc.call(VaultAPI.decrypt, decryptRequest(sealed.token, "alpaca:user:A"))
        #expect(String(decoding: opened.plaintext, as: UTF8.self) == "alpaca-oauth-token")

        // The same token copied into user B's row does not open there.
        let moved = await #expect(throws: RPCError.self) { try await rpc.call(VaultAPI.decrypt, decryptRequest(sealed.token, "alpaca:user:B")) }
        let wrongKey = try inProcessVault(keyFile: makeKeyFile([FernetKey.generate()]))
        let foreign = await #expect(throws: RPCError.self) { try await client(wrongKey, as: broker).call(VaultAPI.decrypt, decryptRequest(sealed.token, "alpaca:user:A")) }
        #expect(moved == foreign, "wrong context must fail exactly like a wrong key")
        #expect(moved?.code == .invalidArgument)
    }

    @Test func onlyTheBrokerMayDecrypt_X1() async throws {
        let vault = try inProcessVault(keyFile: makeKeyFile([FernetKey.generate()]))
        let sealed = try await client(vault, as: operatorCLI).call(VaultAPI.encrypt, encryptRequest("s", "stripe:user:1"))
        for peer in [operatorCLI, edge] {
            let error = await #expect(throws: RPCError.self) { try await client(vault, as: peer).call(VaultAPI.decrypt, decryptRequest(sealed.token, "stripe:user:1")) }
            #expect(error?.code == .permissionDenied, "uid \(peer.uid) must not decrypt")
        }
        let edgeEncrypt = await #expect(throws: RPCError.self) { try await client(vault, as: edge).call(VaultAPI.encrypt, encryptRequest("s", "stripe:user:1")) }
        #expect(edgeEncrypt?.code == .permissionDenied, "the edge may call nothing")
        let edgeStatus = await #expect(throws: RPCError.self) { try await client(vault, as: edge).call(VaultAPI.keyStatus, VaultKeyStatusRequest()) }
        #expect(edgeStatus?.code == .permissionDenied)
    }

    @Test func tamperingAnyByteOfTheTokenFailsCleanly_C14() async throws {
        let vault = try inProcessVault(keyFile: makeKeyFile([FernetKey.generate()]))
        let rpc = client(vault, as: broker)
        let token = try await rpc.call(VaultAPI.encrypt, encryptRequest("secret", "alpaca:user:A")).token
        var characters = Array(token)
        for index in stride(from: 0, to: characters.count, by: 3) {
            let original = characters[index]
            characters[index] = original == "A" ? "B" : "A"
            let error = await #expect(throws: RPCError.self) { try await rpc.call(VaultAPI.decrypt, decryptRequest(String(characters), "alpaca:user:A")) }
            #expect(error?.code == .invalidArgument)
            characters[index] = original
        }
    }

    @Test func rotateThenBatchRewrapMovesEveryTokenToTheNewKey_R11() async throws {
        let oldKey = FernetKey.generate()
        let keyFile = try makeKeyFile([oldKey])
        let vault = try inProcessVault(keyFile: keyFile)
        let rpc = client(vault, as: operatorCLI)
        var tokens: [String] = []
        for i in 0..<50 { tokens.append(try await rpc.call(VaultAPI.encrypt, encryptRequest("secret-\(i)", "alpaca:user:\(i)")).token) }

        let newKey = FernetKey.generate()
        chmod(keyFile, 0o600)
        try FernetKeyFile.rotate(path: keyFile, newKey: newKey)
        try vault.reloadKeys()
        let status = try await rpc.call(VaultAPI.keyStatus, VaultKeyStatusRequest())
        #expect(status.currentKeyID == newKey.id)
        #expect(status.keyIds == [newKey.id, oldKey.id])

        // Old tokens still decrypt before the rewrap.
        let brokerRPC = client(vault, as: broker)
        #expect(try await brokerRPC.call(VaultAPI.decrypt, decryptRequest(tokens[0], "alpaca:user:0")).keyID == oldKey.id)

        var batch = VaultRewrapRequest()
        batch.items = tokens.enumerated().map { i, token in
            var item = VaultRewrapItem()
            item.token = token
            item.context = "alpaca:user:\(i)"
            return item
        }
        var wrongContext = VaultRewrapItem()
        wrongContext.token = tokens[1]
        wrongContext.context = "alpaca:user:999"
        batch.items.append(wrongContext)
        let rewrapped = try await rpc.call(VaultAPI.rewrap, batch)
        #expect(rewrapped.results.count == 51)
        #expect(rewrapped.results.prefix(50).allSatisfy { $0.ok && $0.fromKeyID == oldKey.id && $0.toKeyID == newKey.id })
        #expect(!rewrapped.results[50].ok && rewrapped.results[50].token.isEmpty)
        for (i, result) in rewrapped.results.prefix(50).enumerated() {
            let opened = try await brokerRPC.call(VaultAPI.decrypt, decryptRequest(result.token, "alpaca:user:\(i)"))
            #expect(opened.keyID == newKey.id)
            #expect(String(decoding: opened.plaintext, as: UTF8.self) == "secret-\(i)")
        }
    }

    /// a key the vault generates is in its key file before it encrypts anything (a restart
    /// keeps it); concurrent AddKeys leave memory and file agreeing; the list is capped.
    @Test func addKeyPersistsBeforeUseAndIsCapped_R11() async throws {
        let first = FernetKey.generate()
        let keyFile = try makeKeyFile([first])
        let vault = try inProcessVault(keyFile: keyFile)
        let rpc = client(vault, as: operatorCLI)
        let added = try await rpc.call(VaultAPI.addKey, VaultAddKeyRequest())
        #expect(added.keyIds.count == 2 && added.keyIds[1] == first.id)
        #expect(try FernetKeyFile.load(path: keyFile).map(\.id) == added.keyIds)
        let token = try await rpc.call(VaultAPI.encrypt, encryptRequest("secret", "alpaca:user:1"))
        #expect(token.keyID == added.currentKeyID)
        // A restarted vault (a fresh build from the same file) opens it.
        let restarted = try inProcessVault(keyFile: keyFile)
        #expect(try await client(restarted, as: broker).call(VaultAPI.decrypt, decryptRequest(token.token, "alpaca:user:1")).plaintext == Data("secret".utf8))

        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<6 { group.addTask { _ = try await rpc.call(VaultAPI.addKey, VaultAddKeyRequest()) } }
            try await group.waitForAll()
        }
        let status = try await rpc.call(VaultAPI.keyStatus, VaultKeyStatusRequest())
        #expect(status.keyIds.count == 8)
        #expect(try FernetKeyFile.load(path: keyFile).map(\.id) == status.keyIds)

        for _ in status.keyIds.count..<VaultAPI.maximumKeys { _ = try await rpc.call(VaultAPI.addKey, VaultAddKeyRequest()) }
        await #expect(throws: RPCError.self) { _ = try await rpc.call(VaultAPI.addKey, VaultAddKeyRequest()) }
        do {
            _ = try await rpc.call(VaultAPI.addKey, VaultAddKeyRequest())
        } catch let error as RPCError {
            #expect(error.code == .failedPrecondition && error.details["reason"] == "too_many_keys")
        }
        #expect(try FernetKeyFile.load(path: keyFile).count == VaultAPI.maximumKeys)
    }

    /// only the broker retires keys; never the current one; an unknown id is NOT_FOUND; the
    /// file keeps every other key and its comments.
    @Test func retireKeyRemovesAnOldKeyOnlyAndOnlyForTheBroker_R11_X1() async throws {
        let old = FernetKey.generate()
        let current = FernetKey.generate()
        let directory = try makeWorldReadableTemporaryDirectory(prefix: "clau-vault-keys")
        let keyFile = directory + "/fernet-keys"
        try Data("# current first\n\(current.base64URLEncoded)\n\n# previous\n\(old.base64URLEncoded)\n".utf8).write(to: URL(fileURLWithPath: keyFile))
        chmod(keyFile, 0o400)
        let vault = try inProcessVault(keyFile: keyFile)
        var request = VaultRetireKeyRequest()
        request.keyID = old.id
        await #expect(throws: RPCError.self) { _ = try await client(vault, as: operatorCLI).call(VaultAPI.retireKey, request) }
        let brokerRPC = client(vault, as: broker)
        var currentRequest = VaultRetireKeyRequest()
        currentRequest.keyID = current.id
        do {
            _ = try await brokerRPC.call(VaultAPI.retireKey, currentRequest)
            Issue.record("the current key was retired")
        } catch let error as RPCError {
            #expect(error.code == .failedPrecondition && error.details["reason"] == "current_key")
        }
        let retired = try await brokerRPC.call(VaultAPI.retireKey, request)
        #expect(retired.keyIds == [current.id])
        #expect(String(decoding: try Data(contentsOf: URL(fileURLWithPath: keyFile)), as: UTF8.self) == "# current first\n\(current.base64URLEncoded)\n\n# previous\n")
        do {
            _ = try await brokerRPC.call(VaultAPI.retireKey, request)
            Issue.record("an unknown key was retired")
        } catch let error as RPCError {
            #expect(error.code == .notFound)
        }
    }

    /// The development key lives in the environment: the vault cannot persist a new one, and says so.
    @Test func addKeyWithTheDevelopmentKeyIsRefused() async throws {
        var configuration = VaultConfiguration(socketPath: "/unused", keySource: .developmentKey(FernetKey.generate().base64URLEncoded), brokerUIDs: [broker.uid])
        configuration.adminUIDs = [operatorCLI.uid]
        let vault = try Vault.build(configuration: configuration, logger: quietLogger)
        do {
            _ = try await client(vault, as: operatorCLI).call(VaultAPI.addKey, VaultAddKeyRequest())
            Issue.record("a development vault added a key")
        } catch let error as RPCError {
            #expect(error.code == .failedPrecondition && error.details["reason"] == "key_source_read_only")
        }
    }

    @Test func oversizedRewrapBatchIsRejected() async throws {
        let vault = try inProcessVault(keyFile: makeKeyFile([FernetKey.generate()]))
        var batch = VaultRewrapRequest()
        batch.items = Array(repeating: VaultRewrapItem(), count: VaultAPI.maximumRewrapBatch + 1)
        let error = await #expect(throws: RPCError.self) { try await client(vault, as: broker).call(VaultAPI.rewrap, batch) }
        #expect(error?.code == .invalidArgument)
    }

    /// The vault never builds a reply the caller's 1 MiB frame limit would refuse: plaintext is
    /// capped per item, and a Rewrap batch by bytes as well as by count (each INVALID_ARGUMENT).
    @Test func oversizedPlaintextAndRewrapBytesAreInvalidArguments() async throws {
        let vault = try inProcessVault(keyFile: makeKeyFile([FernetKey.generate()]))
        let rpc = client(vault, as: broker)
        var largest = encryptRequest("", "alpaca:user:big")
        largest.plaintext = Data(count: VaultAPI.maximumPlaintextBytes)
        let token = try await rpc.call(VaultAPI.encrypt, largest).token
        #expect(try await rpc.call(VaultAPI.decrypt, decryptRequest(token, "alpaca:user:big")).plaintext.count == VaultAPI.maximumPlaintextBytes)
        largest.plaintext.append(0)
        let tooLarge = await #expect(throws: RPCError.self) { try await rpc.call(VaultAPI.encrypt, largest) }
        #expect(tooLarge?.code == .invalidArgument)
        #expect(tooLarge?.details["field"] == "plaintext")

        var item = VaultRewrapItem()
        item.token = token
        item.context = "alpaca:user:big"
        let fitting = VaultAPI.maximumRewrapBatchBytes / VaultAPI.rewrapCost(of: item)
        var batch = VaultRewrapRequest()
        batch.items = Array(repeating: item, count: fitting)
        #expect(try await rpc.call(VaultAPI.rewrap, batch).results.allSatisfy(\.ok))
        batch.items.append(item)
        let tooMany = await #expect(throws: RPCError.self) { try await rpc.call(VaultAPI.rewrap, batch) }
        #expect(tooMany?.code == .invalidArgument)
    }

    @Test func decryptRateLimitPerCaller() async throws {
        let vault = try inProcessVault(keyFile: makeKeyFile([FernetKey.generate()]), decryptsPerMinute: 5)
        let rpc = client(vault, as: broker)
        let token = try await rpc.call(VaultAPI.encrypt, encryptRequest("s", "alpaca:user:A")).token
        for _ in 0..<5 { _ = try await rpc.call(VaultAPI.decrypt, decryptRequest(token, "alpaca:user:A")) }
        let error = await #expect(throws: RPCError.self) { try await rpc.call(VaultAPI.decrypt, decryptRequest(token, "alpaca:user:A")) }
        #expect(error?.code == .resourceExhausted)
        #expect(error?.details["retry_after_seconds"] == "60")
    }

    @Test func slidingWindowForgetsOldCalls() {
        let limiter = PerCallerRateLimiter(limit: 2, window: .seconds(60))
        let t0 = ContinuousClock.now
        #expect(limiter.admit(caller: 1, now: t0))
        #expect(limiter.admit(caller: 1, now: t0 + .seconds(1)))
        #expect(!limiter.admit(caller: 1, now: t0 + .seconds(2)))
        #expect(limiter.admit(caller: 2, now: t0 + .seconds(2)), "limits are per caller")
        #expect(limiter.admit(caller: 1, now: t0 + .seconds(61)))
    }

    @Test func refusesWorldReadableKeyFileNamingThePath_R10() throws {
        let path = try makeKeyFile([FernetKey.generate()], mode: 0o644)
        do {
            _ = try inProcessVault(keyFile: path)
            Issue.record("a 0644 key file must be refused")
        } catch {
            #expect("\(error)".contains(path))
        }
    }
}
