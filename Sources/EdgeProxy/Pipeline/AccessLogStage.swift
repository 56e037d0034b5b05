import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore

/// First in, last out: names the request (id, client address) and, whatever the later stages
/// answer or throw, shapes the response (R-14), adds the common headers, writes one access-log
/// line and records the request metrics (C-17).
struct AccessLogStage: RouterMiddleware {
    typealias Context = EdgeRequestContext
    let state: EdgeApplicationState
    /// HTTPS listener (HSTS on every response) or behind nginx (trusted proxies only).
    let isTLS: Bool
    let trustedProxies: Set<String>?

    func handle(_ request: Request, context: EdgeRequestContext, next: (Request, EdgeRequestContext) async throws -> Response) async throws -> Response {
        let started = ContinuousClock.now
        state.metrics.requestStarted()
        var context = context
        let requestID = Self.requestID(from: request.headers)
        let (clientIP, forwardedHTTPS) = IPAddress.clientAddress(peer: context.peerIP ?? "-", headers: request.headers, trustedProxies: trustedProxies)
        context.requestID = requestID
        context.clientIP = clientIP
        let exchange = context.exchange
        var response: Response
        do {
            response = try await next(request, context)
        } catch {
            let edgeError: EdgeError
            if let convertible = error as? any EdgeErrorConvertible {
                edgeError = convertible.edgeError
            } else {
                // Never internals to the client (R-14); the type only in our log.
                state.logger.error("unhandled error", metadata: ["request_id": "\(requestID)", "error_type": "\(type(of: error))"])
                edgeError = .internalError
            }
            response = Self.errorResponse(edgeError, requestID: requestID)
        }
        for (name, value) in exchange.rateHeaders.all { response.headers[name] = value }
        finish(&response, requestID: requestID, hsts: isTLS || forwardedHTTPS)
        let log = AccessLogEntry(
            requestID: requestID, clientIP: clientIP, method: request.method.rawValue, route: exchange.route ?? "-",
            status: Int(response.status.code), latency: ContinuousClock.now - started, userID: exchange.userID,
            bytesIn: request.headers[.contentLength].flatMap(Int.init) ?? 0, bytesOut: response.body.contentLength ?? 0
        )
        log.emit(to: state.accessLogger)
        // Same place, same fields: the route template (never the path), bounded labels only.
        state.metrics.requestFinished(route: exchange.route, method: log.method, status: log.status, duration: log.latency)
        return response
    }

    /// A sane incoming `X-Request-ID` (1–64 of `[A-Za-z0-9._-]`) or a fresh one.
    static func requestID(from headers: HTTPFields) -> String {
        if let incoming = headers[.requestID], (1...64).contains(incoming.utf8.count),
           incoming.utf8.allSatisfy({ ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x41 && $0 <= 0x5A) || ($0 >= 0x61 && $0 <= 0x7A) || $0 == 0x2E || $0 == 0x5F || $0 == 0x2D }) {
            return incoming
        }
        return UUID().uuidString.lowercased()
    }

    static func errorResponse(_ error: EdgeError, requestID: String) -> Response {
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
