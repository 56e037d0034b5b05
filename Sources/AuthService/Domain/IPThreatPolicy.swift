import Crypto
import Foundation

public enum ThreatLevel: Int, Sendable, Hashable, Comparable, CaseIterable, CustomStringConvertible {
    case low = 0, medium, high, critical

    public static func < (lhs: ThreatLevel, rhs: ThreatLevel) -> Bool { lhs.rawValue < rhs.rawValue }

    public var description: String {
        switch self {
        case .low: "LOW"
        case .medium: "MEDIUM"
        case .high: "HIGH"
        case .critical: "CRITICAL"
        }
    }
}

public enum IPDecision: Sendable, Hashable {
    case allowed
    /// Progressive delay: refuse (429 with Retry-After) until `retryAfter`.
    case delayed(retryAfter: Date)
    /// Blocked until `until` at `level` (429/403 with Retry-After, audit-logged).
    case blocked(until: Date, level: ThreatLevel)
}

/// Per-IP failed-login policy (R-4, C-4).
///
/// Input: the timestamps of the IP's failed logins (any order). Only failures in the
/// sliding window `(now − window, now]` count; older ones are pruned. With `n` failures
/// counted and the latest at `L`:
///
/// - progressive delay: the next attempt waits until `L + delay(n)`, where delay(n) is
///   1st failure → 1 s, 2 → 2 s, 3 → 5 s, 4 → 10 s, 5 → 30 s, 6 → 1 min, 7 → 5 min, 8+ → 15 min;
/// - threat level: LOW n < 5, MEDIUM n ≥ 5, HIGH n ≥ 10, CRITICAL n ≥ 20;
/// - at MEDIUM or above the IP is blocked until `L + blockDuration(level)`
///   (MEDIUM 15 min, HIGH 1 h, CRITICAL 24 h).
///
/// Blocks expire by themselves: a block ends when its duration since the latest failure has
/// run out, even if the failures are still inside the 24 h window. The count (and so the
/// level of the next block) only falls as failures slide out of the window: after a
/// MEDIUM block ends, one more failure blocks again for 15 min; once 10 failures are in the
/// window, for an hour. If the caller keeps recording failures while blocked, `L` moves
/// and the block is extended (this only ever hurts the hammering IP).
public struct IPThreatPolicy: Sendable, Hashable {
    public var window: TimeInterval
    /// delays[i] applies after i+1 failures; the last entry is the cap.
    public var delays: [TimeInterval]
    public var mediumThreshold: Int
    public var highThreshold: Int
    public var criticalThreshold: Int
    public var mediumBlock: TimeInterval
    public var highBlock: TimeInterval
    public var criticalBlock: TimeInterval

    public init(
        window: TimeInterval = 24 * 3_600,
        delays: [TimeInterval] = [1, 2, 5, 10, 30, 60, 300, 900],
        mediumThreshold: Int = 5,
        highThreshold: Int = 10,
        criticalThreshold: Int = 20,
        mediumBlock: TimeInterval = 15 * 60,
        highBlock: TimeInterval = 3_600,
        criticalBlock: TimeInterval = 24 * 3_600
    ) {
        self.window = window
        self.delays = delays
        self.mediumThreshold = mediumThreshold
        self.highThreshold = highThreshold
        self.criticalThreshold = criticalThreshold
        self.mediumBlock = mediumBlock
        self.highBlock = highBlock
        self.criticalBlock = criticalBlock
    }

    /// Failures still inside the window at `now` (failure time `t` counts while
    /// `now − t < window`), sorted oldest first. Store this back to keep the list short.
    public func prune(_ failures: [Date], now: Date) -> [Date] {
        failures.filter { now.timeIntervalSince($0) < window }.sorted()
    }

    public func delay(afterFailures count: Int) -> TimeInterval {
        guard count > 0, let cap = delays.last else { return 0 }
        return count <= delays.count ? delays[count - 1] : cap
    }

    public func threatLevel(failureCount count: Int) -> ThreatLevel {
        if count >= criticalThreshold { return .critical }
        if count >= highThreshold { return .high }
        if count >= mediumThreshold { return .medium }
        return .low
    }

    public func blockDuration(for level: ThreatLevel) -> TimeInterval {
        switch level {
        case .low: 0
        case .medium: mediumBlock
        case .high: highBlock
        case .critical: criticalBlock
        }
    }

    public func threatLevel(failures: [Date], now: Date) -> ThreatLevel {
        threatLevel(failureCount: prune(failures, now: now).count)
    }

    public func decision(failures: [Date], now: Date) -> IPDecision {
        let recent = prune(failures, now: now)
        guard let latest = recent.last else { return .allowed }
        let level = threatLevel(failureCount: recent.count)
        if level > .low {
            let until = latest.addingTimeInterval(blockDuration(for: level))
            if now < until { return .blocked(until: until, level: level) }
        }
        let retryAfter = latest.addingTimeInterval(delay(afterFailures: recent.count))
        if now < retryAfter { return .delayed(retryAfter: retryAfter) }
        return .allowed
    }
}

/// Keyed hash of a client IP (R-4: IPs are not stored in clear). HMAC-SHA256 rather than a
/// plain SHA-256: the IPv4 space is small enough to reverse an unkeyed hash by brute force.
public struct IPHasher: Sendable {
    private let key: SymmetricKey
    /// IPv6 addresses are reduced to this prefix before hashing: one subscriber usually
    /// holds a whole /64, and counting per address would let them rotate freely.
    public let ipv6PrefixLength: Int

    public init(key: SymmetricKey, ipv6PrefixLength: Int = 64) {
        self.key = key
        self.ipv6PrefixLength = max(0, min(128, ipv6PrefixLength))
    }

    /// Lowercase hex HMAC-SHA256 of `normalize(ip)`.
    public func hash(_ ip: String) -> String {
        KeyedHash.hmacSHA256Hex(normalize(ip), key: key)
    }

    /// Canonical text of an address: IPv4 dotted decimal; IPv6 per RFC 5952 (lowercase,
    /// longest zero run compressed), reduced to `ipv6PrefixLength`; IPv4-mapped IPv6 as
    /// IPv4. Brackets, a zone ("%eth0") and surrounding whitespace are dropped. Input
    /// that is not an address is kept, trimmed and lowercased, so it still hashes stably.
    public func normalize(_ ip: String) -> String {
        var text = Substring(ip).trimmingCharacters(in: .whitespacesAndNewlines)[...]
        if text.hasPrefix("["), text.hasSuffix("]") { text = text.dropFirst().dropLast() }
        if let percent = text.firstIndex(of: "%") { text = text[..<percent] }
        if let v4 = IPAddressParser.parseIPv4(text) {
            return v4.map(String.init).joined(separator: ".")
        }
        if var v6 = IPAddressParser.parseIPv6(text) {
            if v6[0..<10].allSatisfy({ $0 == 0 }), v6[10] == 0xFF, v6[11] == 0xFF {
                return v6[12...].map(String.init).joined(separator: ".")
            }
            for bit in ipv6PrefixLength..<128 {
                v6[bit / 8] &= ~(UInt8(0x80) >> UInt8(bit % 8))
            }
            return IPAddressParser.formatIPv6(v6) + (ipv6PrefixLength < 128 ? "/\(ipv6PrefixLength)" : "")
        }
        return String(text).lowercased()
    }
}

enum IPAddressParser {
    /// Strict dotted decimal: four parts 0–255, no leading zeros (which some parsers read
    /// as octal), ASCII digits only.
    static func parseIPv4<S: StringProtocol>(_ text: S) -> [UInt8]? {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else { return nil }
        var bytes: [UInt8] = []
        for part in parts {
            let digits = Array(part.utf8)
            guard (1...3).contains(digits.count),
                  digits.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }),
                  digits.count == 1 || digits[0] != UInt8(ascii: "0")
            else { return nil }
            let value = digits.reduce(0) { $0 * 10 + Int($1 - UInt8(ascii: "0")) }
            guard value <= 255 else { return nil }
            bytes.append(UInt8(value))
        }
        return bytes
    }

    /// RFC 4291 text forms, including "::" and a trailing dotted IPv4 part. 16 bytes.
    static func parseIPv6<S: StringProtocol>(_ text: S) -> [UInt8]? {
        let string = String(text)
        guard string.contains(":"), string.utf8.count <= 45 else { return nil }
        let halves = string.components(separatedBy: "::")
        guard halves.count <= 2 else { return nil }

        func groups(_ part: String, allowIPv4Tail: Bool) -> [UInt16]? {
            if part.isEmpty { return [] }
            let pieces = part.split(separator: ":", omittingEmptySubsequences: false)
            var result: [UInt16] = []
            for (index, piece) in pieces.enumerated() {
                if allowIPv4Tail, index == pieces.count - 1, piece.contains(".") {
                    guard let v4 = parseIPv4(piece) else { return nil }
                    result.append(UInt16(v4[0]) << 8 | UInt16(v4[1]))
                    result.append(UInt16(v4[2]) << 8 | UInt16(v4[3]))
                    continue
                }
                guard (1...4).contains(piece.utf8.count), let value = UInt16(piece, radix: 16),
                      piece.utf8.allSatisfy({ Hex.value($0) != nil })
                else { return nil }
                result.append(value)
            }
            return result
        }

        var words: [UInt16]
        if halves.count == 2 {
            guard let head = groups(halves[0], allowIPv4Tail: false),
                  let tail = groups(halves[1], allowIPv4Tail: true),
                  head.count + tail.count <= 7
            else { return nil }
            words = head + [UInt16](repeating: 0, count: 8 - head.count - tail.count) + tail
        } else {
            guard let all = groups(string, allowIPv4Tail: true), all.count == 8 else { return nil }
            words = all
        }
        return words.flatMap { [UInt8($0 >> 8), UInt8($0 & 0xFF)] }
    }

    /// RFC 5952 §4: lowercase, no leading zeros, the longest run (≥ 2) of zero groups
    /// replaced by "::" (the first one on a tie).
    static func formatIPv6(_ bytes: [UInt8]) -> String {
        let words = (0..<8).map { UInt16(bytes[2 * $0]) << 8 | UInt16(bytes[2 * $0 + 1]) }
        var bestStart = -1, bestLength = 0, runStart = -1
        for index in 0...8 {
            if index < 8, words[index] == 0 {
                if runStart < 0 { runStart = index }
            } else if runStart >= 0 {
                if index - runStart > bestLength { bestStart = runStart; bestLength = index - runStart }
                runStart = -1
            }
        }
        if bestLength < 2 { bestStart = -1 }
        var parts: [String] = []
        var index = 0
        var out = ""
        while index < 8 {
            if index == bestStart {
                out += parts.joined(separator: ":") + "::"
                parts = []
                index += bestLength
                continue
            }
            parts.append(String(words[index], radix: 16))
            index += 1
        }
        return out + parts.joined(separator: ":")
    }
}
