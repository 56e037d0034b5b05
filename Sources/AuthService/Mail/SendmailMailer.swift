// The `sendmail` backend: pipes the rendered message to `sendmail -t -i`, the local submission
// interface of postfix, exim, msmtp and sendmail itself.
//
// - Recipients are never passed as arguments: `-t` makes sendmail read them from the `To:`
//   header, so no address can turn into an option (no argument injection). The argv is fixed:
//   `[executable, "-t", "-i"]`; `-i` stops a line holding "." from ending the message early.
// - The child is started with `posix_spawn` (not Foundation.Process): stdin is the read end of
//   a pipe, stdout and stderr are /dev/null, every other descriptor is closed, the environment
//   is reduced to a fixed PATH (secrets in our environment never reach the MTA), signal
//   dispositions and mask are reset, and the child leads its own process group so a timeout
//   kills it together with anything it forked.
// - Everything blocking (write, waitpid) runs on a dedicated thread, never on a Swift
//   concurrency thread. SIGPIPE is blocked on that thread, so a sendmail that exits before
//   reading its input gives EPIPE instead of killing the service.
// - The exit status is the verdict: 0 is success, anything else is `deliveryFailed` with the
//   status; the time limit covers writing and waiting, and on expiry the process group is
//   sent SIGKILL, reaped, and `MailError.timeout` thrown.

#if os(Linux)
import CClauSystem
#endif
import ClauSupport
import Foundation
import Logging
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

public struct SendmailMailer: Mailer {
    public let executable: String
    public let timeout: Duration
    public let renderer: MailRenderer

    /// - Parameters:
    ///   - executable: absolute path of the sendmail-compatible program.
    ///   - timeout: limit for writing the message and waiting for sendmail to exit.
    ///   - renderer: renders the message (Date clock, Message-ID domain).
    public init(executable: String = "/usr/sbin/sendmail", timeout: Duration, renderer: MailRenderer) {
        self.executable = executable
        self.timeout = timeout
        self.renderer = renderer
    }

    public func send(_ message: MailMessage, logger: Logger) async throws(MailError) {
        let rendered = try renderer.render(message)
        var logger = logger
        logger[metadataKey: "mail.backend"] = "sendmail"
        logger[metadataKey: "mail.message_id"] = "\(rendered.messageID)"

        let flag = MailCancellationFlag()
        let executable = self.executable
        let timeout = self.timeout
        let result: Result<Void, MailError> = await withTaskCancellationHandler {
            await mailRunOnDedicatedThread(name: "mail.sendmail") {
                SendmailProcess.run(executable: executable, input: rendered.bytes, timeout: timeout, cancellation: flag)
            }
        } onCancel: {
            flag.cancel()
        }
        switch result {
        case .success:
            logger.info("mail handed to sendmail")
        case .failure(let error):
            logger.warning("mail not sent", metadata: ["mail.error": "\(error)"])
            throw error
        }
    }
}

/// One run of `executable -t -i` with `input` on stdin. Blocking: call on a dedicated thread.
enum SendmailProcess {
    static let childEnvironment = ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]

    static func run(
        executable: String,
        input: [UInt8],
        timeout: Duration,
        cancellation: MailCancellationFlag
    ) -> Result<Void, MailError> {
        guard executable.hasPrefix("/"), !executable.utf8.contains(0) else {
            return .failure(.deliveryFailed(reason: "sendmail executable must be an absolute path"))
        }
        let deadline = ContinuousClock.now.advanced(by: timeout)

        // Writing to a pipe whose reader is gone raises SIGPIPE; on this thread it stays
        // blocked (and pending signals die with the thread), so write() returns EPIPE.
        var pipeSignal = sigset_t()
        sigemptyset(&pipeSignal)
        sigaddset(&pipeSignal, SIGPIPE)
        pthread_sigmask(SIG_BLOCK, &pipeSignal, nil)

        var fds: [Int32] = [-1, -1]
        // Close-on-exec from the start (pipe2): a process another thread spawns meanwhile must
        // not inherit the write end, or sendmail would never see end-of-input.
        #if os(Linux)
        let created = clau_pipe_cloexec(&fds)
        #else
        let created = pipe(&fds)
        #endif
        guard created == 0 else {
            return .failure(.deliveryFailed(reason: "pipe() failed: \(errnoDescription(errno))"))
        }
        let readEnd = fds[0]
        let writeEnd = fds[1]
        #if !os(Linux)
        _ = fcntl(readEnd, F_SETFD, FD_CLOEXEC)
        _ = fcntl(writeEnd, F_SETFD, FD_CLOEXEC)
        #endif

        let spawned = spawn(executable: executable, stdin: readEnd)
        close(readEnd)
        let pid: pid_t
        switch spawned {
        case .success(let child): pid = child
        case .failure(let error):
            close(writeEnd)
            return .failure(error)
        }

        // Write the message with the deadline in force.
        _ = fcntl(writeEnd, F_SETFL, fcntl(writeEnd, F_GETFL) | O_NONBLOCK)
        var outcome: Result<Void, MailError>? = nil
        var closedEarly = false
        input.withUnsafeBytes { buffer in
            var offset = 0
            while offset < buffer.count {
                if cancellation.isCancelled {
                    outcome = .failure(.deliveryFailed(reason: "cancelled"))
                    return
                }
                let written = write(writeEnd, buffer.baseAddress! + offset, buffer.count - offset)
                if written > 0 {
                    offset += written
                    continue
                }
                let error = errno
                if written < 0 && error == EINTR { continue }
                if written < 0 && (error == EAGAIN || error == EWOULDBLOCK) {
                    let remaining = milliseconds(until: deadline)
                    if remaining <= 0 {
                        outcome = .failure(.timeout)
                        return
                    }
                    var poller = pollfd(fd: writeEnd, events: Int16(POLLOUT), revents: 0)
                    _ = poll(&poller, 1, Int32(min(remaining, 50)))
                    continue
                }
                if written < 0 && error == EPIPE {
                    closedEarly = true
                    return
                }
                outcome = .failure(.deliveryFailed(reason: "writing to sendmail failed: \(errnoDescription(error))"))
                return
            }
        }
        close(writeEnd)

        if let failure = outcome {
            killAndReap(pid)
            return failure
        }

        // Wait for the exit status without blocking past the deadline.
        var status: Int32 = 0
        var pause: UInt32 = 1_000
        while true {
            let waited = waitpid(pid, &status, WNOHANG)
            if waited == pid { break }
            if waited < 0 {
                let error = errno
                if error == EINTR { continue }
                // ECHILD: someone else reaped our child (SIGCHLD ignored process-wide?).
                return .failure(.deliveryFailed(reason: "lost sendmail's exit status: \(errnoDescription(error))"))
            }
            if cancellation.isCancelled {
                killAndReap(pid)
                return .failure(.deliveryFailed(reason: "cancelled"))
            }
            if milliseconds(until: deadline) <= 0 {
                killAndReap(pid)
                return .failure(.timeout)
            }
            usleep(pause)
            pause = min(pause * 2, 20_000)
        }

        let low = status & 0x7F
        if low == 0 {
            let code = (status >> 8) & 0xFF
            if code != 0 {
                return .failure(.deliveryFailed(reason: "sendmail exited with status \(code)"))
            }
            if closedEarly {
                return .failure(.deliveryFailed(reason: "sendmail exited before reading the whole message"))
            }
            return .success(())
        }
        return .failure(.deliveryFailed(reason: "sendmail was killed by signal \(low)"))
    }

    /// Starts the child in its own process group with `stdin` as fd 0 and /dev/null as 1 and 2
    /// (ChildProcess: every other descriptor closed, signal mask and dispositions reset).
    static func spawn(executable: String, stdin: Int32) -> Result<pid_t, MailError> {
        do {
            return .success(try ChildProcess.spawn(executable, ["-t", "-i"], environment: childEnvironment, stdin: stdin, newProcessGroup: true))
        } catch {
            return .failure(.deliveryFailed(reason: "cannot start sendmail: \(error.reason)"))
        }
    }

    /// SIGKILL to the child's process group (and the child itself), then reap it.
    static func killAndReap(_ pid: pid_t) {
        _ = kill(-pid, SIGKILL)
        _ = kill(pid, SIGKILL)
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    }

    static func milliseconds(until deadline: ContinuousClock.Instant) -> Int64 {
        let remaining = ContinuousClock.now.duration(to: deadline)
        let (seconds, attoseconds) = remaining.components
        return seconds * 1_000 + attoseconds / 1_000_000_000_000_000
    }

    static func errnoDescription(_ code: Int32) -> String {
        "errno \(code) (\(String(cString: strerror(code))))"
    }
}
