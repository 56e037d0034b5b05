// The `Mailer` protocol (spec C-5, X-6) and the helper both backends use to keep blocking
// system calls (waitpid, write, fsync) off Swift's cooperative thread pool.

import Foundation
import Logging

/// Sends one message. Implementations validate and render the message before any I/O, so an
/// invalid header never reaches a transport, and never log the subject or the body.
public protocol Mailer: Sendable {
    func send(_ message: MailMessage, logger: Logger) async throws(MailError)
}

/// Runs `body` on a new dedicated thread and suspends (without blocking a cooperative thread)
/// until it returns. Mail volume is low (a few messages per user action), so a thread per
/// call is cheap and keeps one stuck sendmail from delaying another message.
func mailRunOnDedicatedThread<T: Sendable>(
    name: String,
    _ body: @escaping @Sendable () -> T
) async -> T {
    await withCheckedContinuation { (continuation: CheckedContinuation<T, Never>) in
        let thread = Thread {
            continuation.resume(returning: body())
        }
        thread.name = name
        thread.start()
    }
}

/// A flag set from the cancellation handler and read by the worker thread.
final class MailCancellationFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var cancelled = false

    func cancel() {
        lock.lock()
        cancelled = true
        lock.unlock()
    }

    var isCancelled: Bool {
        lock.lock()
        defer { lock.unlock() }
        return cancelled
    }
}
