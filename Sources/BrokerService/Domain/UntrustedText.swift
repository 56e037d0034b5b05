/// Checks shared by every string the broker takes from a caller or from Alpaca/Stripe before it
/// goes into a URL, a form body, a log line or the database.
enum UntrustedText {
    /// C0 controls (NUL included), DEL and C1 controls: never meaningful in an identifier, a
    /// decimal or a code, and the edge refuses them in every field too (C-15). Checked again here
    /// because the broker must not rely on its caller's checks.
    static func containsControlCharacter(_ text: String) -> Bool {
        text.unicodeScalars.contains { $0.value < 0x20 || (0x7F...0x9F).contains($0.value) }
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
