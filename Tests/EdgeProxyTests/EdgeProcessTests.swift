import Foundation
import HTTPTypes
import HummingbirdTesting
import NIOCore
import TestSupport
import Testing
@testable import EdgeProxy

/// The real `clau-edge` and `clau-auth` binaries, each run as its own system user the way the
/// systemd units run them (SPEC §1, §5): the edge reads its TLS pair from
/// `$CREDENTIALS_DIRECTORY`, reaches auth only through auth's socket, and holds nothing else.
/// Needs root to create the users; skips with a reason otherwise (CI runs as root).
@Suite("clau-edge and clau-auth processes", .serialized, .timeLimit(.minutes(5)))
struct EdgeProcessTests {
    static let authUser = "clau-test-auth"
    static let edgeUser = "clau-test-edge"

    struct Deployment {
        var directory: String
        var postgresSocket: String
        var authSocket: String
        var credentials: String
        var port: Int
        var pki: TestPKI

        func cleanUp() {
            _ = try? Shell.run(repositoryRoot + "/scripts/pg-harness", ["stop", directory + "/pg"]) as String
            try? FileManager.default.removeItem(atPath: directory)
        }
    }

    /// The edge alone: its binary and its credentials directory (readable by the edge only).
    func deployEdge(tlsKeyMode: mode_t = 0o400) async throws -> Deployment {
        let directory = try makeWorldReadableTemporaryDirectory(prefix: "clau-edge-proc")
        let edgeUser = try ensureSystemUser(Self.edgeUser)
        let (edgeUID, edgeGID) = (edgeUser.uid, edgeUser.gid)
        _ = try SpawnedProcess.installBuiltProduct("clau-edge", in: directory)
        let pki = try await TestPKI.shared.value
        let credentials = directory + "/edge-credentials"
        try Self.makeOwnedDirectory(credentials, uid: edgeUID, gid: edgeGID, mode: 0o700)
        try Self.place(try Data(contentsOf: URL(fileURLWithPath: pki.certificatePath)), at: credentials + "/tls-cert", uid: edgeUID, gid: edgeGID, mode: 0o444)
        try Self.place(try Data(contentsOf: URL(fileURLWithPath: pki.keyPath)), at: credentials + "/tls-key", uid: edgeUID, gid: edgeGID, mode: tlsKeyMode)
        return Deployment(directory: directory, postgresSocket: "", authSocket: directory + "/run/auth.sock",
                          credentials: credentials, port: try freeLoopbackPort(), pki: pki)
    }

    /// The edge, plus auth: its binary, a migrated PostgreSQL cluster, and its keys (readable by
    /// auth only).
    func deploy() async throws -> Deployment {
        var deployment = try await deployEdge()
        let directory = deployment.directory
        let authUser = try ensureSystemUser(Self.authUser)
        let (authUID, authGID) = (authUser.uid, authUser.gid)
        _ = try SpawnedProcess.installBuiltProduct("clau-auth", in: directory)

        // A cluster of its own whose socket directory other users may traverse (the shared test
        // cluster's stays 0700).
        let output = try await Shell.run(repositoryRoot + "/scripts/pg-harness", ["start", directory + "/pg"])
        let port = output.split(separator: "\n").first { $0.hasPrefix("PGPORT=") }.flatMap { Int($0.dropFirst(7)) } ?? 0
        deployment.postgresSocket = directory + "/pg/.s.PGSQL.\(port)"
        chmod(directory + "/pg", 0o711)
        try await Shell.run(repositoryRoot + "/.build/debug/clauctl", ["migrate", "--schema", "auth", "--migrations", repositoryRoot + "/migrations", "--socket", deployment.postgresSocket])

        let keys = directory + "/auth-keys"
        try Self.makeOwnedDirectory(keys, uid: authUID, gid: authGID, mode: 0o700)
        try await Shell.run("/usr/bin/openssl", ["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", keys + "/jwt.pem"])
        try Self.place(try Data(contentsOf: URL(fileURLWithPath: keys + "/jwt.pem")), at: keys + "/jwt.pem", uid: authUID, gid: authGID, mode: 0o400)
        try Self.place(Data((0..<48).map { _ in UInt8.random(in: 0...255) }), at: keys + "/auth-secret", uid: authUID, gid: authGID, mode: 0o400)
        try Self.makeOwnedDirectory(directory + "/mail", uid: authUID, gid: authGID, mode: 0o700)
        try Self.makeOwnedDirectory(directory + "/run", uid: authUID, gid: authGID, mode: 0o755)
        return deployment
    }

    static func makeOwnedDirectory(_ path: String, uid: uid_t, gid: gid_t, mode: mode_t) throws {
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: false)
        chown(path, uid, gid)
        chmod(path, mode)
    }

    static func place(_ bytes: Data, at path: String, uid: uid_t, gid: gid_t, mode: mode_t) throws {
        try bytes.write(to: URL(fileURLWithPath: path))
        chown(path, uid, gid)
        chmod(path, mode)
    }

    func startAuth(_ deployment: Deployment, extraArguments: [String] = []) throws -> SpawnedProcess {
        try SpawnedProcess.start(as: Self.authUser, deployment.directory + "/clau-auth", [
            "--socket", deployment.authSocket, "--socket-mode", "0666",
            "--db-socket", deployment.postgresSocket, "--db-connections", "2",
            "--signing-key", "RS256:proc-1:\(deployment.directory)/auth-keys/jwt.pem",
            "--secret-file", deployment.directory + "/auth-keys/auth-secret", "--mail", "maildir:\(deployment.directory)/mail",
            "--edge-user", Self.edgeUser, "--bcrypt-cost", "10", "--bcrypt-threads", "1",
        ] + extraArguments, outputPath: deployment.directory + "/auth.log")
    }

    /// Auth and edge running as their users, the edge ready.
    func startBoth(_ deployment: Deployment, authArguments: [String] = []) async throws -> (auth: SpawnedProcess, edge: SpawnedProcess) {
        let auth = try startAuth(deployment, extraArguments: authArguments)
        try await waitForFile(deployment.authSocket)
        let edge = try startEdge(deployment)
        let ready = try await eventually(within: .seconds(20)) { (try? await send(deployment, .get, "/readyz").status) == .ok }
        if !ready {
            edge.kill()
            auth.kill()
            throw HarnessError("edge not ready; edge log: \(edge.output.suffix(2000)) auth log: \(auth.output.suffix(2000))")
        }
        return (auth, edge)
    }

    /// Polls `condition` (off nothing: each probe is an HTTP request) until it holds or `within` passes.
    func eventually(within: Duration, _ condition: () async throws -> Bool) async throws -> Bool {
        let deadline = ContinuousClock.now + within
        while ContinuousClock.now < deadline {
            if try await condition() { return true }
            try await Task.sleep(for: .milliseconds(100))
        }
        return try await condition()
    }

    func startEdge(_ deployment: Deployment) throws -> SpawnedProcess {
        try SpawnedProcess.start(as: Self.edgeUser, deployment.directory + "/clau-edge", [
            "--host", "127.0.0.1", "--port", "\(deployment.port)", "--redirect-port", "0",
            "--auth-socket", deployment.authSocket, "--public-base-url", "https://localhost:\(deployment.port)",
            // No broker runs here: an empty path turns the broker routes off (503) and keeps /readyz on auth.
            "--broker-socket", "",
        ], outputPath: deployment.directory + "/edge.log", environment: ["CREDENTIALS_DIRECTORY": deployment.credentials])
    }

    func send(_ deployment: Deployment, _ method: HTTPRequest.Method, _ path: String, headers: HTTPFields = [:], body: String? = nil) async throws -> TestClient.Response {
        var headers = headers
        if body != nil { headers[.contentType] = "application/json" }
        let configuration = TestClient.Configuration(tlsConfiguration: try deployment.pki.clientTLS(), timeout: .seconds(20), serverName: "localhost")
        let request = TestClient.Request(path, method: method, authority: "localhost", headers: headers, body: body.map { ByteBuffer(string: $0) })
        return try await TestClient.withClient(host: "127.0.0.1", port: deployment.port, configuration: configuration) { try await $0.execute(request) }
    }

    /// The subject of the certificate a new TLS handshake gets.
    func presentedSubject(_ deployment: Deployment) async throws -> String {
        let output = try await Shell.run("/usr/bin/openssl", ["s_client", "-connect", "127.0.0.1:\(deployment.port)", "-servername", "localhost", "-CAfile", deployment.pki.caPath])
        return output.split(separator: "\n").first { $0.hasPrefix("subject=") }.map(String.init) ?? ""
    }

    func uid(of process: SpawnedProcess) throws -> uid_t? {
        let status = try String(contentsOfFile: "/proc/\(process.pid)/status", encoding: .utf8)
        return status.split(separator: "\n").first { $0.hasPrefix("Uid:") }?.split(separator: "\t").dropFirst().first.flatMap { uid_t($0) }
    }

    @Test func edgeAndAuthServeAsTheirOwnUsersAndTheEdgeReloadsItsCertificateOnSIGHUP_C10_C11_C17() async throws {
        guard getuid() == 0 else {
            print("SKIP edgeAndAuthServeAsTheirOwnUsers…: needs root to create service users (uid \(getuid()))")
            return
        }
        defer { removeSystemUser(Self.edgeUser); removeSystemUser(Self.authUser) }
        let deployment = try await deploy()
        defer { deployment.cleanUp() }
        let auth = try startAuth(deployment)
        defer { auth.kill() }
        try await waitForFile(deployment.authSocket)
        let edge = try startEdge(deployment)
        defer { edge.kill() }

        var ready = false
        let deadline = ContinuousClock.now + .seconds(20)
        while !ready && ContinuousClock.now < deadline {
            ready = (try? await send(deployment, .get, "/readyz").status) == .ok
            if !ready { try await Task.sleep(for: .milliseconds(100)) }
        }
        try #require(ready, "edge not ready; edge log: \(edge.output.suffix(2000)) auth log: \(auth.output.suffix(2000))")
        #expect(try uid(of: edge) == systemUser(Self.edgeUser)?.uid)
        #expect(try uid(of: auth) == systemUser(Self.authUser)?.uid)

        // A whole session through both processes.
        let password = "Tq7!vexing-Walrus-orbit"
        let register = try await send(deployment, .post, "/v1/auth/register", body: #"{"email":"proc@example.com","password":"\#(password)","full_name":"Proc Test"}"#)
        #expect(register.status == .accepted)
        let login = try await send(deployment, .post, "/v1/auth/login", body: #"{"email":"proc@example.com","password":"\#(password)"}"#)
        #expect(login.status == .ok)
        let tokens = try login.jsonObject()
        let access = try #require(tokens["access_token"] as? String)
        let refresh = try #require(tokens["refresh_token"] as? String)
        let me = try await send(deployment, .get, "/v1/me", headers: bearer(access))
        #expect(me.status == .ok)
        #expect(try me.jsonObject()["email"] as? String == "proc@example.com")

        // Every public route of the installed binary (copied alone, no resource bundle beside it:
        // SwiftPM's Bundle.module would fatalError here) answers without taking the edge down.
        let document = try await send(deployment, .get, "/openapi.json")
        #expect(document.status == .ok)
        #expect(Data(document.text.utf8) == OpenAPIDocument.data, "the installed edge serves the whole document")
        for route in RouteTable.clau().routes where route.auth == .public {
            let method = route.method
            let reply = try await send(deployment, method, route.template, body: method == .get ? nil : "{}")
            let unavailableYet = route.template.hasPrefix("/v1/stripe/")
            #expect(reply.status.code < 500 || (unavailableYet && reply.status == .serviceUnavailable), "\(method) \(route.template): \(reply.status) \(reply.text.prefix(300))")
        }
        #expect(try await send(deployment, .get, "/healthz").status == .ok, "and the edge is still up")

        // SIGHUP: the edge reads the pair from $CREDENTIALS_DIRECTORY again; new handshakes get it.
        #expect(try await presentedSubject(deployment).contains("CN = localhost"))
        let renewed = try await deployment.pki.issueServerCertificate(commonName: "Clau Reloaded")
        for (name, bytes, mode) in [("tls-cert", renewed.certificateChainPEM, mode_t(0o444)), ("tls-key", renewed.privateKeyPEM, mode_t(0o400))] {
            let staging = deployment.credentials + "/." + name
            let edgeUser = try #require(systemUser(Self.edgeUser))
            try Self.place(Data(bytes), at: staging, uid: edgeUser.uid, gid: edgeUser.gid, mode: mode)
            rename(staging, deployment.credentials + "/" + name)
        }
        edge.signal(SIGHUP)
        var reloaded = false
        let reloadDeadline = ContinuousClock.now + .seconds(10)
        while !reloaded && ContinuousClock.now < reloadDeadline {
            reloaded = try await presentedSubject(deployment).contains("CN = Clau Reloaded")
            if !reloaded { try await Task.sleep(for: .milliseconds(100)) }
        }
        #expect(reloaded, "new handshakes get the renewed certificate after SIGHUP")
        #expect(try await send(deployment, .get, "/v1/me", headers: bearer(access)).status == .ok, "and the edge keeps serving")

        // SIGTERM: both stop cleanly, and the edge's access log never held a secret (C-17).
        edge.signal(SIGTERM)
        #expect(try await edge.waitForExit() == 0, "edge exit status; log: \(edge.output.suffix(2000))")
        auth.signal(SIGTERM)
        #expect(try await auth.waitForExit() == 0, "auth exit status; log: \(auth.output.suffix(2000))")
        let edgeLog = edge.output
        #expect(edgeLog.contains("\"route\":\"/v1/me\""), "access log lines were written")
        for secret in [password, access, refresh, String(decoding: renewed.privateKeyPEM, as: UTF8.self)] {
            #expect(!edgeLog.contains(secret), "a secret reached the edge's log")
        }
    }

    /// The runbook's (docs/runbook.md) operator commands, run with the installed `clauctl` as an
    /// admin uid against the installed auth and edge, each checked by what a client then sees.
    @Test func runbookCommandsTakeEffectAtTheEdge_C19() async throws {
        guard getuid() == 0 else {
            print("SKIP runbookCommandsTakeEffectAtTheEdge_C19: needs root to create service users (uid \(getuid()))")
            return
        }
        defer { removeSystemUser(Self.edgeUser); removeSystemUser(Self.authUser) }
        let deployment = try await deploy()
        defer { deployment.cleanUp() }
        let clauctl = try SpawnedProcess.installBuiltProduct("clauctl", in: deployment.directory)
        let (auth, edge) = try await startBoth(deployment, authArguments: ["--admin-user", "root"])
        defer { edge.kill(); auth.kill() }
        let socket = ["--socket", deployment.authSocket]
        func runbook(_ arguments: String...) async throws -> String {
            try await Shell.run(clauctl, ["auth"] + arguments + socket)
        }

        let password = "Tq7!vexing-Walrus-orbit"
        let register = try await send(deployment, .post, "/v1/auth/register", body: #"{"email":"runbook@example.com","password":"\#(password)","full_name":"Run Book"}"#)
        #expect(register.status == .accepted)
        func login() async throws -> String {
            let login = try await send(deployment, .post, "/v1/auth/login", body: #"{"email":"runbook@example.com","password":"\#(password)"}"#)
            try #require(login.status == .ok, "\(login.text.prefix(300))")
            return try #require(try login.jsonObject()["access_token"] as? String)
        }
        let access = try await login()
        let me = try await send(deployment, .get, "/v1/me", headers: bearer(access))
        let userID = try #require(try me.jsonObject()["id"] as? String)

        // Revoke one user's sessions: their token stops working at the edge (R-1: within 1 s).
        #expect(try await runbook("revoke-sessions", "--user", userID).contains("revoked"))
        #expect(try await eventually(within: .seconds(10)) { try await send(deployment, .get, "/v1/me", headers: bearer(access)).status == .unauthorized })

        // Block an IP: the edge refuses it once its blocklist refreshes; unblock lifts it.
        #expect(try await runbook("block-ip", "127.0.0.1", "--duration", "600", "--reason", "runbook").contains("blocked 127.0.0.1"))
        #expect(try await eventually(within: .seconds(20)) { try await send(deployment, .get, "/openapi.json").status == .forbidden })
        #expect(try await runbook("unblock-ip", "127.0.0.1").contains("unblocked"))
        #expect(try await eventually(within: .seconds(20)) { try await send(deployment, .get, "/openapi.json").status == .ok })

        // Unlock answers for an account that is not locked, without changing anything.
        #expect(try await runbook("unlock", "--user", userID).contains("was not locked"))

        // Revoke everything: every session of every user ends; keys from configuration are not
        // rotated, and the command says so.
        let second = try await login()
        let everything = try await runbook("revoke-everything", "--yes")
        #expect(everything.contains("not rotated"), "\(everything)")
        #expect(try await eventually(within: .seconds(10)) { try await send(deployment, .get, "/v1/me", headers: bearer(second)).status == .unauthorized })

        // The audit log shows each operator action, as JSON lines.
        let audit = try await runbook("audit", "--limit", "200")
        for action in ["block_ip", "unblock_ip", "revoke_everything"] {
            #expect(audit.contains(action), "\(action) in the audit log: \(audit.suffix(1500))")
        }
        #expect(!audit.contains(password) && !audit.contains(access), "the audit log holds no secret")
    }

    @Test func edgeRefusesToStartWithAGroupReadableTLSKey_C11() async throws {
        guard getuid() == 0 else {
            print("SKIP edgeRefusesToStartWithAGroupReadableTLSKey_C11: needs root to create service users (uid \(getuid()))")
            return
        }
        defer { removeSystemUser(Self.edgeUser) }
        let deployment = try await deployEdge(tlsKeyMode: 0o440)
        defer { deployment.cleanUp() }
        let edge = try startEdge(deployment)
        defer { edge.kill() }
        #expect(try await edge.waitForExit() == 1)
        let log = edge.output
        #expect(log.contains("edge refused to start"), "\(log)")
        #expect(log.contains(deployment.credentials + "/tls-key"), "the message names the file: \(log)")
        #expect(!log.contains("PRIVATE KEY"), "never the key itself")
    }
}
