// Helpers for the mail tests. Names carry a `Mail` prefix so these files can join
// Tests/AuthServiceTests without clashing with its own helpers.

import Foundation
import Logging
import Testing
@testable import AuthService
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
import TestSupport
#endif

enum MailTestSupport {
    /// 2026-11-23 15:22:21 UTC, a Monday.
    static let fixedDate = Date(timeIntervalSince1970: 1_795_447_341)

    static let logger = Logger(label: "mail-tests", factory: { _ in SwiftLogNoOpLogHandler() })

    static func renderer(token: String? = nil, date: Date = fixedDate) throws -> MailRenderer {
        if let token {
            return try MailRenderer(messageIDDomain: "mail.example.com", clock: { date }, randomToken: { token })
        }
        return try MailRenderer(messageIDDomain: "mail.example.com", clock: { date })
    }

    static func message(
        subject: String = "Your reset code",
        body: String = "Your code is 123456.\n",
        from: String = "no-reply@example.com",
        to: String = "alice@example.org"
    ) -> MailMessage {
        MailMessage(from: from, to: to, subject: subject, textBody: body)
    }

    /// A fresh private directory under the system temporary directory.
    static func temporaryDirectory() throws -> URL {
        let base = FileManager.default.temporaryDirectory.path
        var template = Array("\(base)/mail-tests.XXXXXX".utf8CString)
        let created = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        guard let created else { throw MailTestFailure("mkdtemp failed: errno \(errno)") }
        return URL(fileURLWithPath: String(cString: created), isDirectory: true)
    }

    static func removeDirectory(_ url: URL) {
        try? FileManager.default.removeItem(at: url)
    }

    static func mode(of path: String) -> mode_t? {
        var info = stat()
        guard stat(path, &info) == 0 else { return nil }
        return info.st_mode & 0o7777
    }

    static func files(in directory: URL) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []).sorted()
    }

    /// Writes an executable `#!/bin/sh` script.
    static func writeScript(_ body: String, named name: String, in directory: URL) throws -> String {
        let path = directory.appendingPathComponent(name).path
        // O_CLOEXEC: a process spawned by another test at this moment must not inherit a
        // descriptor open for writing, or the script could not be executed (ETXTBSY).
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o700)
        guard fd >= 0 else { throw MailTestFailure("cannot create \(path)") }
        let bytes = Array(("#!/bin/sh\n" + body + "\n").utf8)
        let written = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        close(fd)
        guard written == bytes.count, chmod(path, 0o700) == 0 else { throw MailTestFailure("cannot write \(path)") }
        return path
    }

    /// Single-quoted for /bin/sh.
    static func shellQuoted(_ value: String) -> String {
        "'" + value.replacingOccurrences(of: "'", with: "'\\''") + "'"
    }

    /// True when the process is gone or only a zombie waiting to be reaped.
    static func processIsDead(_ pid: pid_t) -> Bool {
        if kill(pid, 0) != 0 && errno == ESRCH { return true }
        #if os(Linux)
        if let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
           let close = stat.lastIndex(of: ")") {
            let state = stat[stat.index(after: close)...].trimmingCharacters(in: .whitespaces).first
            return state == "Z" || state == "X"
        }
        return true
        #else
        return false
        #endif
    }
}

struct MailTestFailure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

