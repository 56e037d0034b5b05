import Crypto
import Foundation

/// Verifies the `Stripe-Signature` header of a webhook delivery: `t=<unix seconds>,v1=<hex>[,v1=…]`
/// where each `v1` is HMAC-SHA256, keyed with the endpoint's `whsec_…` secret (its UTF-8 bytes, not
/// base64-decoded), over `"<t>.<raw body>"`. Several `v1` entries appear while Stripe rolls the
/// secret; other schemes (`v0`, test schemes) are ignored, as Stripe's own libraries do.
///
/// The signature is the only authentication of the public webhook route, so the body must be the
/// exact bytes Stripe sent: a re-serialized JSON body no longer verifies.
public struct StripeWebhookSignature: Sendable {
    public enum VerificationError: Error, Sendable, Hashable {
        /// Empty, too long, not `key=value` items, or no single integer `t`.
        case malformedHeader
        /// The header has a timestamp but no `v1` signature.
        case noV1Signature
        /// Authentic, but `t` is further than the tolerance from `now`, in either direction.
        case timestampOutsideTolerance
        /// No `v1` entry is the HMAC of this body and timestamp under this secret.
        case noMatchingSignature
    }

    /// Stripe's default tolerance: a delivery older than this is treated as a replay.
    public static let defaultTolerance: Int64 = 300
    /// A real header is about 80 bytes per signature; 4 KiB leaves room for a secret roll and
    /// bounds the work an attacker can ask for with one request.
    public static let maximumHeaderLength = 4096
    /// The longest `t` accepted: 12 digits covers every Unix time until the year 33658 and keeps
    /// the parse free of overflow.
    static let maximumTimestampDigits = 12

    private let key: SymmetricKey
    public let tolerance: Int64

    /// `secret` is the endpoint's signing secret (`whsec_…`), used as Stripe uses it: its UTF-8 bytes.
    public init(secret: String, tolerance: Int64 = StripeWebhookSignature.defaultTolerance) {
        self.key = SymmetricKey(data: Array(secret.utf8))
        self.tolerance = max(0, tolerance)
    }

    /// Checks `header` against `payload` at the verifier's clock `now` (Unix seconds) and returns the
    /// signed timestamp. The signature is checked before the timestamp, as Stripe's libraries do, so
    /// `timestampOutsideTolerance` always means an authentic delivery that is too old (a replay) or
    /// too far in the future (a clock problem); an attacker without the secret only ever sees
    /// `noMatchingSignature` or a header error.
    ///
    /// Stricter than Stripe's libraries on one point: a timestamp more than `tolerance` in the
    /// future is refused too (they check only the age), so a signed delivery cannot be held back and
    /// replayed later whatever its timestamp says.
    @discardableResult
    public func verify(payload: some DataProtocol, header: String, now: Int64) throws(VerificationError) -> Int64 {
        let parsed = try Self.parse(header: header)
        guard !parsed.v1Signatures.isEmpty else { throw .noV1Signature }
        let expected = Array(mac(payload: payload, timestamp: parsed.timestamp))
        // Every candidate is compared in full, so the time taken does not say which one (or how
        // many bytes of one) matched.
        var matched = false
        for candidate in parsed.v1Signatures {
            if let bytes = Self.decodeHex(candidate), Self.constantTimeEquals(bytes, expected) {
                matched = true
            }
        }
        guard matched else { throw .noMatchingSignature }
        let age = now.subtractingReportingOverflow(parsed.timestamp)
        guard !age.overflow, age.partialValue.magnitude <= UInt64(tolerance) else { throw .timestampOutsideTolerance }
        return parsed.timestamp
    }

    /// A header as Stripe would send it, for the fakes and the tests (the broker itself only verifies).
    public func header(payload: some DataProtocol, timestamp: Int64) -> String {
        "t=\(timestamp),v1=\(Self.hex(mac(payload: payload, timestamp: timestamp)))"
    }

    private func mac(payload: some DataProtocol, timestamp: Int64) -> HMAC<SHA256>.MAC {
        var hmac = HMAC<SHA256>(key: key)
        hmac.update(data: Array("\(timestamp).".utf8))
        hmac.update(data: payload)
        return hmac.finalize()
    }

    struct ParsedHeader: Sendable, Hashable {
        var timestamp: Int64
        var v1Signatures: [Substring]
    }

    /// `t=…,v1=…,v0=…`: comma-separated `key=value` items; exactly one `t`, zero or more `v1`,
    /// anything else ignored. Stricter than Stripe's libraries about shape (an item without `=`,
    /// a repeated `t`, or a `t` that is not plain digits is refused): Stripe never sends those.
    static func parse(header: String) throws(VerificationError) -> ParsedHeader {
        guard !header.isEmpty, header.utf8.count <= maximumHeaderLength, UntrustedText.isPrintableASCII(header) else {
            throw .malformedHeader
        }
        var timestamp: Int64?
        var signatures: [Substring] = []
        for item in header.split(separator: ",", omittingEmptySubsequences: false) {
            guard let equals = item.firstIndex(of: "=") else { throw .malformedHeader }
            let key = item[item.startIndex..<equals]
            let value = item[item.index(after: equals)...]
            guard !key.isEmpty else { throw .malformedHeader }
            switch key {
            case "t":
                guard timestamp == nil, !value.isEmpty, value.utf8.count <= maximumTimestampDigits,
                    value.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }), let seconds = Int64(value)
                else { throw .malformedHeader }
                timestamp = seconds
            case "v1":
                signatures.append(value)
            default:
                continue
            }
        }
        guard let timestamp else { throw .malformedHeader }
        return ParsedHeader(timestamp: timestamp, v1Signatures: signatures)
    }

    /// Lowercase hex only (what Stripe sends); anything else is simply not a match.
    static func decodeHex(_ text: Substring) -> [UInt8]? {
        let utf8 = Array(text.utf8)
        guard utf8.count == 2 * SHA256.byteCount else { return nil }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(SHA256.byteCount)
        var index = 0
        while index < utf8.count {
            guard let high = nibble(utf8[index]), let low = nibble(utf8[index + 1]) else { return nil }
            bytes.append(high << 4 | low)
            index += 2
        }
        return bytes
    }

    private static func nibble(_ character: UInt8) -> UInt8? {
        switch character {
        case 0x30...0x39: character - 0x30
        case 0x61...0x66: character - 0x61 + 10
        default: nil
        }
    }

    static func hex(_ bytes: some Sequence<UInt8>) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        for byte in bytes {
            out.append(digits[Int(byte >> 4)])
            out.append(digits[Int(byte & 0x0F)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Equal-length byte arrays compared without an early exit.
    static func constantTimeEquals(_ lhs: [UInt8], _ rhs: [UInt8]) -> Bool {
        guard lhs.count == rhs.count else { return false }
        var difference: UInt8 = 0
        for index in lhs.indices {
            difference |= lhs[index] ^ rhs[index]
        }
        return difference == 0
    }
}
