import Foundation

/// An `application/x-www-form-urlencoded` body (or query string) as its ordered pairs, with the
/// bracket syntax Stripe uses for nested parameters: `metadata[plan]=pro`, `permissions[]=balances`
/// (or `permissions[0]=balances`, as Stripe's own libraries send arrays), `line_items[0][price]=…`.
public struct FormBody: Sendable, Equatable {
    public private(set) var pairs: [(name: String, value: String)]

    /// More pairs than any request the fakes serve needs; a bigger body is refused, not parsed.
    public static let maximumPairs = 512

    public enum ParseError: Error, Equatable, CustomStringConvertible {
        case malformedEncoding(String)
        case tooManyPairs

        public var description: String {
            switch self {
            case .malformedEncoding(let part): "Invalid percent-encoding in form parameter: \(part)"
            case .tooManyPairs: "Too many form parameters (at most \(FormBody.maximumPairs))"
            }
        }
    }

    public init(pairs: [(name: String, value: String)]) {
        self.pairs = pairs
    }

    public init(parsing text: Substring) throws(ParseError) {
        var pairs: [(name: String, value: String)] = []
        for part in text.split(separator: "&", omittingEmptySubsequences: true) {
            guard pairs.count < Self.maximumPairs else { throw .tooManyPairs }
            let nameAndValue = part.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let name = try Self.decodeComponent(nameAndValue[0])
            let value = nameAndValue.count > 1 ? try Self.decodeComponent(nameAndValue[1]) : ""
            pairs.append((name, value))
        }
        self.pairs = pairs
    }

    public init(parsing bytes: [UInt8]) throws(ParseError) {
        try self.init(parsing: Substring(decoding: bytes, as: UTF8.self))
    }

    public static func == (lhs: FormBody, rhs: FormBody) -> Bool {
        lhs.pairs.elementsEqual(rhs.pairs) { $0.name == $1.name && $0.value == $1.value }
    }

    /// The first value sent for `name` (exact match, brackets included).
    public func value(_ name: String) -> String? {
        pairs.first { $0.name == name }?.value
    }

    /// The values of an array parameter, sent as `name[]=a&name[]=b` or `name[0]=a&name[1]=b`.
    public func arrayValues(_ name: String) -> [String] {
        pairs.filter { pair in
            guard pair.name.hasPrefix(name + "["), pair.name.hasSuffix("]") else { return false }
            let inner = pair.name.dropFirst(name.count + 1).dropLast()
            return inner.isEmpty || inner.allSatisfy(\.isNumber)
        }.map(\.value)
    }

    /// `metadata[key]=value` pairs as a dictionary.
    public func dictionary(_ name: String) -> [String: String] {
        var result: [String: String] = [:]
        for pair in pairs where pair.name.hasPrefix(name + "[") && pair.name.hasSuffix("]") {
            let key = String(pair.name.dropFirst(name.count + 1).dropLast())
            if !key.isEmpty, !key.contains("[") { result[key] = pair.value }
        }
        return result
    }

    /// The top-level parameter names (`line_items[0][price]` → `line_items`), to refuse unknown ones
    /// the way Stripe does.
    public var rootNames: [String] {
        var seen = Set<String>()
        var names: [String] = []
        for pair in pairs {
            let root = String(pair.name.prefix { $0 != "[" })
            if seen.insert(root).inserted { names.append(root) }
        }
        return names
    }

    private static func decodeComponent(_ component: Substring) throws(ParseError) -> String {
        let spaced = component.replacingOccurrences(of: "+", with: " ")
        guard let decoded = spaced.removingPercentEncoding else { throw .malformedEncoding(String(component.prefix(64))) }
        return decoded
    }
}
