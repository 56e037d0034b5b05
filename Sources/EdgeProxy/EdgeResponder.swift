import Crypto
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import RPC
import RateLimiting
import Synchronization

/// The request context: Hummingbird's core storage plus the TCP peer address.
public struct EdgeRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    public let peerIP: String?

    public init(source: ApplicationRequestContextSource) {
        self.coreContext = CoreRequestContextStorage(source: source)
        self.peerIP = source.channel.remoteAddress?.ipAddress
    }
}

/// State shared by every request of one edge process.
public final class EdgeApplicationState: Sendable {
    public let configuration: EdgeConfiguration
    let auth: RPCClient
    /// nil when no broker socket is configured (its routes answer 503).
    let broker: RPCClient?
    /// The broker connection itself, for `/readyz` (a connection-level check: the broker has no
    /// method that is both cheap and open to every edge caller without meaning something).
    let brokerTransport: UnixSocketClient?
    let jwks: JWKSCache
    let verifier: EdgeTokenVerifier
    let routes: RouteTable
    let logger: Logger
    let accessLogger: Logger
    let rateLimiter: any RateLimiter
    let blocklist: IPBlocklist
    let revocations: RevocationCache
    let inFlight = Atomic<Int>(0)
    /// Prometheus counters (C-17), served only by the loopback metrics listener.
    let metrics = EdgeMetrics()

    init(configuration: EdgeConfiguration, auth: RPCClient, broker: UnixSocketClient? = nil, logger: Logger, accessLogger: Logger) {
        self.configuration = configuration
        self.auth = auth
        self.brokerTransport = broker
        self.broker = broker.map { RPCClient(transport: $0) }
        self.jwks = JWKSCache(rpc: auth, issuer: configuration.issuer, audience: configuration.audience, leeway: configuration.tokenLeewaySeconds, timeout: configuration.rpcTimeout, minimumRefreshInterval: configuration.jwksRefreshMinimumInterval, logger: logger, metrics: metrics)
        self.verifier = EdgeTokenVerifier(cache: jwks, auth: auth, timeout: configuration.rpcTimeout, metrics: metrics)
        self.routes = .clau()
        self.logger = logger
        self.accessLogger = accessLogger
        self.rateLimiter = configuration.rateLimiter ?? InProcessRateLimiter()
        self.blocklist = IPBlocklist(rpc: auth, timeout: configuration.rpcTimeout, logger: logger, metrics: metrics)
        self.revocations = RevocationCache(ttl: configuration.revocationCacheTTL)
    }

    /// Reads a request body within the size limit (413) and the read timeout (408) (R-18).
    func readBody(_ request: Request, limit: Int? = nil) async throws -> Data {
        let limit = limit ?? configuration.maximumBodyBytes
        if let declared = request.headers[.contentLength].flatMap(Int.init), declared > limit {
            throw EdgeError(.contentTooLarge, code: "payload_too_large", message: "the request body exceeds \(limit) bytes")
        }
        let timeout = configuration.bodyReadTimeout
        let buffer: ByteBuffer? = try await withThrowingTaskGroup(of: ByteBuffer?.self) { group in
            group.addTask {
                do {
                    return try await request.body.collect(upTo: limit)
                } catch is NIOTooManyBytesError {
                    throw EdgeError(.contentTooLarge, code: "payload_too_large", message: "the request body exceeds \(limit) bytes")
                }
            }
            group.addTask {
                try await Task.sleep(for: timeout)
                return nil
            }
            defer { group.cancelAll() }
            return try await group.next() ?? nil
        }
        guard let buffer else {
            throw EdgeError(.requestTimeout, code: "request_timeout", message: "the request body did not arrive in time")
        }
        return Data(buffer.readableBytesView)
    }
}

/// Every request goes through here: request id, client address, admission (R-16), limits
/// (R-18), routing (404/405), authentication (C-2, C-6, C-8), owner checks (C-7), the handler,
/// error shaping (R-14), one access-log line and the request metrics (C-17).
struct EdgeResponder: HTTPResponder {
    typealias Context = EdgeRequestContext

    let state: EdgeApplicationState
    /// HTTPS listener (HSTS on every response) or behind nginx (trusted proxies only).
    let isTLS: Bool
    let trustedProxies: Set<String>?

    func respond(to request: Request, context: EdgeRequestContext) async throws -> Response {
        let started = ContinuousClock.now
        state.metrics.requestStarted()
        let requestID = Self.requestID(from: request.headers)
        let peer = context.peerIP ?? "-"
        let (clientIP, forwardedHTTPS) = IPAddress.clientAddress(peer: peer, headers: request.headers, trustedProxies: trustedProxies)
        var log = AccessLogEntry(requestID: requestID, clientIP: clientIP, method: request.method.rawValue)
        let rateHeaders = RateLimitHeaders()
        let reply: Response
        do {
            reply = try await handle(request, requestID: requestID, clientIP: clientIP, rateHeaders: rateHeaders, log: &log)
        } catch {
            let edgeError: EdgeError
            if let convertible = error as? any EdgeErrorConvertible {
                edgeError = convertible.edgeError
            } else {
                // Never internals to the client (R-14); the type only in our log.
                state.logger.error("unhandled error", metadata: ["request_id": "\(requestID)", "error_type": "\(type(of: error))"])
                edgeError = .internalError
            }
            reply = errorResponse(edgeError, requestID: requestID)
        }
        var response = reply
        for (name, value) in rateHeaders.all { response.headers[name] = value }
        finish(&response, requestID: requestID, hsts: isTLS || forwardedHTTPS)
        log.status = Int(response.status.code)
        log.bytesOut = response.body.contentLength ?? 0
        log.bytesIn = request.headers[.contentLength].flatMap(Int.init) ?? 0
        log.latency = ContinuousClock.now - started
        log.emit(to: state.accessLogger)
        // Same place, same fields: the route template (never the path), bounded labels only.
        state.metrics.requestFinished(route: log.route == "-" ? nil : log.route, method: log.method, status: log.status, duration: log.latency)
        return response
    }

    private func handle(_ request: Request, requestID: String, clientIP: String, rateHeaders: RateLimitHeaders, log: inout AccessLogEntry) async throws -> Response {
        let path = request.uri.path
        guard request.head.path.map({ $0.utf8.count <= state.configuration.maximumURIBytes }) ?? true else {
            throw EdgeError(.uriTooLong, code: "uri_too_long", message: "the request URI is too long")
        }
        let lookup = state.routes.lookup(method: request.method, path: path)
        let exempt: Bool
        if case .found(let route, _) = lookup { exempt = route.exemptFromAdmission } else { exempt = false }

        // R-16: shed at once past the bound instead of queueing.
        if !exempt {
            let current = state.inFlight.wrappingAdd(1, ordering: .relaxed).newValue
            if current > state.configuration.maximumInFlightRequests {
                state.inFlight.wrappingSubtract(1, ordering: .relaxed)
                state.metrics.admissionRejected()
                throw EdgeError.serviceUnavailable("the server is busy, retry shortly", retryAfter: 1)
            }
        }
        defer { if !exempt { state.inFlight.wrappingSubtract(1, ordering: .relaxed) } }

        // R-4: the admin-managed blocklist (auth's, polled by every edge).
        if !exempt, state.blocklist.isBlocked(clientIP) {
            throw EdgeError(.forbidden, code: "ip_blocked", message: "requests from this address are blocked")
        }

        // R-18: header bytes (the HTTP decoder itself stops at 64 KiB).
        let headerBytes = request.headers.reduce(0) { $0 + $1.name.rawName.utf8.count + $1.value.utf8.count + 4 }
        guard headerBytes <= state.configuration.maximumHeaderBytes else {
            throw EdgeError(.requestHeaderFieldsTooLarge, code: "headers_too_large", message: "the request headers exceed \(state.configuration.maximumHeaderBytes) bytes")
        }

        let route: Route
        let parameters: [String: String]
        switch lookup {
        case .notFound:
            throw EdgeError.notFound("no route for this path")
        case .methodNotAllowed(let allowed):
            let allow = Set(allowed.map(\.rawValue)).sorted().joined(separator: ", ")
            throw EdgeError(.methodNotAllowed, code: "method_not_allowed", message: "method not allowed on this path", headers: [(.allow, allow)])
        case .found(let found, let found2):
            route = found
            parameters = found2
        }
        log.route = route.template

        let (caller, bearer) = try await authenticate(request, route: route, requestID: requestID)
        log.userID = caller?.sub

        // C-9/R-15: per client (API key > user id > IP) and category. Login is keyed by IP +
        // account, so its handler checks once the body is decoded.
        if route.category != .login {
            let key = caller.map { caller in caller.apiKeyID.map { "key:\($0)" } ?? "user:\(caller.sub)" } ?? "ip:\(clientIP)"
            try await state.enforce(route.category, key: key, headers: rateHeaders, requestID: requestID)
        }

        // C-7: a user-scoped path must name the caller, checked before any RPC; a foreign id is 404.
        if let owner = parameters["userId"], route.template.hasPrefix("/v1/users/") {
            guard let caller, owner.lowercased() == caller.sub else { throw EdgeError.notFound() }
        }

        let call = EdgeCall(request: request, requestID: requestID, clientIP: clientIP, parameters: parameters, caller: caller, bearerToken: bearer, rateHeaders: rateHeaders, app: state)
        let reply = try await route.handler(call)
        var headers = HTTPFields()
        var body = ByteBuffer()
        if let data = reply.body {
            headers[.contentType] = reply.contentType
            body = ByteBuffer(bytes: data)
        }
        return Response(status: reply.status, headers: headers, body: reply.body == nil ? ResponseBody() : ResponseBody(byteBuffer: body))
    }

    // MARK: Authentication

    private func authenticate(_ request: Request, route: Route, requestID: String) async throws -> (AccessClaims?, String?) {
        guard route.auth != .public else { return (nil, nil) }
        let credential = try Self.credential(from: request.headers)
        let claims: AccessClaims
        let bearer: String
        var revocationChecked = false
        switch credential {
        case .apiKey(let key):
            // R-3: API keys are checked by auth on every request (auth keeps only a keyed hash).
            guard route.allowsAPIKey else {
                throw EdgeError(.forbidden, code: "access_token_required", message: "this operation needs an access token, not an API key")
            }
            guard key.utf8.count <= 128 else { throw EdgeError(.unauthorized, code: "invalid_api_key", message: "the API key is invalid, expired or revoked") }
            var request = AuthAuthenticateAPIKeyRequest()
            request.apiKey = key
            let principal: AuthPrincipal
            do {
                principal = try await state.auth.call(AuthAPI.authenticateAPIKey, request, options: CallOptions(requestID: requestID, timeout: state.configuration.rpcTimeout)).principal
            } catch let error as RPCError where error.code == .unauthenticated {
                throw EdgeError(.unauthorized, code: "invalid_api_key", message: "the API key is invalid, expired or revoked")
            } catch {
                // Fail closed, as for token revocation.
                if EdgeMetrics.isFailure(error) { state.metrics.rpcFailed(AuthAPI.authenticateAPIKey) }
                throw EdgeError.serviceUnavailable("cannot verify the API key right now, retry shortly")
            }
            guard UUID(uuidString: principal.userID) != nil else { throw EdgeError.serviceUnavailable() }
            return (AccessClaims(sub: principal.userID.lowercased(), sid: "", role: principal.role, jti: "", exp: 0, amr: [], authTime: nil, apiKeyID: principal.apiKeyID), nil)
        case .bearer(let token):
            do {
                (claims, revocationChecked) = try await state.verifier.verify(token, now: Date(), requestID: requestID)
            } catch let error as EdgeError {
                throw error
            } catch {
                state.metrics.tokenRejected()
                state.logger.notice("access token rejected", metadata: ["event": "token_rejected", "risk": "low", "reason": "\(error)", "request_id": "\(requestID)"])
                throw EdgeError.invalidToken()
            }
            bearer = token
        }
        // R-1: revocation through auth, failing closed: no answer means no entry.
        var check = AuthCheckRevokedRequest()
        check.jti = claims.jti
        let revoked: Bool
        if revocationChecked || state.revocations.isKnownLive(claims.jti) {
            revoked = false
        } else {
        do {
            revoked = try await state.auth.call(AuthAPI.checkRevoked, check, options: CallOptions(requestID: requestID, timeout: state.configuration.rpcTimeout)).revoked
        } catch {
            if EdgeMetrics.isFailure(error) { state.metrics.rpcFailed(AuthAPI.checkRevoked) }
            state.logger.warning("revocation check failed; refusing", metadata: ["request_id": "\(requestID)", "error": "\(error)"])
            throw EdgeError.serviceUnavailable("cannot verify the session right now, retry shortly")
        }
        if !revoked { state.revocations.rememberLive(claims.jti) }
        }
        guard !revoked else {
            state.metrics.tokenRejected()
            throw EdgeError.invalidToken()
        }

        if route.auth == .admin {
            guard claims.role == "admin" else { throw EdgeError.forbidden("admin role required") }
            if state.configuration.adminRequiresMFA {
                let now = Int64(Date().timeIntervalSince1970)
                guard claims.amr.contains("otp"), let authTime = claims.authTime,
                      authTime <= now + state.configuration.tokenLeewaySeconds, now - authTime <= state.configuration.adminMFAMaximumAge
                else {
                    throw EdgeError(.forbidden, code: "mfa_required", message: "an access token minted after a second-factor check is required")
                }
            }
            guard let expected = state.configuration.adminKeySHA256, let presented = request.headers[.adminKey],
                  Self.constantTimeEqual(Array(SHA256.hash(data: Data(presented.utf8))), expected)
            else { throw EdgeError.forbidden("admin key required") }
        }
        return (claims, bearer)
    }

    enum Credential { case bearer(String), apiKey(String) }

    static func credential(from headers: HTTPFields) throws(EdgeError) -> Credential {
        if let key = headers[.apiKey] { return .apiKey(key) }
        guard let authorization = headers[.authorization] else { throw .unauthenticated() }
        let parts = authorization.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: true)
        guard parts.count == 2, parts[0].lowercased() == "bearer" else { throw .unauthenticated() }
        let token = String(parts[1].trimmingOptionalWhitespace)
        guard !token.isEmpty else { throw .unauthenticated() }
        return token.hasPrefix("clau_") ? .apiKey(token) : .bearer(token)
    }

    /// C-8: no early exit on the first differing byte.
    static func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        var difference: UInt8 = 0
        for index in a.indices { difference |= a[index] ^ b[index] }
        return difference == 0
    }

    // MARK: Request id, client address, response headers

    /// A sane incoming `X-Request-ID` (1–64 of `[A-Za-z0-9._-]`) or a fresh one.
    static func requestID(from headers: HTTPFields) -> String {
        if let incoming = headers[.requestID], (1...64).contains(incoming.utf8.count),
           incoming.utf8.allSatisfy({ ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x41 && $0 <= 0x5A) || ($0 >= 0x61 && $0 <= 0x7A) || $0 == 0x2E || $0 == 0x5F || $0 == 0x2D }) {
            return incoming
        }
        return UUID().uuidString.lowercased()
    }

    func errorResponse(_ error: EdgeError, requestID: String) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        for (name, value) in error.headers { headers.append(HTTPField(name: name, value: value)) }
        return Response(status: error.status, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(bytes: error.body(requestID: requestID))))
    }

    func finish(_ response: inout Response, requestID: String, hsts: Bool) {
        response.headers[.requestID] = requestID
        response.headers[.cacheControl] = "no-store"
        response.headers[.xContentTypeOptions] = "nosniff"
        if hsts { response.headers[.strictTransportSecurity] = state.configuration.strictTransportSecurity }
    }
}

/// `package`: the fuzzer (Sources/clau-fuzz) feeds it header values directly.
package enum IPAddress {
    static func isValid(_ text: String) -> Bool { canonical(text) != nil }

    /// One spelling per address, so the peer, a forwarded hop, a trusted-proxy setting and a
    /// blocklist entry agree however each was written: `inet_ntop`'s form (RFC 5952: lower case,
    /// longest zero run compressed), and an IPv4-mapped IPv6 address (a dual-stack listener's
    /// view of an IPv4 client) as the IPv4 address. Nil for anything that is not an IP literal.
    package static func canonical(_ text: String) -> String? {
        var v4 = in_addr()
        if inet_pton(AF_INET, text, &v4) == 1 { return format(AF_INET, &v4, length: INET_ADDRSTRLEN) }
        var v6 = in6_addr()
        guard inet_pton(AF_INET6, text, &v6) == 1 else { return nil }
        let isIPv4Mapped = withUnsafeBytes(of: &v6) { bytes in bytes.prefix(10).allSatisfy { $0 == 0 } && bytes[10] == 0xFF && bytes[11] == 0xFF }
        if isIPv4Mapped {
            withUnsafeBytes(of: &v6) { bytes in withUnsafeMutableBytes(of: &v4) { $0.copyMemory(from: UnsafeRawBufferPointer(rebasing: bytes[12..<16])) } }
            return format(AF_INET, &v4, length: INET_ADDRSTRLEN)
        }
        return format(AF_INET6, &v6, length: INET6_ADDRSTRLEN)
    }

    private static func format<Address>(_ family: Int32, _ address: inout Address, length: Int32) -> String? {
        var buffer = [CChar](repeating: 0, count: Int(length))
        let written = withUnsafeBytes(of: &address) { inet_ntop(family, $0.baseAddress, &buffer, socklen_t(length)) }
        guard written != nil else { return nil }
        return buffer.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
    }
}

extension IPAddress {
    /// The client IP: the TCP peer, unless the peer is a configured proxy — then the right-most
    /// `X-Forwarded-For` entry that is not itself a trusted proxy (C-12).
    /// Addresses come back canonical (`IPAddress.canonical`); `trustedProxies` must be canonical.
    package static func clientAddress(peer rawPeer: String, headers: HTTPFields, trustedProxies: Set<String>?) -> (String, Bool) {
        let peer = IPAddress.canonical(rawPeer) ?? rawPeer
        guard let trustedProxies, trustedProxies.contains(peer) else { return (peer, false) }
        let forwardedHTTPS = headers[values: .forwardedProto].last?.trimmingOptionalWhitespace.lowercased() == "https"
        let hops = headers[values: .forwardedFor].flatMap { $0.split(separator: ",") }
        for rawHop in hops.reversed() {
            guard let hop = IPAddress.canonical(String(rawHop.trimmingOptionalWhitespace)) else { break }
            if !trustedProxies.contains(hop) { return (hop, forwardedHTTPS) }
        }
        return (peer, forwardedHTTPS)
    }
}

/// One JSON line per request (C-17): never bodies, tokens, passwords, keys or credential headers —
/// only the fields below exist.
struct AccessLogEntry {
    var requestID: String
    var clientIP: String
    var method: String
    var route = "-"
    var status = 0
    var latency: Duration = .zero
    var userID: String?
    var bytesIn = 0
    var bytesOut = 0

    func emit(to logger: Logger) {
        let (seconds, attoseconds) = latency.components
        let milliseconds = Double(seconds) * 1000 + Double(attoseconds) / 1e15
        logger.info("request", metadata: [
            "request_id": "\(requestID)", "client_ip": "\(clientIP)", "method": "\(method)", "route": "\(route)",
            "status": "\(status)", "latency_ms": "\(String(format: "%.2f", milliseconds))", "user_id": "\(userID ?? "-")",
            "bytes_in": "\(bytesIn)", "bytes_out": "\(bytesOut)",
        ])
    }
}
