import Foundation
import HTTPTypes
import RPC

/// One problem with one input field (C-15): `{"name", "problem"}`.
public struct FieldProblem: Sendable, Hashable, Codable {
    public var name: String
    public var problem: String
    public init(name: String, problem: String) {
        self.name = name
        self.problem = problem
    }
}

/// Errors that know the HTTP answer they become. Anything thrown that does not conform becomes
/// a bare 500 with the request id and nothing else (R-14).
public protocol EdgeErrorConvertible: Error {
    var edgeError: EdgeError { get }
}

/// An HTTP error as the client sees it: `{"error": {"code", "message", "request_id", "fields"?}}`.
/// `message` is always safe to show: it is written here or is an RPC's safe message.
public struct EdgeError: Error, Sendable, EdgeErrorConvertible, CustomStringConvertible {
    public var status: HTTPResponse.Status
    public var code: String
    public var message: String
    public var fields: [FieldProblem]
    /// Extra response headers (Retry-After, WWW-Authenticate, Allow, X-RateLimit-*).
    public var headers: [(HTTPField.Name, String)]

    public init(_ status: HTTPResponse.Status, code: String, message: String, fields: [FieldProblem] = [], headers: [(HTTPField.Name, String)] = []) {
        self.status = status
        self.code = code
        self.message = message
        self.fields = fields
        self.headers = headers
    }

    public var edgeError: EdgeError { self }
    public var description: String { "\(status.code) \(code): \(message)" }

    // The errors the edge itself raises.
    static func unauthenticated(_ message: String = "a valid access token or API key is required") -> EdgeError {
        EdgeError(.unauthorized, code: "unauthenticated", message: message, headers: [(.wwwAuthenticate, "Bearer")])
    }
    static func invalidToken() -> EdgeError {
        EdgeError(.unauthorized, code: "invalid_token", message: "the access token is invalid, expired or revoked", headers: [(.wwwAuthenticate, #"Bearer error="invalid_token""#)])
    }
    static func forbidden(_ message: String = "not allowed") -> EdgeError { EdgeError(.forbidden, code: "forbidden", message: message) }
    static func notFound(_ message: String = "no such resource") -> EdgeError { EdgeError(.notFound, code: "not_found", message: message) }
    static func serviceUnavailable(_ message: String = "a required service is unavailable, try again shortly", retryAfter: Int = 1) -> EdgeError {
        EdgeError(.serviceUnavailable, code: "service_unavailable", message: message, headers: [(.retryAfter, "\(retryAfter)")])
    }
    static func validation(_ fields: [FieldProblem], message: String = "the request body is invalid") -> EdgeError {
        EdgeError(.unprocessableContent, code: "validation_failed", message: message, fields: fields)
    }
    static func malformedJSON() -> EdgeError { EdgeError(.badRequest, code: "malformed_json", message: "the request body is not valid JSON") }
    /// A broker route on an edge started without `--broker-socket`.
    static let brokerNotConfigured = EdgeError.serviceUnavailable("the broker is not available yet on this server (not configured)", retryAfter: 3600)
    static let internalError = EdgeError(.internalServerError, code: "internal_error", message: "internal error")
}

extension HTTPField.Name {
    static let requestID = HTTPField.Name("X-Request-ID")!
    static let apiKey = HTTPField.Name("X-API-Key")!
    static let adminKey = HTTPField.Name("X-Admin-Key")!
    static let forwardedFor = HTTPField.Name("X-Forwarded-For")!
    static let forwardedProto = HTTPField.Name("X-Forwarded-Proto")!
    static let rateLimitLimit = HTTPField.Name("X-RateLimit-Limit")!
    static let rateLimitRemaining = HTTPField.Name("X-RateLimit-Remaining")!
    static let rateLimitReset = HTTPField.Name("X-RateLimit-Reset")!
    static let xContentTypeOptions = HTTPField.Name("X-Content-Type-Options")!
}

/// RPC status → HTTP (SPEC §2, docs/rpc.md). `passwordField` names the body field a password-policy
/// violation (`details["violations"]`) belongs to.
extension RPCError: EdgeErrorConvertible {
    public var edgeError: EdgeError { edgeError(passwordField: "password") }

    /// `fieldNames` renames auth's RPC field names to the body's where they differ (`key_id` → `id`),
    /// so a 422 names what the client sent. A field's `problem` is always a snake_case word; auth's
    /// sentence stays in `message`.
    func edgeError(passwordField: String, fieldNames: [String: String] = [:]) -> EdgeError {
        switch code {
        case .invalidArgument:
            var fields: [FieldProblem] = []
            if let field = details["field"], Self.isSafeName(field) {
                fields.append(FieldProblem(name: fieldNames[field] ?? field, problem: Self.isSafeName(message) ? message : "invalid"))
            }
            if let violations = details["violations"] {
                for violation in violations.split(separator: ",") where Self.isSafeName(String(violation)) {
                    fields.append(FieldProblem(name: passwordField, problem: String(violation)))
                }
            }
            // A machine word with no field (e.g. `invalid_reset_code`) becomes the code itself.
            if fields.isEmpty, Self.isSafeName(message) {
                return EdgeError(.unprocessableContent, code: message, message: Self.humanMessage(forCode: message))
            }
            // A field-specific machine word (e.g. `invalid_reset_code` on `code`) is the code too.
            let code = Self.isSafeName(message) && details["field"] != nil ? message : "validation_failed"
            return EdgeError(.unprocessableContent, code: code, message: code == message ? Self.humanMessage(forCode: code) : message, fields: fields)
        case .unauthenticated:
            let code = Self.isSafeName(message) ? message : "unauthenticated"
            var headers: [(HTTPField.Name, String)] = []
            if let seconds = retryAfterSeconds { headers.append((.retryAfter, "\(seconds)")) }
            return EdgeError(.unauthorized, code: code, message: Self.humanMessage(forCode: code), headers: headers)
        case .permissionDenied: return EdgeError(.forbidden, code: "forbidden", message: message)
        case .notFound: return EdgeError(.notFound, code: "not_found", message: message)
        case .alreadyExists, .conflict, .aborted: return EdgeError(.conflict, code: "conflict", message: message)
        case .resourceExhausted:
            // Auth's per-IP delay/block (R-4) is honoured: 429 with its Retry-After.
            let code = Self.isSafeName(message) ? message : "rate_limited"
            return EdgeError(.tooManyRequests, code: code, message: Self.humanMessage(forCode: code), headers: [(.retryAfter, "\(retryAfterSeconds ?? 1)")])
        case .failedPrecondition, .outOfRange: return EdgeError(.badRequest, code: "bad_request", message: message)
        case .unimplemented: return EdgeError(.notImplemented, code: "not_implemented", message: "not implemented")
        case .unavailable: return .serviceUnavailable()
        case .deadlineExceeded: return EdgeError(.gatewayTimeout, code: "upstream_timeout", message: "a required service did not answer in time")
        default: return .internalError
        }
    }

    var retryAfterSeconds: Int? {
        (details["retry_after"] ?? details["retry_after_seconds"]).flatMap(Int.init).map { min(max(1, $0), 86400) }
    }

    /// snake_case machine words only (they become `code`s and field names).
    static func isSafeName(_ text: String) -> Bool {
        !text.isEmpty && text.utf8.count <= 64 && text.utf8.allSatisfy { ($0 >= 0x61 && $0 <= 0x7A) || $0 == 0x5F || ($0 >= 0x30 && $0 <= 0x39) }
    }

    static func humanMessage(forCode code: String) -> String {
        switch code {
        case "invalid_credentials": "the e-mail or password is wrong, or the account is locked"
        case "invalid_refresh_token": "the refresh token is invalid, expired or revoked"
        case "invalid_access_token": "the access token is invalid, expired or revoked"
        case "invalid_api_key": "the API key is invalid, expired or revoked"
        case "invalid_reset_code": "the reset code is wrong, expired or already used"
        case "too_many_attempts": "too many attempts from this address, retry later"
        case "rate_limited": "too many requests, retry later"
        case "invalid_state": "the OAuth state is unknown, expired, already used or not yours; start the connection again"
        case "invalid_signature": "the Stripe-Signature header is missing, invalid or stale"
        case "invalid_grant": "Alpaca refused the authorization code; start the connection again"
        case "alpaca_not_connected": "no Alpaca account is connected"
        case "alpaca_connection_lost": "Alpaca refused the stored authorization; reconnect Alpaca"
        case "key_source_read_only": "the vault cannot write its key file (a read-only credential): rotate with clauctl vault rotate and restart the vault"
        case "too_many_keys": "the vault holds the most keys it takes: retire an old key first (clauctl broker retire-key)"
        case "order_not_cancelable": "the order can no longer be canceled (filled, canceled or expired)"
        default: code.replacingOccurrences(of: "_", with: " ")
        }
    }
}

/// Broker RPC status → HTTP (SPEC §3). Unlike auth, the broker's machine words are part of the
/// contract (`invalid_state`, `alpaca_not_connected`, …), and a broker failure is never a 500 unless
/// the broker itself said INTERNAL: an unreachable, stuck or outdated broker is 503 + Retry-After,
/// so clients retry instead of reporting a server bug.
extension RPCError {
    /// INVALID_ARGUMENT messages that are 400s of their own (SPEC §3): a reused, expired or foreign
    /// OAuth state; a bad or stale Stripe signature; an OAuth code Alpaca refused.
    static let brokerBadRequestCodes: Set<String> = ["invalid_state", "invalid_signature", "invalid_grant"]
    /// CONFLICT messages passed on as the 409's code: no Alpaca connection, or Alpaca refused the
    /// stored token (reconnect).
    static let brokerConflictCodes: Set<String> = ["alpaca_not_connected", "alpaca_connection_lost"]

    func brokerEdgeError(fieldNames: [String: String] = [:]) -> EdgeError {
        switch code {
        case .invalidArgument:
            if Self.brokerBadRequestCodes.contains(message) {
                return EdgeError(.badRequest, code: message, message: Self.humanMessage(forCode: message))
            }
            // FieldValidationError: message = problem, details["field"] = the body's field.
            if let field = details["field"], Self.isSafeName(field) {
                let problem = Self.isSafeName(message) ? message : "invalid"
                return .validation([FieldProblem(name: fieldNames[field] ?? field, problem: problem)])
            }
            if Self.isSafeName(message) {
                return EdgeError(.unprocessableContent, code: message, message: Self.humanMessage(forCode: message))
            }
            // A sentence (e.g. Alpaca's reason for refusing an order): the broker's messages are safe to show.
            return EdgeError(.unprocessableContent, code: "validation_failed", message: String(message.prefix(200)))
        case .conflict, .alreadyExists, .aborted, .failedPrecondition:
            let code = Self.brokerConflictCodes.contains(message) || Self.isSafeName(message) ? message : "conflict"
            return EdgeError(.conflict, code: code, message: Self.humanMessage(forCode: code))
        case .notFound:
            return .notFound()
        case .resourceExhausted:
            let code = Self.isSafeName(message) ? message : "rate_limited"
            return EdgeError(.tooManyRequests, code: code, message: Self.humanMessage(forCode: code), headers: [(.retryAfter, "\(retryAfterSeconds ?? 1)")])
        case .permissionDenied:
            return .forbidden()
        case .unauthenticated:
            // The broker authenticates no user (the edge did); its refusing the call is a
            // deployment fault, not the client's.
            return .serviceUnavailable(retryAfter: retryAfterSeconds ?? 5)
        case .deadlineExceeded:
            return EdgeError(.gatewayTimeout, code: "upstream_timeout", message: "a required service did not answer in time")
        case .internalError:
            return .internalError
        default:
            // UNAVAILABLE (socket down, Alpaca or Stripe unreachable), CANCELLED, UNIMPLEMENTED (an
            // older broker), UNKNOWN, DATA_LOSS: retry later.
            return .serviceUnavailable(retryAfter: retryAfterSeconds ?? 1)
        }
    }
}

extension EdgeError {
    /// The JSON body of this error for one request.
    func body(requestID: String) -> Data {
        var object: [String: Any] = ["code": code, "message": message, "request_id": requestID]
        if !fields.isEmpty { object["fields"] = fields.map { ["name": $0.name, "problem": $0.problem] } }
        return JSONWriter.data(["error": object])
    }
}
