import Crypto
import Foundation

/// Optional device binding of a refresh family: a hash of the User-Agent and the
/// `Sec-CH-UA*` client hints, stored with the family. A change is suspicious (log it),
/// not proof of theft: browsers update.
public enum DeviceBinding {
    /// Lowercase hex SHA-256 of the normalised headers: names lowercased, only
    /// `user-agent` and `sec-ch-ua*` kept, values trimmed, sorted by name.
    public static func fingerprint(headers: [(name: String, value: String)]) -> String {
        var kept: [(String, String)] = []
        for (name, value) in headers {
            let lowered = name.lowercased()
            guard lowered == "user-agent" || lowered.hasPrefix("sec-ch-ua") else { continue }
            kept.append((lowered, value.trimmingCharacters(in: .whitespaces)))
        }
        kept.sort { $0.0 == $1.0 ? $0.1 < $1.1 : $0.0 < $1.0 }
        var message: [UInt8] = []
        for (name, value) in kept {
            // Length-prefixed fields: no two header sets encode alike.
            message += Array("\(name.utf8.count):\(name)\(value.utf8.count):\(value)\n".utf8)
        }
        return Hex.encode(SHA256.hash(data: message))
    }

    /// True when binding is on for the family (`stored` not nil) and the fingerprint changed.
    public static func isSuspiciousChange(stored: String?, presented: String) -> Bool {
        guard let stored else { return false }
        return !ConstantTime.equals(stored, presented)
    }
}
