import Foundation
import Testing
@testable import AuthService
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The sendmail backend against real fake `sendmail` scripts (real processes, no mocks).
@Suite(.timeLimit(.minutes(5)))
struct SendmailMailerTests {
    @Test func sendmailGetsExactlyDashTDashIAndTheByteExactMessage() async throws {
        let dir = try MailTestSupport.temporaryDirectory()
        defer { MailTestSupport.removeDirectory(dir) }
        let output = dir.appendingPathComponent("received.eml").path
        let script = try MailTestSupport.writeScript(
            """
            [ "$#" -eq 2 ] && [ "$1" = "-t" ] && [ "$2" = "-i" ] || exit 64
            cat > \(MailTestSupport.shellQuoted(output))
            """,
            named: "sendmail", in: dir
        )
        let renderer = try MailTestSupport.renderer(token: "feedfacefeedfacefeedfacefeedface")
        let mailer = SendmailMailer(executable: script, timeout: .seconds(10), renderer: renderer)
        let message = MailTestSupport.message(
            subject: "Code de réinitialisation",
            body: "Votre code : 123456\n.\nFrom here on, nothing.\n" + String(repeating: "x", count: 300) + "\n"
        )
        try await mailer.send(message, logger: MailTestSupport.logger)

        let received = try Data(contentsOf: URL(fileURLWithPath: output))
        #expect(Array(received) == (try renderer.render(message).bytes))
    }

    @Test func sendmailNonZeroExitIsDeliveryFailedWithStatus() async throws {
        let dir = try MailTestSupport.temporaryDirectory()
        defer { MailTestSupport.removeDirectory(dir) }
        let script = try MailTestSupport.writeScript("cat > /dev/null\nexit 75", named: "sendmail", in: dir)
        let mailer = SendmailMailer(executable: script, timeout: .seconds(10), renderer: try MailTestSupport.renderer())
        await #expect(throws: MailError.deliveryFailed(reason: "sendmail exited with status 75")) {
            try await mailer.send(MailTestSupport.message(body: "secret-code-987654\n"), logger: MailTestSupport.logger)
        }
    }

    @Test func hangingSendmailTimesOutAndItsProcessGroupIsKilled() async throws {
        let dir = try MailTestSupport.temporaryDirectory()
        defer { MailTestSupport.removeDirectory(dir) }
        let shellPIDFile = dir.appendingPathComponent("sh.pid").path
        let sleepPIDFile = dir.appendingPathComponent("sleep.pid").path
        let script = try MailTestSupport.writeScript(
            """
            echo $$ > \(MailTestSupport.shellQuoted(shellPIDFile))
            cat > /dev/null
            sleep 30 &
            echo $! > \(MailTestSupport.shellQuoted(sleepPIDFile))
            wait
            """,
            named: "sendmail", in: dir
        )
        let mailer = SendmailMailer(executable: script, timeout: .milliseconds(500), renderer: try MailTestSupport.renderer())
        let started = ContinuousClock.now
        await #expect(throws: MailError.timeout) {
            try await mailer.send(MailTestSupport.message(), logger: MailTestSupport.logger)
        }
        // Far below the script's 30 s sleep, far above the 0.5 s timeout: a loaded 2-core CI
        // machine took 12.8 s once to schedule all of it.
        #expect(ContinuousClock.now - started < .seconds(20))

        let shellPID = try #require(pid_t((try String(contentsOfFile: shellPIDFile, encoding: .utf8)).trimmingCharacters(in: .whitespacesAndNewlines)))
        #expect(MailTestSupport.processIsDead(shellPID))
        // The grandchild went down with the process group (it may take a moment to be reaped
        // by init once its parent is gone).
        if let text = try? String(contentsOfFile: sleepPIDFile, encoding: .utf8),
           let sleepPID = pid_t(text.trimmingCharacters(in: .whitespacesAndNewlines)) {
            var dead = MailTestSupport.processIsDead(sleepPID)
            for _ in 0..<50 where !dead {
                try await Task.sleep(for: .milliseconds(20))
                dead = MailTestSupport.processIsDead(sleepPID)
            }
            #expect(dead)
        }
    }

    @Test func cancellingTheSendKillsSendmail() async throws {
        let dir = try MailTestSupport.temporaryDirectory()
        defer { MailTestSupport.removeDirectory(dir) }
        let shellPIDFile = dir.appendingPathComponent("sh.pid").path
        let script = try MailTestSupport.writeScript(
            "echo $$ > \(MailTestSupport.shellQuoted(shellPIDFile))\ncat > /dev/null\nexec sleep 30",
            named: "sendmail", in: dir
        )
        // Used through the protocol, as the auth service does.
        let mailer: any Mailer = SendmailMailer(executable: script, timeout: .seconds(60), renderer: try MailTestSupport.renderer())
        // (An explicitly typed `throws(MailError)` closure here crashes the 6.3.1 compiler.)
        let task = Task {
            try await mailer.send(MailTestSupport.message(), logger: MailTestSupport.logger)
        }
        // Wait until the child has written its pid (the file exists, empty, a moment before), then cancel.
        for _ in 0..<250 where !((try? String(contentsOfFile: shellPIDFile, encoding: .utf8))?.hasSuffix("\n") ?? false) {
            try await Task.sleep(for: .milliseconds(20))
        }
        task.cancel()
        let result = await task.result
        #expect(throws: MailError.deliveryFailed(reason: "cancelled")) { try result.get() }
        let text = try String(contentsOfFile: shellPIDFile, encoding: .utf8)
        let pid = try #require(pid_t(text.trimmingCharacters(in: .whitespacesAndNewlines)))
        #expect(MailTestSupport.processIsDead(pid))
    }

    @Test func sendmailReadingNothingAndExitingIsAFailureNotACrash() async throws {
        // 2 MB is far more than a pipe buffer: the write hits EPIPE (SIGPIPE must not kill us).
        let dir = try MailTestSupport.temporaryDirectory()
        defer { MailTestSupport.removeDirectory(dir) }
        let script = try MailTestSupport.writeScript("exit 0", named: "sendmail", in: dir)
        let mailer = SendmailMailer(executable: script, timeout: .seconds(10), renderer: try MailTestSupport.renderer())
        let big = String(repeating: String(repeating: "y", count: 99) + "\n", count: 20_000)
        await #expect(throws: MailError.deliveryFailed(reason: "sendmail exited before reading the whole message")) {
            try await mailer.send(MailTestSupport.message(body: big), logger: MailTestSupport.logger)
        }
    }

    @Test func invalidMessageNeverStartsSendmail() async throws {
        let dir = try MailTestSupport.temporaryDirectory()
        defer { MailTestSupport.removeDirectory(dir) }
        let marker = dir.appendingPathComponent("started").path
        let script = try MailTestSupport.writeScript("touch \(MailTestSupport.shellQuoted(marker))\ncat > /dev/null", named: "sendmail", in: dir)
        let mailer = SendmailMailer(executable: script, timeout: .seconds(10), renderer: try MailTestSupport.renderer())
        await #expect(throws: MailError.invalidHeader(field: "To")) {
            try await mailer.send(MailTestSupport.message(to: "alice@example.org\nBcc: eve@evil.example"), logger: MailTestSupport.logger)
        }
        await #expect(throws: MailError.invalidHeader(field: "Subject")) {
            try await mailer.send(MailTestSupport.message(subject: "x\r\nBcc: eve@evil.example"), logger: MailTestSupport.logger)
        }
        #expect(!FileManager.default.fileExists(atPath: marker))
    }

    @Test func sendmailChildGetsOnlyAFixedPathAndNoInheritedDescriptors() async throws {
        let dir = try MailTestSupport.temporaryDirectory()
        defer { MailTestSupport.removeDirectory(dir) }
        let envFile = dir.appendingPathComponent("env.txt").path
        let fdFile = dir.appendingPathComponent("fd.txt").path
        // A descriptor opened without O_CLOEXEC, parked at a high number.
        let opened = open("/dev/null", O_RDONLY)
        try #require(opened >= 0)
        let leakCandidate: Int32 = 237
        try #require(dup2(opened, leakCandidate) == leakCandidate)
        close(opened)
        defer { close(leakCandidate) }
        let script = try MailTestSupport.writeScript(
            """
            env > \(MailTestSupport.shellQuoted(envFile))
            if [ -e /proc/self/fd/\(leakCandidate) ]; then echo leaked; else echo closed; fi > \(MailTestSupport.shellQuoted(fdFile))
            cat > /dev/null
            """,
            named: "sendmail", in: dir
        )
        let mailer = SendmailMailer(executable: script, timeout: .seconds(10), renderer: try MailTestSupport.renderer())
        try await mailer.send(MailTestSupport.message(), logger: MailTestSupport.logger)

        let names = try String(contentsOfFile: envFile, encoding: .utf8)
            .split(separator: "\n").compactMap { $0.split(separator: "=", maxSplits: 1).first.map(String.init) }
        #expect(names.contains("PATH"))
        // Only what /bin/sh adds by itself.
        #expect(Set(names).isSubset(of: ["PATH", "PWD", "OLDPWD", "SHLVL", "_"]), "\(names)")
        #if os(Linux)
        #expect(try String(contentsOfFile: fdFile, encoding: .utf8) == "closed\n")
        #endif
    }

    @Test func missingSendmailExecutableIsDeliveryFailed() async throws {
        let mailer = SendmailMailer(executable: "/nonexistent/sendmail", timeout: .seconds(5), renderer: try MailTestSupport.renderer())
        do throws(MailError) {
            try await mailer.send(MailTestSupport.message(), logger: MailTestSupport.logger)
            Issue.record("send should have failed")
        } catch {
            guard case .deliveryFailed(let reason) = error else {
                Issue.record("unexpected error \(error)")
                return
            }
            #expect(reason.contains("cannot start sendmail"))
        }
        let relative = SendmailMailer(executable: "sendmail", timeout: .seconds(5), renderer: try MailTestSupport.renderer())
        await #expect(throws: MailError.deliveryFailed(reason: "sendmail executable must be an absolute path")) {
            try await relative.send(MailTestSupport.message(), logger: MailTestSupport.logger)
        }
    }
}
