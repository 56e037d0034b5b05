import HTTPTypes
import Hummingbird
import NIOCore

/// The end of the pipeline: the owner check of user-scoped paths (C-7), then the route's handler
/// (one RPC), its reply as a response.
struct RouteStage: Sendable {
    let state: EdgeApplicationState

    func respond(to request: Request, context: EdgeRequestContext) async throws -> Response {
        let route = try context.matchedRoute()
        // C-7: a user-scoped path must name the caller, checked before any RPC; a foreign id is 404.
        if let owner = context.parameters["userId"], route.template.hasPrefix("/v1/users/") {
            guard let caller = context.caller, owner.lowercased() == caller.sub else { throw EdgeError.notFound() }
        }
        let call = EdgeCall(request: request, requestID: context.requestID, clientIP: context.clientIP, parameters: context.parameters, caller: context.caller,
                            bearerToken: context.bearerToken, rateHeaders: context.exchange.rateHeaders, app: state)
        let reply = try await route.handler(call)
        var headers = HTTPFields()
        var body = ByteBuffer()
        if let data = reply.body {
            headers[.contentType] = reply.contentType
            body = ByteBuffer(bytes: data)
        }
        return Response(status: reply.status, headers: headers, body: reply.body == nil ? ResponseBody() : ResponseBody(byteBuffer: body))
    }
}
