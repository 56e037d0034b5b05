import Foundation

/// An order as the user asked for it, before any check: proto3 strings, empty meaning absent.
public struct AlpacaOrderDraft: Sendable, Hashable {
    public var symbol: String
    public var side: String
    public var type: String
    public var timeInForce: String
    public var qty: String
    public var notional: String
    public var limitPrice: String

    public init(symbol: String, side: String, type: String, timeInForce: String, qty: String = "", notional: String = "", limitPrice: String = "") {
        self.symbol = symbol
        self.side = side
        self.type = type
        self.timeInForce = timeInForce
        self.qty = qty
        self.notional = notional
        self.limitPrice = limitPrice
    }
}

/// The order sides, types and times in force the broker places. Raw values are Alpaca's
/// (`../shared/contracts/alpaca`): stop, stop_limit and trailing_stop exist at Alpaca but are not
/// offered (SPEC §3 lists market and limit).
public enum AlpacaOrderSide: String, Sendable, Hashable, CaseIterable {
    case buy, sell
}

public enum AlpacaOrderType: String, Sendable, Hashable, CaseIterable {
    case market, limit
}

public enum AlpacaTimeInForce: String, Sendable, Hashable, CaseIterable {
    case day, gtc, opg, cls, ioc, fok
}

/// How much to trade: a number of shares or an amount of money, never both (Alpaca's rule).
public enum AlpacaOrderAmount: Sendable, Hashable {
    case quantity(String)
    case notional(String)
}

/// An order that passed every check, ready to be sent to Alpaca as-is.
public struct ValidatedAlpacaOrder: Sendable, Hashable {
    public let symbol: String
    public let side: AlpacaOrderSide
    public let type: AlpacaOrderType
    public let timeInForce: AlpacaTimeInForce
    public let amount: AlpacaOrderAmount
    /// Present exactly when `type == .limit`.
    public let limitPrice: String?
    /// Generated here, so a retried submission of the same validated order is recognised by
    /// Alpaca as the same order instead of buying twice.
    public let clientOrderID: String
}

/// Checks an order before Alpaca is called, so a malformed or hostile value never reaches a URL or
/// a request body and the user gets a precise field error instead of Alpaca's text. Alpaca still
/// applies its own rules (buying power, tick sizes, market hours); those come back as 403/422.
public enum OrderRequestValidation {
    /// US equity tickers are upper-case letters, with a dot for share classes (`BRK.B`). Crypto
    /// pairs (`ETH/USD`) and option symbols are not offered.
    static let maximumSymbolLength = 10
    /// Alpaca takes "up to 9 decimal points" for qty and notional (trading-api Order schema); the
    /// same bound is used for limit_price, whose finer tick rules Alpaca enforces itself.
    static let maximumFractionDigits = 9
    /// A billion shares or dollars is beyond any retail order; the bound keeps the strings short.
    static let maximumIntegerDigits = 9
    /// Longest raw string examined at all; anything longer is `too_long` before any parsing.
    static let maximumFieldLength = 32
    /// Alpaca allows 128 characters; 48 keeps the generated id short in logs and indexes.
    public static let maximumClientOrderIDLength = 48

    public static func validate(_ draft: AlpacaOrderDraft) throws(FieldValidationError) -> ValidatedAlpacaOrder {
        try validate(draft, clientOrderID: makeClientOrderID())
    }

    /// With a given `clientOrderID`: a resubmission after a timeout must reuse the first attempt's
    /// id, so that Alpaca recognises it instead of placing the order twice.
    public static func validate(_ draft: AlpacaOrderDraft, clientOrderID: String) throws(FieldValidationError) -> ValidatedAlpacaOrder {
        // Only ids of the shape this type generates: it goes into Alpaca's request body as-is.
        guard !clientOrderID.isEmpty, clientOrderID.utf8.count <= maximumClientOrderIDLength,
            clientOrderID.utf8.allSatisfy({ Base64URL.isAlphabetByte($0) })
        else { throw FieldValidationError(field: "client_order_id", problem: .invalidFormat) }
        // Control characters first, in every field, so no later message depends on them.
        let fields: [(String, String)] = [
            ("symbol", draft.symbol), ("side", draft.side), ("type", draft.type), ("time_in_force", draft.timeInForce),
            ("qty", draft.qty), ("notional", draft.notional), ("limit_price", draft.limitPrice),
        ]
        for (name, value) in fields {
            if UntrustedText.containsControlCharacter(value) { throw FieldValidationError(field: name, problem: .controlCharacter) }
            if value.utf8.count > maximumFieldLength { throw FieldValidationError(field: name, problem: .tooLong) }
        }

        let symbol = try validateSymbol(draft.symbol)
        let side: AlpacaOrderSide = try enumValue(draft.side, field: "side")
        let type: AlpacaOrderType = try enumValue(draft.type, field: "type")
        let timeInForce: AlpacaTimeInForce = try enumValue(draft.timeInForce, field: "time_in_force")

        let amount: AlpacaOrderAmount
        switch (draft.qty.isEmpty, draft.notional.isEmpty) {
        case (false, false): throw FieldValidationError(field: "notional", problem: .conflictsWithOtherField)
        case (true, true): throw FieldValidationError(field: "qty", problem: .missing)
        case (false, true): amount = .quantity(try validateDecimal(draft.qty, field: "qty"))
        case (true, false): amount = .notional(try validateDecimal(draft.notional, field: "notional"))
        }

        let limitPrice: String?
        switch type {
        case .limit:
            guard !draft.limitPrice.isEmpty else { throw FieldValidationError(field: "limit_price", problem: .missing) }
            limitPrice = try validateDecimal(draft.limitPrice, field: "limit_price")
        case .market:
            guard draft.limitPrice.isEmpty else { throw FieldValidationError(field: "limit_price", problem: .notAllowed) }
            limitPrice = nil
        }

        // Alpaca's POST /v2/orders: notional "can only work for market order types and day for time
        // in force"; qty "can be fractionable for only market and day order types".
        let needsMarketDay: String? = switch amount {
        case .notional: "notional"
        case .quantity(let qty) where isFractional(qty): "qty"
        case .quantity: nil
        }
        if let field = needsMarketDay {
            if type != .market { throw FieldValidationError(field: field, problem: .requiresMarketDayOrder) }
            if timeInForce != .day { throw FieldValidationError(field: "time_in_force", problem: .requiresMarketDayOrder) }
        }

        return ValidatedAlpacaOrder(
            symbol: symbol, side: side, type: type, timeInForce: timeInForce, amount: amount,
            limitPrice: limitPrice, clientOrderID: clientOrderID
        )
    }

    /// `A`–`Z` and `.`, starting with a letter, no empty segment (`BRK..B`, `BRK.`), 1–10 characters.
    /// Lower case is refused rather than upper-cased: the client shows what it sent.
    static func validateSymbol(_ symbol: String) throws(FieldValidationError) -> String {
        guard !symbol.isEmpty else { throw FieldValidationError(field: "symbol", problem: .missing) }
        guard symbol.utf8.count <= maximumSymbolLength else { throw FieldValidationError(field: "symbol", problem: .tooLong) }
        let bytes = Array(symbol.utf8)
        let isLetter = { (byte: UInt8) in byte >= 0x41 && byte <= 0x5A }
        guard let first = bytes.first, let last = bytes.last, isLetter(first), isLetter(last),
            bytes.allSatisfy({ isLetter($0) || $0 == 0x2E }),
            !symbol.contains("..")
        else { throw FieldValidationError(field: "symbol", problem: .invalidFormat) }
        return symbol
    }

    static func enumValue<Value: RawRepresentable>(_ text: String, field: String) throws(FieldValidationError) -> Value where Value.RawValue == String {
        guard !text.isEmpty else { throw FieldValidationError(field: field, problem: .missing) }
        guard let value = Value(rawValue: text) else { throw FieldValidationError(field: field, problem: .unsupportedValue) }
        return value
    }

    /// A positive decimal in plain notation: digits, optionally `.` and digits. No sign, exponent,
    /// grouping, spaces, leading `.` or trailing `.`, and no leading zero before another digit
    /// (`007`), so the string Alpaca receives is exactly the one the user meant and sees echoed.
    static func validateDecimal(_ text: String, field: String) throws(FieldValidationError) -> String {
        guard !text.isEmpty else { throw FieldValidationError(field: field, problem: .missing) }
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count <= 2 else { throw FieldValidationError(field: field, problem: .invalidFormat) }
        let integer = parts[0]
        let fraction = parts.count == 2 ? parts[1] : ""
        let isDigits = { (part: Substring) in part.utf8.allSatisfy { $0 >= 0x30 && $0 <= 0x39 } }
        guard !integer.isEmpty, isDigits(integer), isDigits(fraction), parts.count == 1 || !fraction.isEmpty,
            integer.count == 1 || integer.first != "0"
        else { throw FieldValidationError(field: field, problem: .invalidFormat) }
        guard integer.count <= maximumIntegerDigits, fraction.count <= maximumFractionDigits else {
            throw FieldValidationError(field: field, problem: .tooManyDigits)
        }
        guard (integer + fraction).contains(where: { $0 != "0" }) else {
            throw FieldValidationError(field: field, problem: .notPositive)
        }
        return text
    }

    /// A non-zero digit after the point: `1.5` is fractional, `1.0` is a whole share.
    static func isFractional(_ decimal: String) -> Bool {
        guard let point = decimal.firstIndex(of: ".") else { return false }
        return decimal[decimal.index(after: point)...].contains { $0 != "0" }
    }

    /// `clau-` and 24 random bytes as unpadded base64url (32 characters): 37 characters, 192 bits,
    /// from the system CSPRNG (getrandom on Linux).
    public static func makeClientOrderID() -> String {
        var generator = SystemRandomNumberGenerator()
        let bytes = (0..<24).map { _ in UInt8.random(in: .min ... .max, using: &generator) }
        return "clau-" + Base64URL.encode(bytes)
    }
}

/// RFC 4648 §5 base64url without padding: safe in URLs, form bodies and Alpaca's order ids.
enum Base64URL {
    /// `A`–`Z`, `a`–`z`, `0`–`9`, `-`, `_`.
    static func isAlphabetByte(_ byte: UInt8) -> Bool {
        switch byte {
        case 0x41...0x5A, 0x61...0x7A, 0x30...0x39, 0x2D, 0x5F: true
        default: false
        }
    }

    static func encode(_ bytes: some Sequence<UInt8>) -> String {
        Data(bytes).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-")
            .replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }
}
