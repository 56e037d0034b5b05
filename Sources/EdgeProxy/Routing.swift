import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import RPC

/// Who may call a route (C-6, C-8).
public enum AuthLevel: String, Sendable {
    case `public`
    /// A valid, unrevoked access token (or, once auth serves it, an API key).
    case user
    /// Role `admin`, an MFA-fresh token and the `X-Admin-Key` (C-8, X-5).
    case admin
}

/// Rate-limit categories (C-9, R-15). `none` for health and documents.
public enum RateCategory: String, Sendable {
    case none, read, write, sensitive, highRisk = "high_risk", login, register, refresh, webhook
}

/// One row of the route table: method, path template, who may call it, its limit category and
/// its handler (one RPC call, or 503 until its service exists).
public struct Route: Sendable {
    enum Segment: Sendable, Equatable {
        case literal(String)
        case parameter(String)
    }

    public let method: HTTPRequest.Method
    public let template: String
    public let auth: AuthLevel
    public let category: RateCategory
    /// Admission and limits do not apply (process liveness must stay observable under load).
    let exemptFromAdmission: Bool
    /// False for account-takeover-grade operations (password, deletion, new API keys, TOTP,
    /// logout): an API key alone cannot do them, only an access token.
    let allowsAPIKey: Bool
    let segments: [Segment]
    let handler: @Sendable (EdgeCall) async throws -> EdgeReply

    init(_ method: HTTPRequest.Method, _ template: String, _ auth: AuthLevel, _ category: RateCategory, exemptFromAdmission: Bool = false,
         tokenOnly: Bool = false, handler: @escaping @Sendable (EdgeCall) async throws -> EdgeReply) {
        self.allowsAPIKey = !tokenOnly && auth == .user
        self.method = method
        self.template = template
        self.auth = auth
        self.category = category
        self.exemptFromAdmission = exemptFromAdmission
        self.segments = template.split(separator: "/", omittingEmptySubsequences: true).map { part in
            part.hasPrefix("{") && part.hasSuffix("}") ? .parameter(String(part.dropFirst().dropLast())) : .literal(String(part))
        }
        self.handler = handler
    }

    /// Path parameters when `path` fits the template.
    func match(_ pathSegments: [Substring]) -> [String: String]? {
        guard pathSegments.count == segments.count else { return nil }
        var parameters: [String: String] = [:]
        for (segment, part) in zip(segments, pathSegments) {
            switch segment {
            case .literal(let literal): guard part == literal else { return nil }
            case .parameter(let name):
                // Ids are UUIDs or short opaque words; anything else cannot name a resource.
                guard Self.isSafeParameter(part) else { return nil }
                parameters[name] = String(part)
            }
        }
        return parameters
    }

    static func isSafeParameter(_ part: Substring) -> Bool {
        !part.isEmpty && part.utf8.count <= 64
            && part.utf8.allSatisfy { ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x41 && $0 <= 0x5A) || ($0 >= 0x61 && $0 <= 0x7A) || $0 == 0x2D || $0 == 0x5F || $0 == 0x2E || $0 == 0x3A }
    }
}

/// Finds the route for a request: a path that fits no template is 404; a path that fits but
/// with another method is 405 with `Allow`.
struct RouteTable: Sendable {
    let routes: [Route]

    enum Lookup {
        case found(Route, [String: String])
        case methodNotAllowed([HTTPRequest.Method])
        case notFound
    }

    static func pathSegments(_ path: String) -> [Substring]? {
        guard path.hasPrefix("/") else { return nil }
        return path.dropFirst().split(separator: "/", omittingEmptySubsequences: false)
    }

    func lookup(method: HTTPRequest.Method, path: String) -> Lookup {
        guard var segments = Self.pathSegments(path) else { return .notFound }
        if segments == [""] { segments = [] }
        var allowed: [HTTPRequest.Method] = []
        for route in routes {
            guard let parameters = route.match(segments) else { continue }
            if route.method == method { return .found(route, parameters) }
            allowed.append(route.method)
        }
        return allowed.isEmpty ? .notFound : .methodNotAllowed(allowed)
    }
}

/// What a handler sees: the request, its id and client, the verified caller, path parameters,
/// and RPC helpers that carry the request id and a deadline.
public struct EdgeCall: Sendable {
    let request: Request
    let requestID: String
    let clientIP: String
    let parameters: [String: String]
    let caller: AccessClaims?
    /// The bearer token as presented (logout forwards it to auth); never logged.
    let bearerToken: String?
    let rateHeaders: RateLimitHeaders
    let app: EdgeApplicationState

    /// A rate-limit check the handler makes itself (login: IP + account, R-15).
    func enforce(_ category: RateCategory, key: String) async throws {
        try await app.enforce(category, key: key, headers: rateHeaders, requestID: requestID)
    }

    var callOptions: CallOptions { CallOptions(requestID: requestID, timeout: app.configuration.rpcTimeout) }

    /// One call on auth through the gateway, its errors shaped as HTTP.
    func rpc<Request, Response>(_ method: MethodDescriptor<Request, Response>, _ message: Request, passwordField: String = "password", fieldNames: [String: String] = [:]) async throws -> Response {
        try await app.auth.request(method, message, requestID: requestID, passwordField: passwordField, fieldNames: fieldNames)
    }

    /// One call on the broker with the request id and a deadline. No broker configured, or its
    /// socket down, is 503; the broker's own errors become HTTP errors by `brokerEdgeError`.
    func broker<Request, Response>(_ method: MethodDescriptor<Request, Response>, _ message: Request, fieldNames: [String: String] = [:]) async throws -> Response {
        guard let broker = app.broker else { throw EdgeError.brokerNotConfigured }
        app.metrics.rpcCalled("broker", method)
        do {
            return try await broker.call(method, message, options: callOptions)
        } catch let error as RPCError {
            if EdgeMetrics.isFailure(error) { app.metrics.brokerRPCFailed(method) }
            throw error.brokerEdgeError(fieldNames: fieldNames)
        } catch {
            app.metrics.brokerRPCFailed(method)
            throw error
        }
    }

    /// Refuses a broker route before reading anything when no broker is configured.
    func requireBroker() throws {
        guard app.broker != nil else { throw EdgeError.brokerNotConfigured }
    }

    /// The body as a strict type (C-15): `application/json` only, within the size limit
    /// and the read timeout.
    func decode<T: StrictBody>(_ type: T.Type) async throws -> T {
        try requireJSONContentType()
        let data = try await app.readBody(request)
        return try StrictJSON.decode(T.self, from: data)
    }

    /// As `decode`, for routes whose body may be left out entirely (`POST` with nothing to say):
    /// an empty body decodes as `{}`; any bytes at all must be strict JSON.
    func decodeOptional<T: StrictBody>(_ type: T.Type) async throws -> T {
        let data = try await app.readBody(request)
        if data.isEmpty { return try StrictJSON.decode(T.self, from: Data("{}".utf8)) }
        try requireJSONContentType()
        return try StrictJSON.decode(T.self, from: data)
    }

    private func requireJSONContentType() throws {
        let contentType = request.headers[.contentType]?.split(separator: ";").first.map { $0.trimmingOptionalWhitespace.lowercased() }
        guard contentType == "application/json" else {
            throw EdgeError(.unsupportedMediaType, code: "unsupported_media_type", message: "Content-Type must be application/json")
        }
    }

    /// Auth's view of the request's origin, for lockout and IP threat levels and device binding.
    var deviceHeaders: [String: String] {
        var headers: [String: String] = [:]
        for field in request.headers {
            let name = field.name.canonicalName
            guard name == "user-agent" || name.hasPrefix("sec-ch-ua") else { continue }
            headers[name] = String(field.value.prefix(512))
        }
        return headers
    }

    /// The caller's subject; routes with `.user`/`.admin` always have one.
    var subject: String {
        get throws { guard let caller else { throw EdgeError.unauthenticated() }; return caller.sub }
    }
}

/// A handler's answer: a status and an optional JSON body.
public struct EdgeReply: Sendable {
    var status: HTTPResponse.Status
    var body: Data?
    var contentType = "application/json"

    static func json(_ object: [String: Any], status: HTTPResponse.Status = .ok) -> EdgeReply {
        EdgeReply(status: status, body: JSONWriter.data(object))
    }

    static func raw(_ status: HTTPResponse.Status = .ok, _ data: Data, contentType: String = "application/json") -> EdgeReply {
        EdgeReply(status: status, body: data, contentType: contentType)
    }

    static let noContent = EdgeReply(status: .noContent, body: nil)
}
