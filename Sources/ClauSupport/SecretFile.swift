import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Reads secrets the way C-11/R-10 require: from `$CREDENTIALS_DIRECTORY` (systemd
/// `LoadCredential`) or a file only its owner can read. A group- or world-accessible file is
/// refused, so a misconfigured deployment fails at start instead of running with exposed keys.
public enum SecretFile {
    /// The path of credential `name` under `$CREDENTIALS_DIRECTORY`, if systemd provided one.
    public static func credentialPath(_ name: String, environment: [String: String] = ProcessInfo.processInfo.environment) -> String? {
        guard let directory = environment["CREDENTIALS_DIRECTORY"], !directory.isEmpty else { return nil }
        return directory + "/" + name
    }

    public static func read(at path: String) throws(SecretFileError) -> [UInt8] {
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
        guard fd >= 0 else {
            throw errno == ENOENT ? .missing(path: path) : .unreadable(path: path, reason: String(cString: strerror(errno)))
        }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else {
            throw .unreadable(path: path, reason: "not a regular file")
        }
        guard info.st_mode & 0o077 == 0 else {
            throw .tooPermissive(path: path, mode: info.st_mode & 0o777)
        }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if n < 0 { throw .unreadable(path: path, reason: String(cString: strerror(errno))) }
            if n == 0 { break }
            bytes += chunk[0..<n]
            if bytes.count > 1 << 20 { throw .unreadable(path: path, reason: "larger than 1 MiB") }
        }
        guard !bytes.isEmpty else { throw .empty(path: path) }
        return bytes
    }

    /// The file as UTF-8 with surrounding whitespace (a trailing newline) removed.
    public static func readString(at path: String) throws(SecretFileError) -> String {
        let text = String(decoding: try read(at: path), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        guard !text.isEmpty else { throw .empty(path: path) }
        return text
    }
}

/// Names the file and the problem — never the contents.
public enum SecretFileError: Error, Equatable, CustomStringConvertible {
    case missing(path: String)
    case empty(path: String)
    case tooPermissive(path: String, mode: mode_t)
    case unreadable(path: String, reason: String)

    public var description: String {
        switch self {
        case .missing(let path): "\(path): secret file does not exist"
        case .empty(let path): "\(path): secret file is empty"
        case .tooPermissive(let path, let mode): "\(path): secret file has mode \(String(mode, radix: 8)); it must not be readable or writable by group or others (chmod 0400)"
        case .unreadable(let path, let reason): "\(path): cannot read secret file: \(reason)"
        }
    }
}
