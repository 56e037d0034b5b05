// Quoted-printable (RFC 2045 §6.7) for mail bodies.
//
// Why QP and not 8bit: QP output is 7-bit ASCII with lines of at most 76 characters, so it
// survives every relay (no 8BITMIME needed, no 998-octet line limit to police, no trailing
// whitespace stripped by a transport), while English text stays readable in the raw file —
// a developer can read a reset code straight out of a maildir file.
//
// Line breaks: the encoded text uses "\n" (LF) between lines — the local convention of
// `sendmail -t` submission and of maildir files; the MTA turns it into CRLF on the wire.
// A "\n" in the source text is a hard line break; a "\r" is always encoded (`=0D`), so
// `decode(encode(x)) == x` holds byte for byte, including for "\r\n" in the source.

enum QuotedPrintable {
    static let maxLineLength = 76
    private static let hexDigits = Array("0123456789ABCDEF".utf8)

    /// Encodes UTF-8 text. Every output line has at most 76 characters (soft breaks included).
    static func encode(_ text: String) -> String {
        String(decoding: encode(bytes: Array(text.utf8)), as: UTF8.self)
    }

    static func encode(bytes: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count + bytes.count / 8)
        let lines = bytes.split(separator: 0x0A, omittingEmptySubsequences: false)
        for (lineIndex, line) in lines.enumerated() {
            if lineIndex > 0 { out.append(0x0A) }
            encodeLine(Array(line), into: &out)
        }
        return out
    }

    private static func encodeLine(_ line: [UInt8], into out: inout [UInt8]) {
        var column = 0
        for (index, byte) in line.enumerated() {
            let isLast = index == line.count - 1
            var token = token(for: byte, isLastOfLine: isLast)
            // At the start of a physical line, protect a leading "." (SMTP dot handling by
            // lenient tools) and "From " (mbox quoting) so no transport rewrites the line.
            if column == 0 && token.count == 1 {
                if byte == UInt8(ascii: ".") || startsWithFromSpace(line, at: index) {
                    token = escaped(byte)
                }
            }
            // Room needed: the token, plus a soft break "=" unless this is the line's end.
            let limit = isLast ? maxLineLength : maxLineLength - 1
            if column + token.count > limit {
                out.append(UInt8(ascii: "="))
                out.append(0x0A)
                column = 0
                if token.count == 1 && (byte == UInt8(ascii: ".") || startsWithFromSpace(line, at: index)) {
                    token = escaped(byte)
                }
            }
            out.append(contentsOf: token)
            column += token.count
        }
    }

    private static func token(for byte: UInt8, isLastOfLine: Bool) -> [UInt8] {
        switch byte {
        case 0x20, 0x09:
            // Whitespace at the end of a line would be stripped in transport (RFC 2045 rule 3).
            return isLastOfLine ? escaped(byte) : [byte]
        case 0x3D:
            return escaped(byte)
        case 0x21...0x7E:
            return [byte]
        default:
            return escaped(byte)
        }
    }

    private static func escaped(_ byte: UInt8) -> [UInt8] {
        [UInt8(ascii: "="), hexDigits[Int(byte >> 4)], hexDigits[Int(byte & 0x0F)]]
    }

    private static func startsWithFromSpace(_ line: [UInt8], at index: Int) -> Bool {
        let from: [UInt8] = Array("From ".utf8)
        guard line.count - index >= from.count else { return false }
        return Array(line[index..<(index + from.count)]) == from
    }

    /// Decodes QP text. Accepts LF or CRLF line ends, drops transport padding (whitespace at
    /// the end of an encoded line), and keeps a malformed `=` sequence literally.
    static func decode(_ text: String) -> String {
        String(decoding: decode(bytes: Array(text.utf8)), as: UTF8.self)
    }

    static func decode(bytes: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count)
        let lines = bytes.split(separator: 0x0A, omittingEmptySubsequences: false)
        for (lineIndex, rawLine) in lines.enumerated() {
            var line = Array(rawLine)
            if line.last == 0x0D { line.removeLast() }
            while let last = line.last, last == 0x20 || last == 0x09 { line.removeLast() }
            var softBreak = false
            if line.last == UInt8(ascii: "=") {
                softBreak = true
                line.removeLast()
            }
            var i = 0
            while i < line.count {
                let byte = line[i]
                if byte == UInt8(ascii: "="), i + 2 < line.count, let high = hexValue(line[i + 1]), let low = hexValue(line[i + 2]) {
                    out.append(high << 4 | low)
                    i += 3
                } else {
                    out.append(byte)
                    i += 1
                }
            }
            let isLastLine = lineIndex == lines.count - 1
            if !softBreak && !isLastLine { out.append(0x0A) }
        }
        return out
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case 0x30...0x39: return byte - 0x30
        case 0x41...0x46: return byte - 0x41 + 10
        case 0x61...0x66: return byte - 0x61 + 10
        default: return nil
        }
    }
}
