import ClauSupport
import Foundation

/// Request bodies (C-15 / R-12): decoded into types that list their fields. Unknown fields, wrong
/// types, nulls, missing fields and over-long strings are refused with 422 naming the field;
/// bytes that are not JSON are 400.
public protocol StrictBody: Decodable, Sendable {
    /// Every field the type accepts; anything else in the object is `unknown_field`.
    static var allowedFields: Set<String> { get }
    /// Format checks after decoding (lengths, e-mail, E.164). Empty: valid.
    func problems() -> [FieldProblem]
}

struct AnyCodingKey: CodingKey {
    var stringValue: String
    var intValue: Int? { nil }
    init(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) { nil }
}

/// Thrown from `init(from:)` when the object has fields the type does not know.
struct UnknownFieldsError: Error { var names: [String] }

extension Decoder {
    /// Call first in a `StrictBody`'s `init(from:)`.
    func rejectUnknownFields(allowed: Set<String>) throws {
        let container = try container(keyedBy: AnyCodingKey.self)
        let unknown = container.allKeys.map(\.stringValue).filter { !allowed.contains($0) }
        if !unknown.isEmpty { throw UnknownFieldsError(names: unknown.sorted()) }
    }
}

extension KeyedDecodingContainer {
    /// An optional field the document types without null: absent is nil, but an explicit null
    /// is refused (`must_not_be_null`) instead of read as absent.
    func decodeUnlessAbsent<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T? {
        contains(key) ? try decode(type, forKey: key) : nil
    }
}

/// `package`: the fuzzer (Sources/clau-fuzz) feeds it bytes directly.
package enum StrictJSON {
    package static func decode<T: StrictBody>(_ type: T.Type, from data: Data) throws(EdgeError) -> T {
        // JSONSerialization first: malformed bytes (400) are told apart from a valid document of the
        // wrong shape (422), and the top level must be an object.
        let object: Any
        do {
            object = try JSONSerialization.jsonObject(with: data, options: [])
        } catch {
            throw .malformedJSON()
        }
        guard let fields = object as? [String: Any] else {
            throw .validation([FieldProblem(name: "body", problem: "must_be_an_object")])
        }
        // No string reaches auth or a database with a NUL or another control character in it
        // (PostgreSQL refuses NUL; controls end up in logs and mail). Passwords are opaque: only
        // NUL is refused there, as auth's password policy does.
        let controls = controlCharacterFields(in: fields)
        if !controls.isEmpty {
            throw .validation(controls.prefix(20).map { FieldProblem(name: sanitizedName($0), problem: "control_character") })
        }
        // A field given twice is ambiguous (JSONDecoder keeps the first, other parsers the last):
        // refused rather than guessed.
        let duplicates = duplicateTopLevelKeys(in: data, distinctCount: fields.count)
        if !duplicates.isEmpty {
            throw .validation(duplicates.prefix(20).map { FieldProblem(name: sanitizedName($0), problem: "duplicate_field") })
        }
        let value: T
        do {
            value = try JSONDecoder().decode(T.self, from: data)
        } catch let error as UnknownFieldsError {
            throw .validation(error.names.prefix(20).map { FieldProblem(name: sanitizedName($0), problem: "unknown_field") })
        } catch let error as DecodingError {
            throw .validation([problem(for: error)])
        } catch {
            throw .malformedJSON()
        }
        let problems = value.problems()
        if !problems.isEmpty { throw .validation(problems) }
        return value
    }

    /// Keys that occur more than once in the top-level object of `data`, a document
    /// JSONSerialization has accepted (so strings are terminated and brackets balanced) and found
    /// `distinctCount` distinct keys in. Cheap when there are none, whatever the body: the keys are
    /// counted without unescaping them. Only a body with more keys than distinct ones is looked at
    /// again to name them, comparing keys after unescaping (`"\u0065mail"` is `email`) for the first
    /// 64 escaped keys (no body has that many fields) and as written after that.
    static func duplicateTopLevelKeys(in data: Data, distinctCount: Int) -> [String] {
        var keys: [Range<Data.Index>] = []
        var depth = 0
        var expectingKey = false
        var index = data.startIndex
        while index < data.endIndex {
            let byte = data[index]
            switch byte {
            case UInt8(ascii: "\""):
                // Find the closing quote, skipping escaped characters.
                var end = data.index(after: index)
                var escaped = false
                while end < data.endIndex {
                    let inner = data[end]
                    if escaped { escaped = false } else if inner == UInt8(ascii: "\\") { escaped = true } else if inner == UInt8(ascii: "\"") { break }
                    end = data.index(after: end)
                }
                if depth == 1 && expectingKey {
                    expectingKey = false
                    keys.append(index..<min(data.index(after: end), data.endIndex))
                }
                index = end
            case UInt8(ascii: "{"), UInt8(ascii: "["):
                depth += 1
                expectingKey = depth == 1 && byte == UInt8(ascii: "{")
            case UInt8(ascii: "}"), UInt8(ascii: "]"):
                depth -= 1
            case UInt8(ascii: ","):
                if depth == 1 { expectingKey = true }
            default:
                break
            }
            if index < data.endIndex { index = data.index(after: index) }
        }
        guard keys.count > distinctCount else { return [] }

        var seen = Set<String>()
        var duplicates: [String] = []
        var unescaped = 0
        for range in keys {
            let quoted = data[range]
            let key: String
            if quoted.contains(UInt8(ascii: "\\")), unescaped < 64 {
                unescaped += 1
                key = (try? JSONDecoder().decode(String.self, from: Data(quoted))) ?? ""
            } else {
                key = String(decoding: quoted.dropFirst().dropLast(), as: UTF8.self)
            }
            if !seen.insert(key).inserted, !duplicates.contains(key) { duplicates.append(key) }
        }
        return duplicates
    }

    /// Top-level fields whose value holds a string (at any depth) with a C0/C1 control character
    /// or DEL; for password fields, only NUL. Keys are checked the same way.
    static func controlCharacterFields(in fields: [String: Any]) -> [String] {
        func isControl(_ scalar: Unicode.Scalar) -> Bool { scalar.value < 0x20 || (0x7F...0x9F).contains(scalar.value) }
        func contains(_ value: Any, depth: Int, _ refused: (Unicode.Scalar) -> Bool) -> Bool {
            switch value {
            case let string as String:
                return string.unicodeScalars.contains(where: refused)
            case let array as [Any]:
                return depth < 32 && array.contains { contains($0, depth: depth + 1, refused) }
            case let object as [String: Any]:
                return depth < 32 && object.contains { $0.key.unicodeScalars.contains(where: isControl) || contains($0.value, depth: depth + 1, refused) }
            default:
                return false
            }
        }
        return fields.compactMap { key, value in
            let refused: (Unicode.Scalar) -> Bool = key.hasSuffix("password") ? { $0.value == 0 } : isControl
            return key.unicodeScalars.contains(where: isControl) || contains(value, depth: 0, refused) ? key : nil
        }.sorted()
    }

    static func problem(for error: DecodingError) -> FieldProblem {
        switch error {
        case .typeMismatch(_, let context):
            return FieldProblem(name: name(of: context.codingPath), problem: "wrong_type")
        case .valueNotFound(_, let context):
            return FieldProblem(name: name(of: context.codingPath), problem: "must_not_be_null")
        case .keyNotFound(let key, let context):
            return FieldProblem(name: name(of: context.codingPath + [key]), problem: "missing")
        case .dataCorrupted(let context):
            return FieldProblem(name: name(of: context.codingPath), problem: "invalid")
        @unknown default:
            return FieldProblem(name: "body", problem: "invalid")
        }
    }

    static func name(of path: [any CodingKey]) -> String {
        let joined = path.map { $0.intValue.map(String.init) ?? $0.stringValue }.joined(separator: ".")
        return joined.isEmpty ? "body" : sanitizedName(joined)
    }

    /// Field names are echoed back: keep them short and printable.
    static func sanitizedName(_ raw: String) -> String {
        let kept = raw.unicodeScalars.prefix(64).filter { $0.isASCII && $0.value >= 0x20 && $0.value < 0x7F }
        return String(String.UnicodeScalarView(kept))
    }
}

/// Field checks shared by the request types.
enum Check {
    static func length(_ value: String, _ name: String, min: Int = 1, max: Int) -> FieldProblem? {
        let count = value.count
        if count < min { return FieldProblem(name: name, problem: min == 1 ? "must_not_be_empty" : "too_short") }
        if count > max || value.utf8.count > max * 4 { return FieldProblem(name: name, problem: "too_long") }
        return nil
    }

    /// The e-mail grammar auth applies too (``FieldRules/emailProblem(_:)``).
    static func email(_ raw: String, _ name: String = "email") -> FieldProblem? {
        switch FieldRules.emailProblem(raw) {
        case nil: nil
        case .empty: FieldProblem(name: name, problem: "must_not_be_empty")
        case .tooLong: FieldProblem(name: name, problem: "too_long")
        case .invalid: FieldProblem(name: name, problem: "invalid_email")
        }
    }

    /// E.164: `+`, then 7 to 15 digits, the first not 0.
    static func phone(_ raw: String, _ name: String = "phone") -> FieldProblem? {
        FieldRules.isE164Phone(raw) ? nil : FieldProblem(name: name, problem: "invalid_e164_phone")
    }
}

// MARK: Request bodies of the routes wired so far

package struct RegisterBody: StrictBody {
    package static let allowedFields: Set<String> = ["email", "password", "full_name", "phone"]
    var email: String
    var password: String
    var fullName: String
    var phone: String?

    enum CodingKeys: String, CodingKey { case email, password, fullName = "full_name", phone }

    package init(from decoder: any Decoder) throws {
        try decoder.rejectUnknownFields(allowed: Self.allowedFields)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        email = try c.decode(String.self, forKey: .email)
        password = try c.decode(String.self, forKey: .password)
        fullName = try c.decode(String.self, forKey: .fullName)
        phone = try c.decodeUnlessAbsent(String.self, forKey: .phone)
    }

    package func problems() -> [FieldProblem] {
        // bcrypt's 72-byte limit and the strength policy are auth's (it names every violation);
        // the edge bounds sizes and formats.
        [Check.email(email), Check.length(password, "password", max: 256), Check.length(fullName, "full_name", max: 200),
         phone.flatMap { Check.phone($0) }].compactMap { $0 }
    }
}

package struct LoginBody: StrictBody {
    package static let allowedFields: Set<String> = ["email", "password", "totp"]
    var email: String
    var password: String
    var totp: String?

    enum CodingKeys: String, CodingKey { case email, password, totp }

    package init(from decoder: any Decoder) throws {
        try decoder.rejectUnknownFields(allowed: Self.allowedFields)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        email = try c.decode(String.self, forKey: .email)
        password = try c.decode(String.self, forKey: .password)
        totp = try c.decodeUnlessAbsent(String.self, forKey: .totp)
    }

    package func problems() -> [FieldProblem] {
        // No format check on the e-mail at login: a malformed one fails like a wrong password.
        var problems = [Check.length(email, "email", max: 254), Check.length(password, "password", max: 256)].compactMap { $0 }
        if let totp, !(6...8).contains(totp.utf8.count) || !totp.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) {
            problems.append(FieldProblem(name: "totp", problem: "must_be_6_to_8_digits"))
        }
        return problems
    }
}

struct RefreshBody: StrictBody {
    static let allowedFields: Set<String> = ["refresh_token"]
    var refreshToken: String

    enum CodingKeys: String, CodingKey { case refreshToken = "refresh_token" }

    init(from decoder: any Decoder) throws {
        try decoder.rejectUnknownFields(allowed: Self.allowedFields)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        refreshToken = try c.decode(String.self, forKey: .refreshToken)
    }

    func problems() -> [FieldProblem] { [Check.length(refreshToken, "refresh_token", max: 128)].compactMap { $0 } }
}

struct ChangePasswordBody: StrictBody {
    static let allowedFields: Set<String> = ["current_password", "new_password"]
    var currentPassword: String
    var newPassword: String

    enum CodingKeys: String, CodingKey { case currentPassword = "current_password", newPassword = "new_password" }

    init(from decoder: any Decoder) throws {
        try decoder.rejectUnknownFields(allowed: Self.allowedFields)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        currentPassword = try c.decode(String.self, forKey: .currentPassword)
        newPassword = try c.decode(String.self, forKey: .newPassword)
    }

    func problems() -> [FieldProblem] {
        [Check.length(currentPassword, "current_password", max: 256), Check.length(newPassword, "new_password", max: 256)].compactMap { $0 }
    }
}

struct RevokeSessionsBody: StrictBody {
    static let allowedFields: Set<String> = ["reason"]
    var reason: String?

    init(from decoder: any Decoder) throws {
        try decoder.rejectUnknownFields(allowed: Self.allowedFields)
        let c = try decoder.container(keyedBy: AnyCodingKey.self)
        reason = try c.decodeUnlessAbsent(String.self, forKey: AnyCodingKey(stringValue: "reason"))
    }

    func problems() -> [FieldProblem] { reason.flatMap { Check.length($0, "reason", max: 32) }.map { [$0] } ?? [] }
}

// MARK: Bodies of the account and protection routes

/// Helper for small bodies: decode with a list of allowed fields and a closure.
struct ForgotPasswordBody: StrictBody {
    static let allowedFields: Set<String> = ["email"]
    var email: String
    init(from decoder: any Decoder) throws {
        try decoder.rejectUnknownFields(allowed: Self.allowedFields)
        email = try decoder.container(keyedBy: AnyCodingKey.self).decode(String.self, forKey: AnyCodingKey(stringValue: "email"))
    }
    func problems() -> [FieldProblem] { [Check.email(email)].compactMap { $0 } }
}

struct ResetPasswordBody: StrictBody {
    static let allowedFields: Set<String> = ["email", "code", "new_password"]
    var email: String
    var code: String
    var newPassword: String
    init(from decoder: any Decoder) throws {
        try decoder.rejectUnknownFields(allowed: Self.allowedFields)
        let c = try decoder.container(keyedBy: AnyCodingKey.self)
        email = try c.decode(String.self, forKey: AnyCodingKey(stringValue: "email"))
        code = try c.decode(String.self, forKey: AnyCodingKey(stringValue: "code"))
        newPassword = try c.decode(String.self, forKey: AnyCodingKey(stringValue: "new_password"))
    }
    func problems() -> [FieldProblem] {
        var problems = [Check.email(email), Check.length(newPassword, "new_password", max: 256)].compactMap { $0 }
        if !(6...10).contains(code.utf8.count) || !code.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) {
            problems.append(FieldProblem(name: "code", problem: "must_be_6_to_10_digits"))
        }
        return problems
    }
}

/// PATCH /v1/me: `phone: null` removes the number; absent fields stay as they are.
package struct UpdateMeBody: StrictBody {
    package static let allowedFields: Set<String> = ["full_name", "phone"]
    var fullName: String?
    var phone: String?
    var removePhone = false
    package init(from decoder: any Decoder) throws {
        try decoder.rejectUnknownFields(allowed: Self.allowedFields)
        let c = try decoder.container(keyedBy: AnyCodingKey.self)
        let nameKey = AnyCodingKey(stringValue: "full_name"), phoneKey = AnyCodingKey(stringValue: "phone")
        fullName = try c.decodeUnlessAbsent(String.self, forKey: nameKey)
        if c.contains(phoneKey), try c.decodeNil(forKey: phoneKey) {
            removePhone = true
        } else {
            phone = try c.decodeIfPresent(String.self, forKey: phoneKey)
        }
    }
    package func problems() -> [FieldProblem] {
        var problems = [fullName.flatMap { Check.length($0, "full_name", max: 200) }, phone.flatMap { Check.phone($0) }].compactMap { $0 }
        if fullName == nil && phone == nil && !removePhone { problems.append(FieldProblem(name: "body", problem: "nothing_to_update")) }
        return problems
    }
}

struct PasswordConfirmationBody: StrictBody {
    static let allowedFields: Set<String> = ["password"]
    var password: String
    init(from decoder: any Decoder) throws {
        try decoder.rejectUnknownFields(allowed: Self.allowedFields)
        password = try decoder.container(keyedBy: AnyCodingKey.self).decode(String.self, forKey: AnyCodingKey(stringValue: "password"))
    }
    func problems() -> [FieldProblem] { [Check.length(password, "password", max: 256)].compactMap { $0 } }
}

struct CreateAPIKeyBody: StrictBody {
    static let allowedFields: Set<String> = ["name", "expires_at"]
    /// 9999-12-31T23:59:59Z (auth refuses later ones too).
    static let latestExpiry: Int64 = 253_402_300_799
    var name: String
    var expiresAt: Int64?
    init(from decoder: any Decoder) throws {
        try decoder.rejectUnknownFields(allowed: Self.allowedFields)
        let c = try decoder.container(keyedBy: AnyCodingKey.self)
        name = try c.decode(String.self, forKey: AnyCodingKey(stringValue: "name"))
        expiresAt = try c.decodeIfPresent(Int64.self, forKey: AnyCodingKey(stringValue: "expires_at"))
    }
    func problems() -> [FieldProblem] {
        var problems = [Check.length(name, "name", max: 100)].compactMap { $0 }
        if let expiresAt, expiresAt <= Int64(Date().timeIntervalSince1970) { problems.append(FieldProblem(name: "expires_at", problem: "must_be_in_the_future")) }
        // Auth stores it as a timestamp; beyond year 9999 is no expiry anyone means.
        if let expiresAt, expiresAt > Self.latestExpiry { problems.append(FieldProblem(name: "expires_at", problem: "out_of_range")) }
        return problems
    }
}

struct IDBody: StrictBody {
    static let allowedFields: Set<String> = ["id"]
    var id: String
    init(from decoder: any Decoder) throws {
        try decoder.rejectUnknownFields(allowed: Self.allowedFields)
        id = try decoder.container(keyedBy: AnyCodingKey.self).decode(String.self, forKey: AnyCodingKey(stringValue: "id"))
    }
    func problems() -> [FieldProblem] { [Check.length(id, "id", max: 64)].compactMap { $0 } }
}

struct NotificationPreferencesBody: StrictBody {
    static let allowedFields: Set<String> = ["security_email", "order_push", "price_alert_push", "marketing_email"]
    var values: [String: Bool] = [:]
    init(from decoder: any Decoder) throws {
        try decoder.rejectUnknownFields(allowed: Self.allowedFields)
        let c = try decoder.container(keyedBy: AnyCodingKey.self)
        for name in Self.allowedFields.sorted() { values[name] = try c.decode(Bool.self, forKey: AnyCodingKey(stringValue: name)) }
    }
    func problems() -> [FieldProblem] { [] }
}

struct DeviceBody: StrictBody {
    static let allowedFields: Set<String> = ["fcm_token", "platform"]
    var fcmToken: String
    var platform: String?
    init(from decoder: any Decoder) throws {
        try decoder.rejectUnknownFields(allowed: Self.allowedFields)
        let c = try decoder.container(keyedBy: AnyCodingKey.self)
        fcmToken = try c.decode(String.self, forKey: AnyCodingKey(stringValue: "fcm_token"))
        platform = try c.decodeUnlessAbsent(String.self, forKey: AnyCodingKey(stringValue: "platform"))
    }
    func problems() -> [FieldProblem] {
        var problems = [Check.length(fcmToken, "fcm_token", max: 4096)].compactMap { $0 }
        if let platform, !["ios", "android"].contains(platform) { problems.append(FieldProblem(name: "platform", problem: "must_be_ios_or_android")) }
        return problems
    }
}

struct TOTPCodeBody: StrictBody {
    static let allowedFields: Set<String> = ["code"]
    var code: String
    init(from decoder: any Decoder) throws {
        try decoder.rejectUnknownFields(allowed: Self.allowedFields)
        code = try decoder.container(keyedBy: AnyCodingKey.self).decode(String.self, forKey: AnyCodingKey(stringValue: "code"))
    }
    func problems() -> [FieldProblem] {
        (6...8).contains(code.utf8.count) && code.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) ? [] : [FieldProblem(name: "code", problem: "must_be_6_to_8_digits")]
    }
}

struct BlockIPBody: StrictBody {
    static let allowedFields: Set<String> = ["ip", "duration_seconds", "reason"]
    var ip: String
    var durationSeconds: Int64
    var reason: String?
    init(from decoder: any Decoder) throws {
        try decoder.rejectUnknownFields(allowed: Self.allowedFields)
        let c = try decoder.container(keyedBy: AnyCodingKey.self)
        ip = try c.decode(String.self, forKey: AnyCodingKey(stringValue: "ip"))
        durationSeconds = try c.decode(Int64.self, forKey: AnyCodingKey(stringValue: "duration_seconds"))
        reason = try c.decodeUnlessAbsent(String.self, forKey: AnyCodingKey(stringValue: "reason"))
    }
    func problems() -> [FieldProblem] {
        var problems: [FieldProblem] = []
        if !IPAddress.isValid(ip) { problems.append(FieldProblem(name: "ip", problem: "invalid_ip_address")) }
        if !(1...(365 * 86400)).contains(durationSeconds) { problems.append(FieldProblem(name: "duration_seconds", problem: "must_be_1_to_31536000")) }
        if let reason, let problem = Check.length(reason, "reason", max: 200) { problems.append(problem) }
        return problems
    }
}
