import Foundation
import RPC

/// Alpaca's error body (`Error` schema of the trading API): `{"code": <number>, "message": <string>}`.
/// Both are optional here because a proxy or load balancer in front of Alpaca may answer with
/// something else entirely.
public struct AlpacaErrorBody: Sendable, Hashable, Decodable {
    public var code: Int?
    public var message: String?

    public init(code: Int? = nil, message: String? = nil) {
        self.code = code
        self.message = message
    }

    /// Nil when the body is not that JSON object or is larger than any real error body.
    public static func decode(_ body: some DataProtocol) -> AlpacaErrorBody? {
        guard body.count <= AlpacaErrorMapping.maximumErrorBodyLength else { return nil }
        return try? JSONDecoder().decode(AlpacaErrorBody.self, from: Data(body))
    }
}

/// Turns a failed Alpaca response into the RPC error the broker answers with.
///
/// Which Alpaca messages reach the user: only those of 403 and 422, and only after sanitising.
/// Those statuses are Alpaca judging the user's own request — "insufficient buying power", "not
/// enough shares", an order that can no longer be canceled, a price off the tick size — and the
/// user needs that text to fix the order. Every other status gets a fixed message: a 401 is about
/// the stored token (its text says nothing the user can act on beyond "reconnect"), a 404 would
/// otherwise differ between "not yours" and "does not exist" (C-7 wants one answer), and 429/5xx
/// text describes Alpaca's internals.
public enum AlpacaErrorMapping {
    /// Alpaca's error bodies are one short JSON object; anything much longer is not one.
    static let maximumErrorBodyLength = 16 * 1024
    /// The longest upstream message passed on; longer ones are cut at a character boundary.
    static let maximumForwardedMessageLength = 200

    /// Fixed messages (snake_case codes the edge turns into its error `code`).
    public static let connectionLost = "alpaca_connection_lost"
    public static let notConnected = "alpaca_not_connected"

    /// `status` is Alpaca's HTTP status (a 2xx is not an error and is not passed here);
    /// `retryAfterSeconds` comes from `Retry-After` or `X-RateLimit-Reset` when Alpaca sent one.
    public static func rpcError(status: Int, body: some DataProtocol, retryAfterSeconds: Int? = nil) -> RPCError {
        let parsed = AlpacaErrorBody.decode(body)
        switch status {
        case 401:
            // The stored token no longer works. Alpaca documents no expiry and no refresh, so the
            // user has to connect again. CONFLICT (409), not UNAUTHENTICATED: a 401 at the edge
            // would tell the app that the user's own Clau session is invalid and log them out.
            return RPCError(code: .conflict, message: connectionLost, details: ["reconnect": "true"])
        case 403:
            // Alpaca uses 403 for "not enough buying power or shares" on POST /v2/orders.
            return RPCError(
                code: .permissionDenied,
                message: forwardableMessage(parsed?.message) ?? "the brokerage refused the request",
                details: upstreamCodeDetail(parsed)
            )
        case 404:
            return RPCError(code: .notFound, message: "not found")
        case 422:
            // Unprocessable: the order as Alpaca sees it (tick size, market hours, not cancelable).
            return RPCError(
                code: .invalidArgument,
                message: forwardableMessage(parsed?.message) ?? "the brokerage could not process the request",
                details: upstreamCodeDetail(parsed)
            )
        case 429:
            let seconds = min(max(retryAfterSeconds ?? 1, 1), 60)
            return RPCError(code: .resourceExhausted, message: "rate_limited", details: ["retry_after": "\(seconds)"])
        case 500...599:
            return RPCError(code: .unavailable, message: "the brokerage is unavailable, retry later")
        default:
            // 400 and anything unexpected mean the broker built a request Alpaca does not accept:
            // the broker's fault, not the user's, so a generic INTERNAL and the details only in
            // the broker's own log.
            return RPCError(code: .internalError, message: "internal error")
        }
    }

    /// Alpaca's message when it is plainly a sentence about the request: printable ASCII, no
    /// braces or angle brackets (no echoed JSON or markup), cut to a bounded length. Nil otherwise.
    static func forwardableMessage(_ message: String?) -> String? {
        guard let message else { return nil }
        let trimmed = message.trimmingCharacters(in: .whitespaces)
        guard !trimmed.isEmpty, UntrustedText.isPrintableASCII(trimmed),
            !trimmed.contains(where: { "{}<>\\".contains($0) })
        else { return nil }
        return String(trimmed.prefix(maximumForwardedMessageLength))
    }

    private static func upstreamCodeDetail(_ body: AlpacaErrorBody?) -> [String: String] {
        guard let code = body?.code, code >= 0 else { return [:] }
        return ["alpaca_code": "\(code)"]
    }

    /// Seconds until Alpaca's `X-RateLimit-Reset` (Unix seconds), if the header is a plain integer.
    public static func retryAfter(rateLimitReset: String?, now: Int64) -> Int? {
        guard let rateLimitReset, rateLimitReset.utf8.count <= 12, let reset = Int64(rateLimitReset), reset > now else { return nil }
        return Int(min(reset - now, 3600))
    }
}
