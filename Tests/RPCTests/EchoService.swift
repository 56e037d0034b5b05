import Foundation
import Logging
import RPC

/// A test service: echoes what it is sent, optionally after a delay, and says who called.
enum Echo {
    static let echo = MethodDescriptor<RPCWireEchoRequest, RPCWireEchoResponse>(service: "clau.test.Echo", method: "Echo")
    static let fail = MethodDescriptor<RPCWireEchoRequest, RPCWireEchoResponse>(service: "clau.test.Echo", method: "Fail")
    static let unregistered = MethodDescriptor<RPCWireEchoRequest, RPCWireEchoResponse>(service: "clau.test.Echo", method: "Nope")

    struct DatabaseExploded: Error, CustomStringConvertible {
        var description: String { "password authentication failed for user clau_auth at /var/lib/secret.sock" }
    }

    /// `onStart` runs when a call reaches the handler; `onCancel` when a delayed call is cancelled.
    static func router(onStart: (@Sendable () -> Void)? = nil, onCancel: (@Sendable () -> Void)? = nil) -> RPCRouter {
        var router = RPCRouter()
        router.register(echo) { request, context in
            onStart?()
            if request.delayMillis > 0 {
                do {
                    try await Task.sleep(for: .milliseconds(request.delayMillis))
                } catch {
                    onCancel?()
                    throw error
                }
            }
            var response = RPCWireEchoResponse()
            response.payload = request.payload
            response.text = request.text
            response.peerUid = context.peer.uid
            response.requestID = context.requestID
            return response
        }
        router.register(fail) { _, _ in throw DatabaseExploded() }
        return router
    }

    /// Replies with `delay_millis` zero bytes of payload: a reply of any size from a tiny request.
    static let amplify = MethodDescriptor<RPCWireEchoRequest, RPCWireEchoResponse>(service: "clau.test.Echo", method: "Amplify")

    static func amplifyingRouter() -> RPCRouter {
        var router = router()
        router.register(amplify) { request, _ in
            var response = RPCWireEchoResponse()
            response.payload = Data(count: Int(request.delayMillis))
            return response
        }
        return router
    }

    static func amplifyingPolicy() -> RPCAccessPolicy {
        var policy = openPolicy()
        policy.allow(amplify.fullName, uids: [getuid()])
        return policy
    }

    static func openPolicy(uids: Set<UInt32> = [getuid()]) -> RPCAccessPolicy {
        var policy = RPCAccessPolicy()
        policy.allow(echo.fullName, uids: uids)
        policy.allow(fail.fullName, uids: uids)
        return policy
    }

    static func request(_ text: String, payload: Data = Data(), delayMillis: UInt64 = 0) -> RPCWireEchoRequest {
        var request = RPCWireEchoRequest()
        request.text = text
        request.payload = payload
        request.delayMillis = delayMillis
        return request
    }
}
