import Foundation
import TestSupport
import Testing
@testable import AuthService

/// deploy/bin/clau-mail-relay (C-5: reset codes must reach the user): it sends what auth's
/// MaildirMailer wrote, each message once, keeps what the SMTP side refused for the next run, and
/// never logs a message's contents. The sendmail here is a script that files each message it
/// accepts and refuses those addressed to `refuse@…`.
@Suite("Mail relay of auth's maildir (C-5)", .timeLimit(.minutes(5)))
struct MailRelayTests {
    let relay = repositoryRoot + "/deploy/bin/clau-mail-relay"

    struct Setup {
        let directory: String
        var maildir: String { directory + "/mail" }
        var outbox: String { directory + "/outbox" }
        var sendmail: String { directory + "/sendmail" }
    }

    func makeSetup() throws -> Setup {
        let setup = Setup(directory: try makeWorldReadableTemporaryDirectory(prefix: "clau-mail-relay"))
        try FileManager.default.createDirectory(atPath: setup.outbox, withIntermediateDirectories: false)
        try """
            #!/bin/sh
            # Files the message it reads; refuses (status 75) one addressed to refuse@.
            message=$(mktemp "\(setup.directory)/incoming.XXXXXX")
            cat > "$message"
            if grep -q "^To: refuse@" "$message"; then rm -f "$message"; echo "550 mailbox unavailable" >&2; exit 75; fi
            mv "$message" "\(setup.outbox)/"
            """.write(toFile: setup.sendmail, atomically: true, encoding: .utf8)
        chmod(setup.sendmail, 0o755)
        return setup
    }

    func message(to address: String, code: String) -> [UInt8] {
        Array("From: security@clau.invalid\r\nTo: \(address)\r\nSubject: Your reset code\r\n\r\nYour code is \(code).\r\n".utf8)
    }

    func write(_ bytes: [UInt8], _ setup: Setup) throws {
        if case .failure(let error) = MaildirWriter.deliver(bytes, toMaildir: setup.maildir) { throw error }
    }

    func runRelay(_ setup: Setup) async throws -> (status: Int32?, log: String) {
        let process = try SpawnedProcess.start(relay, [setup.maildir], outputPath: setup.directory + "/relay-\(UUID().uuidString).log",
                                               environment: ["CLAU_SENDMAIL": setup.sendmail])
        let status = try await process.waitForExit(timeout: .seconds(30))
        return (status, process.output)
    }

    func files(in directory: String) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).filter { !$0.hasPrefix(".") }.sorted()
    }

    @Test func sendsEachMessageOnceAndKeepsNone_C5() async throws {
        let setup = try makeSetup()
        defer { try? FileManager.default.removeItem(atPath: setup.directory) }
        let messages = (1...3).map { message(to: "user\($0)@example.com", code: "90210\($0)") }
        for bytes in messages { try write(bytes, setup) }
        #expect(files(in: setup.maildir + "/new").count == 3)

        let run = try await runRelay(setup)
        #expect(run.status == 0, "\(run.log)")
        #expect(run.log.contains("sent 3, kept 0"), "\(run.log)")
        let sent = try files(in: setup.outbox).map { Array(try Data(contentsOf: URL(fileURLWithPath: setup.outbox + "/" + $0))) }
        #expect(Set(sent) == Set(messages), "each message handed over byte for byte")
        #expect(files(in: setup.maildir + "/new").isEmpty, "nothing that holds a code is kept once sent")
        #expect(files(in: setup.maildir + "/cur").isEmpty)

        let again = try await runRelay(setup)
        #expect(again.status == 0)
        #expect(files(in: setup.outbox).count == 3, "a second run sends nothing twice")
    }

    @Test func aRefusedMessageStaysForTheNextRunAndIsNeverLogged_C5() async throws {
        let setup = try makeSetup()
        defer { try? FileManager.default.removeItem(atPath: setup.directory) }
        try write(message(to: "refuse@example.com", code: "555111"), setup)
        try write(message(to: "fine@example.com", code: "555222"), setup)

        let run = try await runRelay(setup)
        #expect(run.status == 75, "EX_TEMPFAIL when something stays: \(run.log)")
        #expect(run.log.contains("sent 1, kept 1"), "\(run.log)")
        let kept = files(in: setup.maildir + "/new")
        #expect(kept.count == 1)
        #expect(run.log.contains(kept.first ?? "?"), "the log names the kept file")
        for secret in ["555111", "555222", "refuse@example.com", "fine@example.com"] {
            #expect(!run.log.contains(secret), "the log holds no message contents")
        }
        #expect(files(in: setup.outbox).count == 1)

        // The SMTP side recovers: only the kept message goes out.
        try "#!/bin/sh\ncat > \"\(setup.outbox)/retried\"\n".write(toFile: setup.sendmail, atomically: true, encoding: .utf8)
        chmod(setup.sendmail, 0o755)
        let retry = try await runRelay(setup)
        #expect(retry.status == 0, "\(retry.log)")
        #expect(files(in: setup.outbox).count == 2)
        let retried = try String(contentsOfFile: setup.outbox + "/retried", encoding: .utf8)
        #expect(retried.contains("To: refuse@example.com"))
        #expect(files(in: setup.maildir + "/new").isEmpty)
    }

    /// The production path end to end: msmtp (the relay's default client, flags as in the unit)
    /// delivering to a real SMTP server (Python's aiosmtpd) on loopback.
    @Test func relaysThroughMsmtpToARealSMTPServer_C5() async throws {
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/msmtp"),
              (try? await Shell.run("/usr/bin/env", ["python3", "-c", "import aiosmtpd"])) != nil
        else {
            print("SKIP relaysThroughMsmtpToARealSMTPServer_C5: needs msmtp and python3 aiosmtpd (scripts/test installs both)")
            return
        }
        let setup = try makeSetup()
        defer { try? FileManager.default.removeItem(atPath: setup.directory) }
        let port = try freeLoopbackPort()
        let server = try SpawnedProcess.start("/usr/bin/env", ["python3", "-m", "aiosmtpd", "-n", "-l", "127.0.0.1:\(port)",
                                                               "-c", "aiosmtpd.handlers.Mailbox", setup.directory + "/received"],
                                              outputPath: setup.directory + "/smtpd.log")
        defer { server.kill() }
        try "account default\nhost 127.0.0.1\nport \(port)\ntls off\nauth off\nfrom bounce@clau.invalid\n"
            .write(toFile: setup.directory + "/msmtprc", atomically: true, encoding: .utf8)
        try write(message(to: "ada@example.com", code: "424242"), setup)
        // The server needs a moment to listen; the relay keeps the message until it is accepted.
        var delivered = false
        let deadline = ContinuousClock.now + .seconds(20)
        while !delivered && ContinuousClock.now < deadline {
            let process = try SpawnedProcess.start(relay, [setup.maildir], outputPath: setup.directory + "/relay.log",
                                                   environment: ["CLAU_SENDMAIL": "/usr/bin/msmtp --file=\(setup.directory)/msmtprc --read-envelope-from -t"])
            delivered = try await process.waitForExit(timeout: .seconds(15)) == 0
            if !delivered { try await Task.sleep(for: .milliseconds(200)) }
        }
        #expect(delivered, "smtpd: \(server.output)")
        let received = files(in: setup.directory + "/received/new")
        #expect(received.count == 1)
        let mail = try String(contentsOfFile: setup.directory + "/received/new/" + (received.first ?? "-"), encoding: .utf8)
        #expect(mail.contains("X-RcptTo: ada@example.com"), "recipient taken from To:")
        #expect(mail.contains("X-MailFrom: security@clau.invalid"), "envelope sender taken from From:")
        #expect(mail.contains("Your code is 424242."))
        #expect(files(in: setup.maildir + "/new").isEmpty)
    }

    @Test func anEmptyOrMissingMaildirIsNotAnError() async throws {
        let setup = try makeSetup()
        defer { try? FileManager.default.removeItem(atPath: setup.directory) }
        let missing = try await runRelay(setup)
        #expect(missing.status == 0, "\(missing.log)")
        try FileManager.default.createDirectory(atPath: setup.maildir + "/new", withIntermediateDirectories: true)
        let empty = try await runRelay(setup)
        #expect(empty.status == 0, "\(empty.log)")
        #expect(empty.log.contains("sent 0, kept 0"))
    }
}
