import Foundation
import Testing
import TestSupport

@testable import VaultService

/// Runs `python3 -c script args…` and returns stdout lines, or throws with stderr.
private enum Python {
    struct Failure: Error, CustomStringConvertible {
        let description: String
    }

    /// Through TestSupport's `Shell` (posix_spawn + waitpid), the one way tests run children.
    static func run(_ script: String, _ arguments: [String]) throws -> [String] {
        let output: String
        do {
            output = try Shell.run("/usr/bin/env", ["python3", "-c", script] + arguments)
        } catch {
            throw Failure(description: "python3 failed: \(error)")
        }
        return output
            .split(separator: "\n", omittingEmptySubsequences: false)
            .dropLast()  // trailing newline
            .map(String.init)
    }

    /// nil when python3 with `cryptography` can run; otherwise why not.
    static let unavailableReason: String? = {
        do {
            _ = try run("import cryptography.fernet", [])
            return nil
        } catch {
            return "skipping Fernet interop: python3 with the 'cryptography' package is not available (\(error))"
        }
    }()

    static var isAvailable: Bool {
        if let reason = unavailableReason {
            print(reason)
            return false
        }
        return true
    }
}

private func hex(_ bytes: [UInt8]) -> String {
    bytes.map { String(format: "%02x", $0) }.joined()
}

/// Interoperability with the reference implementation (pyca/cryptography).
@Suite(.enabled(if: Python.isAvailable, "needs python3 with the 'cryptography' package"), .timeLimit(.minutes(5)))
struct FernetInteropTests {
    let plaintexts: [[UInt8]] = [
        [],
        Array("hello".utf8),
        Array(repeating: 0, count: 16),
        (0..<200).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 3) },
        (0..<1000).map { UInt8(truncatingIfNeeded: $0) },
    ]

    @Test func swiftEncryptPythonDecrypts() throws {
        let key = FernetKey.generate()
        let fernet = Fernet(key: key)
        let tokens = plaintexts.map { fernet.encrypt($0) }
        let decrypted = try Python.run(
            """
            import sys
            from cryptography.fernet import Fernet
            f = Fernet(sys.argv[1].encode())
            for token in sys.argv[2:]:
                print(f.decrypt(token.encode(), ttl=300).hex())
            """,
            [key.base64URLEncoded] + tokens)
        #expect(decrypted == plaintexts.map(hex))
    }

    @Test func pythonEncryptSwiftDecrypts() throws {
        let lines = try Python.run(
            """
            import sys
            from cryptography.fernet import Fernet
            key = Fernet.generate_key()
            print(key.decode())
            f = Fernet(key)
            for h in sys.argv[1:]:
                print(f.encrypt(bytes.fromhex(h)).decode())
            """,
            plaintexts.map(hex))
        try #require(lines.count == plaintexts.count + 1)
        let key = try FernetKey(base64URL: lines[0])
        let fernet = Fernet(key: key)
        for (token, plaintext) in zip(lines.dropFirst(), plaintexts) {
            #expect(try fernet.decrypt(token, ttl: .seconds(300)) == plaintext)
        }
    }

    @Test func rotationInteroperates() throws {
        // Python MultiFernet.rotate output opens in Swift, and Swift rewrap output opens in Python.
        let old = FernetKey.generate()
        let new = FernetKey.generate()
        let oldToken = Fernet(key: old).encrypt(Array("rotate-me".utf8))
        let lines = try Python.run(
            """
            import sys
            from cryptography.fernet import Fernet, MultiFernet
            new, old, token = sys.argv[1:4]
            m = MultiFernet([Fernet(new.encode()), Fernet(old.encode())])
            print(m.rotate(token.encode()).decode())
            """,
            [new.base64URLEncoded, old.base64URLEncoded, oldToken])
        let pythonRotated = try #require(lines.first)
        #expect(try Fernet(key: new).decrypt(pythonRotated) == Array("rotate-me".utf8))

        let swiftRotated = try MultiFernet(keys: [new, old]).rewrap(oldToken).token
        let decrypted = try Python.run(
            """
            import sys
            from cryptography.fernet import Fernet
            print(Fernet(sys.argv[1].encode()).decrypt(sys.argv[2].encode()).hex())
            """,
            [new.base64URLEncoded, swiftRotated])
        #expect(decrypted == [hex(Array("rotate-me".utf8))])
    }

    @Test func contextBoundTokenIsPlainFernetForPython() throws {
        let key = FernetKey.generate()
        let token = try ContextBoundCipher(keys: [key]).encrypt(plaintext: [1, 2, 3], context: "alpaca:user:42")
        let decrypted = try Python.run(
            """
            import sys
            from cryptography.fernet import Fernet
            print(Fernet(sys.argv[1].encode()).decrypt(sys.argv[2].encode()).hex())
            """,
            [key.base64URLEncoded, token])
        #expect(decrypted == [hex(Array("CLV1".utf8) + [0, 14] + Array("alpaca:user:42".utf8) + [1, 2, 3])])
    }
}
