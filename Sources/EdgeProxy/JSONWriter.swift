import Foundation

/// Writes the edge's response bodies: JSON objects built from `String`, integers, `Bool`,
/// `NSNull`, arrays and nested `[String: Any]`, keys sorted. Foundation's `JSONSerialization`
/// bridged every value through `NSDictionary` and cost a quarter of the edge's CPU on
/// `GET /v1/me` (perf, docs/benchmarks.md); this writes bytes directly. A value of any other
/// type (never produced by the routes) falls back to `JSONSerialization` for that value.
enum JSONWriter {
    static func data(_ object: [String: Any]) -> Data {
        var out = [UInt8]()
        out.reserveCapacity(256)
        write(object, into: &out)
        return Data(out)
    }

    static func write(_ value: Any, into out: inout [UInt8]) {
        // The common types by identity first: on Linux, a dynamic cast of a dictionary to a
        // bridgeable type (String, Int, Bool) first bridges it to NSDictionary (it showed up in
        // the profile). An NSNumber comes from `JSONSerialization.jsonObject` (audit details):
        // only Foundation knows whether it was a boolean or a number.
        let valueType = type(of: value)
        if valueType == String.self { return writeString(value as! String, into: &out) }
        if valueType == [String: Any].self { return writeObject(value as! [String: Any], into: &out) }
        if valueType == Int.self { return out.append(contentsOf: String(value as! Int).utf8) }
        if valueType == Int64.self { return out.append(contentsOf: String(value as! Int64).utf8) }
        if valueType == Bool.self { return out.append(contentsOf: (value as! Bool) ? Array("true".utf8) : Array("false".utf8)) }
        if valueType == NSNull.self { return out.append(contentsOf: "null".utf8) }
        if valueType is NSNumber.Type {
            let fragment = try? JSONSerialization.data(withJSONObject: value, options: [.fragmentsAllowed])
            return out.append(contentsOf: fragment ?? Data("null".utf8))
        }
        // Anything else (typed arrays and dictionaries, other integer widths): containers before
        // scalars, for the reason above.
        switch value {
        case let object as [String: Any]:
            writeObject(object, into: &out)
        case let array as [Any]:
            out.append(UInt8(ascii: "["))
            for (index, element) in array.enumerated() {
                if index > 0 { out.append(UInt8(ascii: ",")) }
                write(element, into: &out)
            }
            out.append(UInt8(ascii: "]"))
        case let string as String:
            writeString(string, into: &out)
        case let substring as Substring:
            writeString(String(substring), into: &out)
        case let int as Int32:
            out.append(contentsOf: String(int).utf8)
        case let int as UInt64:
            out.append(contentsOf: String(int).utf8)
        case let int as UInt32:
            out.append(contentsOf: String(int).utf8)
        default:
            let fragment = try? JSONSerialization.data(withJSONObject: value, options: [.fragmentsAllowed, .sortedKeys, .withoutEscapingSlashes])
            out.append(contentsOf: fragment ?? Data("null".utf8))
        }
    }

    private static func writeObject(_ object: [String: Any], into out: inout [UInt8]) {
        out.append(UInt8(ascii: "{"))
        for (index, key) in object.keys.sorted().enumerated() {
            if index > 0 { out.append(UInt8(ascii: ",")) }
            writeString(key, into: &out)
            out.append(UInt8(ascii: ":"))
            write(object[key]!, into: &out)
        }
        out.append(UInt8(ascii: "}"))
    }

    /// RFC 8259 §7: quote, backslash and control characters escaped; everything else as UTF-8.
    static func writeString(_ string: String, into out: inout [UInt8]) {
        out.append(UInt8(ascii: "\""))
        for byte in string.utf8 {
            switch byte {
            case UInt8(ascii: "\""): out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "\"")])
            case UInt8(ascii: "\\"): out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "\\")])
            case 0x0A: out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "n")])
            case 0x0D: out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "r")])
            case 0x09: out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "t")])
            case 0x00..<0x20:
                let hex = Array("0123456789abcdef".utf8)
                out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "u"), UInt8(ascii: "0"), UInt8(ascii: "0"), hex[Int(byte >> 4)], hex[Int(byte & 0xF)]])
            default: out.append(byte)
            }
        }
        out.append(UInt8(ascii: "\""))
    }
}

/// `2026-11-23T19:03:00Z` for seconds since 1970, without Foundation's locale-aware formatter
/// (which showed up in the edge's profile). Civil-from-days: Howard Hinnant's algorithm.
enum ISO8601UTC {
    static func string(fromEpochSeconds seconds: Int64) -> String {
        let days = seconds >= 0 ? seconds / 86_400 : (seconds - 86_399) / 86_400
        let secondOfDay = seconds - days * 86_400
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let dayOfEra = z - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1_460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let monthIndex = (5 * dayOfYear + 2) / 153
        let day = dayOfYear - (153 * monthIndex + 2) / 5 + 1
        let month = monthIndex < 10 ? monthIndex + 3 : monthIndex - 9
        let year = yearOfEra + era * 400 + (month <= 2 ? 1 : 0)
        return pad(year, 4) + "-" + pad(month, 2) + "-" + pad(day, 2) + "T"
            + pad(secondOfDay / 3_600, 2) + ":" + pad(secondOfDay % 3_600 / 60, 2) + ":" + pad(secondOfDay % 60, 2) + "Z"
    }

    private static func pad(_ value: Int64, _ width: Int) -> String {
        let digits = String(value)
        return digits.count >= width ? digits : String(repeating: "0", count: width - digits.count) + digits
    }
}

extension StringProtocol {
    /// Without leading and trailing spaces and tabs (HTTP optional whitespace, RFC 9110 §5.6.3);
    /// cheaper than Foundation's `trimmingCharacters(in:)` on the per-request path.
    var trimmingOptionalWhitespace: Substring {
        let isOWS: (Character) -> Bool = { $0 == " " || $0 == "\t" }
        let sub = self[...]
        guard let first = sub.firstIndex(where: { !isOWS($0) }), let last = sub.lastIndex(where: { !isOWS($0) }) else {
            return Substring()
        }
        return Substring(sub[first...last])
    }
}
