import Foundation
import Logging
import RPC

/// The edge's only way to reach auth. Every call carries the request's id and the configured
/// deadline, is counted in `clau_edge_rpc_calls_total` and, without a usable answer, in
/// `clau_edge_auth_rpc_failures_total` (C-17), and ends
/// in one of three ways chosen by the caller:
///
/// - `call`: the RPC's own error, untouched (background refreshes decide for themselves);
/// - `request`: a route's call, auth's answer shaped as HTTP (SPEC §2, `RPCError.edgeError`);
/// - `guardCall`: a check a request depends on (API key, HS256 token, revocation): auth's refusal
///   becomes the given error, anything else 503 — never a pass.
struct AuthGateway: Sendable {
    let client: RPCClient
    /// Deadline of every call unless a caller asks for a shorter one (readiness).
    let timeout: Duration
    let metrics: EdgeMetrics?
    let logger: Logger

    init(client: RPCClient, timeout: Duration, metrics: EdgeMetrics?, logger: Logger) {
        self.client = client
        self.timeout = timeout
        self.metrics = metrics
        self.logger = logger
    }

    func options(requestID: String, timeout: Duration? = nil) -> CallOptions {
        CallOptions(requestID: requestID, timeout: timeout ?? self.timeout)
    }

    /// One call; failures are counted and rethrown as they came.
    func call<Request, Response>(_ method: MethodDescriptor<Request, Response>, _ message: Request, requestID: String, timeout: Duration? = nil) async throws -> Response {
        metrics?.rpcCalled("auth", method)
        do {
            return try await client.call(method, message, options: options(requestID: requestID, timeout: timeout))
        } catch {
            if EdgeMetrics.isFailure(error) { metrics?.rpcFailed(method) }
            throw error
        }
    }

    /// A route's call: auth's errors become HTTP errors. `passwordField` names the body field a
    /// password-policy violation belongs to; `fieldNames` renames auth's field names to the body's.
    func request<Request, Response>(_ method: MethodDescriptor<Request, Response>, _ message: Request, requestID: String,
                                    passwordField: String = "password", fieldNames: [String: String] = [:]) async throws -> Response {
        do {
            return try await call(method, message, requestID: requestID)
        } catch let error as RPCError {
            throw error.edgeError(passwordField: passwordField, fieldNames: fieldNames)
        }
    }

    /// A check the request cannot pass without: `unauthenticated` from auth becomes `refusal`
    /// (when given); every other outcome, a transport failure included, is 503 with `unavailable`.
    /// `warning`, when given, is logged on that 503 with the request id and the error.
    func guardCall<Request, Response>(_ method: MethodDescriptor<Request, Response>, _ message: Request, requestID: String,
                                      refusal: (any Error)? = nil, unavailable: String, warning: Logger.Message? = nil) async throws -> Response {
        do {
            return try await call(method, message, requestID: requestID)
        } catch {
            if let refusal, (error as? RPCError)?.code == .unauthenticated { throw refusal }
            if let warning { logger.warning(warning, metadata: ["request_id": "\(requestID)", "error": "\(error)"]) }
            throw EdgeError.serviceUnavailable(unavailable)
        }
    }
}
