import Foundation
import Crypto

/// Small helpers shared by the auth domain types. Pure, no I/O.
public enum ConstantTime {
    /// Compares two byte sequences without an early exit on the first difference, so the
    /// time taken does not reveal how long a matching prefix an attacker has guessed.
    /// Lengths are not secret here (codes, hashes and keys have a fixed public length),
    /// so a length mismatch returns at once.
    public static func equals<A: Collection, B: Collection>(_ a: A, _ b: B) -> Bool
    where A.Element == UInt8, B.Element == UInt8 {
        guard a.count == b.count else { return false }
        var difference: UInt8 = 0
        for (x, y) in zip(a, b) {
            difference |= x ^ y
        }
        return difference == 0
    }

    /// Constant-time comparison of the UTF-8 bytes of two strings.
    public static func equals(_ a: String, _ b: String) -> Bool {
        equals(Array(a.utf8), Array(b.utf8))
    }
}

/// Cryptographically secure random bytes, from BoringSSL's `RAND_bytes` (via swift-crypto's
/// key generation) rather than `SystemRandomNumberGenerator`, whose documentation only
/// promises a secure algorithm "whenever possible".
public enum SecureRandom {
    public static func bytes(_ count: Int) -> [UInt8] {
        guard count > 0 else { return [] }
        var result: [UInt8] = []
        result.reserveCapacity(count)
        while result.count < count {
            // 256-bit chunks: SymmetricKey sizes must be whole bytes, any size works.
            let key = SymmetricKey(size: .bits256)
            key.withUnsafeBytes { result.append(contentsOf: $0.prefix(count - result.count)) }
        }
        return result
    }
}

public enum Hex {
    private static let digits = Array("0123456789abcdef".utf8)

    /// Lowercase hexadecimal.
    public static func encode<S: Sequence>(_ bytes: S) -> String where S.Element == UInt8 {
        var out: [UInt8] = []
        out.reserveCapacity(bytes.underestimatedCount * 2)
        for byte in bytes {
            out.append(digits[Int(byte >> 4)])
            out.append(digits[Int(byte & 0x0F)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Decodes lowercase or uppercase hex; nil on odd length or a non-hex character.
    public static func decode(_ string: String) -> [UInt8]? {
        let chars = Array(string.utf8)
        guard chars.count % 2 == 0 else { return nil }
        var out: [UInt8] = []
        out.reserveCapacity(chars.count / 2)
        var index = 0
        while index < chars.count {
            guard let high = value(chars[index]), let low = value(chars[index + 1]) else { return nil }
            out.append(high << 4 | low)
            index += 2
        }
        return out
    }

    static func value(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
        default: return nil
        }
    }
}

/// Keyed hashing helpers (HMAC-SHA256, lowercase hex).
public enum KeyedHash {
    public static func hmacSHA256Hex<D: DataProtocol>(_ message: D, key: SymmetricKey) -> String {
        Hex.encode(HMAC<SHA256>.authenticationCode(for: message, using: key))
    }

    public static func hmacSHA256Hex(_ message: String, key: SymmetricKey) -> String {
        hmacSHA256Hex(Array(message.utf8), key: key)
    }
}
