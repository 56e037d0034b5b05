import Foundation

/// Field rules that the edge (a 422 naming the field) and auth (INVALID_ARGUMENT) must apply
/// identically: written once here so the two can never disagree on what an address is.
public enum FieldRules {
    /// How an e-mail address is compared and stored: surrounding spaces dropped, lower-cased.
    public static func normalizedEmail(_ raw: String) -> String {
        raw.trimmingCharacters(in: .whitespaces).lowercased()
    }

    public enum EmailProblem: Sendable, Equatable {
        case empty, tooLong, invalid
    }

    /// RFC 5322, the practical subset: ASCII, one `@`, a dot-atom local part of at most 64
    /// characters, a domain of at least two DNS labels whose last is two or more characters and not
    /// all digits, at most 254 bytes in all (after normalisation). Nil when the address is valid.
    public static func emailProblem(_ raw: String) -> EmailProblem? {
        let email = normalizedEmail(raw)
        guard !email.isEmpty else { return .empty }
        guard email.utf8.count <= 254 else { return .tooLong }
        guard email.unicodeScalars.allSatisfy({ $0.isASCII && $0.value > 0x20 && $0.value < 0x7F }) else { return .invalid }
        let parts = email.split(separator: "@", omittingEmptySubsequences: false)
        guard parts.count == 2 else { return .invalid }
        let local = parts[0], domain = parts[1]
        guard (1...64).contains(local.count), local.allSatisfy(localPartCharacters.contains),
              !local.hasPrefix("."), !local.hasSuffix("."), !local.contains("..")
        else { return .invalid }
        let labels = domain.split(separator: ".", omittingEmptySubsequences: false)
        guard labels.count >= 2,
              labels.allSatisfy({ (1...63).contains($0.count) && $0.allSatisfy(labelCharacters.contains) && !$0.hasPrefix("-") && !$0.hasSuffix("-") }),
              let tld = labels.last, tld.count >= 2, !tld.allSatisfy(\.isNumber)
        else { return .invalid }
        return nil
    }

    /// E.164: `+`, then 7 to 15 digits, the first not 0.
    public static func isE164Phone(_ raw: String) -> Bool {
        let digits = raw.utf8.dropFirst()
        return raw.utf8.first == UInt8(ascii: "+") && (7...15).contains(digits.count)
            && digits.allSatisfy({ (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) }) && digits.first != UInt8(ascii: "0")
    }

    private static let localPartCharacters = Set("abcdefghijklmnopqrstuvwxyz0123456789!#$%&'*+/=?^_`{|}~-.")
    private static let labelCharacters = Set("abcdefghijklmnopqrstuvwxyz0123456789-")
}
