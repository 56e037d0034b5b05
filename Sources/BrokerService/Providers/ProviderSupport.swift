import Foundation
import RPC

/// Checks on configured base URLs and helpers for request bodies, shared by both clients.
enum ProviderURL {
    /// `https://host[:port][/path]`, or `http://` to a loopback host only (the fakes): a platform
    /// secret or a user's token must never cross the network in clear. No user info, query or
    /// fragment. Returned without a trailing slash.
    static func validatedBase(_ text: String, setting: String) throws -> String {
        guard let components = URLComponents(string: text), let scheme = components.scheme?.lowercased(),
            let host = components.host, !host.isEmpty,
            components.user == nil, components.password == nil, components.query == nil, components.fragment == nil
        else { throw ProviderConfigurationError(setting: setting, problem: "is not an absolute URL without user info, query or fragment") }
        switch scheme {
        case "https":
            break
        case "http":
            guard isLoopback(host) else { throw ProviderConfigurationError(setting: setting, problem: "must be https (http only to a loopback address)") }
        default:
            throw ProviderConfigurationError(setting: setting, problem: "must be https")
        }
        var result = text
        while result.hasSuffix("/") { result.removeLast() }
        return result
    }

    static func isLoopback(_ host: String) -> Bool {
        let host = host.lowercased()
        if host == "localhost" || host == "::1" || host == "[::1]" { return true }
        let parts = host.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4, parts[0] == "127" else { return false }
        return parts.allSatisfy { part in
            !part.isEmpty && part.count <= 3 && part.allSatisfy(\.isASCII) && part.allSatisfy(\.isNumber) && (Int(part) ?? 256) <= 255
        }
    }
}

/// A provider client refused its configuration (at startup). Names the setting, never its value.
public struct ProviderConfigurationError: Error, Sendable, CustomStringConvertible, RPCErrorConvertible {
    public let setting: String
    public let problem: String

    public var description: String { "\(setting) \(problem)" }
    public var rpcError: RPCError { RPCError(code: .internalError, message: "internal error") }
}

/// `application/x-www-form-urlencoded` with every byte outside RFC 3986's unreserved set
/// percent-encoded (brackets in Stripe's `metadata[user_id]` included).
enum FormEncoding {
    static func encode(_ pairs: [(String, String)]) -> [UInt8] {
        Array(pairs.map { "\(component($0.0))=\(component($0.1))" }.joined(separator: "&").utf8)
    }

    static func component(_ text: String) -> String {
        var result = ""
        for byte in text.utf8 {
            switch byte {
            case 0x41...0x5A, 0x61...0x7A, 0x30...0x39, 0x2D, 0x2E, 0x5F, 0x7E:
                result.unicodeScalars.append(Unicode.Scalar(byte))
            default:
                let hex = Array("0123456789ABCDEF".unicodeScalars)
                result.unicodeScalars.append("%")
                result.unicodeScalars.append(hex[Int(byte >> 4)])
                result.unicodeScalars.append(hex[Int(byte & 0x0F)])
            }
        }
        return result
    }
}

/// A provider's JSON, decoded without `Any`: lenient in fields the broker does not read, strict in
/// the ones it does (wrong type → the whole response is malformed → UNAVAILABLE).
enum ProviderJSON: Decodable, Sendable {
    case null
    case bool(Bool)
    case integer(Int64)
    case number(Double)
    case string(String)
    case array([ProviderJSON])
    case object([String: ProviderJSON])

    struct Malformed: Error {}

    init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() {
            self = .null
        } else if let value = try? container.decode(Bool.self) {
            self = .bool(value)
        } else if let value = try? container.decode(Int64.self) {
            self = .integer(value)
        } else if let value = try? container.decode(Double.self) {
            self = .number(value)
        } else if let value = try? container.decode(String.self) {
            self = .string(value)
        } else if let value = try? container.decode([ProviderJSON].self) {
            self = .array(value)
        } else {
            self = .object(try container.decode([String: ProviderJSON].self))
        }
    }

    static func parse(_ body: [UInt8]) throws(Malformed) -> ProviderJSON {
        do {
            return try JSONDecoder().decode(ProviderJSON.self, from: Data(body))
        } catch {
            throw Malformed()
        }
    }

    subscript(key: String) -> ProviderJSON? {
        if case .object(let object) = self { return object[key] }
        return nil
    }

    func object() throws(Malformed) -> [String: ProviderJSON] {
        guard case .object(let object) = self else { throw Malformed() }
        return object
    }

    func array() throws(Malformed) -> [ProviderJSON] {
        guard case .array(let array) = self else { throw Malformed() }
        return array
    }

    /// A required non-empty string.
    func string(_ key: String) throws(Malformed) -> String {
        guard case .string(let value)? = self[key], !value.isEmpty else { throw Malformed() }
        return value
    }

    /// A string, or "" when absent or null; any other type is malformed (Alpaca's decimals are
    /// strings or null).
    func optionalString(_ key: String) throws(Malformed) -> String {
        switch self[key] {
        case nil, .null?: return ""
        case .string(let value)?: return value
        default: throw Malformed()
        }
    }

    /// An integer, or nil when absent or null.
    func optionalInteger(_ key: String) throws(Malformed) -> Int64? {
        switch self[key] {
        case nil, .null?: return nil
        case .integer(let value)?: return value
        default: throw Malformed()
        }
    }

    /// An object, or nil when absent or null.
    func optionalObject(_ key: String) throws(Malformed) -> ProviderJSON? {
        switch self[key] {
        case nil, .null?: return nil
        case .object(let value)?: return .object(value)
        default: throw Malformed()
        }
    }
}
