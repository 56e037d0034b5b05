import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import Synchronization

/// a URI within its limit (414), the route match (whose route may be exempt), and the
/// in-flight bound: past it a request is shed at once (503 + Retry-After) instead of queueing.
struct AdmissionStage: RouterMiddleware {
    typealias Context = EdgeRequestContext
    let state: EdgeApplicationState

    func handle(_ request: Request, context: EdgeRequestContext, next: (Request, EdgeRequestContext) async throws -> Response) async throws -> Response {
        guard request.head.path.map({ $0.utf8.count <= state.configuration.maximumURIBytes }) ?? true else {
            throw EdgeError(.uriTooLong, code: "uri_too_long", message: "the request URI is too long")
        }
        var context = context
        context.lookup = state.routes.lookup(method: request.method, path: request.uri.path)
        if context.exemptFromAdmission { return try await next(request, context) }

        let current = state.inFlight.wrappingAdd(1, ordering: .relaxed).newValue
        defer { state.inFlight.wrappingSubtract(1, ordering: .relaxed) }
        if current > state.configuration.maximumInFlightRequests {
            state.metrics.admissionRejected()
            throw EdgeError.serviceUnavailable("the server is busy, retry shortly", retryAfter: 1)
        }
        return try await next(request, context)
    }
}

/// header bytes (the HTTP decoder itself stops at 64 KiB); then a path that fits no route
/// is 404 and a known path with another method 405 + `Allow`, before any credential is read.
struct RequestLimitsStage: RouterMiddleware {
    typealias Context = EdgeRequestContext
    let configuration: EdgeConfiguration

    func handle(_ request: Request, context: EdgeRequestContext, next: (Request, EdgeRequestContext) async throws -> Response) async throws -> Response {
        let headerBytes = request.headers.reduce(0) { $0 + $1.name.rawName.utf8.count + $1.value.utf8.count + 4 }
        guard headerBytes <= configuration.maximumHeaderBytes else {
            throw EdgeError(.requestHeaderFieldsTooLarge, code: "headers_too_large", message: "the request headers exceed \(configuration.maximumHeaderBytes) bytes")
        }
        var context = context
        switch context.lookup {
        case .notFound:
            throw EdgeError.notFound("no route for this path")
        case .methodNotAllowed(let allowed):
            let allow = Set(allowed.map(\.rawValue)).sorted().joined(separator: ", ")
            throw EdgeError(.methodNotAllowed, code: "method_not_allowed", message: "method not allowed on this path", headers: [(.allow, allow)])
        case .found(let route, let parameters):
            context.route = route
            context.parameters = parameters
            context.exchange.note(route: route.template)
        }
        return try await next(request, context)
    }
}

extension EdgeApplicationState {
    /// Reads a request body within the size limit (413) and the read timeout (408).
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
