import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import RPC
import Synchronization

/// The edge's Prometheus metrics (C-17, R-16), exposed in text format 0.0.4 on a separate
/// loopback-only listener (`EdgeConfiguration.metricsPort`), never on the public listeners.
///
/// Every label has a bounded value set: route *templates* (or `unmatched`), a fixed method list
/// (or `OTHER`), the status code the edge itself produced, rate-limit categories, RPC method names
/// of the edge's own descriptors. Nothing taken verbatim from a request (path, ids, tokens,
/// addresses) becomes a label. Each update is one lock and one dictionary access: O(1).
public final class EdgeMetrics: Sendable {
    /// Upper bounds (seconds) of the request-duration histogram; `+Inf` is implicit.
    public static let durationBuckets: [Double] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]
    /// Route label of a request that matched no route (404, 405, or refused before routing).
    public static let unmatchedRoute = "unmatched"
    static let knownMethods: Set<String> = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]

    struct RequestKey: Hashable {
        var route: String
        var method: String
        var status: Int
    }

    struct RPCCallKey: Hashable {
        var service: String
        var method: String
    }

    struct Histogram {
        /// Per bucket (not cumulative; the last slot is `+Inf`).
        var counts: [UInt64] = Array(repeating: 0, count: EdgeMetrics.durationBuckets.count + 1)
        var sum: Double = 0
        var count: UInt64 = 0
    }

    struct State {
        var requests: [RequestKey: UInt64] = [:]
        var durations: [String: Histogram] = [:]
        var admissionRejections: UInt64 = 0
        var rateLimited: [String: UInt64] = [:]
        var rpcFailures: [String: UInt64] = [:]
        /// Every call made, by service and method: what one request costs downstream.
        var rpcCalls: [RPCCallKey: UInt64] = [:]
        var brokerRPCFailures: [String: UInt64] = [:]
        var tokenRejections: UInt64 = 0
    }

    private let state = Mutex(State())
    private let inFlight = Atomic<Int>(0)

    public init() {}

    // MARK: Recording

    func requestStarted() { inFlight.wrappingAdd(1, ordering: .relaxed) }

    /// One finished request: the access-log hook (`AccessLogStage`). `route` is the
    /// template, or nil when none matched.
    func requestFinished(route: String?, method: String, status: Int, duration: Duration) {
        inFlight.wrappingSubtract(1, ordering: .relaxed)
        let key = RequestKey(route: route ?? Self.unmatchedRoute, method: Self.methodLabel(method), status: status)
        let seconds = Self.seconds(duration)
        let bucket = Self.durationBuckets.firstIndex(where: { seconds <= $0 }) ?? Self.durationBuckets.count
        state.withLock { state in
            state.requests[key, default: 0] &+= 1
            state.durations[key.route, default: Histogram()].observe(bucket: bucket, seconds: seconds)
        }
    }

    /// a request shed with 503 because too many were in flight.
    func admissionRejected() { state.withLock { $0.admissionRejections &+= 1 } }

    /// C-9/R-15: a request refused with 429.
    func rateLimited(_ category: RateCategory) { state.withLock { $0.rateLimited[category.rawValue, default: 0] &+= 1 } }

    /// A call made to `service` (auth or broker), answered or not.
    func rpcCalled<Request, Response>(_ service: String, _ method: MethodDescriptor<Request, Response>) {
        state.withLock { $0.rpcCalls[RPCCallKey(service: service, method: method.method), default: 0] &+= 1 }
    }

    /// A call to auth that got no usable answer (transport error, deadline, unavailable, internal).
    func rpcFailed(_ method: String) { state.withLock { $0.rpcFailures[method, default: 0] &+= 1 } }

    func rpcFailed<Request, Response>(_ method: MethodDescriptor<Request, Response>) { rpcFailed(method.method) }

    /// A call to the broker that got no usable answer (as `rpcFailed`, counted apart: a broker
    /// outage leaves auth routes working, and the two alert differently).
    func brokerRPCFailed<Request, Response>(_ method: MethodDescriptor<Request, Response>) {
        state.withLock { $0.brokerRPCFailures[method.method, default: 0] &+= 1 }
    }

    /// An access token refused (bad signature, claims, expired, revoked).
    func tokenRejected() { state.withLock { $0.tokenRejections &+= 1 } }

    /// Whether `error` from an RPC call means auth did not really answer (as opposed to an
    /// application answer such as `unauthenticated` or `invalidArgument`).
    static func isFailure(_ error: any Error) -> Bool {
        guard let rpc = error as? RPCError else { return true }
        return [.unknown, .deadlineExceeded, .internalError, .unavailable, .dataLoss, .unimplemented, .cancelled].contains(rpc.code)
    }

    static func methodLabel(_ method: String) -> String { knownMethods.contains(method) ? method : "OTHER" }

    static func seconds(_ duration: Duration) -> Double {
        let (seconds, attoseconds) = duration.components
        return Double(seconds) + Double(attoseconds) / 1e18
    }

    // MARK: Exposition (text format 0.0.4)

    public static let contentType = "text/plain; version=0.0.4; charset=utf-8"

    /// The whole exposition; families in a fixed order, series sorted by labels.
    public func render() -> String {
        let snapshot = state.withLock { $0 }
        let inFlightNow = inFlight.load(ordering: .relaxed)
        var out = ""
        out.reserveCapacity(4096)

        Self.header(&out, "clau_edge_http_requests_total", "counter", "HTTP requests answered by the public listener, by route template, method and status code.")
        for (key, value) in snapshot.requests.sorted(by: { ($0.key.route, $0.key.method, $0.key.status) < ($1.key.route, $1.key.method, $1.key.status) }) {
            Self.sample(&out, "clau_edge_http_requests_total", [("route", key.route), ("method", key.method), ("status", String(key.status))], value)
        }

        Self.header(&out, "clau_edge_http_request_duration_seconds", "histogram", "Time from request head to response, by route template.")
        for (route, histogram) in snapshot.durations.sorted(by: { $0.key < $1.key }) {
            var cumulative: UInt64 = 0
            for (index, bound) in Self.durationBuckets.enumerated() {
                cumulative &+= histogram.counts[index]
                Self.sample(&out, "clau_edge_http_request_duration_seconds_bucket", [("route", route), ("le", Self.format(bound))], cumulative)
            }
            Self.sample(&out, "clau_edge_http_request_duration_seconds_bucket", [("route", route), ("le", "+Inf")], histogram.count)
            Self.sample(&out, "clau_edge_http_request_duration_seconds_sum", [("route", route)], Self.format(histogram.sum))
            Self.sample(&out, "clau_edge_http_request_duration_seconds_count", [("route", route)], histogram.count)
        }

        Self.header(&out, "clau_edge_http_in_flight_requests", "gauge", "Requests being handled by the public listener now.")
        Self.sample(&out, "clau_edge_http_in_flight_requests", [], String(inFlightNow))

        Self.header(&out, "clau_edge_admission_rejections_total", "counter", "Requests shed with 503 because too many were in flight (R-16).")
        Self.sample(&out, "clau_edge_admission_rejections_total", [], snapshot.admissionRejections)

        Self.header(&out, "clau_edge_rate_limited_total", "counter", "Requests refused with 429, by rate-limit category (C-9, R-15).")
        for (category, value) in snapshot.rateLimited.sorted(by: { $0.key < $1.key }) {
            Self.sample(&out, "clau_edge_rate_limited_total", [("category", category)], value)
        }

        Self.header(&out, "clau_edge_rpc_calls_total", "counter", "Calls made to auth and the broker, by service and RPC method.")
        for (key, value) in snapshot.rpcCalls.sorted(by: { ($0.key.service, $0.key.method) < ($1.key.service, $1.key.method) }) {
            Self.sample(&out, "clau_edge_rpc_calls_total", [("service", key.service), ("method", key.method)], value)
        }

        Self.header(&out, "clau_edge_auth_rpc_failures_total", "counter", "Calls to auth that got no usable answer (transport, deadline, unavailable, internal), by RPC method.")
        for (method, value) in snapshot.rpcFailures.sorted(by: { $0.key < $1.key }) {
            Self.sample(&out, "clau_edge_auth_rpc_failures_total", [("method", method)], value)
        }

        Self.header(&out, "clau_edge_broker_rpc_failures_total", "counter", "Calls to the broker that got no usable answer (transport, deadline, unavailable, internal), by RPC method.")
        for (method, value) in snapshot.brokerRPCFailures.sorted(by: { $0.key < $1.key }) {
            Self.sample(&out, "clau_edge_broker_rpc_failures_total", [("method", method)], value)
        }

        Self.header(&out, "clau_edge_token_rejections_total", "counter", "Access tokens refused (invalid, expired or revoked).")
        Self.sample(&out, "clau_edge_token_rejections_total", [], snapshot.tokenRejections)
        return out
    }

    static func header(_ out: inout String, _ name: String, _ type: String, _ help: String) {
        out += "# HELP \(name) \(escapeHelp(help))\n# TYPE \(name) \(type)\n"
    }

    static func sample(_ out: inout String, _ name: String, _ labels: [(String, String)], _ value: UInt64) {
        sample(&out, name, labels, String(value))
    }

    static func sample(_ out: inout String, _ name: String, _ labels: [(String, String)], _ value: String) {
        out += name
        if !labels.isEmpty {
            out += "{"
            out += labels.map { "\($0.0)=\"\(escapeLabelValue($0.1))\"" }.joined(separator: ",")
            out += "}"
        }
        out += " \(value)\n"
    }

    /// Label values: `\` → `\\`, `"` → `\"`, newline → `\n` (text format 0.0.4).
    public static func escapeLabelValue(_ value: String) -> String {
        var escaped = ""
        escaped.reserveCapacity(value.utf8.count)
        for character in value.unicodeScalars {
            switch character {
            case "\\": escaped += "\\\\"
            case "\"": escaped += "\\\""
            case "\n": escaped += "\\n"
            default: escaped.unicodeScalars.append(character)
            }
        }
        return escaped
    }

    /// HELP text: `\` → `\\`, newline → `\n`.
    static func escapeHelp(_ text: String) -> String {
        text.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\n", with: "\\n")
    }

    /// A float the Prometheus parser reads (Go-style `+Inf`, shortest round-trip otherwise).
    static func format(_ value: Double) -> String {
        if value.isNaN { return "NaN" }
        if value.isInfinite { return value > 0 ? "+Inf" : "-Inf" }
        return "\(value)"
    }
}

extension EdgeMetrics.Histogram {
    mutating func observe(bucket: Int, seconds: Double) {
        counts[bucket] &+= 1
        sum += seconds
        count &+= 1
    }
}

/// The metrics listener (loopback only): `GET /metrics` → the exposition; other paths 404, other methods 405.
struct MetricsResponder: HTTPResponder {
    typealias Context = EdgeRequestContext
    let metrics: EdgeMetrics

    func respond(to request: Request, context: EdgeRequestContext) async throws -> Response {
        var headers = HTTPFields()
        headers[.cacheControl] = "no-store"
        guard request.uri.path == "/metrics" else {
            return Response(status: .notFound, headers: headers, body: ResponseBody())
        }
        guard request.method == .get else {
            headers[.allow] = "GET"
            return Response(status: .methodNotAllowed, headers: headers, body: ResponseBody())
        }
        headers[.contentType] = EdgeMetrics.contentType
        return Response(status: .ok, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(string: metrics.render())))
    }
}
