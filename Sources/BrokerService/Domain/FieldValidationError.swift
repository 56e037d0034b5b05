import RPC

/// Why a request field was refused: the field (its wire name) and a snake_case problem code. Becomes
/// INVALID_ARGUMENT with `message` = problem and `details["field"]` = field, which the edge turns
/// into 422 `{"fields": [{"name", "problem"}]}`.
public struct FieldValidationError: Error, Sendable, Hashable, RPCErrorConvertible {
    public enum Problem: String, Sendable, Hashable {
        case missing
        case controlCharacter = "control_character"
        case tooLong = "too_long"
        case invalidFormat = "invalid_format"
        case unsupportedValue = "unsupported_value"
        /// A decimal that is zero.
        case notPositive = "not_positive"
        case tooManyDigits = "too_many_digits"
        /// qty and notional both given.
        case conflictsWithOtherField = "conflicts_with_other_field"
        /// limit_price on a market order.
        case notAllowed = "not_allowed"
        /// A notional or fractional order that is not `market` + `day` (Alpaca accepts only those).
        case requiresMarketDayOrder = "requires_market_day_order"
        /// A number outside the accepted range (e.g. a list limit above Alpaca's maximum).
        case outOfRange = "out_of_range"
    }

    public let field: String
    public let problem: Problem

    public init(field: String, problem: Problem) {
        self.field = field
        self.problem = problem
    }

    public var rpcError: RPCError {
        RPCError(code: .invalidArgument, message: problem.rawValue, details: ["field": field])
    }
}
