import PostgresNIO
import RPC

/// Database failures as RPC statuses. A database that cannot be reached, is restarting or is shutting
/// down is a dependency being down: UNAVAILABLE (the edge answers 503 with Retry-After, clients retry),
/// never INTERNAL (500, a bug). Every other database error stays INTERNAL with no detail for the
/// caller; the services log it. Conformances are found at run time by the RPC router's
/// `as? any RPCErrorConvertible`, in every process that links this module.
extension PSQLError: RPCErrorConvertible {
    public var rpcError: RPCError {
        isUnavailable ? RPCError(code: .unavailable, message: "database_unavailable") : RPCError(code: .internalError, message: "internal error")
    }

    /// Connection-level failures, and the server's "connection exception" (class 08), "shutting
    /// down / starting up" (57P01-57P03) and "too many connections" (53300) states.
    public var isUnavailable: Bool {
        switch code {
        case .connectionError, .serverClosedConnection, .clientClosedConnection, .uncleanShutdown, .poolClosed:
            return true
        case .server:
            let state = serverInfo?[.sqlState] ?? ""
            return state.hasPrefix("08") || ["57P01", "57P02", "57P03", "53300"].contains(state)
        default:
            return false
        }
    }
}

extension PostgresTransactionError: RPCErrorConvertible {
    /// The first error of the transaction decides: the closure's own status when it threw one
    /// (e.g. NOT_FOUND), UNAVAILABLE when the database went away, INTERNAL otherwise.
    public var rpcError: RPCError {
        for error in [beginError, closureError, commitError, rollbackError].compactMap({ $0 }) {
            if let convertible = error as? any RPCErrorConvertible { return convertible.rpcError }
        }
        return RPCError(code: .internalError, message: "internal error")
    }
}
