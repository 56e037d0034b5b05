import BenchSupport
import Foundation
import Logging
import RPC
import VaultService

/// Fernet throughput, side by side in one run: Swift in-process, Decrypt over the vault's Unix
/// socket, and Python's `cryptography` Fernet (Benchmarks/fernet_python_bench.py).
/// Usage: swift build -c release --product vault-bench && .build/release/vault-bench [--seconds N]
@main
struct VaultBenchmark {
    static func main() async throws {
        let arguments = CommandLine.arguments
        let seconds = arguments.firstIndex(of: "--seconds").flatMap { Double(arguments[$0 + 1]) } ?? 1.0
        var logger = Logger(label: "vault-bench")
        logger.logLevel = .critical

        let key = FernetKey.generate()
        let plaintext = [UInt8](repeating: 0x61, count: 200)
        let fernet = Fernet(key: key)
        let cipher = try ContextBoundCipher(keys: [key])
        let token = fernet.encrypt(plaintext)
        let boundToken = try cipher.encrypt(plaintext: plaintext, context: "alpaca:user:bench")

        let swiftEncrypt = Rates.perSecond(seconds, warmup: 1000, batch: 100) { _ = fernet.encrypt(plaintext) }
        let swiftDecrypt = Rates.perSecond(seconds, warmup: 1000, batch: 100) { _ = try? fernet.decrypt(token) }
        let boundDecrypt = Rates.perSecond(seconds, warmup: 1000, batch: 100) { _ = try? cipher.decrypt(token: boundToken, context: "alpaca:user:bench") }

        // Decrypt over RPC: a real vault server on a Unix socket, this process as the broker.
        let directory = "/tmp/clau-vault-bench-\(getpid())"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var configuration = VaultConfiguration(socketPath: directory + "/vault.sock", keySource: .developmentKey(key.base64URLEncoded), brokerUIDs: [getuid()])
        configuration.decryptsPerMinutePerCaller = .max
        let vault = try Vault.build(configuration: configuration, logger: logger)
        let client = UnixSocketClient(configuration: .init(path: configuration.socketPath), logger: logger)
        var request = VaultDecryptRequest()
        request.token = boundToken
        request.context = "alpaca:user:bench"
        let message = request
        // A rotation: 100,000 stored tokens re-wrapped over RPC in batches of 5,000.
        let rotationTokens = (0..<100_000).map { i in try! cipher.encrypt(plaintext: plaintext, context: "alpaca:user:\(i)") }
        let (rpcSequential, rpcParallel, rotation) = try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await vault.server.run() }
            await vault.server.waitUntilListening()
            group.addTask { try await client.run() }
            await client.waitUntilConnected()
            let rpc = RPCClient(transport: client)
            let sequential = try await Rates.perSecondAsync(seconds, workers: 1, warmup: 200) { _ = try await rpc.call(VaultAPI.decrypt, message) }
            let parallel = try await Rates.perSecondAsync(seconds, workers: 64, warmup: 200) { _ = try await rpc.call(VaultAPI.decrypt, message) }
            try vault.handlers.reload(keys: [FernetKey.generate(), key])
            let clock = ContinuousClock()
            let started = clock.now
            var rewrapped = 0
            for batchStart in stride(from: 0, to: rotationTokens.count, by: VaultAPI.maximumRewrapBatch) {
                var batch = VaultRewrapRequest()
                batch.items = (batchStart..<min(batchStart + VaultAPI.maximumRewrapBatch, rotationTokens.count)).map { i in
                    var item = VaultRewrapItem()
                    item.token = rotationTokens[i]
                    item.context = "alpaca:user:\(i)"
                    return item
                }
                rewrapped += try await rpc.call(VaultAPI.rewrap, batch).results.filter(\.ok).count
            }
            precondition(rewrapped == rotationTokens.count)
            let rotation = Rates.seconds(clock.now - started)
            group.cancelAll()
            return (sequential, parallel, rotation)
        }

        let python = pythonRates(seconds: seconds)
        func ratio(_ a: Double, _ b: Double?) -> String { b.map { String(format: "%.1f×", a / $0) } ?? "n/a" }
        print("| measurement (200-byte plaintext) | ops/s | vs Python |")
        print("|---|---|---|")
        print("| Swift Fernet encrypt, in-process | \(Int(swiftEncrypt)) | \(ratio(swiftEncrypt, python?.encrypt)) |")
        print("| Swift Fernet decrypt, in-process | \(Int(swiftDecrypt)) | \(ratio(swiftDecrypt, python?.decrypt)) |")
        print("| Swift context-bound decrypt (X-4), in-process | \(Int(boundDecrypt)) | \(ratio(boundDecrypt, python?.decrypt)) |")
        print("| vault Decrypt over RPC, 1 in flight | \(Int(rpcSequential)) | \(ratio(rpcSequential, python?.decrypt)) |")
        print("| vault Decrypt over RPC, 64 in flight | \(Int(rpcParallel)) | \(ratio(rpcParallel, python?.decrypt)) |")
        print("| rotation: Rewrap 100,000 tokens over RPC (50 batches of 2,000) | \(String(format: "%.2f s", rotation)) | |")
        print("| Python cryptography Fernet encrypt | \(python.map { String(Int($0.encrypt)) } ?? "n/a") | 1.0× |")
        print("| Python cryptography Fernet decrypt | \(python.map { String(Int($0.decrypt)) } ?? "n/a") | 1.0× |")
    }

    static func pythonRates(seconds: Double) -> (encrypt: Double, decrypt: Double)? {
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("fernet_python_bench.py").path
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", script, "--seconds", String(seconds)]
        let pipe = Pipe()
        process.standardOutput = pipe
        guard (try? process.run()) != nil else { return nil }
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard let json = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
              let encrypt = json["encrypt_ops_s"] as? Double, let decrypt = json["decrypt_ops_s"] as? Double else { return nil }
        return (encrypt, decrypt)
    }
}
