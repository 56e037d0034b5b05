import Foundation
import SwiftProtobuf

/// Per-call options: the request id to carry and when to give up.
public struct CallOptions: Sendable {
    public var requestID: String?
    public var deadline: ContinuousClock.Instant?

    public init(requestID: String? = nil, deadline: ContinuousClock.Instant? = nil) {
        self.requestID = requestID
        self.deadline = deadline
    }

    public init(requestID: String? = nil, timeout: Duration) {
        self.init(requestID: requestID, deadline: .now + timeout)
    }
}

/// Moves one serialized unary call to a server and back. Implementations throw only `RPCError`.
public protocol ClientTransport: Sendable {
    func unary(method: String, payload: Data, requestID: String?, deadline: ContinuousClock.Instant?) async throws -> Data
}

/// A typed client over any transport.
public struct RPCClient: Sendable {
    public let transport: any ClientTransport

    public init(transport: any ClientTransport) {
        self.transport = transport
    }

    public func call<Request, Response>(
        _ method: MethodDescriptor<Request, Response>,
        _ request: Request,
        options: CallOptions = CallOptions()
    ) async throws -> Response {
        let payload: Data
        do {
            payload = try request.serializedBytes()
        } catch {
            throw RPCError(code: .invalidArgument, message: "request could not be serialized")
        }
        let reply = try await transport.unary(method: method.fullName, payload: payload, requestID: options.requestID, deadline: options.deadline)
        do {
            return try Response(serializedBytes: reply)
        } catch {
            throw RPCError(code: .internalError, message: "server sent an invalid \(Response.protoMessageName)")
        }
    }
}

extension ContinuousClock.Instant {
    /// Remaining time in whole microseconds, at least 1 so that "already due" is not read as "none".
    var remainingMicros: UInt64 {
        let remaining = self - .now
        let (seconds, attoseconds) = remaining.components
        let micros = seconds * 1_000_000 + attoseconds / 1_000_000_000_000
        return UInt64(max(1, micros))
    }

    /// Nanoseconds from now (negative once passed), saturating for far-away deadlines.
    var remainingNanoseconds: Int64 {
        let (seconds, attoseconds) = (self - .now).components
        let (scaled, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        if overflow { return seconds < 0 ? .min : .max }
        return scaled.addingReportingOverflow(attoseconds / 1_000_000_000).overflow ? .max : scaled + attoseconds / 1_000_000_000
    }
}
