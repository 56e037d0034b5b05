import Foundation
import Testing
@testable import AuthService

@Suite(.timeLimit(.minutes(5)))
struct MaildirMailerTests {
    @Test func maildirRoundTripPreservesRecipientSubjectAndBody() async throws {
        let root = try MailTestSupport.temporaryDirectory()
        defer { MailTestSupport.removeDirectory(root) }
        let maildir = root.appendingPathComponent("Maildir")
        // Used through the protocol, as the auth service does.
        let mailer: any Mailer = MaildirMailer(directory: maildir, renderer: try MailTestSupport.renderer())
        let subject = "Réinitialisation — パスワード 🔐 code"
        let body = "Bonjour Zoë,\n\nVotre code : 482 913\n=== fin ===  \n\tindenté\n" + String(repeating: "long ", count: 40) + "\nFrom the team\n.\n"
        try await mailer.send(MailTestSupport.message(subject: subject, body: body, to: "zoe@example.fr"), logger: MailTestSupport.logger)

        let received = try MaildirMailer.messages(in: maildir)
        try #require(received.count == 1)
        let mail = received[0]
        #expect(mail.to == "zoe@example.fr")
        #expect(mail.from == "no-reply@example.com")
        #expect(mail.subject == subject)
        #expect(mail.textBody == body)
        #expect(mail.header("Auto-Submitted") == "auto-generated")
        #expect(mail.header("Date") == "Mon, 23 Nov 2026 15:22:21 +0000")
        #expect(mail.messageID.hasSuffix("@mail.example.com>"))
        #expect(mail.fileURL.deletingLastPathComponent().lastPathComponent == "new")
    }

    @Test func fiftyConcurrentSendsGiveFiftyDistinctPrivateFiles() async throws {
        let root = try MailTestSupport.temporaryDirectory()
        defer { MailTestSupport.removeDirectory(root) }
        let maildir = root.appendingPathComponent("Maildir")
        let mailer = MaildirMailer(directory: maildir, renderer: try MailTestSupport.renderer())
        try await withThrowingTaskGroup(of: Void.self) { group in
            for index in 0..<50 {
                group.addTask {
                    try await mailer.send(
                        MailTestSupport.message(subject: "Message \(index)", body: "Code \(index)\n"),
                        logger: MailTestSupport.logger
                    )
                }
            }
            try await group.waitForAll()
        }

        let newFiles = MailTestSupport.files(in: maildir.appendingPathComponent("new"))
        #expect(newFiles.count == 50)
        #expect(Set(newFiles).count == 50)
        #expect(MailTestSupport.files(in: maildir.appendingPathComponent("tmp")).isEmpty)
        for folder in ["", "/tmp", "/new", "/cur"] {
            #expect(MailTestSupport.mode(of: maildir.path + folder) == 0o700, "mode of \(folder)")
        }
        for file in newFiles {
            #expect(MailTestSupport.mode(of: maildir.path + "/new/" + file) == 0o600)
        }
        let received = try MaildirMailer.messages(in: maildir)
        #expect(Set(received.map(\.subject)) == Set((0..<50).map { "Message \($0)" }))
        #expect(Set(received.map(\.messageID)).count == 50)
        for mail in received {
            #expect(mail.textBody == "Code " + mail.subject.dropFirst("Message ".count) + "\n")
        }
    }

    @Test func headerInjectionIsRefusedAndNothingIsWritten() async throws {
        let root = try MailTestSupport.temporaryDirectory()
        defer { MailTestSupport.removeDirectory(root) }
        let maildir = root.appendingPathComponent("Maildir")
        let mailer = MaildirMailer(directory: maildir, renderer: try MailTestSupport.renderer())
        let attempts: [(MailMessage, String)] = [
            (MailTestSupport.message(subject: "Hi\r\nBcc: eve@evil.example"), "Subject"),
            (MailTestSupport.message(to: "alice@example.org\r\nBcc: eve@evil.example"), "To"),
            (MailTestSupport.message(from: "no-reply@example.com\nBcc: eve@evil.example"), "From"),
        ]
        for (message, field) in attempts {
            await #expect(throws: MailError.invalidHeader(field: field)) {
                try await mailer.send(message, logger: MailTestSupport.logger)
            }
        }
        #expect(!FileManager.default.fileExists(atPath: maildir.path))
        #expect(try MaildirMailer.messages(in: maildir).isEmpty)
    }

    @Test func messagesAreReturnedInDeliveryOrder() async throws {
        let root = try MailTestSupport.temporaryDirectory()
        defer { MailTestSupport.removeDirectory(root) }
        let mailer = MaildirMailer(directory: root, renderer: try MailTestSupport.renderer())
        for index in 0..<5 {
            try await mailer.send(MailTestSupport.message(subject: "n\(index)"), logger: MailTestSupport.logger)
        }
        let received = try MaildirMailer.messages(in: root)
        #expect(received.map(\.subject) == (0..<5).map { "n\($0)" })
        #expect(zip(received, received.dropFirst()).allSatisfy { $0.deliveredAt <= $1.deliveredAt })
    }

    @Test func readerParsesForeignCRLFMessagesInCur() throws {
        let root = try MailTestSupport.temporaryDirectory()
        defer { MailTestSupport.removeDirectory(root) }
        try FileManager.default.createDirectory(at: root.appendingPathComponent("cur"), withIntermediateDirectories: true)
        let raw = "From: a@example.com\r\nTo: b@example.com\r\nSubject: =?ISO-8859-1?Q?Caf=E9?= and =?utf-8?q?caf=C3=A9_au_lait?=\r\n"
            + " folded\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nHello=\r\n world=3D1\r\n"
        try raw.write(to: root.appendingPathComponent("cur/1700000000.abc.host:2,S"), atomically: true, encoding: .utf8)
        let received = try MaildirMailer.messages(in: root)
        try #require(received.count == 1)
        #expect(received[0].to == "b@example.com")
        #expect(received[0].subject.hasSuffix("and café au lait folded"))
        #expect(received[0].textBody == "Hello world=1\n")
        #expect(received[0].deliveredAt == Date(timeIntervalSince1970: 1_700_000_000))
    }

    @Test func unwritableMaildirIsDeliveryFailed() async throws {
        let root = try MailTestSupport.temporaryDirectory()
        defer { MailTestSupport.removeDirectory(root) }
        // A regular file where the maildir should be.
        let blocker = root.appendingPathComponent("Maildir")
        try "not a directory".write(to: blocker, atomically: true, encoding: .utf8)
        let mailer = MaildirMailer(directory: blocker, renderer: try MailTestSupport.renderer())
        do throws(MailError) {
            try await mailer.send(MailTestSupport.message(), logger: MailTestSupport.logger)
            Issue.record("send should have failed")
        } catch {
            guard case .deliveryFailed(let reason) = error else {
                Issue.record("unexpected error \(error)")
                return
            }
            #expect(!reason.contains("123456"))
        }
    }
}
