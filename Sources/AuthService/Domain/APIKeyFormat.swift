import Crypto
import Foundation

/// A syntactically valid API key. Its descriptions show only the lookup prefix.
public struct APIKey: Sendable, Hashable, CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    /// The full key: show it to the user once at creation, never log or store it.
    public let rawValue: String

    fileprivate init(validated: String) { rawValue = validated }

    /// First 8 hex characters after "clau_": a non-secret index for finding the row.
    public var lookupPrefix: String {
        // rawValue was validated as ASCII, so characters are bytes here.
        String(rawValue.dropFirst(APIKeyFormat.prefix.count).prefix(APIKeyFormat.lookupPrefixLength))
    }

    public var description: String { "APIKey(\(APIKeyFormat.prefix)\(lookupPrefix)…)" }
    public var debugDescription: String { description }
    public var customMirror: Mirror { Mirror(self, children: ["lookupPrefix": lookupPrefix], displayStyle: .struct) }

    public static func == (lhs: APIKey, rhs: APIKey) -> Bool {
        ConstantTime.equals(lhs.rawValue, rhs.rawValue)
    }

    public func hash(into hasher: inout Hasher) { hasher.combine(rawValue) }
}

/// API key format: "clau_" + 64 lowercase hex characters (256 bits from a CSPRNG).
public enum APIKeyFormat {
    public static let prefix = "clau_"
    public static let hexLength = 64
    public static let totalLength = 69
    public static let lookupPrefixLength = 8

    public static func generate() -> APIKey {
        APIKey(validated: prefix + Hex.encode(SecureRandom.bytes(hexLength / 2)))
    }

    /// Strict: exactly 69 bytes, the "clau_" prefix, then lowercase hex only. No trimming,
    /// no case folding: anything else is not a key.
    public static func parse(_ text: String) -> APIKey? {
        let bytes = Array(text.utf8)
        guard bytes.count == totalLength, bytes.starts(with: prefix.utf8) else { return nil }
        let hex = bytes.dropFirst(prefix.utf8.count)
        guard hex.allSatisfy({
            ($0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9")) || ($0 >= UInt8(ascii: "a") && $0 <= UInt8(ascii: "f"))
        }) else { return nil }
        return APIKey(validated: text)
    }

    /// The lookup prefix of a well-formed key, or nil.
    public static func lookupPrefix(_ text: String) -> String? {
        parse(text)?.lookupPrefix
    }

    /// HMAC-SHA256 (lowercase hex) keyed with the auth service's secret: what the database
    /// stores. A fast keyed hash is enough: the key carries 256 bits of entropy.
    public static func hash(_ key: APIKey, secret: SymmetricKey) -> String {
        KeyedHash.hmacSHA256Hex(key.rawValue, key: secret)
    }
}
