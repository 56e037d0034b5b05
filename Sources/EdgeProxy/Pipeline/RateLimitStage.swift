import ClauSupport
import Hummingbird

/// C-9, R-15: one budget per client and route category; 429 + `Retry-After` past it, and the
/// `X-RateLimit-*` headers on every response of a limited route. Login is keyed by IP + account,
/// so its handler checks once the body names the account.
struct RateLimitStage: RouterMiddleware {
    typealias Context = EdgeRequestContext
    let state: EdgeApplicationState

    func handle(_ request: Request, context: EdgeRequestContext, next: (Request, EdgeRequestContext) async throws -> Response) async throws -> Response {
        let route = try context.matchedRoute()
        if route.category != .login {
            try await state.enforce(route.category, key: RateLimitKey.client(context.caller, clientIP: context.clientIP),
                                    headers: context.exchange.rateHeaders, requestID: context.requestID)
        }
        return try await next(request, context)
    }
}

/// The keys budgets are counted under, all here so that two places cannot disagree.
enum RateLimitKey {
    /// Per client: API key > user id > IP.
    static func client(_ caller: AccessClaims?, clientIP: String) -> String {
        caller.map { caller in caller.apiKeyID.map { "key:\($0)" } ?? "user:\(caller.sub)" } ?? "ip:\(clientIP)"
    }

    /// Login: per IP + account, the account normalised as auth does.
    static func login(clientIP: String, email: String) -> String {
        "ip:\(clientIP)|account:\(FieldRules.normalizedEmail(email))"
    }
}
