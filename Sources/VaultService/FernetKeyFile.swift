// Fernet key file (C-11 / R-10 / R-11): the vault's keys live in a file readable by its own user
// only (a systemd credential or a 0400/0600 file). The vault refuses to start on anything looser.

import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Why a key file was refused or could not be rotated. Descriptions name the path and the problem,
/// never key material.
public enum FernetKeyFileError: Error, Equatable, Sendable, CustomStringConvertible, LocalizedError {
    case missing(path: String)
    case unreadable(path: String, reason: String)
    case notRegularFile(path: String)
    /// Group or other has any permission bit (mode & 0o077 != 0). `mode` is the permission bits.
    case insecurePermissions(path: String, mode: UInt32)
    case tooLarge(path: String, byteCount: Int)
    case noKeys(path: String)
    /// 1-based line number of the first line that is not a valid key, comment or blank.
    case malformedKey(path: String, line: Int)
    /// `rotate` was asked to add a key that the file already holds.
    case duplicateKey(path: String, keyID: String)
    /// `remove` was asked for a key id the file does not hold.
    case unknownKey(path: String, keyID: String)
    /// `remove` was asked for the current (first) key.
    case currentKey(path: String, keyID: String)
    case writeFailed(path: String, step: String, reason: String)

    public var description: String {
        switch self {
        case .missing(let path):
            "Fernet key file \(path) does not exist"
        case .unreadable(let path, let reason):
            "Fernet key file \(path) cannot be read: \(reason)"
        case .notRegularFile(let path):
            "Fernet key file \(path) is not a regular file"
        case .insecurePermissions(let path, let mode):
            "Fernet key file \(path) has mode \(String(mode, radix: 8).leftPadded(to: 4)) "
                + "and is accessible to group or others; restrict it to its owner (chmod 400 or 600)"
        case .tooLarge(let path, let byteCount):
            "Fernet key file \(path) is \(byteCount) bytes, more than a key file can be (\(FernetKeyFile.maxFileBytes))"
        case .noKeys(let path):
            "Fernet key file \(path) contains no keys"
        case .malformedKey(let path, let line):
            "Fernet key file \(path), line \(line): not a Fernet key (expected 32 bytes as URL-safe base64 with padding)"
        case .duplicateKey(let path, let keyID):
            "Fernet key file \(path) already contains key \(keyID)"
        case .unknownKey(let path, let keyID):
            "Fernet key file \(path) holds no key \(keyID)"
        case .currentKey(let path, let keyID):
            "Fernet key \(keyID) is the current key of \(path); add a newer key before removing it"
        case .writeFailed(let path, let step, let reason):
            "Fernet key file \(path) could not be rewritten: \(step) failed: \(reason)"
        }
    }

    public var errorDescription: String? { description }
}

/// Key file format: one URL-safe base64 key per line; the first key is the current (encrypting)
/// key, the others are previous keys kept for decryption. Blank lines and lines whose first
/// non-blank character is `#` are ignored. Leading/trailing spaces, tabs and `\r` are trimmed.
public enum FernetKeyFile {
    /// Far more than any sane key list (a key line is 45 bytes); guards against pointing the vault
    /// at the wrong file.
    public static let maxFileBytes = 64 * 1024

    /// Loads the keys, current key first.
    ///
    /// Refuses a missing or unreadable file, anything but a regular file, a file with any group or
    /// other permission bit set (R-10), an empty file or one without keys, and a malformed line.
    /// The mode is checked on the opened descriptor (`fstat`), so the file checked is the file read.
    public static func load(path: String) throws(FernetKeyFileError) -> [FernetKey] {
        var contents = try readSecureFile(path: path).contents
        defer { FernetKey.wipe(&contents) }
        return try parse(contents, path: path)
    }

    /// Prepends `newKey` as the current key, keeping every previous key and comment. Crash-safe
    /// (see `rewrite`).
    public static func rotate(path: String, newKey: FernetKey) throws(FernetKeyFileError) {
        try rewrite(path: path) { original, existingKeys throws(FernetKeyFileError) in
            if existingKeys.contains(newKey) {
                throw .duplicateKey(path: path, keyID: newKey.id)
            }
            var newContents = Array(newKey.base64URLEncoded.utf8)
            newContents.append(UInt8(ascii: "\n"))
            newContents.append(contentsOf: original)
            return newContents
        }
    }

    /// Removes the key whose id is `keyID`, keeping every other line. The current (first) key
    /// cannot be removed. Same crash-safe replacement as `rotate`.
    public static func remove(path: String, keyID: String) throws(FernetKeyFileError) {
        try rewrite(path: path) { original, existingKeys throws(FernetKeyFileError) in
            guard let index = existingKeys.firstIndex(where: { $0.id == keyID }) else {
                throw .unknownKey(path: path, keyID: keyID)
            }
            guard index > 0 else { throw .currentKey(path: path, keyID: keyID) }
            var newContents: [UInt8] = []
            newContents.reserveCapacity(original.count)
            for line in original.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false) {
                let key = line.withUnsafeBufferPointer { buffer -> FernetKey? in
                    var first = 0
                    var last = buffer.count
                    while first < last && isBlank(buffer[first]) { first += 1 }
                    while last > first && isBlank(buffer[last - 1]) { last -= 1 }
                    return FernetKey.parse(base64URL: UnsafeBufferPointer(rebasing: buffer[first..<last]))
                }
                if key?.id == keyID { continue }
                newContents.append(contentsOf: line)
                newContents.append(UInt8(ascii: "\n"))
            }
            // split keeps a last empty piece after the final newline; do not add a second one.
            if original.last == UInt8(ascii: "\n"), newContents.last == UInt8(ascii: "\n") { newContents.removeLast() }
            return newContents
        }
    }

    /// Replaces the file with `transform(contents, keys)`: the new contents go to a temporary file
    /// in the same directory (created 0600 with `O_CREAT|O_EXCL`, so it is never readable by
    /// others), are fsynced and set to 0400, then renamed over the original and the directory is
    /// fsynced. A reader sees either the old or the new file, never a partial one. Changes to the
    /// same directory are serialised with `flock` on the directory. The new file keeps the
    /// original's owner and group, and must still hold a key.
    private static func rewrite(
        path: String, _ transform: ([UInt8], [FernetKey]) throws(FernetKeyFileError) -> [UInt8]
    ) throws(FernetKeyFileError) {
        let (directory, fileName) = split(path: path)

        let directoryFD = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard directoryFD >= 0 else {
            throw .writeFailed(path: path, step: "open directory \(directory)", reason: lastErrorMessage())
        }
        defer { close(directoryFD) }
        guard flock(directoryFD, LOCK_EX) == 0 else {
            throw .writeFailed(path: path, step: "lock directory \(directory)", reason: lastErrorMessage())
        }

        var (original, originalStatus) = try readSecureFile(path: path)
        defer { FernetKey.wipe(&original) }
        let existingKeys = try parse(original, path: path)
        var newContents = try transform(original, existingKeys)
        defer { FernetKey.wipe(&newContents) }
        _ = try parse(newContents, path: path)

        let temporaryPath = "\(directory)/.\(fileName).rotate-\(randomHex(bytes: 8))"
        try writeReadOnlyFile(
            temporaryPath, contents: newContents, owner: originalStatus, reportedPath: path)

        guard rename(temporaryPath, path) == 0 else {
            let reason = lastErrorMessage()
            unlink(temporaryPath)
            throw .writeFailed(path: path, step: "rename", reason: reason)
        }
        // Persist the directory entry change itself.
        guard fsync(directoryFD) == 0 else {
            throw .writeFailed(path: path, step: "fsync directory \(directory)", reason: lastErrorMessage())
        }
    }

    // MARK: Internals

    /// Opens, checks (on the descriptor) and reads the whole file.
    static func readSecureFile(path: String) throws(FernetKeyFileError) -> (contents: [UInt8], status: stat) {
        // O_NONBLOCK: opening a FIFO must not hang before fstat tells us it is not a regular file.
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK)
        guard fd >= 0 else {
            let code = errno
            if code == ENOENT { throw .missing(path: path) }
            throw .unreadable(path: path, reason: errorMessage(code))
        }
        defer { close(fd) }

        var status = stat()
        guard fstat(fd, &status) == 0 else {
            throw .unreadable(path: path, reason: lastErrorMessage())
        }
        guard (status.st_mode & S_IFMT) == S_IFREG else { throw .notRegularFile(path: path) }
        let permissions = UInt32(status.st_mode) & 0o7777
        guard permissions & 0o077 == 0 else { throw .insecurePermissions(path: path, mode: permissions) }
        let size = Int(status.st_size)
        guard size <= maxFileBytes else { throw .tooLarge(path: path, byteCount: size) }

        var contents = [UInt8](repeating: 0, count: maxFileBytes + 1)
        var total = 0
        while total < contents.count {
            let count = contents.withUnsafeMutableBytes { buffer in
                read(fd, buffer.baseAddress! + total, buffer.count - total)
            }
            if count == 0 { break }
            if count < 0 {
                if errno == EINTR { continue }
                let reason = lastErrorMessage()
                FernetKey.wipe(&contents)
                throw .unreadable(path: path, reason: reason)
            }
            total += count
        }
        guard total <= maxFileBytes else {
            FernetKey.wipe(&contents)
            throw .tooLarge(path: path, byteCount: total)
        }
        // Shrink in place (no copy of the key material is left behind in a second buffer).
        contents.removeSubrange(total...)
        return (contents, status)
    }

    /// Parses the file format; the error names the first bad line, never its contents.
    static func parse(_ contents: [UInt8], path: String) throws(FernetKeyFileError) -> [FernetKey] {
        var keys: [FernetKey] = []
        var lineNumber = 0
        var lineStart = 0
        let result: FernetKeyFileError? = contents.withUnsafeBufferPointer { buffer in
            while lineStart <= buffer.count {
                lineNumber += 1
                var lineEnd = lineStart
                while lineEnd < buffer.count && buffer[lineEnd] != UInt8(ascii: "\n") { lineEnd += 1 }
                defer { lineStart = lineEnd + 1 }

                var first = lineStart
                var last = lineEnd
                while first < last && isBlank(buffer[first]) { first += 1 }
                while last > first && isBlank(buffer[last - 1]) { last -= 1 }
                if first == last || buffer[first] == UInt8(ascii: "#") { continue }

                let line = UnsafeBufferPointer(rebasing: buffer[first..<last])
                guard let key = FernetKey.parse(base64URL: line) else {
                    return .malformedKey(path: path, line: lineNumber)
                }
                keys.append(key)
            }
            return nil
        }
        if let result { throw result }
        guard !keys.isEmpty else { throw .noKeys(path: path) }
        return keys
    }

    /// Creates `path` (which must not exist) 0600, writes, fsyncs, makes it 0400 and closes it.
    /// Removes it again on any failure.
    private static func writeReadOnlyFile(
        _ path: String, contents: [UInt8], owner: stat, reportedPath: String
    ) throws(FernetKeyFileError) {
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard fd >= 0 else {
            throw .writeFailed(path: reportedPath, step: "create temporary file", reason: lastErrorMessage())
        }
        var isOpen = true
        func fail(_ step: String) -> FernetKeyFileError {
            let reason = lastErrorMessage()
            if isOpen { close(fd) }
            unlink(path)
            return .writeFailed(path: reportedPath, step: step, reason: reason)
        }

        // Keep the key file's owner: a root-run `clauctl` must not leave a file the vault user
        // can no longer read. Skipped when nothing changes (the usual non-root case).
        var created = stat()
        guard fstat(fd, &created) == 0 else { throw fail("fstat temporary file") }
        if created.st_uid != owner.st_uid || created.st_gid != owner.st_gid {
            guard fchown(fd, owner.st_uid, owner.st_gid) == 0 else { throw fail("chown to the original owner") }
        }

        var written = 0
        while written < contents.count {
            let count = contents.withUnsafeBytes { buffer in
                write(fd, buffer.baseAddress! + written, buffer.count - written)
            }
            if count < 0 {
                if errno == EINTR { continue }
                throw fail("write")
            }
            written += count
        }
        guard fsync(fd) == 0 else { throw fail("fsync") }
        guard fchmod(fd, 0o400) == 0 else { throw fail("chmod 0400") }
        isOpen = false
        guard close(fd) == 0 else { throw fail("close") }
    }

    static func split(path: String) -> (directory: String, fileName: String) {
        guard let slash = path.lastIndex(of: "/") else { return (".", path) }
        let directory = slash == path.startIndex ? "/" : String(path[..<slash])
        return (directory, String(path[path.index(after: slash)...]))
    }

    private static func isBlank(_ byte: UInt8) -> Bool {
        byte == UInt8(ascii: " ") || byte == UInt8(ascii: "\t") || byte == UInt8(ascii: "\r")
    }

    private static func randomHex(bytes: Int) -> String {
        var generator = SystemRandomNumberGenerator()
        let digits = Array("0123456789abcdef")
        var result = ""
        for _ in 0..<bytes {
            let byte = UInt8.random(in: 0...255, using: &generator)
            result.append(digits[Int(byte >> 4)])
            result.append(digits[Int(byte & 0x0F)])
        }
        return result
    }

    private static func lastErrorMessage() -> String { errorMessage(errno) }

    private static func errorMessage(_ code: Int32) -> String {
        guard let message = strerror(code) else { return "errno \(code)" }
        return String(cString: message)
    }
}

extension String {
    fileprivate func leftPadded(to width: Int) -> String {
        count >= width ? self : String(repeating: "0", count: width - count) + self
    }
}
