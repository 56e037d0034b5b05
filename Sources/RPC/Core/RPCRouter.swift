import Foundation
import Logging
import SwiftProtobuf

/// What a handler knows about the call it serves.
public struct ServerContext: Sendable {
    /// The caller as the kernel reported it (SO_PEERCRED), or this process in-process.
    public let peer: PeerCredentials
    /// The edge's request id, carried across every hop for log correlation ("-" if absent).
    public let requestID: String
    /// When the caller stops waiting; handlers pass it on to the calls they make.
    public let deadline: ContinuousClock.Instant?
    public let method: String
    /// A logger carrying `request_id`, `rpc_method` and `peer_uid`.
    public var logger: Logger

    /// Options for a downstream call that keeps this call's request id and remaining deadline.
    public func downstreamOptions() -> CallOptions {
        CallOptions(requestID: requestID, deadline: deadline)
    }
}

/// The handlers of one server, by full method name. Built once at start, then read-only.
public struct RPCRouter: Sendable {
    public typealias ErasedHandler = @Sendable (Data, ServerContext) async throws -> Data

    private(set) var handlers: [String: ErasedHandler] = [:]

    public init() {}

    public var methodNames: [String] { handlers.keys.sorted() }

    public mutating func register<Request, Response>(
        _ method: MethodDescriptor<Request, Response>,
        handler: @escaping @Sendable (Request, ServerContext) async throws -> Response
    ) {
        precondition(handlers[method.fullName] == nil, "\(method.fullName) registered twice")
        handlers[method.fullName] = { payload, context in
            let request: Request
            do {
                request = try Request(serializedBytes: payload)
            } catch {
                throw RPCError(code: .invalidArgument, message: "payload is not a valid \(Request.protoMessageName)")
            }
            let response = try await handler(request, context)
            return try response.serializedBytes()
        }
    }
}

/// The transport-agnostic server: checks the caller against the access policy, refuses calls
/// whose deadline has passed, runs the handler and turns every outcome into a wire response.
/// Both the Unix-socket server and the in-process transport call `handle`; each cancels the
/// calling task at the request's ``deadline(of:now:)``.
public final class RPCServerCore: Sendable {
    public let router: RPCRouter
    public let accessPolicy: RPCAccessPolicy
    private let logger: Logger
    /// Every uid and gid some rule admits: the refuse-first check is two set lookups.
    private let admittedUIDs: Set<UInt32>
    private let admittedGIDs: Set<UInt32>

    public init(router: RPCRouter, accessPolicy: RPCAccessPolicy, logger: Logger) {
        self.router = router
        self.accessPolicy = accessPolicy
        self.logger = logger
        self.admittedUIDs = accessPolicy.rules.values.reduce(into: []) { $0.formUnion($1.uids) }
        self.admittedGIDs = accessPolicy.rules.values.reduce(into: []) { $0.formUnion($1.gids) }
    }

    /// Whether some rule of this service admits `peer` (for some method).
    public func admits(_ peer: PeerCredentials) -> Bool {
        admittedUIDs.contains(peer.uid) || admittedGIDs.contains(peer.gid)
    }

    /// The answer to every call from a peer no rule admits, whatever the method name: such a peer
    /// cannot tell a real method from an unknown one.
    static let peerRefused = RPCWireResponse.failure(RPCError(code: .permissionDenied, message: "caller is not allowed"))

    /// Audit event for a peer that no rule admits: a sign of a compromised or
    /// misconfigured process. The socket server logs it once per connection.
    func auditRefusedPeer(_ peer: PeerCredentials, logger: Logger) {
        logger.warning("rpc peer refused", metadata: [
            "event": "permission_denied", "risk": "high",
            "peer_uid": "\(peer.uid)", "peer_pid": "\(peer.pid)", "peer_gid": "\(peer.gid)",
        ])
    }

    /// The logger the socket server audits connections with.
    var connectionLogger: Logger { logger }

    /// Serves one request. `deadline` is the one the transport computed from the request's timeout
    /// when it received it (``deadline(of:now:)``) and cancels the calling task at: one instant for
    /// both, so a call the transport cancelled at its deadline is always DEADLINE_EXCEEDED.
    /// A peer that no rule admits is refused first, before the method is looked up; it is audited
    /// here unless the transport already did (`refusalAudited`: once per connection).
    public func handle(_ request: RPCWireRequest, peer: PeerCredentials, deadline: ContinuousClock.Instant?, refusalAudited: Bool = false) async -> RPCWireResponse {
        let requestID = Self.sanitizedRequestID(request.requestID)
        var logger = self.logger
        logger[metadataKey: "request_id"] = .string(requestID)
        logger[metadataKey: "rpc_method"] = .string(request.method)
        logger[metadataKey: "peer_uid"] = "\(peer.uid)"

        guard admits(peer) else {
            if !refusalAudited { auditRefusedPeer(peer, logger: logger) }
            return Self.peerRefused
        }
        guard let handler = router.handlers[request.method] else {
            return .failure(RPCError(code: .unimplemented, message: "unknown method"))
        }
        guard accessPolicy.allows(method: request.method, peer: peer) else {
            // Audit event: a refused caller is a sign of a compromised or misconfigured peer.
            logger.warning("rpc caller refused", metadata: [
                "event": "permission_denied", "risk": "high",
                "peer_pid": "\(peer.pid)", "peer_gid": "\(peer.gid)",
            ])
            return .failure(RPCError(code: .permissionDenied, message: "caller is not allowed to call \(request.method)"))
        }

        let context = ServerContext(peer: peer, requestID: requestID, deadline: deadline, method: request.method, logger: logger)
        do {
            let payload = try await Self.run(handler, payload: request.payload, context: context)
            var response = RPCWireResponse()
            response.status.code = RPCError.Code.ok.rawValue
            response.payload = payload
            return response
        } catch let error as any RPCErrorConvertible {
            return .failure(error.rpcError)
        } catch is CancellationError {
            if let deadline, deadline <= .now {
                return .failure(RPCError(code: .deadlineExceeded, message: "deadline exceeded"))
            }
            return .failure(RPCError(code: .cancelled, message: "call cancelled"))
        } catch {
            // Full detail stays in our log; the caller learns only that it failed.
            logger.error("rpc handler failed", metadata: ["error": "\(String(reflecting: error))"])
            return .failure(RPCError(code: .internalError, message: "internal error"))
        }
    }

    /// The instant by which a request must be answered, from its relative timeout (nil: none).
    public static func deadline(of request: RPCWireRequest, now: ContinuousClock.Instant = .now) -> ContinuousClock.Instant? {
        guard request.timeoutMicros > 0 else { return nil }
        return now + .microseconds(Int64(min(request.timeoutMicros, UInt64(Int64.max / 1000))))
    }

    /// Runs the handler in the calling task. The transport cancels that task when the deadline
    /// passes (a NIO timer on the socket server: no extra task or dispatch timer per call), and
    /// `handle` reports the cancellation as DEADLINE_EXCEEDED.
    private static func run(_ handler: @escaping RPCRouter.ErasedHandler, payload: Data, context: ServerContext) async throws -> Data {
        if let deadline = context.deadline, deadline <= .now {
            throw RPCError(code: .deadlineExceeded, message: "deadline exceeded")
        }
        return try await handler(payload, context)
    }

    /// Request ids come from another process: keep them short and printable so they cannot
    /// forge log lines.
    static func sanitizedRequestID(_ raw: String?) -> String {
        guard let raw, !raw.isEmpty else { return "-" }
        // Bytes, not Unicode properties: this runs on every call.
        let isAllowed = { (byte: UInt8) in
            (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x61 && byte <= 0x7A)
                || byte == UInt8(ascii: "-") || byte == UInt8(ascii: "_") || byte == UInt8(ascii: ".") || byte == UInt8(ascii: ":")
        }
        // The edge's ids are always clean: kept as they are, no copy.
        if raw.utf8.count <= 128, raw.utf8.allSatisfy(isAllowed) { return raw }
        let allowed = raw.utf8.prefix(128).filter(isAllowed)
        return allowed.isEmpty ? "-" : String(decoding: allowed, as: UTF8.self)
    }
}

extension RPCWireResponse {
    static func failure(_ error: RPCError) -> RPCWireResponse {
        var response = RPCWireResponse()
        response.status.code = error.code.rawValue
        response.status.message = error.message
        response.status.details = error.details
        return response
    }
}

extension RPCWireStatus {
    var rpcError: RPCError {
        RPCError(code: RPCError.Code(rawValue: code), message: message, details: details)
    }
}
