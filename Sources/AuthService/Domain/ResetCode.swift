import Crypto
import Foundation

/// Password-reset one-time codes (C-5).
public struct ResetCodePolicy: Sendable, Hashable {
    /// Digits per code; never fewer than 6 (C-5), at most 18 (fits a UInt64 comfortably).
    public var digits: Int
    public var expiry: TimeInterval
    public var maxAttempts: Int
    public var dailyCapPerAccount: Int

    public init(digits: Int = 6, expiry: TimeInterval = 10 * 60, maxAttempts: Int = 5, dailyCapPerAccount: Int = 5) {
        self.digits = max(ResetCode.minimumDigits, min(ResetCode.maximumDigits, digits))
        self.expiry = expiry
        self.maxAttempts = max(1, maxAttempts)
        self.dailyCapPerAccount = max(1, dailyCapPerAccount)
    }

    public enum AttemptCheck: Sendable, Hashable {
        /// Compare the code; count the attempt whatever the outcome.
        case allowed
        case expired
        case tooManyAttempts
        case alreadyUsed
    }

    /// May a code issued at `issuedAt`, already tried `attemptsSoFar` times, still be tried?
    /// Expired at exactly `issuedAt + expiry`. The database must consume the code atomically
    /// (`UPDATE … SET used_at = now() WHERE id = $1 AND used_at IS NULL`).
    public func checkAttempt(issuedAt: Date, attemptsSoFar: Int, used: Bool, now: Date) -> AttemptCheck {
        if used { return .alreadyUsed }
        // As Doubles, so that a NaN date counts as expired.
        if !(issuedAt.addingTimeInterval(expiry).timeIntervalSince(now) > 0) { return .expired }
        if attemptsSoFar >= maxAttempts { return .tooManyAttempts }
        return .allowed
    }

    /// May another code be issued to an account that got `codesIssuedLast24h` already?
    /// When not, answer forgot-password exactly as usual and send nothing.
    public func mayIssue(codesIssuedLast24h: Int) -> Bool {
        codesIssuedLast24h < dailyCapPerAccount
    }
}

public enum ResetCode {
    public static let minimumDigits = 6
    public static let maximumDigits = 18

    /// A code of `digits` decimal digits (clamped to 6...18), each drawn uniformly.
    ///
    /// Rejection sampling: a random byte is used only if it is below 250 (the largest
    /// multiple of 10 ≤ 256), then reduced mod 10; bytes 250–255 are discarded. A plain
    /// `byte % 10` would make 0–5 more likely than 6–9.
    public static func generate(digits: Int = 6) -> String {
        generate(digits: digits, randomBytes: SecureRandom.bytes)
    }

    /// Same, with an injectable byte source (tests).
    static func generate(digits: Int, randomBytes: (Int) -> [UInt8]) -> String {
        let count = max(minimumDigits, min(maximumDigits, digits))
        var out: [UInt8] = []
        out.reserveCapacity(count)
        while out.count < count {
            let batch = randomBytes(count - out.count + 4)
            guard !batch.isEmpty else { continue }
            for byte in batch where byte < 250 && out.count < count {
                out.append(UInt8(ascii: "0") + byte % 10)
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// HMAC-SHA256 (lowercase hex) of the code, keyed with the auth service's secret and
    /// bound to `context` (e.g. the user id), so a stored value copied to another
    /// account's row does not verify there. This is what the database stores.
    public static func hmac(_ code: String, key: SymmetricKey, context: String = "") -> String {
        // Length-prefixed context: ("a", "bc") and ("ab", "c") cannot collide.
        var message = Array("clau-reset-code:\(context.utf8.count):".utf8)
        message += Array(context.utf8)
        message += Array(code.utf8)
        return KeyedHash.hmacSHA256Hex(message, key: key)
    }

    /// Constant-time check of a submitted code against the stored HMAC. Input that is not
    /// 6–18 ASCII digits is refused without being compared.
    public static func verify(_ submitted: String, storedHMAC: String, key: SymmetricKey, context: String = "") -> Bool {
        let bytes = Array(submitted.utf8)
        guard (minimumDigits...maximumDigits).contains(bytes.count),
              bytes.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") })
        else { return false }
        let computed = hmac(submitted, key: key, context: context)
        return ConstantTime.equals(Array(computed.utf8), Array(storedHMAC.lowercased().utf8))
    }
}
