import Crypto
import Foundation

/// Signs webhook payloads the way Stripe does, so tests and the dev stack can deliver events the
/// broker must accept: `Stripe-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>` over
/// `"<t>.<raw body>"`, keyed with the `whsec_…` secret's UTF-8 bytes (not base64-decoded).
public enum StripeWebhookSigner {
    /// The lowercase hex HMAC-SHA256 of `message` under `key`.
    public static func hmacSHA256Hex(key: some DataProtocol, message: some DataProtocol) -> String {
        let mac = HMAC<SHA256>.authenticationCode(for: Array(message), using: SymmetricKey(data: Array(key)))
        return mac.map { String(format: "%02x", $0) }.joined()
    }

    /// The `v1` signature of `payload` at `timestamp`.
    public static func signature(payload: some DataProtocol, secret: String, timestamp: Int64) -> String {
        let signedPayload = Array("\(timestamp).".utf8) + Array(payload)
        return hmacSHA256Hex(key: Array(secret.utf8), message: signedPayload)
    }

    /// The whole `Stripe-Signature` header value.
    public static func signatureHeader(payload: some DataProtocol, secret: String, timestamp: Int64) -> String {
        "t=\(timestamp),v1=\(signature(payload: payload, secret: secret, timestamp: timestamp))"
    }
}
