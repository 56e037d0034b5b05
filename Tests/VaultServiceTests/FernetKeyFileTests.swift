import Foundation
import Testing

@testable import VaultService

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A fresh private directory per test, removed afterwards.
private final class ScratchDirectory {
    let path: String

    init() throws {
        var template = Array((NSTemporaryDirectory() + "/fernet-keyfile-XXXXXX").utf8CString)
        guard let created = mkdtemp(&template) else { throw POSIXError(.EIO) }
        path = String(cString: created)
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }

    /// Writes `text` and sets `mode` exactly (independent of the umask).
    func write(_ name: String, _ text: String, mode: mode_t) throws -> String {
        let file = "\(path)/\(name)"
        try Data(text.utf8).write(to: URL(fileURLWithPath: file))
        guard chmod(file, mode) == 0 else { throw POSIXError(.EPERM) }
        return file
    }

    func entries() throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: path).sorted()
    }
}

private func mode(of path: String) -> mode_t {
    var status = stat()
    guard stat(path, &status) == 0 else { return 0o7777 }
    return status.st_mode & 0o7777
}

@Suite(.timeLimit(.minutes(5))) struct FernetKeyFileTests {
    let current = FernetKey.generate()
    let previous = FernetKey.generate()

    /// The description must name the path and must not contain any key text.
    private func expectSafeDescription(_ error: FernetKeyFileError, path: String, keys: [FernetKey]) {
        let text = String(describing: error)
        #expect(text.contains(path), "\(text)")
        #expect(error.localizedDescription == text)
        for key in keys {
            #expect(!text.contains(key.base64URLEncoded))
            #expect(!text.contains(String(key.base64URLEncoded.prefix(12))))
        }
    }

    @Test func loadsKeysInOrderSkippingCommentsAndBlanks() throws {
        let dir = try ScratchDirectory()
        let file = try dir.write(
            "fernet.keys",
            """
            # clau-vault Fernet keys: first encrypts
            \(current.base64URLEncoded)

              \(previous.base64URLEncoded)\t\r
               # old comment
            """,
            mode: 0o600)
        let keys = try FernetKeyFile.load(path: file)
        #expect(keys == [current, previous])
        #expect(try MultiFernet(keys: keys).currentKeyID == current.id)
    }

    @Test func acceptsOwnerOnlyModes() throws {
        let dir = try ScratchDirectory()
        for mode: mode_t in [0o400, 0o600, 0o700] {
            let file = try dir.write("k\(mode)", current.base64URLEncoded + "\n", mode: mode)
            #expect(try FernetKeyFile.load(path: file) == [current])
        }
    }

    @Test func refusesGroupReadableKeyFile_R10() throws {
        let dir = try ScratchDirectory()
        let file = try dir.write("fernet.keys", current.base64URLEncoded + "\n", mode: 0o644)
        let error = #expect(throws: FernetKeyFileError.self) { try FernetKeyFile.load(path: file) }
        let refused = try #require(error)
        #expect(refused == .insecurePermissions(path: file, mode: 0o644))
        expectSafeDescription(refused, path: file, keys: [current])
        #expect(String(describing: refused).contains("0644"))
    }

    @Test(arguments: [0o640, 0o604, 0o620, 0o602, 0o610, 0o601, 0o660, 0o666, 0o777] as [mode_t])
    func refusesAnyGroupOrOtherPermission(_ mode: mode_t) throws {
        let dir = try ScratchDirectory()
        let file = try dir.write("fernet.keys", current.base64URLEncoded + "\n", mode: mode)
        #expect(throws: FernetKeyFileError.insecurePermissions(path: file, mode: UInt32(mode))) {
            try FernetKeyFile.load(path: file)
        }
    }

    @Test func refusesMissingFile() throws {
        let dir = try ScratchDirectory()
        let file = "\(dir.path)/does-not-exist.keys"
        let error = try #require(#expect(throws: FernetKeyFileError.self) { try FernetKeyFile.load(path: file) })
        #expect(error == .missing(path: file))
        expectSafeDescription(error, path: file, keys: [])
    }

    @Test(arguments: ["", "\n\n", "# only a comment\n", "   \n# x\n\t\n"])
    func refusesFileWithoutKeys(_ contents: String) throws {
        let dir = try ScratchDirectory()
        let file = try dir.write("fernet.keys", contents, mode: 0o400)
        let error = try #require(#expect(throws: FernetKeyFileError.self) { try FernetKeyFile.load(path: file) })
        #expect(error == .noKeys(path: file))
        expectSafeDescription(error, path: file, keys: [])
    }

    @Test func refusesMalformedKeyNamingTheLine() throws {
        let dir = try ScratchDirectory()
        // Line 3 is the previous key with its padding removed: malformed, and key-like text that
        // must not be echoed.
        let broken = String(previous.base64URLEncoded.dropLast())
        let file = try dir.write(
            "fernet.keys", "# keys\n\(current.base64URLEncoded)\n\(broken)\n", mode: 0o600)
        let error = try #require(#expect(throws: FernetKeyFileError.self) { try FernetKeyFile.load(path: file) })
        #expect(error == .malformedKey(path: file, line: 3))
        expectSafeDescription(error, path: file, keys: [current, previous])
        #expect(String(describing: error).contains("line 3"))
        #expect(!String(describing: error).contains(broken))
    }

    @Test func refusesDirectory() throws {
        let dir = try ScratchDirectory()
        #expect(chmod(dir.path, 0o700) == 0)
        #expect(throws: FernetKeyFileError.notRegularFile(path: dir.path)) { try FernetKeyFile.load(path: dir.path) }
    }

    @Test func refusesOversizedFile() throws {
        let dir = try ScratchDirectory()
        let file = try dir.write("big.keys", String(repeating: "#", count: 70_000), mode: 0o600)
        #expect(throws: FernetKeyFileError.tooLarge(path: file, byteCount: 70_000)) {
            try FernetKeyFile.load(path: file)
        }
    }

    @Test func rotatePrependsKeepsOldKeysAndIsReadOnly() throws {
        let dir = try ScratchDirectory()
        let file = try dir.write(
            "fernet.keys", "# vault keys\n\(current.base64URLEncoded)\n\(previous.base64URLEncoded)\n", mode: 0o600)
        let newest = FernetKey.generate()

        try FernetKeyFile.rotate(path: file, newKey: newest)

        #expect(try FernetKeyFile.load(path: file) == [newest, current, previous])
        #expect(mode(of: file) == 0o400)
        #expect(try dir.entries() == ["fernet.keys"])  // no temporary file left behind
        let text = try String(contentsOfFile: file, encoding: .utf8)
        #expect(text.contains("# vault keys"))

        // A second rotation works on the now read-only file.
        let newer = FernetKey.generate()
        try FernetKeyFile.rotate(path: file, newKey: newer)
        #expect(try FernetKeyFile.load(path: file) == [newer, newest, current, previous])
        #expect(mode(of: file) == 0o400)
        #expect(try dir.entries() == ["fernet.keys"])

        // Tokens made before the rotation still decrypt with the rotated key list.
        let token = Fernet(key: previous).encrypt([42])
        let rotated = try MultiFernet(keys: FernetKeyFile.load(path: file))
        #expect(try rotated.decrypt(token).keyID == previous.id)
        #expect(try rotated.rewrap(token).newKeyID == newer.id)
    }

    @Test func rotateRefusesDuplicateAndInsecureFiles() throws {
        let dir = try ScratchDirectory()
        let file = try dir.write("fernet.keys", current.base64URLEncoded + "\n", mode: 0o600)
        #expect(throws: FernetKeyFileError.duplicateKey(path: file, keyID: current.id)) {
            try FernetKeyFile.rotate(path: file, newKey: current)
        }
        let loose = try dir.write("loose.keys", current.base64URLEncoded + "\n", mode: 0o640)
        #expect(throws: FernetKeyFileError.insecurePermissions(path: loose, mode: 0o640)) {
            try FernetKeyFile.rotate(path: loose, newKey: .generate())
        }
        #expect(mode(of: loose) == 0o640)
        #expect(throws: FernetKeyFileError.missing(path: "\(dir.path)/nope")) {
            try FernetKeyFile.rotate(path: "\(dir.path)/nope", newKey: .generate())
        }
        #expect(try dir.entries() == ["fernet.keys", "loose.keys"])
    }

    @Test func splitsPaths() {
        #expect(FernetKeyFile.split(path: "/etc/clau/fernet.keys") == ("/etc/clau", "fernet.keys"))
        #expect(FernetKeyFile.split(path: "/fernet.keys") == ("/", "fernet.keys"))
        #expect(FernetKeyFile.split(path: "fernet.keys") == (".", "fernet.keys"))
    }
}
