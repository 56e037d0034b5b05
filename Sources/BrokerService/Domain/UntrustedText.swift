import Foundation

/// Checks shared by every string the broker takes from a caller or from Alpaca/Stripe before it
/// goes into a URL, a form body, a log line or the database.
enum UntrustedText {
    /// C0 controls (NUL included), DEL and C1 controls: never meaningful in an identifier, a
    /// decimal or a code, and the edge refuses them in every field too (C-15). Checked again here
    /// because the broker must not rely on its caller's checks.
    static func containsControlCharacter(_ text: String) -> Bool {
        text.unicodeScalars.contains(where: isControl)
    }

    /// Printable ASCII only (0x20–0x7E).
    static func isPrintableASCII(_ text: String) -> Bool {
        text.utf8.allSatisfy { $0 >= 0x20 && $0 <= 0x7E }
    }

    /// A required single-line value from a caller (an OAuth code, say): present, printable ASCII
    /// without spaces, at most `maximumLength` bytes. Returns it unchanged.
    static func check(_ text: String, field: String, maximumLength: Int) throws(FieldValidationError) -> String {
        guard !text.isEmpty else { throw FieldValidationError(field: field, problem: .missing) }
        guard !containsControlCharacter(text) else { throw FieldValidationError(field: field, problem: .controlCharacter) }
        guard text.utf8.count <= maximumLength else { throw FieldValidationError(field: field, problem: .tooLong) }
        guard text.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else { throw FieldValidationError(field: field, problem: .invalidFormat) }
        return text
    }
}

extension UntrustedText {
    /// Display text from Alpaca or Stripe (an institution name, say) made storable: control
    /// characters dropped (PostgreSQL refuses NUL in text; the rest would reach clients and logs)
    /// and cut at a character boundary to at most `maximumScalars` Unicode scalars, which is what
    /// the schema's `char_length` CHECKs count. A provider's over-long value is shortened rather
    /// than refused: the user's link should not fail over a display name.
    static func storable(_ text: String, maximumScalars: Int) -> String {
        var kept = String.UnicodeScalarView()
        var count = 0
        for character in text {
            let scalars = character.unicodeScalars.filter { !isControl($0) }
            guard count + scalars.count <= maximumScalars else { break }
            kept.append(contentsOf: scalars)
            count += scalars.count
        }
        return String(kept)
    }

    static func isControl(_ scalar: Unicode.Scalar) -> Bool {
        scalar.value < 0x20 || (0x7F...0x9F).contains(scalar.value)
    }
}

/// Unix times from Alpaca or Stripe as dates the database can hold: PostgreSQL's driver turns a
/// date into microseconds in an Int64 (a far-off value would trap, not fail), so anything before
/// 1970 or after 9999 is treated as absent.
enum ProviderTime {
    static let latest: Int64 = 253_402_300_799 // 9999-12-31T23:59:59Z

    static func date(unixSeconds seconds: Int64) -> Date? {
        (1...latest).contains(seconds) ? Date(timeIntervalSince1970: TimeInterval(seconds)) : nil
    }
}
