import Foundation
import Testing
@testable import AuthService

@Suite(.timeLimit(.minutes(5)))
struct MailRendererTests {
    @Test func renderedMessageHasAllHeadersInRFC5322Form() throws {
        let renderer = try MailTestSupport.renderer(token: "0123456789abcdef0123456789abcdef")
        let message = MailMessage(
            from: "no-reply@example.com",
            to: "alice@example.org",
            subject: "Your reset code",
            textBody: "Code: 123456\nBye",
            extraHeaders: [MailHeader(name: "X-Clau-Notice", value: "reset-code")]
        )
        let rendered = try renderer.render(message)
        let expected = """
        Date: Mon, 23 Nov 2026 15:22:21 +0000
        From: no-reply@example.com
        To: alice@example.org
        Subject: Your reset code
        Message-ID: <0123456789abcdef0123456789abcdef@mail.example.com>
        MIME-Version: 1.0
        Content-Type: text/plain; charset=utf-8
        Content-Transfer-Encoding: quoted-printable
        Auto-Submitted: auto-generated
        X-Clau-Notice: reset-code

        Code: 123456
        Bye=

        """
        #expect(String(decoding: rendered.bytes, as: UTF8.self) == expected)
        #expect(rendered.messageID == "<0123456789abcdef0123456789abcdef@mail.example.com>")
    }

    @Test func renderedBytesAreSevenBitWithLFLineEndingsOnly() throws {
        let renderer = try MailTestSupport.renderer()
        let message = MailTestSupport.message(
            subject: "Réinitialisation du mot de passe — 🔐",
            body: "Votre code : 123456\r\nÀ bientôt " + String(repeating: "é", count: 200) + "\n"
        )
        let bytes = try renderer.render(message).bytes
        #expect(!bytes.contains(0x0D))
        #expect(bytes.allSatisfy { $0 < 0x80 })
        let text = String(decoding: bytes, as: UTF8.self)
        let headerBlock = text.components(separatedBy: "\n\n")[0]
        for line in headerBlock.split(separator: "\n") {
            #expect(line.utf8.count <= 78)
        }
    }

    @Test(arguments: [
        (0.0, "Thu, 1 Jan 1970 00:00:00 +0000"),
        (951_782_400.0, "Tue, 29 Feb 2000 00:00:00 +0000"),
        (-1.0, "Wed, 31 Dec 1969 23:59:59 +0000"),
        (1_795_447_341.9, "Mon, 23 Nov 2026 15:22:21 +0000"),
        (4_133_980_799.0, "Fri, 31 Dec 2100 23:59:59 +0000"),
    ])
    func dateHeaderUsesRFC5322FormatInUTC(seconds: Double, expected: String) {
        #expect(RFC5322Date.format(Date(timeIntervalSince1970: seconds)) == expected)
    }

    @Test func nonASCIISubjectIsEncodedAsRFC2047WordsAndDecodesBack() throws {
        let subject = "Código de réinitialisation 🔐 — パスワードの再設定コード — Ваш код для сброса пароля"
        let folded = try MailTestSupport.renderer().foldedSubject(subject)
        #expect(folded.hasPrefix("Subject: =?utf-8?B?"))
        for (index, line) in folded.split(separator: "\n").enumerated() {
            #expect(line.utf8.allSatisfy { $0 < 0x80 })
            #expect(line.utf8.count <= 78)
            if index > 0 { #expect(line.hasPrefix(" =?utf-8?B?")) }
        }
        let unfolded = String(folded.dropFirst("Subject: ".count)).replacingOccurrences(of: "\n", with: "")
        #expect(EncodedWord.decode(unfolded) == subject)
        // Every encoded-word holds whole characters: each decodes to valid UTF-8 on its own.
        for word in EncodedWord.encode(subject) {
            #expect(word.utf8.count <= 75)
            let payload = word.dropFirst("=?utf-8?B?".count).dropLast(2)
            let decoded = try #require(Data(base64Encoded: String(payload)))
            #expect(String(validating: decoded, as: UTF8.self) != nil)
        }
    }

    @Test func longASCIISubjectIsFoldedAtSpacesAndUnfoldsBack() throws {
        let subject = (1...30).map { "word\($0)" }.joined(separator: " ")
        let folded = try MailTestSupport.renderer().foldedSubject(subject)
        #expect(folded.contains("\n "))
        for line in folded.split(separator: "\n") { #expect(line.utf8.count <= 78) }
        #expect(folded.replacingOccurrences(of: "\n", with: "") == "Subject: " + subject)
    }

    @Test func asciiSubjectThatLooksEncodedIsEncodedToStayLiteral() throws {
        let subject = "=?utf-8?B?aGk=?= is not decoded"
        let folded = try MailTestSupport.renderer().foldedSubject(subject)
        let value = String(folded.dropFirst("Subject: ".count)).replacingOccurrences(of: "\n", with: "")
        #expect(EncodedWord.decode(value) == subject)
    }

    /// (subject, from, to, extra headers, the field the error must name)
    static let injectionCases: [(String, String, String, [MailHeader], String)] = [
        ("Hi\r\nBcc: eve@evil.example", "no-reply@example.com", "alice@example.org", [], "Subject"),
        ("Hi\nBcc: eve@evil.example", "no-reply@example.com", "alice@example.org", [], "Subject"),
        ("Hi\rBcc: eve@evil.example", "no-reply@example.com", "alice@example.org", [], "Subject"),
        ("Hi\u{0}there", "no-reply@example.com", "alice@example.org", [], "Subject"),
        ("Hi\u{2028}there", "no-reply@example.com", "alice@example.org", [], "Subject"),
        ("Hi", "no-reply@example.com", "alice@example.org\r\nBcc: eve@evil.example", [], "To"),
        ("Hi", "no-reply@example.com", "alice@example.org\nCc: eve@evil.example", [], "To"),
        ("Hi", "no-reply@example.com", "alice@example.org\u{0}", [], "To"),
        ("Hi", "no-reply@example.com\r\nBcc: eve@evil.example", "alice@example.org", [], "From"),
        ("Hi", "no-reply@example.com\n", "alice@example.org", [], "From"),
        ("Hi", "no-reply@example.com", "alice@example.org", [MailHeader(name: "X-Note", value: "a\r\nBcc: eve@evil.example")], "X-Note"),
        ("Hi", "no-reply@example.com", "alice@example.org", [MailHeader(name: "X-Note\r\nBcc", value: "eve@evil.example")], "extra header name"),
        ("Hi", "no-reply@example.com", "alice@example.org", [MailHeader(name: "Bcc", value: "eve@evil.example")], "Bcc"),
        ("Hi", "no-reply@example.com", "alice@example.org", [MailHeader(name: "Resent-To", value: "eve@evil.example")], "Resent-To"),
        ("Hi", "no-reply@example.com", "alice@example.org", [MailHeader(name: "Cc", value: "eve@evil.example")], "Cc"),
        ("Hi", "no-reply@example.com", "alice@example.org", [MailHeader(name: "Content-Type", value: "text/html")], "Content-Type"),
    ]

    @Test(arguments: injectionCases)
    func headerInjectionIsRefused(_ testCase: (String, String, String, [MailHeader], String)) throws {
        let (subject, from, to, extra, field) = testCase
        let message = MailMessage(from: from, to: to, subject: subject, textBody: "body", extraHeaders: extra)
        #expect(throws: MailError.invalidHeader(field: field)) {
            _ = try MailTestSupport.renderer().render(message)
        }
    }

    @Test(arguments: [
        "Eve <eve@evil.example>",
        "<eve@evil.example>",
        "alice@example.org, eve@evil.example",
        "alice@example.org eve@evil.example",
        "alice@example.org;eve@evil.example",
        "\"alice\"@example.org",
        "alice(comment)@example.org",
        "alice@[192.0.2.1]",
        "-oQ/tmp/x@example.org",
        "|/bin/sh@example.org",
        "a/b@example.org",
        "alice@example.org@evil.example",
        "alice",
        "@example.org",
        "alice@",
        "a..b@example.org",
        ".alice@example.org",
        "alice.@example.org",
        "alice@-example.org",
        "alice@example-.org",
        "alice@example..org",
        "alice@exa_mple.org",
        "élise@example.org",
        "alice@exämple.org",
        " alice@example.org",
        "alice@example.org\t",
        String(repeating: "a", count: 65) + "@example.org",
        "a@" + Array(repeating: String(repeating: "b", count: 60), count: 5).joined(separator: "."),
        "",
    ])
    func addressesWithDisplayNamesListsOrTricksAreRefused(address: String) throws {
        let message = MailTestSupport.message(to: address)
        #expect(throws: MailError.invalidHeader(field: "To")) {
            _ = try MailTestSupport.renderer().render(message)
        }
    }

    @Test(arguments: [
        "alice@example.org",
        "first.last+tag@sub.example.co.uk",
        "o'brien@example.ie",
        "root@localhost",
        "x@" + Array(repeating: String(repeating: "b", count: 61), count: 4).joined(separator: ".") + ".c",
    ])
    func plainAddressesAreAccepted(address: String) throws {
        #expect(address.utf8.count <= 254)
        _ = try MailTestSupport.renderer().render(MailTestSupport.message(to: address))
    }

    @Test func addressOf254OctetsIsTheLimit() throws {
        let domain = Array(repeating: String(repeating: "d", count: 60), count: 3).joined(separator: ".")  // 182
        let at254 = String(repeating: "l", count: 64) + "@" + domain + "." + String(repeating: "e", count: 254 - 64 - 1 - 182 - 1)
        #expect(at254.utf8.count == 254)
        _ = try MailTestSupport.renderer().render(MailTestSupport.message(to: at254))
        let at255 = at254 + "e"
        #expect(throws: MailError.invalidHeader(field: "To")) {
            _ = try MailTestSupport.renderer().render(MailTestSupport.message(to: at255))
        }
    }

    @Test func messageIDIsRandomAndUsesTheConfiguredDomain() throws {
        let renderer = try MailTestSupport.renderer()
        let first = try renderer.render(MailTestSupport.message()).messageID
        let second = try renderer.render(MailTestSupport.message()).messageID
        #expect(first != second)
        for id in [first, second] {
            #expect(id.hasPrefix("<") && id.hasSuffix("@mail.example.com>"))
            let token = id.dropFirst().prefix { $0 != "@" }
            #expect(token.count == 32 && token.allSatisfy(\.isHexDigit))
        }
    }

    @Test(arguments: ["", "bad domain", "exa\r\nmple.com", "example.com>", "-x.example"])
    func invalidMessageIDDomainIsRefused(domain: String) {
        #expect(throws: MailError.invalidHeader(field: "Message-ID domain")) {
            _ = try MailRenderer(messageIDDomain: domain)
        }
    }

    @Test func duplicateExtraHeadersAreRefused() throws {
        var message = MailTestSupport.message()
        message.extraHeaders = [MailHeader(name: "X-A", value: "1"), MailHeader(name: "x-a", value: "2")]
        #expect(throws: MailError.invalidHeader(field: "x-a")) {
            _ = try MailTestSupport.renderer().render(message)
        }
    }
}
