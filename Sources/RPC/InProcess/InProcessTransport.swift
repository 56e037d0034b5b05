import Foundation

/// Calls a server core directly, for fast service tests. The call still goes through the same
/// serialization, access policy and deadline handling as over a socket; the caller identity is
/// whatever the test says it is.
public struct InProcessTransport: ClientTransport {
    public let server: RPCServerCore
    public let peer: PeerCredentials

    public init(server: RPCServerCore, peer: PeerCredentials = .currentProcess()) {
        self.server = server
        self.peer = peer
    }

    public func unary(method: String, payload: Data, requestID: String?, deadline: ContinuousClock.Instant?) async throws -> Data {
        var request = RPCWireRequest()
        request.method = method
        request.payload = payload
        if let requestID { request.requestID = requestID }
        if let deadline {
            if deadline <= .now { throw RPCError(code: .deadlineExceeded, message: "deadline exceeded") }
            request.timeoutMicros = deadline.remainingMicros
        }
        let response: RPCWireResponse
        if let deadline {
            // The deadline cancels the call, as the socket server's deadline alarm does.
            response = await withTaskGroup(of: RPCWireResponse?.self) { group in
                group.addTask { [server, peer, request] in await server.handle(request, peer: peer, deadline: deadline) }
                group.addTask {
                    try? await Task.sleep(until: deadline, clock: .continuous)
                    return nil
                }
                var answer: RPCWireResponse?
                while answer == nil, let next = await group.next() {
                    if let next { answer = next } else { group.cancelAll() }
                }
                group.cancelAll()
                return answer!
            }
        } else {
            response = await server.handle(request, peer: peer, deadline: nil)
        }
        guard response.status.code == RPCError.Code.ok.rawValue else {
            throw response.status.rpcError
        }
        return response.payload
    }
}
