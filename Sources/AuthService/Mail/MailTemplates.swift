// Plain-text, English templates for the auth service's mails (spec C-5, X-2, X-6).
//
// Rules every template follows: no HTML; never a password (no template takes one); never a
// link carrying a token (the reset code is typed into the app, no URL at all); times in UTC
// spelled out; the product name is configurable. Inputs that come from outside (the IP hint)
// are reduced to a safe character set, and every value is kept to one line.

import Foundation

/// A subject and a plain-text body.
public struct MailContent: Sendable, Equatable {
    public var subject: String
    public var body: String

    public init(subject: String, body: String) {
        self.subject = subject
        self.body = body
    }
}

public struct MailTemplates: Sendable {
    /// Service name used in subjects and bodies, e.g. "Clau".
    public let productName: String

    /// Control characters and line breaks are removed from the product name, so it can only
    /// ever be one line of a subject.
    public init(productName: String) {
        let cleaned = String(String.UnicodeScalarView(productName.unicodeScalars.filter {
            !MailHeaderText.isForbiddenInHeader($0) && $0 != "\t"
        })).trimmingCharacters(in: .whitespaces)
        self.productName = cleaned.isEmpty ? "Account" : String(cleaned.prefix(64))
    }

    /// The password reset code (C-5). The code is meant to be typed into the app; the mail
    /// holds no link.
    public func resetCode(code: String, expiresInMinutes: Int) -> MailContent {
        let code = Self.oneLine(code, limit: 64)
        let minutes = max(1, expiresInMinutes)
        return MailContent(
            subject: "Your \(productName) password reset code",
            body: """
            Hello,

            Someone asked to reset the password of the \(productName) account that uses this
            e-mail address. To choose a new password, enter this code in the \(productName) app:

                \(code)

            The code expires in \(minutes) \(minutes == 1 ? "minute" : "minutes") and works only once.

            If you did not ask for this, ignore this message: your password has not changed.
            Never share this code. \(productName) staff will never ask you for it.

            \(signature)
            """ + "\n"
        )
    }

    /// Sent after the password was changed or reset.
    public func passwordChanged() -> MailContent {
        MailContent(
            subject: "Your \(productName) password was changed",
            body: """
            Hello,

            The password of your \(productName) account was just changed.

            If this was you, there is nothing more to do.

            If this wasn't you, someone else may have access to your account: reset your
            password right away from the \(productName) sign-in screen ("Forgot password"),
            then contact \(productName) support.

            \(signature)
            """ + "\n"
        )
    }

    /// Sent after a successful sign-in that followed failed attempts.
    /// - Parameters:
    ///   - ipHint: a coarse network hint (for example "203.0.113.x"). Omitted when empty or
    ///     when it holds anything but hex digits, ".", ":", "x", "*", "/" (64 characters at most).
    public func loginAfterFailures(failedAttempts: Int, ipHint: String?, time: Date) -> MailContent {
        let attempts = max(0, failedAttempts)
        var whereLine = ""
        if let hint = ipHint.map(Self.safeIPHint), !hint.isEmpty {
            whereLine = " from the network \(hint)"
        }
        return MailContent(
            subject: "New sign-in to your \(productName) account",
            body: """
            Hello,

            Someone signed in to your \(productName) account on \(Self.utc(time))\(whereLine),
            after \(attempts) failed sign-in \(attempts == 1 ? "attempt" : "attempts").

            If this was you, there is nothing more to do.

            If this wasn't you, someone may know your password. Change it right away from the
            \(productName) sign-in screen ("Forgot password"), then contact \(productName) support.

            \(signature)
            """ + "\n"
        )
    }

    /// Sent to the owner of an address when someone tries to register with it (X-2): the
    /// registration endpoint answers the same way whether or not the address is taken, and
    /// only the owner learns about the attempt, by mail.
    public func registrationAttemptOnExistingAccount() -> MailContent {
        MailContent(
            subject: "Someone tried to create a \(productName) account with your e-mail address",
            body: """
            Hello,

            Someone tried to create a new \(productName) account with this e-mail address.
            You already have an account, so no new account was created.

            If this was you, sign in with your existing password. If you forgot it, use
            "Forgot password" on the \(productName) sign-in screen.

            If this wasn't you, you can ignore this message: your account has not changed.

            \(signature)
            """ + "\n"
        )
    }

    /// Sent when the account is locked after too many failed sign-ins.
    public func accountLocked(until: Date) -> MailContent {
        MailContent(
            subject: "Your \(productName) account is temporarily locked",
            body: """
            Hello,

            Your \(productName) account was temporarily locked after too many failed sign-in
            attempts. You can sign in again after \(Self.utc(until)).

            If these attempts were not yours, someone may be trying to guess your password.
            Once you can sign in, consider changing it to a new one you use nowhere else.

            \(signature)
            """ + "\n"
        )
    }

    private var signature: String {
        "-- \nThis is an automatic message from \(productName). Replies are not read."
    }

    /// "2026-11-23 15:22 UTC".
    static func utc(_ date: Date) -> String {
        let p = RFC5322Date.parts(date)
        let month = RFC5322Date.two(p.month)
        let day = RFC5322Date.two(p.day)
        return "\(p.year)-\(month)-\(day) \(RFC5322Date.two(p.hour)):\(RFC5322Date.two(p.minute)) UTC"
    }

    /// The hint as given when it is made only of hex digits, ".", ":", "x", "*" and "/" and
    /// is at most 64 characters; anything else is dropped whole rather than cleaned up.
    static func safeIPHint(_ hint: String) -> String {
        let allowed = Set("0123456789abcdefABCDEF.:x*/")
        guard hint.count <= 64, hint.allSatisfy({ allowed.contains($0) }) else { return "" }
        return hint
    }

    /// One line of at most `limit` characters, controls removed.
    static func oneLine(_ value: String, limit: Int) -> String {
        let scalars = value.unicodeScalars.filter { !MailHeaderText.isForbiddenInHeader($0) && $0 != "\t" }
        return String(String(String.UnicodeScalarView(scalars)).prefix(limit))
    }
}
