import Foundation
import Testing
@testable import AuthService
import TestSupport

@Suite(.timeLimit(.minutes(5)))
struct QuotedPrintableTests {
    /// Pieces the random texts are made of: ASCII, '=', spaces and tabs (often at line ends),
    /// CR, LF, CRLF, accents, combining marks, CJK, emoji with ZWJ, and long unbroken runs.
    static let pieces: [String] = [
        "a", "Z", "0", "=", "==", " ", "  ", "\t", "\n", "\r", "\r\n", " \n", "\t\n", "=\n",
        ".", "From ", "é", "ü", "ß", "e\u{301}", "日本語", "Ωμέγα", "Привет", "🔐", "👩‍💻", "\u{FEFF}",
        "~", "?", "_", "=?utf-8?B?", "=3D", "=\r\n", "\u{7F}", "\u{1}", String(repeating: "x", count: 80),
        String(repeating: "=", count: 40), String(repeating: " ", count: 90), String(repeating: "é", count: 50),
    ]

    static func randomText(using rng: inout SplitMix64) -> String {
        let count = Int.random(in: 0...60, using: &rng)
        var text = ""
        for _ in 0..<count { text += pieces.randomElement(using: &rng)! }
        return text
    }

    @Test func qpRoundTripHoldsForRandomTextAndLinesStayWithin76() {
        var rng = SplitMix64(seed: 0xC5_0006)
        for _ in 0..<3_000 {
            let text = Self.randomText(using: &rng)
            let encoded = QuotedPrintable.encode(text)
            #expect(QuotedPrintable.decode(encoded) == text)
            for line in encoded.split(separator: "\n", omittingEmptySubsequences: false) {
                #expect(line.utf8.count <= 76, "line too long: \(line.utf8.count)")
                // Output is 7-bit, printable, and never ends a line with whitespace.
                #expect(line.utf8.allSatisfy { $0 >= 0x20 && $0 < 0x7F || $0 == 0x09 })
                #expect(line.last != " " && line.last != "\t")
            }
        }
    }

    @Test func qpRoundTripHoldsForArbitraryBytes() {
        var rng = SplitMix64(seed: 42)
        for _ in 0..<500 {
            let bytes = (0..<Int.random(in: 0...400, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            let encoded = QuotedPrintable.encode(bytes: bytes)
            #expect(QuotedPrintable.decode(bytes: encoded) == bytes)
        }
    }

    @Test(arguments: [
        ("a=b", "a=3Db"),
        ("end ", "end=20"),
        ("tab\t\nx", "tab=09\nx"),
        ("inner space stays", "inner space stays"),
        ("é", "=C3=A9"),
        ("line\r\nnext", "line=0D\nnext"),
        (".hidden", "=2Ehidden"),
        ("From here", "=46rom here"),
        ("", ""),
    ])
    func qpEscapesEqualsTrailingWhitespaceAndNonASCII(input: String, expected: String) {
        #expect(QuotedPrintable.encode(input) == expected)
        #expect(QuotedPrintable.decode(expected) == input)
    }

    @Test func qpSoftLineBreaksKeepLinesAt76() {
        #expect(QuotedPrintable.encode(String(repeating: "a", count: 76)) == String(repeating: "a", count: 76))
        #expect(QuotedPrintable.encode(String(repeating: "a", count: 77))
            == String(repeating: "a", count: 75) + "=\n" + "aa")
        // An escape is never split across a soft break.
        let encoded = QuotedPrintable.encode(String(repeating: "a", count: 74) + "é")
        #expect(encoded == String(repeating: "a", count: 74) + "=\n=C3=A9")
    }

    @Test func qpDecoderIsLenientWithTransportArtifacts() {
        #expect(QuotedPrintable.decode("a=ZZb") == "a=ZZb")
        #expect(QuotedPrintable.decode("abc=  \r\ndef\r\nghi") == "abcdef\nghi")
        #expect(QuotedPrintable.decode("trailing padding   \nx") == "trailing padding\nx")
        #expect(QuotedPrintable.decode("lower=c3=a9") == "loweré")
    }
}
