import Foundation
import Testing
@testable import AuthService

@Suite(.timeLimit(.minutes(5)))
struct MailTemplatesTests {
    let templates = MailTemplates(productName: "Clau")
    static let lockedUntil = Date(timeIntervalSince1970: 1_795_449_141)  // 2026-11-23 15:52:21 UTC

    func allTemplates() -> [(String, MailContent)] {
        [
            ("resetCode", templates.resetCode(code: "482913", expiresInMinutes: 15)),
            ("passwordChanged", templates.passwordChanged()),
            ("loginAfterFailures", templates.loginAfterFailures(failedAttempts: 4, ipHint: "203.0.113.x", time: MailTestSupport.fixedDate)),
            ("registrationAttemptOnExistingAccount", templates.registrationAttemptOnExistingAccount()),
            ("accountLocked", templates.accountLocked(until: Self.lockedUntil)),
        ]
    }

    @Test func resetCodeMailCarriesCodeAndExpiry_C5() {
        let mail = templates.resetCode(code: "482913", expiresInMinutes: 15)
        #expect(mail.subject == "Your Clau password reset code")
        #expect(mail.body.contains("    482913\n"))
        #expect(mail.body.contains("expires in 15 minutes"))
        #expect(mail.body.contains("works only once"))
        #expect(templates.resetCode(code: "1", expiresInMinutes: 1).body.contains("expires in 1 minute "))
    }

    /// No template takes a password, so none can contain one; and none carries a link (a link
    /// with a token would be a bearer credential in the inbox), HTML, or the reset code except
    /// the reset-code mail itself.
    @Test func templatesCarryNoPasswordNoLinkNoHTML_C5_X6() {
        for (name, content) in allTemplates() {
            let text = (content.subject + "\n" + content.body).lowercased()
            for forbidden in ["http", "://", "www.", "<", ">", "token", "password:"] {
                #expect(!text.contains(forbidden), "\(name) contains \(forbidden)")
            }
            if name != "resetCode" { #expect(!text.contains("482913"), "\(name) leaks the code") }
        }
    }

    @Test func passwordChangedTellsWhatToDoIfItWasntYou() {
        let mail = templates.passwordChanged()
        #expect(mail.subject == "Your Clau password was changed")
        #expect(mail.body.contains("If this wasn't you"))
        #expect(mail.body.contains("reset your\npassword right away"))
    }

    @Test func loginAfterFailuresGivesCountTimeAndSanitizedNetworkHint() {
        let mail = templates.loginAfterFailures(
            failedAttempts: 4, ipHint: "203.0.113.x\r\nBcc: eve@evil.example <b>", time: MailTestSupport.fixedDate
        )
        #expect(mail.body.contains("after 4 failed sign-in attempts"))
        #expect(mail.body.contains("on 2026-11-23 15:22 UTC"))
        // A hint that is not IP-shaped is dropped whole, not cleaned up.
        #expect(!mail.body.contains("network"))
        #expect(!mail.body.contains("\r") && !mail.body.contains("Bcc") && !mail.body.contains("<b>"))
        let masked = templates.loginAfterFailures(failedAttempts: 4, ipHint: "2001:db8::/48", time: MailTestSupport.fixedDate)
        #expect(masked.body.contains("Someone signed in to your Clau account on 2026-11-23 15:22 UTC from the network 2001:db8::/48,\nafter 4"))
        let noHint = templates.loginAfterFailures(failedAttempts: 1, ipHint: nil, time: MailTestSupport.fixedDate)
        #expect(noHint.body.contains("Someone signed in to your Clau account on 2026-11-23 15:22 UTC,\nafter 1 failed sign-in attempt."))
    }

    @Test func registrationAttemptOnExistingAccountSaysNothingWasCreated_X2() {
        let mail = templates.registrationAttemptOnExistingAccount()
        #expect(mail.subject.contains("Someone tried to create a Clau account"))
        #expect(mail.body.contains("no new account was created"))
        #expect(mail.body.contains("If this wasn't you, you can ignore this message"))
    }

    @Test func accountLockedGivesUnlockTimeInUTC() {
        let mail = templates.accountLocked(until: Self.lockedUntil)
        #expect(mail.subject == "Your Clau account is temporarily locked")
        #expect(mail.body.contains("after 2026-11-23 15:52 UTC"))
    }

    @Test func productNameIsConfigurableAndCannotBreakHeaders() throws {
        let hostile = MailTemplates(productName: "Acme\r\nBcc: eve@evil.example")
        #expect(hostile.productName == "AcmeBcc: eve@evil.example")
        let renderer = try MailTestSupport.renderer()
        for content in [hostile.passwordChanged(), MailTemplates(productName: "Zürich Bank").passwordChanged()] {
            _ = try renderer.render(MailMessage(from: "no-reply@example.com", to: "alice@example.org", content: content))
        }
        #expect(MailTemplates(productName: "Zürich Bank").accountLocked(until: Self.lockedUntil).subject
            == "Your Zürich Bank account is temporarily locked")
    }

    @Test func everyTemplateSurvivesAMaildirRoundTrip() async throws {
        let root = try MailTestSupport.temporaryDirectory()
        defer { MailTestSupport.removeDirectory(root) }
        let mailer = MaildirMailer(directory: root, renderer: try MailTestSupport.renderer())
        let contents = allTemplates().map(\.1)
        for content in contents {
            try await mailer.send(MailMessage(from: "no-reply@example.com", to: "alice@example.org", content: content), logger: MailTestSupport.logger)
        }
        let received = try MaildirMailer.messages(in: root)
        #expect(received.map(\.subject) == contents.map(\.subject))
        #expect(received.map(\.textBody) == contents.map(\.body))
    }
}
