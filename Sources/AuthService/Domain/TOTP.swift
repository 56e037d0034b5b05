import Crypto
import Foundation

/// A TOTP shared secret. Its descriptions and mirror never show the bytes, so logging a
/// value that holds one (or `dump`-ing it) cannot leak the second factor.
public struct TOTPSecret: Sendable, Hashable, CustomStringConvertible, CustomDebugStringConvertible,
    CustomReflectable
{
    public let bytes: [UInt8]

    public init(bytes: [UInt8]) { self.bytes = bytes }

    /// Decodes a Base32 secret (RFC 4648, case-insensitive, padding optional).
    public init?(base32: String) {
        guard let bytes = Base32.decode(base32) else { return nil }
        self.bytes = bytes
    }

    public var base32: String { Base32.encode(bytes) }

    public var description: String { "TOTPSecret(<redacted, \(bytes.count) bytes>)" }
    public var debugDescription: String { description }
    public var customMirror: Mirror { Mirror(self, children: [], displayStyle: .struct) }

    /// Hashable/Equatable compare in constant time.
    public static func == (lhs: TOTPSecret, rhs: TOTPSecret) -> Bool {
        ConstantTime.equals(lhs.bytes, rhs.bytes)
    }

    public func hash(into hasher: inout Hasher) { hasher.combine(bytes) }
}

/// Result of checking a submitted TOTP code.
public enum TOTPVerification: Sendable, Hashable {
    /// Accepted; store `step` as the account's last used step so the code cannot be replayed.
    case valid(step: UInt64)
    /// The code was right for `step`, but that step was already used (replay): refuse.
    case replayed(step: UInt64)
    /// Wrong code, malformed input or a clock out of range.
    case invalid

    public var isValid: Bool {
        if case .valid = self { return true }
        return false
    }
}

/// Time-based one-time passwords, RFC 6238.
public struct TOTP: Sendable, CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    public enum Algorithm: String, Sendable, Hashable, CaseIterable {
        case sha1 = "SHA1"
        case sha256 = "SHA256"
        case sha512 = "SHA512"
    }

    public enum ConfigurationError: Error, Sendable, Hashable {
        case secretTooShort(minimumBytes: Int)
        case unsupportedDigits
        case invalidPeriod
        case invalidTolerance
    }

    /// RFC 4226 §4 requires at least 128 bits of shared secret.
    public static let minimumSecretBytes = 16
    /// What `generateSecret()` returns: 160 bits, as RFC 4226 recommends for SHA-1.
    public static let generatedSecretBytes = 20

    public let secret: TOTPSecret
    public let algorithm: Algorithm
    public let digits: Int
    /// Seconds per step (X in RFC 6238).
    public let period: Int
    /// Steps accepted either side of the current one, for clock drift and typing time.
    public let tolerance: Int

    public init(
        secret: TOTPSecret, algorithm: Algorithm = .sha1, digits: Int = 6, period: Int = 30, tolerance: Int = 1
    ) throws(ConfigurationError) {
        guard secret.bytes.count >= Self.minimumSecretBytes else {
            throw .secretTooShort(minimumBytes: Self.minimumSecretBytes)
        }
        // HOTP's 31-bit dynamic truncation supports up to 9 digits; RFC 6238 uses 6 to 8.
        guard (6...8).contains(digits) else { throw .unsupportedDigits }
        guard period > 0, period <= 86_400 else { throw .invalidPeriod }
        guard (0...10).contains(tolerance) else { throw .invalidTolerance }
        self.secret = secret
        self.algorithm = algorithm
        self.digits = digits
        self.period = period
        self.tolerance = tolerance
    }

    public init(
        secret: [UInt8], algorithm: Algorithm = .sha1, digits: Int = 6, period: Int = 30, tolerance: Int = 1
    ) throws(ConfigurationError) {
        try self.init(
            secret: TOTPSecret(bytes: secret), algorithm: algorithm, digits: digits, period: period,
            tolerance: tolerance)
    }

    /// 20 random bytes from a CSPRNG.
    public static func generateSecret() -> [UInt8] {
        SecureRandom.bytes(generatedSecretBytes)
    }

    /// The time step containing `date` (T = floor((unix time − T0) / X), T0 = 0), or nil
    /// for a date before 1970 or beyond any representable step.
    public func step(at date: Date) -> UInt64? {
        let seconds = date.timeIntervalSince1970
        guard seconds.isFinite, seconds >= 0 else { return nil }
        let step = (seconds / Double(period)).rounded(.down)
        guard step < 9.0e18 else { return nil }  // below UInt64.max with room for Double rounding
        return UInt64(step)
    }

    /// The code for the step containing `date`, or nil if the date is out of range.
    public func code(at date: Date) -> String? {
        step(at: date).map(code(forStep:))
    }

    /// HOTP (RFC 4226) value for a counter.
    public func code(forStep step: UInt64) -> String {
        var counter = step.bigEndian
        let message = withUnsafeBytes(of: &counter) { Array($0) }
        let key = SymmetricKey(data: secret.bytes)
        let mac: [UInt8] =
            switch algorithm {
            case .sha1: Array(HMAC<Insecure.SHA1>.authenticationCode(for: message, using: key))
            case .sha256: Array(HMAC<SHA256>.authenticationCode(for: message, using: key))
            case .sha512: Array(HMAC<SHA512>.authenticationCode(for: message, using: key))
            }
        // Dynamic truncation (RFC 4226 §5.3): the low nibble of the last byte picks 4 bytes.
        guard let last = mac.last else { return "" }
        let offset = Int(last & 0x0F)
        let binary =
            (UInt32(mac[offset] & 0x7F) << 24) | (UInt32(mac[offset + 1]) << 16)
            | (UInt32(mac[offset + 2]) << 8) | UInt32(mac[offset + 3])
        var modulus: UInt32 = 1
        for _ in 0..<digits { modulus *= 10 }
        let value = String(binary % modulus)
        return String(repeating: "0", count: max(0, digits - value.count)) + value
    }

    /// Checks `code` against the steps `current − tolerance ... current + tolerance`.
    ///
    /// All candidate steps are computed and compared in constant time, whatever matches.
    /// A match at a step ≤ `lastUsedStep` is reported as `.replayed`: each code works once,
    /// and so does any older one. On `.valid(step)` the caller stores `step` atomically
    /// (e.g. `UPDATE … SET totp_last_step = $1 WHERE totp_last_step IS NULL OR totp_last_step < $1`).
    public func verify(code: String, at date: Date, lastUsedStep: UInt64?) -> TOTPVerification {
        let submitted = Array(code.utf8)
        guard submitted.count == digits,
              submitted.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }),
              let current = step(at: date)
        else { return .invalid }

        var freshMatch: UInt64?
        var replayedMatch: UInt64?
        let low = current >= UInt64(tolerance) ? current - UInt64(tolerance) : 0
        let high = current + UInt64(tolerance)
        for candidate in low...high {
            let matches = ConstantTime.equals(Array(self.code(forStep: candidate).utf8), submitted)
            guard matches else { continue }
            // Keep the highest fresh step: storing it makes every lower step unusable.
            if let last = lastUsedStep, candidate <= last {
                replayedMatch = candidate
            } else {
                freshMatch = candidate
            }
        }
        if let step = freshMatch { return .valid(step: step) }
        if let step = replayedMatch { return .replayed(step: step) }
        return .invalid
    }

    /// `otpauth://totp/Issuer:account?secret=…&issuer=…&algorithm=SHA1&digits=6&period=30`
    /// (Google Authenticator key URI format), every component percent-encoded.
    /// Contains the secret: show it to the user once, never log it.
    public func provisioningURI(issuer: String, account: String) -> String {
        let label = PercentEncoding.encode(issuer) + ":" + PercentEncoding.encode(account)
        return "otpauth://totp/\(label)?secret=\(secret.base32)&issuer=\(PercentEncoding.encode(issuer))"
            + "&algorithm=\(algorithm.rawValue)&digits=\(digits)&period=\(period)"
    }

    public var description: String {
        "TOTP(secret: \(secret), algorithm: \(algorithm.rawValue), digits: \(digits), period: \(period))"
    }
    public var debugDescription: String { description }
    public var customMirror: Mirror {
        Mirror(
            self,
            children: ["algorithm": algorithm, "digits": digits, "period": period, "tolerance": tolerance],
            displayStyle: .struct)
    }
}

/// RFC 4648 Base32 (alphabet A–Z, 2–7).
public enum Base32 {
    private static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567".utf8)

    /// Uppercase, without padding (as authenticator apps expect in URIs).
    public static func encode(_ bytes: [UInt8]) -> String {
        var out: [UInt8] = []
        out.reserveCapacity((bytes.count * 8 + 4) / 5)
        var buffer: UInt32 = 0
        var bits = 0
        for byte in bytes {
            buffer = (buffer << 8) | UInt32(byte)
            bits += 8
            while bits >= 5 {
                out.append(alphabet[Int((buffer >> UInt32(bits - 5)) & 0x1F)])
                bits -= 5
            }
        }
        if bits > 0 {
            out.append(alphabet[Int((buffer << UInt32(5 - bits)) & 0x1F)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Case-insensitive; trailing "=" padding is optional. Nil for any other character, a
    /// length no encoder produces, or non-zero leftover bits.
    public static func decode(_ string: String) -> [UInt8]? {
        var chars = Array(string.utf8)
        while chars.last == UInt8(ascii: "=") { chars.removeLast() }
        // Lengths mod 8 of 1, 3 or 6 cannot come from whole bytes.
        guard ![1, 3, 6].contains(chars.count % 8) else { return nil }
        var out: [UInt8] = []
        out.reserveCapacity(chars.count * 5 / 8)
        var buffer: UInt32 = 0
        var bits = 0
        for char in chars {
            let value: UInt8
            switch char {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"): value = char - UInt8(ascii: "A")
            case UInt8(ascii: "a")...UInt8(ascii: "z"): value = char - UInt8(ascii: "a")
            case UInt8(ascii: "2")...UInt8(ascii: "7"): value = char - UInt8(ascii: "2") + 26
            default: return nil
            }
            buffer = (buffer << 5) | UInt32(value)
            bits += 5
            if bits >= 8 {
                out.append(UInt8((buffer >> UInt32(bits - 8)) & 0xFF))
                bits -= 8
            }
            buffer &= (1 << UInt32(bits)) - 1
        }
        guard buffer == 0 else { return nil }  // canonical encodings pad with zero bits
        return out
    }
}

/// RFC 3986 percent-encoding: everything but unreserved characters (ALPHA DIGIT - . _ ~).
public enum PercentEncoding {
    public static func encode(_ string: String) -> String {
        var out = ""
        for byte in string.utf8 {
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "."),
                UInt8(ascii: "_"), UInt8(ascii: "~"):
                out.unicodeScalars.append(Unicode.Scalar(byte))
            default:
                out += "%" + Hex.encode([byte]).uppercased()
            }
        }
        return out
    }
}
