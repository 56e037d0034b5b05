import Foundation
import Testing
@testable import EdgeProxy

/// The edge's own JSON and timestamp writers agree with Foundation's on every input we give
/// them (they replaced Foundation on the per-request path for speed).
@Suite(.timeLimit(.minutes(5)))
struct JSONWriterTests {
    /// Canonical bytes of a parsed document, for comparing two encoders' output.
    private func canonical(_ data: Data) throws -> Data {
        let object = try JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed])
        return try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .fragmentsAllowed])
    }

    @Test func everyControlCharacterQuoteAndBackslashRoundTrips() throws {
        var tricky = (0..<0x20).map { String(UnicodeScalar(UInt8($0))) }.joined()
        tricky += "\"\\/ é 😀 \u{2028}\u{2029} \u{7F} </script>"
        let object: [String: Any] = ["s": tricky, "k\"ey\n": "v"]
        let data = JSONWriter.data(object)
        let parsed = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        #expect(parsed["s"] as? String == tricky)
        #expect(parsed["k\"ey\n"] as? String == "v")
        #expect(!data.contains(0x0A) && !data.contains(0x00), "no raw control bytes in the output")
    }

    @Test func randomDocumentsMatchJSONSerialization() throws {
        var generator = SystemRandomNumberGenerator()
        func randomString() -> String {
            let alphabet = Array("aZ09 _-\"\\\n\t\u{01}\u{1F}é€😀/")
            return String((0..<Int.random(in: 0...12, using: &generator)).map { _ in alphabet.randomElement(using: &generator)! })
        }
        func randomValue(depth: Int) -> Any {
            switch Int.random(in: 0...(depth > 2 ? 4 : 6), using: &generator) {
            case 0: return randomString()
            case 1: return Int.random(in: Int.min...Int.max, using: &generator)
            case 2: return Bool.random(using: &generator)
            case 3: return NSNull()
            case 4: return Int64.random(in: -1_000...1_000, using: &generator)
            case 5: return (0..<Int.random(in: 0...4, using: &generator)).map { _ in randomValue(depth: depth + 1) }
            default:
                var object: [String: Any] = [:]
                for _ in 0..<Int.random(in: 0...4, using: &generator) { object[randomString()] = randomValue(depth: depth + 1) }
                return object
            }
        }
        for _ in 0..<500 {
            var object: [String: Any] = [:]
            for _ in 0..<Int.random(in: 0...6, using: &generator) { object[randomString()] = randomValue(depth: 0) }
            let ours = JSONWriter.data(object)
            let foundations = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
            #expect(try canonical(ours) == canonical(foundations), "\(String(decoding: ours, as: UTF8.self))")
        }
    }

    @Test func keysAreSortedAndParsedNumbersKeepTheirKind() throws {
        let details = try JSONSerialization.jsonObject(with: Data(#"{"flag":true,"count":1,"ratio":0.5}"#.utf8))
        let data = JSONWriter.data(["b": 1, "a": ["z": 2, "y": details]])
        #expect(String(decoding: data, as: UTF8.self) == #"{"a":{"y":{"count":1,"flag":true,"ratio":0.5},"z":2},"b":1}"#)
    }

    @Test func isoTimesMatchFoundation() {
        var style = Date.ISO8601FormatStyle()
        style.timeZone = TimeZone(identifier: "UTC")!
        var samples: [Int64] = [0, 1, 59, 86_399, 86_400, 951_782_400, 951_868_799, 4_107_542_400, 1_795_460_580, -1, -86_401, -2_208_988_800]
        var generator = SystemRandomNumberGenerator()
        samples += (0..<2_000).map { _ in Int64.random(in: -2_208_988_800...4_102_444_800, using: &generator) }
        for seconds in samples {
            let expected = Date(timeIntervalSince1970: TimeInterval(seconds)).formatted(style)
            #expect(ISO8601UTC.string(fromEpochSeconds: seconds) == expected, "\(seconds)")
        }
    }

    @Test func optionalWhitespaceIsTrimmedOnlyAtTheEnds() {
        #expect(" \tBearer x \t".trimmingOptionalWhitespace == "Bearer x")
        #expect("abc".trimmingOptionalWhitespace == "abc")
        #expect("   ".trimmingOptionalWhitespace == "")
        #expect("".trimmingOptionalWhitespace == "")
        #expect("\u{00A0}a\u{00A0}".trimmingOptionalWhitespace == "\u{00A0}a\u{00A0}", "only SP and HTAB are HTTP whitespace")
    }
}
