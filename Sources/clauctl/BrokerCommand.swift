import ArgumentParser
import Foundation
import RPC

struct BrokerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "broker",
        abstract: "Stored third-party credentials of the broker: Fernet key rotation and re-wrap (R-11).",
        subcommands: [Rotate.self, Rewrap.self, RotationStatus.self, RetireKey.self]
    )

    struct Rotate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Make the vault add a new current key (unless a re-wrap is unfinished), then re-wrap every stored ciphertext under it.",
            discussion: """
            The vault writes the key to its key file itself, so it must run with a --key-file it can
            write (not a read-only systemd credential; then use `clauctl vault rotate` and restart).
            Safe to interrupt and run again: no second key is added while anything remains to re-wrap.
            """
        )

        @Option(help: "The broker's socket.")
        var socket: String = "/run/clau/broker/broker.sock"

        @Option(help: "Ciphertexts per batch (at most the vault's 2,000).")
        var batchSize: UInt32 = 500

        func run() async throws {
            let begun = try await callOnce(socket: socket, BrokerAPI.beginKeyRotation, BrokerBeginKeyRotationRequest())
            print(begun.keyAdded ? "new current key id: \(begun.currentKeyID)" : "an earlier rotation to \(begun.currentKeyID) is unfinished: going on with it")
            try await Rewrap.rewrapAll(socket: socket, batchSize: batchSize)
        }
    }

    struct RetireKey: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "retire-key",
            abstract: "Remove an old key from the vault once no stored ciphertext is under it (see rotation-status)."
        )

        @Option(help: "The broker's socket.")
        var socket: String = "/run/clau/broker/broker.sock"

        @Option(help: "The key id to remove (as rotation-status and `clauctl vault status` print it).")
        var keyID: String

        func run() async throws {
            var request = BrokerRetireKeyRequest()
            request.keyID = keyID
            let response = try await callOnce(socket: socket, BrokerAPI.retireKey, request)
            print("retired \(keyID); key ids now: \(response.keyIds.joined(separator: ", "))")
        }
    }

    struct Rewrap: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Re-wrap every stored ciphertext under the vault's current key, one batch per call, until none is stale.",
            discussion: """
            Run after `clauctl vault rotate` and restarting the vault (`clauctl broker rotate` does both steps itself). Safe to interrupt and run again:
            each batch is picked by key id. Prints one line per batch; exits non-zero if some
            ciphertext no key of the vault opens (those users must reconnect).
            """
        )

        @Option(help: "The broker's socket.")
        var socket: String = "/run/clau/broker/broker.sock"

        @Option(help: "Ciphertexts per batch (at most the vault's 2,000).")
        var batchSize: UInt32 = 500

        func run() async throws {
            try await Self.rewrapAll(socket: socket, batchSize: batchSize)
        }

        static func rewrapAll(socket: String, batchSize: UInt32) async throws {
            var request = BrokerRewrapAllRequest()
            request.batchSize = batchSize
            var failed: UInt64 = 0
            var total: UInt64 = 0
            while true {
                let batch = try await callOnce(socket: socket, BrokerAPI.rewrapAll, request, timeout: .seconds(60))
                total += batch.rewrapped
                failed += batch.failed
                print("re-wrapped \(batch.rewrapped), failed \(batch.failed), remaining \(batch.remaining) (current key \(batch.currentKeyID))")
                if batch.done { break }
                if batch.rewrapped == 0 && batch.failed == 0 {
                    throw ValidationError("no progress while \(batch.remaining) remain: is the vault's current key the one the broker sees?")
                }
            }
            print("done: \(total) re-wrapped\(failed > 0 ? ", \(failed) could not be opened by any key" : "")")
            if failed > 0 { throw ExitCode(2) }
        }
    }

    struct RotationStatus: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "rotation-status", abstract: "Stored ciphertexts per key id (ids and counts only).")

        @Option(help: "The broker's socket.")
        var socket: String = "/run/clau/broker/broker.sock"

        func run() async throws {
            let status = try await callOnce(socket: socket, BrokerAPI.rotationStatus, BrokerRotationStatusRequest())
            print("current key id: \(status.currentKeyID); stale: \(status.stale)")
            for (keyID, count) in status.ciphertextsByKeyID.sorted(by: { $0.key < $1.key }) { print("  \(keyID): \(count)") }
        }
    }
}
