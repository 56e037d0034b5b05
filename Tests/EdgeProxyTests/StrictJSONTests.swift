import Foundation
import Testing
@testable import EdgeProxy
import TestSupport

/// The edge's body decoder reads bytes from the network: property and fuzz tests that it always
/// ends in a typed outcome (a value, 400 `malformed_json` or 422 naming printable fields), never a
/// crash, and that it agrees with a plain model of what a valid login body is.
@Suite("Edge: strict request bodies (C-15, R-12)", .timeLimit(.minutes(5)))
struct StrictJSONTests {
    typealias Outcome = Result<LoginBody, EdgeError>

    func decodeLogin(_ data: Data) -> Outcome {
        do throws(EdgeError) { return .success(try StrictJSON.decode(LoginBody.self, from: data)) } catch { return .failure(error) }
    }

    /// Every refusal is one of the two documented shapes, with short printable field names.
    func expectTyped(_ outcome: Outcome, _ input: Data, sourceLocation: SourceLocation = #_sourceLocation) {
        guard case .failure(let error) = outcome else { return }
        let shown = String(decoding: input.prefix(80), as: UTF8.self)
        switch error.status {
        case .badRequest:
            #expect(error.code == "malformed_json", "\(shown)", sourceLocation: sourceLocation)
        case .unprocessableContent:
            #expect(error.code == "validation_failed", "\(shown)", sourceLocation: sourceLocation)
            #expect(!error.fields.isEmpty && error.fields.count <= 20, "\(shown)", sourceLocation: sourceLocation)
            for field in error.fields {
                #expect(!field.name.isEmpty || field.problem == "unknown_field", "\(shown)", sourceLocation: sourceLocation)
                #expect(field.name.utf8.count <= 64 && field.name.utf8.allSatisfy { $0 >= 0x20 && $0 < 0x7F }, "\(field.name)", sourceLocation: sourceLocation)
            }
        default:
            Issue.record("unexpected status \(error.status) for \(shown)", sourceLocation: sourceLocation)
        }
    }

    /// Every string field refuses NUL and other control characters with a typed 422 before any
    /// RPC; a password refuses only NUL (it is opaque, and auth's policy allows the rest).
    @Test func controlCharactersInAnyStringFieldAre422_C15() throws {
        let refused: [(String, String)] = [
            (#"{"email":"a\u0000@example.com","password":"x"}"#, "email"),
            (#"{"email":"a@example.com","password":"x\u0000y"}"#, "password"),
            (#"{"email":"a\u001b@example.com","password":"x"}"#, "email"),
            (#"{"email":"a@example.com","password":"x","totp":"12\u007f456"}"#, "totp"),
            (#"{"email":"a@example.com","password":"x","totp":"1234\u00856"}"#, "totp"),
        ]
        for (body, field) in refused {
            guard case .failure(let error) = decodeLogin(Data(body.utf8)) else {
                Issue.record("accepted \(body)"); continue
            }
            #expect(error.status == .unprocessableContent, "\(body)")
            #expect(error.fields.map(\.name) == [field], "\(body)")
            #expect(error.fields.first?.problem == "control_character", "\(body)")
        }
        let tabbed = try StrictJSON.decode(LoginBody.self, from: Data(#"{"email":"a@example.com","password":"tab\there"}"#.utf8))
        #expect(tabbed.password == "tab\there", "a password may hold a tab")
        let device = Result { () throws(EdgeError) in try StrictJSON.decode(DeviceBody.self, from: Data(#"{"fcm_token":"a\u0000","platform":"ios"}"#.utf8)) }
        guard case .failure(let deviceError) = device else { Issue.record("device token with NUL accepted"); return }
        #expect(deviceError.fields.map(\.problem) == ["control_character"])
    }

    @Test func randomBytesEndInATypedOutcome() {
        var rng = SplitMix64(seed: 0xC15)
        let alphabet = Array(#"{}[]",:\ 0123456789eE+-.truefalsnu"#.utf8) + [0x00, 0x0A, 0xC3, 0xA9, 0xFF, 0xF0, 0x9F]
        for _ in 0..<3000 {
            let length = Int.random(in: 0...64, using: &rng)
            let bytes = (0..<length).map { _ in Bool.random(using: &rng) ? alphabet.randomElement(using: &rng)! : UInt8.random(in: 0...255, using: &rng) }
            let data = Data(bytes)
            expectTyped(decodeLogin(data), data)
        }
    }

    @Test func mutatedLoginBodiesEndInATypedOutcome() {
        var rng = SplitMix64(seed: 0x1E9)
        let seeds = [
            #"{"email":"ada@example.com","password":"Tq7!vexing-Walrus-orbit"}"#,
            #"{"email":"ada@example.com","password":"Tq7!vexing","totp":"123456"}"#,
            #"{"email":"\u00e9@example.com","password":"p\"w\\d","totp":null}"#,
        ].map { Array($0.utf8) }
        for _ in 0..<3000 {
            var bytes = seeds.randomElement(using: &rng)!
            for _ in 0..<Int.random(in: 1...4, using: &rng) where !bytes.isEmpty {
                let at = Int.random(in: 0..<bytes.count, using: &rng)
                switch Int.random(in: 0..<4, using: &rng) {
                case 0: bytes[at] = UInt8.random(in: 0...255, using: &rng)
                case 1: bytes.remove(at: at)
                case 2: bytes.insert(Array(#"{}[]",:\"#.utf8).randomElement(using: &rng)!, at: at)
                default: bytes = Array(bytes.prefix(at))
                }
            }
            let data = Data(bytes)
            expectTyped(decodeLogin(data), data)
        }
    }

    /// Random objects over the known fields, some unknown ones, and values of every JSON type:
    /// the decoder accepts exactly those a plain model calls valid, with the values given.
    @Test func acceptsExactlyWhatTheModelCallsValid() throws {
        var rng = SplitMix64(seed: 0x5EED)
        let strings = ["", "a", "ada@example.com", "123456", "1234567890", String(repeating: "x", count: 255), "é🙂", "\u{0}", "a\u{7}b", "x\u{85}", "12345"]
        let values: [Any] = strings + [NSNull(), 42, 1.5, true, ["a"], ["k": "v"]] as [Any]
        var accepted = 0
        for _ in 0..<3000 {
            // Biased toward valid bodies so that both outcomes are common: (key, chance in 10 of
            // being present, chance in 10 of holding a string rather than any value).
            var object: [String: Any] = [:]
            for (key, present, stringy) in [("email", 9, 9), ("password", 9, 9), ("totp", 3, 5), ("extra", 1, 5), ("Email", 1, 5)]
            where Int.random(in: 0..<10, using: &rng) < present {
                object[key] = Int.random(in: 0..<10, using: &rng) < stringy ? strings.randomElement(using: &rng)! : values.randomElement(using: &rng)!
            }
            let data = try JSONSerialization.data(withJSONObject: object)
            let outcome = decodeLogin(data)
            expectTyped(outcome, data)

            let string = { (key: String) in object[key] as? String }
            let knownOnly = Set(object.keys).isSubset(of: LoginBody.allowedFields)
            let email = string("email"), password = string("password")
            // Optional means absent or a value: the document types totp without null.
            let totpOK: Bool = switch object["totp"] {
            case nil: true
            case let totp as String: (6...8).contains(totp.utf8.count) && totp.allSatisfy { $0.isASCII && $0.isNumber }
            default: false
            }
            // C15: no control character in any string; a password (opaque) refuses only NUL.
            let isControl = { (scalar: Unicode.Scalar) in scalar.value < 0x20 || (0x7F...0x9F).contains(scalar.value) }
            let valid = knownOnly && totpOK
                && email.map { (1...254).contains($0.count) && $0.utf8.count <= 254 * 4 && !$0.unicodeScalars.contains(where: isControl) } == true
                && password.map { (1...256).contains($0.count) && $0.utf8.count <= 256 * 4 && !$0.unicodeScalars.contains { $0.value == 0 } } == true
            switch outcome {
            case .success(let body):
                accepted += 1
                #expect(valid, "accepted \(object)")
                #expect(body.email == email && body.password == password)
            case .failure(let error):
                #expect(!valid, "refused \(object): \(error.fields)")
                #expect(error.status == .unprocessableContent, "a valid JSON object is 422, not \(error.status)")
            }
        }
        #expect((100...2900).contains(accepted), "both outcomes exercised: \(accepted) of 3000 accepted")
    }

    @Test func deeplyNestedDocumentsAreRefusedWithoutExhaustingTheStack() {
        for depth in [1_000, 100_000, 500_000] {
            for (open, close) in [("[", "]"), (#"{"a":"#, "}")] {
                let data = Data((String(repeating: open, count: depth) + "1" + String(repeating: close, count: depth)).utf8)
                let outcome = decodeLogin(data)
                expectTyped(outcome, data)
                #expect((try? outcome.get()) == nil)
            }
        }
    }

    @Test func aFieldGivenTwiceIsRefusedNamingIt_C15() {
        let cases = [
            #"{"email":"a@example.com","password":"pw-one-1","email":"b@example.com"}"#,
            #"{"email":"a@example.com","password":"pw-one-1","\u0065mail":"b@example.com"}"#,
        ]
        for text in cases {
            guard case .failure(let error) = decodeLogin(Data(text.utf8)) else {
                Issue.record("accepted \(text)")
                continue
            }
            #expect(error.status == .unprocessableContent)
            #expect(error.fields == [FieldProblem(name: "email", problem: "duplicate_field")], "\(text)")
        }
        // Repeated keys inside a nested value are not the body's fields (and that value is refused anyway).
        let nested = Data(#"{"email":"a@example.com","password":"pw-one-1","totp":{"x":1,"x":2}}"#.utf8)
        guard case .failure(let error) = decodeLogin(nested) else { Issue.record("accepted a nested totp"); return }
        #expect(error.fields == [FieldProblem(name: "totp", problem: "wrong_type")])
    }

    @Test func duplicateScanFollowsStringsAndNesting() {
        func duplicates(_ text: String) -> [String] {
            let data = Data(text.utf8)
            let distinct = (try? JSONSerialization.jsonObject(with: data) as? [String: Any])?.count ?? 0
            return StrictJSON.duplicateTopLevelKeys(in: data, distinctCount: distinct)
        }
        #expect(duplicates(#"{"a":1,"b":2}"#) == [])
        #expect(duplicates(#"{"a":"x,\"a\":1","b":2}"#) == [], "a key-like text inside a string value")
        #expect(duplicates(#"{"a":[{"a":1},{"a":2}],"b":{"b":1}}"#) == [], "keys of nested objects")
        #expect(duplicates(#"{"a\\":1,"a\\":2}"#) == [#"a\"#])
        #expect(duplicates(#"{"a":1,"b":2,"a":3,"b":4,"a":5}"#) == ["a", "b"])
        #expect(duplicates(#" { "a" : 1 , "a" : 2 } "#) == ["a"])
        // Many escaped keys (each costs a decode to name): past the first 64 they are compared as
        // written, so a large body cannot make the naming pass expensive; duplicates are still found.
        let many = (0..<5000).map { #""a\#($0)":1"# }.joined(separator: ",")
        #expect(duplicates("{" + many + #","email":1,"email":2}"#) == ["email"])
        #expect(duplicates(#"{"email":1,"#  + many + #","email":2}"#) == ["email"], "an escaped spelling among the first 64")
    }
}

