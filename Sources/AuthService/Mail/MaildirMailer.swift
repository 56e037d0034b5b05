// The maildir backend: each message becomes one file in a maildir folder (development, tests,
// and the main repo's integration tests read reset codes from there).
//
// Delivery follows the maildir protocol: the message is written to `tmp/<unique>` (created
// with O_EXCL and mode 0600), fsync'ed, then renamed into `new/`, and `new/` is fsync'ed, so a
// reader never sees a partial file and a crash never leaves a half message in `new/`. Unique
// names are `<seconds>.M<microseconds>P<pid>Q<counter>R<128 random bits>.<host>`, so concurrent
// senders, in this process or another, never collide. Directories are created with mode 0700.
// Files use LF line endings (see MailRenderer).

import Foundation
import Logging
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

public struct MaildirMailer: Mailer {
    public let directory: URL
    public let renderer: MailRenderer

    public init(directory: URL, renderer: MailRenderer) {
        self.directory = directory
        self.renderer = renderer
    }

    public func send(_ message: MailMessage, logger: Logger) async throws(MailError) {
        let rendered = try renderer.render(message)
        var logger = logger
        logger[metadataKey: "mail.backend"] = "maildir"
        logger[metadataKey: "mail.message_id"] = "\(rendered.messageID)"
        let path = directory.path
        let result = await mailRunOnDedicatedThread(name: "mail.maildir") {
            MaildirWriter.deliver(rendered.bytes, toMaildir: path)
        }
        switch result {
        case .success:
            logger.info("mail written to maildir")
        case .failure(let error):
            logger.warning("mail not written", metadata: ["mail.error": "\(error)"])
            throw error
        }
    }
}

/// Blocking maildir delivery. Call on a dedicated thread.
enum MaildirWriter {
    private static let counter = MailCounter()

    static func deliver(_ bytes: [UInt8], toMaildir root: String) -> Result<Void, MailError> {
        for directory in [root, root + "/tmp", root + "/new", root + "/cur"] {
            if case .failure(let error) = ensureDirectory(directory) { return .failure(error) }
        }
        let name = uniqueName()
        let tmpPath = root + "/tmp/" + name
        let newPath = root + "/new/" + name

        let fd = open(tmpPath, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard fd >= 0 else {
            return .failure(.deliveryFailed(reason: "cannot create maildir file: \(errnoText(errno))"))
        }
        // umask can only take bits away, but be explicit about the final mode.
        _ = fchmod(fd, 0o600)
        var failure: MailError? = nil
        bytes.withUnsafeBytes { buffer in
            var offset = 0
            while offset < buffer.count {
                let written = write(fd, buffer.baseAddress! + offset, buffer.count - offset)
                if written > 0 {
                    offset += written
                } else if written < 0 && errno == EINTR {
                    continue
                } else {
                    failure = .deliveryFailed(reason: "writing maildir file failed: \(errnoText(errno))")
                    return
                }
            }
        }
        if failure == nil && fsync(fd) != 0 {
            failure = .deliveryFailed(reason: "fsync of maildir file failed: \(errnoText(errno))")
        }
        if close(fd) != 0 && failure == nil {
            failure = .deliveryFailed(reason: "close of maildir file failed: \(errnoText(errno))")
        }
        if let failure {
            unlink(tmpPath)
            return .failure(failure)
        }
        guard rename(tmpPath, newPath) == 0 else {
            let error = errno
            unlink(tmpPath)
            return .failure(.deliveryFailed(reason: "moving maildir file to new/ failed: \(errnoText(error))"))
        }
        // Make the rename durable.
        let directoryFD = open(root + "/new", O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if directoryFD >= 0 {
            _ = fsync(directoryFD)
            close(directoryFD)
        }
        return .success(())
    }

    /// mkdir with mode 0700 when missing (fixing the mode against an odd umask); an existing
    /// directory is left as it is, a non-directory is an error.
    static func ensureDirectory(_ path: String) -> Result<Void, MailError> {
        if mkdir(path, 0o700) == 0 {
            _ = chmod(path, 0o700)
            return .success(())
        }
        let error = errno
        var info = stat()
        if error == EEXIST, stat(path, &info) == 0, (info.st_mode & S_IFMT) == S_IFDIR {
            return .success(())
        }
        return .failure(.deliveryFailed(reason: "cannot create maildir directory: \(errnoText(error))"))
    }

    static func uniqueName() -> String {
        var now = timeval()
        gettimeofday(&now, nil)
        let random = MailRenderer.randomToken()
        return "\(now.tv_sec).M\(now.tv_usec)P\(getpid())Q\(counter.next())R\(random).\(safeHostName())"
    }

    /// The host name with "/" and ":" escaped as the maildir spec asks ("\057", "\072").
    static func safeHostName() -> String {
        var buffer = [CChar](repeating: 0, count: 256)
        guard gethostname(&buffer, buffer.count - 1) == 0 else { return "localhost" }
        let host = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        let escaped = host.replacingOccurrences(of: "/", with: "\\057").replacingOccurrences(of: ":", with: "\\072")
        return escaped.isEmpty ? "localhost" : escaped
    }

    static func errnoText(_ code: Int32) -> String {
        "errno \(code) (\(String(cString: strerror(code))))"
    }
}

final class MailCounter: @unchecked Sendable {
    private let lock = NSLock()
    private var value: UInt64 = 0

    func next() -> UInt64 {
        lock.lock()
        defer { lock.unlock() }
        value += 1
        return value
    }
}

// MARK: - Reading a maildir (development and tests)

/// One message read back from a maildir, headers unfolded and decoded, body decoded from QP.
public struct ReceivedMail: Sendable, Equatable {
    /// The file in `new/` or `cur/`.
    public var fileURL: URL
    /// Delivery time, from the unique file name (falls back to the file's modification time).
    public var deliveredAt: Date
    /// Every header in file order, unfolded; encoded-words decoded.
    public var headers: [MailHeader]
    /// The decoded text body.
    public var textBody: String

    public var from: String { header("From") ?? "" }
    public var to: String { header("To") ?? "" }
    public var subject: String { header("Subject") ?? "" }
    public var messageID: String { header("Message-ID") ?? "" }

    /// The first header with this name (case-insensitive).
    public func header(_ name: String) -> String? {
        headers.first { $0.name.caseInsensitiveCompare(name) == .orderedSame }?.value
    }
}

extension MaildirMailer {
    /// Every message in `new/` and `cur/` of the maildir at `directory`, oldest first.
    /// Missing folders read as empty.
    public static func messages(in directory: URL) throws -> [ReceivedMail] {
        var result: [(mail: ReceivedMail, sortKey: (Int64, Int64, UInt64, String))] = []
        for folder in ["new", "cur"] {
            let folderURL = directory.appendingPathComponent(folder, isDirectory: true)
            guard FileManager.default.fileExists(atPath: folderURL.path) else { continue }
            for name in try FileManager.default.contentsOfDirectory(atPath: folderURL.path) where !name.hasPrefix(".") {
                let url = folderURL.appendingPathComponent(name)
                let data = try Data(contentsOf: url)
                let key = deliveryKey(name: name, url: url)
                let seconds = Double(key.0) + Double(key.1) / 1_000_000
                result.append((parse(Array(data), fileURL: url, deliveredAt: Date(timeIntervalSince1970: seconds)), key))
            }
        }
        result.sort { $0.sortKey < $1.sortKey }
        return result.map(\.mail)
    }

    /// (seconds, microseconds, counter, name) from our unique names; other names fall back to
    /// the modification time.
    static func deliveryKey(name: String, url: URL) -> (Int64, Int64, UInt64, String) {
        let base = name.split(separator: ":", maxSplits: 1).first.map(String.init) ?? name
        let parts = base.split(separator: ".", maxSplits: 2)
        if parts.count >= 2, let seconds = Int64(parts[0]) {
            // Modern names carry "M<microseconds>" and our "Q<counter>" in the second part.
            var micros: Int64 = 0
            var counter: UInt64 = 0
            if parts[1].hasPrefix("M") {
                let rest = parts[1].dropFirst()
                micros = Int64(rest.prefix { $0.isNumber }) ?? 0
                if let q = rest.firstIndex(of: "Q") {
                    counter = UInt64(rest[rest.index(after: q)...].prefix { $0.isNumber }) ?? 0
                }
            }
            return (seconds, micros, counter, name)
        }
        let modified = (try? FileManager.default.attributesOfItem(atPath: url.path)[.modificationDate] as? Date) ?? nil
        let interval = modified?.timeIntervalSince1970 ?? 0
        let seconds = Int64(interval.rounded(.down))
        return (seconds, Int64((interval - Double(seconds)) * 1_000_000), 0, name)
    }

    /// Parses one message file: headers up to the first empty line (LF or CRLF), continuation
    /// lines unfolded, encoded-words decoded; the body decoded from quoted-printable when the
    /// header says so.
    static func parse(_ bytes: [UInt8], fileURL: URL, deliveredAt: Date) -> ReceivedMail {
        let text = String(decoding: bytes, as: UTF8.self).replacingOccurrences(of: "\r\n", with: "\n")
        let headerPart: Substring
        let bodyPart: Substring
        if let separator = text.range(of: "\n\n") {
            headerPart = text[..<separator.lowerBound]
            bodyPart = text[separator.upperBound...]
        } else {
            headerPart = Substring(text)
            bodyPart = ""
        }
        var headers: [MailHeader] = []
        for line in headerPart.split(separator: "\n", omittingEmptySubsequences: false) {
            if let first = line.first, first == " " || first == "\t", !headers.isEmpty {
                headers[headers.count - 1].value += String(line)
                continue
            }
            guard let colon = line.firstIndex(of: ":") else { continue }
            let name = String(line[..<colon])
            let value = line[line.index(after: colon)...].drop { $0 == " " || $0 == "\t" }
            headers.append(MailHeader(name: name, value: String(value)))
        }
        for index in headers.indices {
            headers[index].value = EncodedWord.decode(headers[index].value)
        }
        let encoding = headers.first { $0.name.lowercased() == "content-transfer-encoding" }?.value.lowercased()
        let body = encoding == "quoted-printable" ? QuotedPrintable.decode(String(bodyPart)) : String(bodyPart)
        return ReceivedMail(fileURL: fileURL, deliveredAt: deliveredAt, headers: headers, textBody: body)
    }
}
