import Foundation
import HummingbirdBcrypt
import NIOPosix
import Synchronization
import TestSupport
import Testing
@testable import AuthService

private struct BcryptVectors: Decodable {
    struct Vector: Decodable {
        var password_hex: String
        var hash: String
    }
    struct Boundary: Decodable {
        var salt: String
    }
    struct Invalid: Decodable {
        var settings: [String]
    }
    var vectors: [Vector]
    var invalid_settings_must_fail: Invalid
}

/// One pool for the suite; bcrypt never runs on the cooperative pool.
private let testPool: NIOThreadPool = {
    let pool = NIOThreadPool(numberOfThreads: 2)
    pool.start()
    return pool
}()

private func hasher(cost: Int = 4) async throws -> PasswordHasher {
    try await PasswordHasher.makeForTesting(cost: cost, threadPool: testPool)
}

private final class CompletionCount: Sendable {
    private let count = Mutex(0)
    func increment() { count.withLock { $0 += 1 } }
    var value: Int { count.withLock { $0 } }
}

@Suite("bcrypt password hashing", .timeLimit(.minutes(5)))
struct PasswordHasherTests {
    @Test func bcryptVectorsVerify_C3() async throws {
        let vectors = try JSONDecoder().decode(BcryptVectors.self, from: fixtureData("bcrypt_vectors.json"))
        let hasher = try await hasher()
        var verified = 0, refusedLong = 0, refusedVariant = 0, libraryTruncates = 0
        for vector in vectors.vectors {
            guard let bytes = Hex.decode(vector.password_hex), let password = String(validating: bytes, as: UTF8.self),
                  !bytes.contains(0)
            else { continue } // HummingbirdBcrypt takes a Swift String: non-UTF-8 and NUL inputs cannot be expressed
            let ok = try await hasher.verify(password, against: vector.hash)
            if bytes.count > 72 {
                // bcrypt itself would accept it (it truncates); we refuse >72-byte input.
                #expect(!ok, "\(vector.hash)")
                if Bcrypt.verify(password, hash: vector.hash) { libraryTruncates += 1 }
                refusedLong += 1
            } else if vector.hash.hasPrefix("$2a$") || vector.hash.hasPrefix("$2b$") {
                #expect(ok, "\(vector.hash)")
                verified += 1
            } else {
                #expect(!ok, "$2x$/$2y$ hashes are not accepted: \(vector.hash)")
                refusedVariant += 1
            }
        }
        #expect(verified >= 40)
        #expect(refusedLong >= 2)
        #expect(libraryTruncates >= 1, "the library itself truncates: the trap PasswordHasher guards against")
        #expect(refusedVariant >= 1)
        for setting in vectors.invalid_settings_must_fail.settings {
            #expect(PasswordHasher.cost(of: setting) == nil, "\(setting)")
        }
    }

    @Test func seventyTwoBytesBoundary_C3() async throws {
        let hasher = try await hasher()
        let p72 = String(repeating: "ª", count: 36) // U+00AA: 2 bytes each
        #expect(p72.utf8.count == 72)
        let hash = try await hasher.hash(p72)
        #expect(try await hasher.verify(p72, against: hash))
        await #expect(throws: PasswordHasher.Failure.passwordTooLong(bytes: 73)) { try await hasher.hash(p72 + "a") }
        await #expect(throws: PasswordHasher.Failure.passwordContainsNul) { try await hasher.hash("abc\u{0}def-ghijkl") }
        #expect(try await hasher.verify(p72 + "a", against: hash) == false)
    }

    @Test func costPolicyAndRehash_C3_R6() async throws {
        await #expect(throws: PasswordHasher.Failure.costOutOfRange(9)) { try await PasswordHasher.make(cost: 9, threadPool: testPool) }
        await #expect(throws: PasswordHasher.Failure.costOutOfRange(3)) { try await PasswordHasher.makeForTesting(cost: 3, threadPool: testPool) }
        let production = try await PasswordHasher.make(threadPool: testPool)
        #expect(production.cost == 12)
        let fast = try await hasher(cost: 4)
        let hash = try await fast.hash("Tq7!vexing-Walrus-orbit")
        #expect(hash.hasPrefix("$2b$04$") && hash.count == 60)
        #expect(fast.needsRehash(hash) == false)
        #expect(production.needsRehash(hash))
        #expect(fast.needsRehash("$2a$04$abcdefghijklmnopqrstuu5s2v8.iXieOjg/.AySBTTZIIVFJeBui"), "$2a$ is rewritten as $2b$")
        #expect(try await fast.dummyVerify("anything") == false)
    }

    /// Every bcrypt call waits for the hasher's own pool: with its only thread held, hash,
    /// verify and the dummy verify stay pending, and all finish once the thread is free. Were
    /// bcrypt run on the caller's thread (an event loop, the cooperative pool), they would finish
    /// while the pool is held.
    @Test func bcryptRunsOnlyOnTheHashersThreadPool_C3() async throws {
        let pool = NIOThreadPool(numberOfThreads: 1)
        pool.start()
        let hasher = try await PasswordHasher.makeForTesting(cost: 4, threadPool: pool)
        let stored = try await hasher.hash("Tq7!vexing-Walrus-orbit")

        let release = DispatchSemaphore(value: 0)
        defer { release.signal() }  // never leave the thread held when an expectation throws
        let held = Task { try await pool.runIfActive { release.wait() } }
        let finished = CompletionCount()
        async let hashed = { let hash = try await hasher.hash("another-Walrus-orbit-7"); finished.increment(); return hash }()
        async let verified = { let ok = try await hasher.verify("Tq7!vexing-Walrus-orbit", against: stored); finished.increment(); return ok }()
        async let dummy = { let ok = try await hasher.dummyVerify("Tq7!vexing-Walrus-orbit"); finished.increment(); return ok }()
        // Each bcrypt at cost 4 takes about a millisecond; 300 ms is ample time to finish if it
        // did not queue behind the held thread.
        try await Task.sleep(for: .milliseconds(300))
        #expect(finished.value == 0, "bcrypt finished while the hasher's only pool thread was held")
        release.signal()
        try await held.value
        #expect(try await hashed.hasPrefix("$2b$04$"))
        #expect(try await verified)
        #expect(try await dummy == false)
        #expect(finished.value == 3)
        try await pool.shutdownGracefully()
    }

    @Test func pythonBcryptInteroperatesBothWays_C3() async throws {
        do {
            _ = try await Shell.run("/usr/bin/env", ["python3", "-c", "import bcrypt"])
        } catch {
            print("skipped: python3 bcrypt module not available (pip install bcrypt)")
            return
        }
        let hasher = try await hasher(cost: 5)
        let password = "Grüße, Zürich! 72-byte-limit ✓"
        let ours = try await hasher.hash(password)
        let script = "import bcrypt,sys; print(bcrypt.checkpw(sys.argv[1].encode(), sys.argv[2].encode()))"
        let checked = try await Shell.run("/usr/bin/env", ["python3", "-c", script, password, ours])
        #expect(checked.trimmingCharacters(in: .whitespacesAndNewlines) == "True")
        let theirs = try await Shell.run("/usr/bin/env", ["python3", "-c", "import bcrypt,sys; print(bcrypt.hashpw(sys.argv[1].encode(), bcrypt.gensalt(5)).decode())", password])
            .trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(theirs.hasPrefix("$2b$05$"))
        #expect(try await hasher.verify(password, against: theirs))
        #expect(try await hasher.verify(password + "x", against: theirs) == false)
    }
}
