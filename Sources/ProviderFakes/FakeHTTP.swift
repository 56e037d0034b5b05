import Foundation

/// A request as the fakes' state machines see it: already read, size-checked and detached from
/// the HTTP server, so the logic lives in actors that never see a socket.
public struct FakeRequest: Sendable {
    public var method: String
    public var path: String
    public var query: FormBody
    /// Header names lowercased; the first value of each name.
    public var headers: [String: String]
    public var body: [UInt8]

    public init(method: String, path: String, query: FormBody = FormBody(pairs: []), headers: [String: String] = [:], body: [UInt8] = []) {
        self.method = method
        self.path = path
        self.query = query
        self.headers = Dictionary(headers.map { ($0.key.lowercased(), $0.value) }, uniquingKeysWith: { first, _ in first })
        self.body = body
    }

    public func header(_ name: String) -> String? { headers[name.lowercased()] }

    /// The token of `Authorization: Bearer <token>`, if that is the scheme used.
    var bearerToken: String? {
        guard let authorization = header("authorization") else { return nil }
        let parts = authorization.split(separator: " ", maxSplits: 1)
        guard parts.count == 2, parts[0].lowercased() == "bearer" else { return nil }
        return String(parts[1]).trimmingCharacters(in: .whitespaces)
    }

    /// The user name of `Authorization: Basic base64(user:password)`.
    var basicUser: String? {
        guard let authorization = header("authorization") else { return nil }
        let parts = authorization.split(separator: " ", maxSplits: 1)
        guard parts.count == 2, parts[0].lowercased() == "basic",
              let data = Data(base64Encoded: String(parts[1])),
              let text = String(data: data, encoding: .utf8) else { return nil }
        return String(text.prefix { $0 != ":" })
    }
}

/// A complete response; turned into a Hummingbird `Response` at the edge of the module.
public struct FakeResponse: Sendable, Equatable {
    public var status: Int
    public var headers: [(name: String, value: String)]
    public var body: [UInt8]

    public init(status: Int, headers: [(name: String, value: String)] = [], body: [UInt8] = []) {
        self.status = status
        self.headers = headers
        self.body = body
    }

    public static func json(_ status: Int, _ value: JSONValue, headers: [(name: String, value: String)] = []) -> FakeResponse {
        FakeResponse(status: status, headers: [("Content-Type", "application/json")] + headers, body: value.encodedBytes())
    }

    public func header(_ name: String) -> String? {
        headers.first { $0.name.lowercased() == name.lowercased() }?.value
    }

    public static func == (lhs: FakeResponse, rhs: FakeResponse) -> Bool {
        lhs.status == rhs.status && lhs.body == rhs.body
            && lhs.headers.elementsEqual(rhs.headers) { $0.name == $1.name && $0.value == $1.value }
    }
}

/// Random identifiers in the alphabet both providers use for theirs.
enum RandomIdentifier {
    private static let alphabet = Array("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")

    static func make(_ prefix: String, length: Int) -> String {
        var generator = SystemRandomNumberGenerator()
        return prefix + String((0..<length).map { _ in alphabet.randomElement(using: &generator)! })
    }

    static func hex(bytes: Int) -> String {
        var generator = SystemRandomNumberGenerator()
        return (0..<bytes).map { _ in String(format: "%02x", UInt8.random(in: 0...255, using: &generator)) }.joined()
    }
}

/// Percent-encoding for a query component: only RFC 3986 unreserved characters stay as they are
/// (Foundation's `URLQueryItem` would leave `+` and `&`-like characters that a form decoder reads
/// differently).
func percentEncodeQueryComponent(_ text: String) -> String {
    var allowed = CharacterSet.alphanumerics
    allowed.insert(charactersIn: "-._~")
    return text.addingPercentEncoding(withAllowedCharacters: allowed) ?? ""
}

/// RFC 3339 UTC timestamps with fractional seconds, as Alpaca writes them.
enum Timestamp {
    static func rfc3339(_ date: Date) -> String {
        date.formatted(Date.ISO8601FormatStyle(includingFractionalSeconds: true))
    }

    static func parseRFC3339(_ text: String) -> Date? {
        if let date = try? Date.ISO8601FormatStyle(includingFractionalSeconds: true).parse(text) { return date }
        return try? Date.ISO8601FormatStyle().parse(text)
    }

    static func day(_ date: Date) -> String {
        String(rfc3339(date).prefix(10))
    }

    static func unixSeconds(_ date: Date) -> Int64 { Int64(date.timeIntervalSince1970.rounded(.down)) }
}
