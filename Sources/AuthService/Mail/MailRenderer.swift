// RFC 5322 rendering of a `MailMessage`.
//
// Line endings: LF. Both backends hand the message to a local program or file — `sendmail -t
// -i` expects the local text convention and converts to CRLF for SMTP itself (postfix, exim
// and msmtp all do), and maildir files are LF by convention (readers such as dovecot and mutt
// expect it). So the rendered bytes use "\n" throughout, and contain nothing but printable
// ASCII, TAB-free headers and "\n".

import Foundation

/// The bytes of one rendered message and its Message-ID (for logs: the ID is random and
/// tells nothing about the contents).
public struct RenderedMail: Sendable, Equatable {
    public var messageID: String
    public var bytes: [UInt8]
}

/// Renders messages to RFC 5322 bytes. The clock is injected so tests get a fixed `Date:`.
public struct MailRenderer: Sendable {
    /// Domain after the `@` of generated Message-IDs.
    public let messageIDDomain: String
    let clock: @Sendable () -> Date
    let randomToken: @Sendable () -> String

    /// - Parameters:
    ///   - messageIDDomain: host name for `Message-ID: <random@domain>`; must be a valid host name.
    ///   - clock: source of the `Date:` header.
    public init(messageIDDomain: String, clock: @escaping @Sendable () -> Date = { Date() }) throws(MailError) {
        try self.init(messageIDDomain: messageIDDomain, clock: clock, randomToken: MailRenderer.randomToken)
    }

    /// Tests inject a fixed token to compare rendered bytes exactly.
    init(
        messageIDDomain: String,
        clock: @escaping @Sendable () -> Date,
        randomToken: @escaping @Sendable () -> String
    ) throws(MailError) {
        guard MailAddress.isValidDomain(Array(messageIDDomain.utf8)) else {
            throw .invalidHeader(field: "Message-ID domain")
        }
        self.messageIDDomain = messageIDDomain
        self.clock = clock
        self.randomToken = randomToken
    }

    /// 128 random bits from the system CSPRNG, as 32 lowercase hex digits.
    static func randomToken() -> String {
        var generator = SystemRandomNumberGenerator()
        let high = generator.next() as UInt64
        let low = generator.next() as UInt64
        return hex64(high) + hex64(low)
    }

    static func hex64(_ value: UInt64) -> String {
        let digits = String(value, radix: 16)
        return String(repeating: "0", count: 16 - digits.count) + digits
    }

    /// Validates the message, then renders it. Throws before producing anything if any header
    /// value or address is unsafe.
    public func render(_ message: MailMessage) throws(MailError) -> RenderedMail {
        try message.validate()
        let token = randomToken()
        // The token is ours, but check it anyway: it lands in a header.
        guard !token.isEmpty, token.utf8.allSatisfy({ MailAddress.isASCIIAlphanumeric($0) || $0 == UInt8(ascii: ".") }) else {
            throw .invalidHeader(field: "Message-ID")
        }
        let messageID = "<\(token)@\(messageIDDomain)>"

        var headers: [String] = [
            "Date: \(RFC5322Date.format(clock()))",
            "From: \(message.from)",
            "To: \(message.to)",
            foldedSubject(message.subject),
            "Message-ID: \(messageID)",
            "MIME-Version: 1.0",
            "Content-Type: text/plain; charset=utf-8",
            "Content-Transfer-Encoding: quoted-printable",
            "Auto-Submitted: auto-generated",
        ]
        for header in message.extraHeaders {
            headers.append("\(header.name): \(header.value)")
        }

        var body = QuotedPrintable.encode(message.textBody)
        // End the file with a line break without changing the decoded text: a final soft break.
        if !body.hasSuffix("\n") { body += "=\n" }

        var text = headers.joined(separator: "\n")
        text += "\n\n"
        text += body
        return RenderedMail(messageID: messageID, bytes: Array(text.utf8))
    }

    /// `Subject:` as printable ASCII folded at spaces near 78 columns when it is plain ASCII,
    /// else as RFC 2047 "B" encoded-words of at most 75 characters, one per folded line, each
    /// holding whole UTF-8 characters.
    func foldedSubject(_ subject: String) -> String {
        let isPlain = subject.utf8.allSatisfy { $0 >= 0x20 && $0 <= 0x7E }
            && !subject.contains("=?")
            && !subject.hasPrefix(" ") && !subject.hasSuffix(" ")
            && !subject.contains("  ")
        if isPlain {
            let words = subject.split(separator: " ", omittingEmptySubsequences: false)
            if words.allSatisfy({ $0.utf8.count <= 900 }) {
                var lines: [String] = []
                var current = "Subject:"
                for word in words {
                    if current.utf8.count + 1 + word.utf8.count > 78 && current != "Subject:" {
                        lines.append(current)
                        current = ""
                    }
                    current += " " + word
                }
                lines.append(current)
                return lines.joined(separator: "\n")
            }
        }
        return "Subject: " + EncodedWord.encode(subject).joined(separator: "\n ")
    }
}

/// RFC 2047 encoded-words ("=?utf-8?B?...?=").
enum EncodedWord {
    /// 42 source bytes → 56 base64 characters + 12 for "=?utf-8?B?" and "?=" = 68 ≤ 75 (the
    /// RFC 2047 limit), and "Subject: " + 68 = 77 keeps even the first line within 78.
    static let maxChunkBytes = 42

    static func encode(_ text: String) -> [String] {
        var words: [String] = []
        var chunk: [UInt8] = []
        for character in text {
            let bytes = Array(String(character).utf8)
            if !chunk.isEmpty && chunk.count + bytes.count > maxChunkBytes {
                words.append(word(chunk))
                chunk = []
            }
            if bytes.count > maxChunkBytes {
                // A huge grapheme cluster: split at scalar boundaries instead.
                for scalar in String(character).unicodeScalars {
                    let scalarBytes = Array(String(scalar).utf8)
                    if !chunk.isEmpty && chunk.count + scalarBytes.count > maxChunkBytes {
                        words.append(word(chunk))
                        chunk = []
                    }
                    chunk += scalarBytes
                }
            } else {
                chunk += bytes
            }
        }
        if !chunk.isEmpty || words.isEmpty { words.append(word(chunk)) }
        return words
    }

    private static func word(_ bytes: [UInt8]) -> String {
        "=?utf-8?B?" + Data(bytes).base64EncodedString() + "?="
    }

    /// Decodes the encoded-words of an unstructured header value (B and Q encodings, any
    /// charset treated as UTF-8). Whitespace between two adjacent encoded-words is dropped,
    /// as RFC 2047 §6.2 requires.
    static func decode(_ value: String) -> String {
        var result = ""
        var rest = Substring(value)
        var pendingWhitespace = ""
        var lastWasEncoded = false
        while !rest.isEmpty {
            if rest.hasPrefix("=?"), let (decoded, length) = decodeOne(rest) {
                if !lastWasEncoded { result += pendingWhitespace }
                pendingWhitespace = ""
                result += decoded
                rest = rest.dropFirst(length)
                lastWasEncoded = true
                continue
            }
            let character = rest.removeFirst()
            if character == " " || character == "\t" {
                pendingWhitespace.append(character)
            } else {
                result += pendingWhitespace
                pendingWhitespace = ""
                result.append(character)
                lastWasEncoded = false
            }
        }
        return result + pendingWhitespace
    }

    private static func decodeOne(_ text: Substring) -> (String, Int)? {
        // =?charset?E?payload?=
        let parts = text.dropFirst(2)
        guard let q1 = parts.firstIndex(of: "?") else { return nil }
        let afterCharset = parts[parts.index(after: q1)...]
        guard let q2 = afterCharset.firstIndex(of: "?") else { return nil }
        let encoding = afterCharset[..<q2].uppercased()
        let payloadStart = afterCharset.index(after: q2)
        guard let end = afterCharset[payloadStart...].range(of: "?=") else { return nil }
        let payload = afterCharset[payloadStart..<end.lowerBound]
        let length = text.distance(from: text.startIndex, to: end.upperBound)
        switch encoding {
        case "B":
            guard let data = Data(base64Encoded: String(payload)) else { return nil }
            return (String(decoding: data, as: UTF8.self), length)
        case "Q":
            let underscoresAsSpaces = payload.replacingOccurrences(of: "_", with: " ")
            return (QuotedPrintable.decode(underscoresAsSpaces), length)
        default:
            return nil
        }
    }
}

/// RFC 5322 §3.3 date-time in UTC ("Mon, 23 Nov 2026 15:22:21 +0000"), computed without
/// locales or formatters.
enum RFC5322Date {
    private static let weekdays = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"]  // 1970-01-01 was a Thursday
    private static let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]

    struct Parts: Equatable {
        var year: Int, month: Int, day: Int, hour: Int, minute: Int, second: Int, weekday: String
        var monthName: String { RFC5322Date.months[month - 1] }
    }

    static func parts(_ date: Date) -> Parts {
        let seconds = Int(date.timeIntervalSince1970.rounded(.down))
        let days = floorDiv(seconds, 86_400)
        let secondOfDay = seconds - days * 86_400
        // Howard Hinnant's civil_from_days.
        let z = days + 719_468
        let era = floorDiv(z, 146_097)
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let day = doy - (153 * mp + 2) / 5 + 1
        let month = mp < 10 ? mp + 3 : mp - 9
        let year = yoe + era * 400 + (month <= 2 ? 1 : 0)
        let weekday = weekdays[((days % 7) + 7) % 7]
        return Parts(
            year: year, month: month, day: day,
            hour: secondOfDay / 3600, minute: (secondOfDay % 3600) / 60, second: secondOfDay % 60,
            weekday: weekday
        )
    }

    static func format(_ date: Date) -> String {
        let p = parts(date)
        return "\(p.weekday), \(p.day) \(p.monthName) \(p.year) \(two(p.hour)):\(two(p.minute)):\(two(p.second)) +0000"
    }

    static func two(_ value: Int) -> String { value < 10 ? "0\(value)" : "\(value)" }

    private static func floorDiv(_ a: Int, _ b: Int) -> Int {
        a >= 0 ? a / b : -((-a + b - 1) / b)
    }
}
