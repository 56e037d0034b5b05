// Mail layer of the auth service (spec C-5, X-6): the message model and its validation.
//
// Everything a header or an address may contain is checked here, before a single byte is
// written to sendmail or to a maildir: a CR, LF or NUL in any header value or address is a
// typed error (`MailError.invalidHeader`), never something we try to "clean".

import Foundation

/// Errors of the mail layer. Reasons never carry the message's subject, body or the code it
/// holds: they end up in logs.
public enum MailError: Error, Sendable, Equatable, CustomStringConvertible {
    /// A header value or address was refused before anything was sent. `field` names the
    /// header (`From`, `To`, `Subject`, an extra header's name, or `Message-ID domain`).
    case invalidHeader(field: String)
    /// The backend could not deliver. The reason is about the transport (exit status, errno),
    /// never about the message's contents.
    case deliveryFailed(reason: String)
    /// The backend did not finish within its time limit; a sendmail child was killed.
    case timeout

    public var description: String {
        switch self {
        case .invalidHeader(let field): return "mail refused: invalid \(field) header"
        case .deliveryFailed(let reason): return "mail delivery failed: \(reason)"
        case .timeout: return "mail delivery timed out"
        }
    }
}

/// An extra header. Only `X-` headers are accepted (see `MailMessage.validate()`): every other
/// name is either written by the renderer itself or could change who receives the message
/// (`Cc`, `Bcc`, `Resent-*` are read by `sendmail -t`).
public struct MailHeader: Sendable, Equatable, Hashable {
    public var name: String
    public var value: String

    public init(name: String, value: String) {
        self.name = name
        self.value = value
    }
}

/// One plain-text message to exactly one recipient.
public struct MailMessage: Sendable, Equatable {
    /// Bare addr-spec of the sender (`no-reply@example.com`), no display name.
    public var from: String
    /// Bare addr-spec of the single recipient.
    public var to: String
    /// Unstructured text; non-ASCII is sent as RFC 2047 encoded-words.
    public var subject: String
    /// Plain UTF-8 text, lines separated by "\n"; sent quoted-printable.
    public var textBody: String
    /// Optional `X-` headers (for example `X-Clau-Notice: reset-code` for mail filters).
    public var extraHeaders: [MailHeader]

    public init(from: String, to: String, subject: String, textBody: String, extraHeaders: [MailHeader] = []) {
        self.from = from
        self.to = to
        self.subject = subject
        self.textBody = textBody
        self.extraHeaders = extraHeaders
    }

    /// A message built from a template's output.
    public init(from: String, to: String, content: MailContent, extraHeaders: [MailHeader] = []) {
        self.init(from: from, to: to, subject: content.subject, textBody: content.body, extraHeaders: extraHeaders)
    }

    /// Checks every header value and address. Called by the renderer, so by every backend,
    /// before any I/O.
    public func validate() throws(MailError) {
        try MailAddress.validate(from, field: "From")
        try MailAddress.validate(to, field: "To")
        try MailHeaderText.validateUnstructured(subject, field: "Subject")
        try MailHeaderText.validateBody(textBody)
        var seen = Set<String>()
        for header in extraHeaders {
            try MailHeaderText.validateExtraHeaderName(header.name)
            // The name is validated: it is safe to use in the error from here on.
            guard seen.insert(header.name.lowercased()).inserted else {
                throw .invalidHeader(field: header.name)
            }
            try MailHeaderText.validateExtraHeaderValue(header.value, field: header.name)
        }
    }
}

/// Address rules. Deliberately stricter than RFC 5322: one bare addr-spec (`local@domain`),
/// no display name, no angle brackets, no comments, no quoted local part, no domain literal,
/// no non-ASCII (we do not speak SMTPUTF8), at most 254 octets (RFC 5321 path limit less the
/// brackets), local part at most 64, domain labels at most 63 of `[A-Za-z0-9-]`.
/// The local part may not contain `|` or `/` nor start with `-`: local MTAs give those a
/// meaning (pipe and file deliveries, options), and no customer address needs them.
enum MailAddress {
    private static let localPartSpecials: Set<UInt8> = Set("!#$%&'*+-=?^_`{}~.".utf8)

    static func validate(_ address: String, field: String) throws(MailError) {
        let bytes = Array(address.utf8)
        guard !bytes.isEmpty, bytes.count <= 254 else { throw .invalidHeader(field: field) }
        // Covers CR, LF, NUL, every other control, space, and non-ASCII.
        guard bytes.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else { throw .invalidHeader(field: field) }
        guard let at = bytes.lastIndex(of: UInt8(ascii: "@")),
              bytes.firstIndex(of: UInt8(ascii: "@")) == at
        else { throw .invalidHeader(field: field) }
        let local = bytes[..<at]
        let domain = bytes[(at + 1)...]
        guard isValidLocalPart(local), isValidDomain(domain) else { throw .invalidHeader(field: field) }
    }

    static func isValidLocalPart(_ local: ArraySlice<UInt8>) -> Bool {
        guard !local.isEmpty, local.count <= 64 else { return false }
        guard local.first != UInt8(ascii: "."), local.last != UInt8(ascii: "."),
              local.first != UInt8(ascii: "-")
        else { return false }
        var previousDot = false
        for byte in local {
            let isDot = byte == UInt8(ascii: ".")
            if isDot && previousDot { return false }
            previousDot = isDot
            if isASCIIAlphanumeric(byte) || localPartSpecials.contains(byte) { continue }
            return false
        }
        return true
    }

    /// A host name: dot-separated labels of letters, digits and inner hyphens. A single label
    /// (`localhost`) is allowed for development setups.
    static func isValidDomain<C: BidirectionalCollection>(_ domain: C) -> Bool where C.Element == UInt8, C.SubSequence: BidirectionalCollection {
        guard !domain.isEmpty, domain.count <= 253 else { return false }
        let labels = domain.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false)
        for label in labels {
            guard !label.isEmpty, label.count <= 63,
                  label.first != UInt8(ascii: "-"), label.last != UInt8(ascii: "-"),
                  label.allSatisfy({ isASCIIAlphanumeric($0) || $0 == UInt8(ascii: "-") })
            else { return false }
        }
        return true
    }

    static func isASCIIAlphanumeric(_ byte: UInt8) -> Bool {
        (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x61 && byte <= 0x7A)
    }
}

/// Rules for header text and body text.
enum MailHeaderText {
    /// Unstructured header text (the subject): no C0 control but TAB, no DEL, no C1 control,
    /// no Unicode line or paragraph separator. CR, LF and NUL are C0 controls.
    static func validateUnstructured(_ value: String, field: String) throws(MailError) {
        guard value.utf8.count <= 900 else { throw .invalidHeader(field: field) }
        for scalar in value.unicodeScalars where isForbiddenInHeader(scalar) {
            throw .invalidHeader(field: field)
        }
    }

    static func isForbiddenInHeader(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar.value {
        case 0x09: return false
        case 0x00...0x1F, 0x7F, 0x80...0x9F, 0x2028, 0x2029: return true
        default: return false
        }
    }

    /// The body may hold any text but NUL (QP would carry it, but no mail program wants it).
    static func validateBody(_ body: String) throws(MailError) {
        guard !body.utf8.contains(0) else { throw .invalidHeader(field: "body") }
    }

    /// `X-` followed by RFC 5322 field-name characters (printable ASCII but ':'), 76 at most.
    static func validateExtraHeaderName(_ name: String) throws(MailError) {
        let bytes = Array(name.utf8)
        let printable = bytes.allSatisfy { $0 >= 0x21 && $0 <= 0x7E && $0 != UInt8(ascii: ":") }
        guard printable, bytes.count > 2, bytes.count <= 76,
              bytes[0] | 0x20 == UInt8(ascii: "x"), bytes[1] == UInt8(ascii: "-")
        else {
            // Don't echo an attacker-shaped name (it may hold CR/LF) into logs.
            throw .invalidHeader(field: printable && bytes.count <= 76 ? name : "extra header name")
        }
    }

    /// Extra header values: printable ASCII and spaces only, short enough for one line.
    static func validateExtraHeaderValue(_ value: String, field: String) throws(MailError) {
        let bytes = Array(value.utf8)
        guard bytes.count <= 900, bytes.allSatisfy({ $0 >= 0x20 && $0 <= 0x7E }) else {
            throw .invalidHeader(field: field)
        }
    }
}
