import Foundation
import Logging
import ServiceLifecycle

/// The security mails the auth service sends. Plain text; never a password or a token.
public enum MailTemplate: Sendable, Equatable {
    case resetCode(code: String, expiresInMinutes: Int)
    case passwordChanged
    case loginAfterFailures(failedAttempts: Int, time: Date)
    case registrationAttemptOnExistingAccount
    case accountLocked(until: Date)
}

/// A bounded queue of outgoing mail, delivered by `run()` one message at a time, so that the
/// request that caused a mail never waits for (or reveals by its timing) the delivery. A full
/// queue drops the newest message and logs it: a mail storm must not grow memory.
public final class MailOutbox: Service, Sendable {
    struct Item: Sendable {
        var to: String
        var template: MailTemplate
        var requestID: String
    }

    private let mailer: (any Mailer)?
    private let from: String
    private let productName: String
    private let logger: Logger
    private let stream: AsyncStream<Item>
    private let continuation: AsyncStream<Item>.Continuation

    /// Without a mailer, mail is logged as dropped (development without mail).
    public init(mailer: (any Mailer)?, from: String, productName: String, capacity: Int = 1_000, logger: Logger) {
        self.mailer = mailer
        self.from = from
        self.productName = productName
        self.logger = logger
        (stream, continuation) = AsyncStream.makeStream(of: Item.self, bufferingPolicy: .bufferingOldest(capacity))
    }

    func enqueue(to: String, template: MailTemplate, requestID: String) {
        if case .dropped = continuation.yield(Item(to: to, template: template, requestID: requestID)) {
            logger.error("mail queue full: message dropped", metadata: ["request_id": "\(requestID)"])
        }
    }

    /// Delivers until graceful shutdown, then what is already queued.
    public func run() async throws {
        await withGracefulShutdownHandler {
            for await item in stream {
                await deliver(item)
            }
        } onGracefulShutdown: {
            self.continuation.finish()
        }
    }

    func deliver(_ item: Item) async {
        guard let mailer else {
            logger.warning("no mailer configured: security mail not sent", metadata: ["request_id": "\(item.requestID)"])
            return
        }
        do {
            try await mailer.send(MailMessage(from: from, to: item.to, content: item.template.render(productName: productName)), logger: logger)
        } catch {
            // The error names the failure, never the message or the recipient.
            logger.error("security mail not delivered", metadata: ["request_id": "\(item.requestID)", "error": "\(error)"])
        }
    }
}

extension MailTemplate {
    func render(productName: String) -> MailContent {
        let templates = MailTemplates(productName: productName)
        return switch self {
        case .resetCode(let code, let minutes): templates.resetCode(code: code, expiresInMinutes: minutes)
        case .passwordChanged: templates.passwordChanged()
        case .loginAfterFailures(let attempts, let time): templates.loginAfterFailures(failedAttempts: attempts, ipHint: nil, time: time)
        case .registrationAttemptOnExistingAccount: templates.registrationAttemptOnExistingAccount()
        case .accountLocked(let until): templates.accountLocked(until: until)
        }
    }
}
