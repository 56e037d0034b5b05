import Foundation
import HTTPTypes
import HummingbirdTesting
import NIOCore
import RPC
import Synchronization
import TestSupport
import Testing
@testable import EdgeProxy

/// The real `clau-edge` and `clau-auth` binaries, each run as its own system user the way the
/// systemd units run them (SPEC §1, §5): the edge reads its TLS pair from
/// `$CREDENTIALS_DIRECTORY`, reaches auth only through auth's socket, and holds nothing else.
/// Needs root to create the users; skips with a reason otherwise (CI runs as root).
@Suite("Installed service processes", .serialized, .timeLimit(.minutes(5)))
struct EdgeProcessTests {
    static let authUser = "clau-test-auth"
    static let edgeUser = "clau-test-edge"

    struct Deployment: Sendable {
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
        // As /run/clau/auth in production: only auth's clients (the edge's group) may traverse.
        try Self.makeOwnedDirectory(directory + "/run", uid: authUID, gid: systemUser(Self.edgeUser)?.gid ?? authGID, mode: 0o710)
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
    /// Socket activation as systemd does it (`clau-edge.socket`): the installed edge, as its own
    /// user, serves HTTPS, the redirect and /metrics on listening sockets it inherits. It is told
    /// to bind the very port the API socket already holds, so binding itself would fail: serving
    /// proves it adopted the sockets, which is what lets its unit forbid it every address family
    /// but AF_UNIX.
    @Test func installedEdgeServesTheSocketsSystemdPassesIt_C10_C17() async throws {
        guard getuid() == 0 else {
            print("SKIP installedEdgeServesTheSocketsSystemdPassesIt_C10_C17: needs root to create service users (uid \(getuid()))")
            return
        }
        defer { for user in [Self.edgeUser, Self.authUser] { removeSystemUser(user) } }
        let deployment = try await deploy()
        defer { deployment.cleanUp() }
        let auth = try startAuth(deployment)
        try await waitForFile(deployment.authSocket)
        let redirectPort = try freeLoopbackPort()
        let metricsPort = try freeLoopbackPort()
        let launcher = try copyFixtureToWorldReadableDirectory("listen_fds_launcher.py")
        let edge = try SpawnedProcess.start(as: Self.edgeUser, "/usr/bin/python3", [
            launcher, "api=127.0.0.1:\(deployment.port)", "redirect=127.0.0.1:\(redirectPort)", "metrics=127.0.0.1:\(metricsPort)", "--",
            deployment.directory + "/clau-edge", "--host", "127.0.0.1", "--port", "\(deployment.port)", "--redirect-port", "0",
            "--auth-socket", deployment.authSocket, "--public-base-url", "https://localhost:\(deployment.port)", "--broker-socket", "",
        ], outputPath: deployment.directory + "/edge.log", environment: ["CREDENTIALS_DIRECTORY": deployment.credentials])
        defer { for process in [edge, auth] { process.kill() } }
        let ready = try await eventually(within: .seconds(30)) { (try? await send(deployment, .get, "/readyz").status) == .ok }
        try #require(ready, "edge not ready: \(edge.output.suffix(2000))")
        #expect(try uid(of: edge) == systemUser(Self.edgeUser)?.uid)
        let health = try await send(deployment, .get, "/healthz")
        #expect(health.status == .ok && health.headers[.strictTransportSecurity] != nil && health.headers[.date] != nil)
        let redirect = try await Shell.run("/usr/bin/curl", ["-s", "-o", "/dev/null", "-w", "%{http_code} %{redirect_url}", "http://127.0.0.1:\(redirectPort)/v1/me"])
        #expect(redirect == "301 https://localhost:\(deployment.port)/v1/me")
        let metrics = try await Shell.run("/usr/bin/curl", ["-s", "http://127.0.0.1:\(metricsPort)/metrics"])
        #expect(metrics.contains("clau_edge_"), "\(metrics.prefix(300))")
        #expect(edge.output.contains("serving an inherited socket"))
    }

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

// MARK: All four services

/// All four services as installed binaries, each as its own system user with the socket layout of
/// deploy/ (X-1, SPEC §1): the edge reaches auth and the broker, the broker reaches the vault and
/// PostgreSQL (schema broker only), the fakes stand in for Alpaca and Stripe over real HTTP. Part
/// of this serialized suite so its service users are never created and removed concurrently.
extension EdgeProcessTests {
    static let vaultUser = "clau-t4-vault"
    static let brokerUser = "clau-t4-broker"

    struct BrokerDeployment: Sendable {
        var vaultSocket: String
        var brokerSocket: String
        var fakesURL: String
        var redirectURI: String
    }

    /// The vault and the broker beside `deployment`'s auth and edge: binaries, keys and secrets
    /// readable by their owner only, and run directories that only the next hop may traverse
    /// (vault: the broker's group; broker: the edge's group).
    func deployBroker(_ deployment: Deployment) async throws -> BrokerDeployment {
        let directory = deployment.directory
        let vault = try ensureSystemUser(Self.vaultUser)
        let broker = try ensureSystemUser(Self.brokerUser)
        let edge = try ensureSystemUser(Self.edgeUser)
        for product in ["clau-vault", "clau-broker", "clau-fakes"] { _ = try SpawnedProcess.installBuiltProduct(product, in: directory) }
        try await Shell.run(repositoryRoot + "/.build/debug/clauctl", ["migrate", "--schema", "broker", "--migrations", repositoryRoot + "/migrations", "--socket", deployment.postgresSocket])

        let vaultKeys = directory + "/vault-keys"
        try Self.makeOwnedDirectory(vaultKeys, uid: vault.uid, gid: vault.gid, mode: 0o700)
        let key = try await Shell.run(repositoryRoot + "/.build/debug/clauctl", ["vault", "keygen"])
        try Self.place(Data(key.utf8), at: vaultKeys + "/fernet-keys", uid: vault.uid, gid: vault.gid, mode: 0o400)
        try Self.makeOwnedDirectory(directory + "/vault-run", uid: vault.uid, gid: broker.gid, mode: 0o710)

        let secrets = directory + "/broker-credentials"
        try Self.makeOwnedDirectory(secrets, uid: broker.uid, gid: broker.gid, mode: 0o700)
        try Self.place(Data("fake-alpaca-secret".utf8), at: secrets + "/alpaca-client-secret", uid: broker.uid, gid: broker.gid, mode: 0o400)
        try Self.place(Data("sk_test_clau_fake".utf8), at: secrets + "/stripe-secret-key", uid: broker.uid, gid: broker.gid, mode: 0o400)
        try Self.place(Data("whsec_clau_fake".utf8), at: secrets + "/stripe-webhook-secret", uid: broker.uid, gid: broker.gid, mode: 0o400)
        try Self.makeOwnedDirectory(directory + "/broker-run", uid: broker.uid, gid: edge.gid, mode: 0o710)
        let fakesPort = try freeLoopbackPort()
        return BrokerDeployment(
            vaultSocket: directory + "/vault-run/vault.sock", brokerSocket: directory + "/broker-run/broker.sock",
            fakesURL: "http://127.0.0.1:\(fakesPort)", redirectURI: "http://127.0.0.1:9/v1/alpaca/oauth/callback"
        )
    }

    func startVaultBrokerAndFakes(_ deployment: Deployment, _ broker: BrokerDeployment) async throws -> [SpawnedProcess] {
        let directory = deployment.directory
        let fakesPort = String(broker.fakesURL.split(separator: ":").last!)
        let fakes = try SpawnedProcess.start(directory + "/clau-fakes", ["--host", "127.0.0.1", "--port", fakesPort, "--alpaca-redirect-uri", broker.redirectURI], outputPath: directory + "/fakes.log")
        let vault = try startVault(deployment, broker)
        try await waitForFile(broker.vaultSocket)
        let brokerProcess = try startBroker(deployment, broker)
        do {
            try await waitForFile(broker.brokerSocket, timeout: .seconds(20))
        } catch {
            throw HarnessError("broker did not start: \(brokerProcess.output.suffix(2000)) vault: \(vault.output.suffix(1000))")
        }
        return [fakes, vault, brokerProcess]
    }

    func startVault(_ deployment: Deployment, _ broker: BrokerDeployment) throws -> SpawnedProcess {
        try SpawnedProcess.start(as: Self.vaultUser, deployment.directory + "/clau-vault", [
            "--socket", broker.vaultSocket, "--socket-mode", "0666", "--key-file", deployment.directory + "/vault-keys/fernet-keys", "--broker-user", Self.brokerUser,
        ], outputPath: deployment.directory + "/vault.log")
    }

    func startBroker(_ deployment: Deployment, _ broker: BrokerDeployment) throws -> SpawnedProcess {
        let directory = deployment.directory
        return try SpawnedProcess.start(as: Self.brokerUser, directory + "/clau-broker", [
            "--socket", broker.brokerSocket, "--socket-mode", "0666", "--vault-socket", broker.vaultSocket,
            "--db-socket", deployment.postgresSocket, "--db-connections", "2", "--edge-user", Self.edgeUser, "--admin-user", "root",
            "--alpaca-api-url", broker.fakesURL, "--alpaca-token-url", broker.fakesURL + "/oauth/token", "--alpaca-authorize-url", broker.fakesURL + "/oauth/authorize",
            "--alpaca-client-id", "fake-alpaca-client", "--alpaca-redirect-uri", broker.redirectURI,
            "--stripe-api-url", broker.fakesURL, "--stripe-price", "price_clauMonthly",
            "--checkout-success-url", "https://app.clau.invalid/paid", "--checkout-cancel-url", "https://app.clau.invalid/cancelled",
        ], outputPath: directory + "/broker.log", environment: ["CREDENTIALS_DIRECTORY": directory + "/broker-credentials"])
    }

    func startEdge(_ deployment: Deployment, brokerSocket: String, extraArguments: [String] = []) throws -> SpawnedProcess {
        try SpawnedProcess.start(as: Self.edgeUser, deployment.directory + "/clau-edge", [
            "--host", "127.0.0.1", "--port", "\(deployment.port)", "--redirect-port", "0",
            "--auth-socket", deployment.authSocket, "--broker-socket", brokerSocket, "--public-base-url", "https://localhost:\(deployment.port)",
        ] + extraArguments, outputPath: deployment.directory + "/edge.log", environment: ["CREDENTIALS_DIRECTORY": deployment.credentials])
    }

    /// `command` run as `user` with its own groups (setpriv); true when it exited 0.
    func succeeds(as user: String, _ command: [String]) async -> Bool {
        (try? await Shell.run("/usr/bin/setpriv", ["--reuid=\(user)", "--regid=\(user)", "--init-groups", "--no-new-privs"] + command)) != nil
    }

    /// Whether the Unix socket at `path` accepts a connection from `user` (through setpriv, as the
    /// units run each service), or from this process when `user` is nil.
    func unixSocketAccepts(_ path: String, as user: String? = nil) async -> Bool {
        let probe = ["/usr/bin/python3", "-c", "import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])", path]
        guard let user else { return (try? await Shell.run(probe[0], Array(probe.dropFirst()))) != nil }
        return await succeeds(as: user, probe)
    }

    static let journeyPassword = "Tq7!vexing-Walrus-orbit"

    /// Registers `email` (if new) and logs in over HTTPS: the token pair.
    func signIn(_ deployment: Deployment, _ email: String, password: String = journeyPassword) async throws -> (access: String, refresh: String) {
        _ = try await send(deployment, .post, "/v1/auth/register", body: #"{"email":"\#(email)","password":"\#(password)","full_name":"Four Process"}"#)
        let login = try await send(deployment, .post, "/v1/auth/login", body: #"{"email":"\#(email)","password":"\#(password)"}"#)
        try #require(login.status == .ok, "\(login.text.prefix(300))")
        let object = try login.jsonObject()
        return (try #require(object["access_token"] as? String), try #require(object["refresh_token"] as? String))
    }

    /// The authorize URL the edge hands out, followed at the fake (as a browser would): its
    /// redirect's code and state.
    func authorizeAlpaca(_ deployment: Deployment, _ token: String) async throws -> (code: String, state: String) {
        let authorize = try await send(deployment, .get, "/v1/alpaca/oauth/authorize-url", headers: bearer(token))
        try #require(authorize.status == .ok, "\(authorize.text.prefix(300))")
        let url = try #require(try authorize.jsonObject()["url"] as? String)
        let location = try await Shell.run("/usr/bin/curl", ["-s", "-o", "/dev/null", "-w", "%{redirect_url}", url])
        let query = try #require(URLComponents(string: location)?.queryItems)
        return (try #require(query.first { $0.name == "code" }?.value), try #require(query.first { $0.name == "state" }?.value))
    }

    /// Auth, vault, broker, fakes and edge running as installed, each as its own user, the edge
    /// ready; `body` gets the deployment and the processes (fakes, vault, broker, auth, edge).
    func withFourServices(edgeArguments: [String] = [], _ body: (Deployment, BrokerDeployment, [SpawnedProcess]) async throws -> Void) async throws {
        defer { for user in [Self.edgeUser, Self.authUser, Self.vaultUser, Self.brokerUser] { removeSystemUser(user) } }
        let deployment = try await deploy()
        defer { deployment.cleanUp() }
        let brokerDeployment = try await deployBroker(deployment)
        let auth = try startAuth(deployment)
        try await waitForFile(deployment.authSocket)
        let backends = try await startVaultBrokerAndFakes(deployment, brokerDeployment)
        let edge = try startEdge(deployment, brokerSocket: brokerDeployment.brokerSocket, extraArguments: edgeArguments)
        defer { for process in [edge, auth] + backends { process.kill() } }
        let ready = try await eventually(within: .seconds(30)) { (try? await send(deployment, .get, "/readyz").status) == .ok }
        try #require(ready, "edge not ready: \(edge.output.suffix(1500)) broker: \(backends[2].output.suffix(1500))")
        try await body(deployment, brokerDeployment, backends + [auth, edge])
    }

    @Test func fourServicesAsFourUsersServeTheBrokerRoutesEndToEnd_X1_C7() async throws {
        guard getuid() == 0 else {
            print("SKIP fourServicesAsFourUsersServeTheBrokerRoutesEndToEnd_X1_C7: needs root to create service users (uid \(getuid()))")
            return
        }
        try await withFourServices { deployment, brokerDeployment, processes in
            let (backends, edge) = (Array(processes.prefix(3)), processes[4])

            // Each process runs as its own user.
            #expect(try uid(of: backends[1]) == systemUser(Self.vaultUser)?.uid)
            #expect(try uid(of: backends[2]) == systemUser(Self.brokerUser)?.uid)
            #expect(try uid(of: edge) == systemUser(Self.edgeUser)?.uid)

            func session(_ email: String) async throws -> String { try await signIn(deployment, email).access }
            let alice = try await session("alice4@example.com")
            let bob = try await session("bob4@example.com")

            // Alpaca OAuth through the edge, the broker, the vault and the fake.
            func authorize(_ token: String) async throws -> (code: String, state: String) { try await authorizeAlpaca(deployment, token) }
            func connect(_ token: String, _ grant: (code: String, state: String)) async throws -> TestClient.Response {
                try await send(deployment, .post, "/v1/alpaca/oauth/callback", headers: bearer(token), body: #"{"code":"\#(grant.code)","state":"\#(grant.state)"}"#)
            }
            let (code, state) = try await authorize(alice)
            let callback = try await connect(alice, (code, state))
            #expect(callback.status == .ok, "\(callback.text.prefix(300))")
            // The same state again, or presented by Bob: 400 invalid_state.
            let replay = try await send(deployment, .post, "/v1/alpaca/oauth/callback", headers: bearer(bob), body: #"{"code":"\#(code)","state":"\#(state)"}"#)
            #expect(replay.status == .badRequest && replay.text.contains("invalid_state"))

            let account = try await send(deployment, .get, "/v1/alpaca/account", headers: bearer(alice))
            let accountStatus = try account.jsonObject()["status"] as? String
            #expect(account.status == .ok && accountStatus == "ACTIVE")
            #expect(try await send(deployment, .get, "/v1/alpaca/account", headers: bearer(bob)).text.contains("alpaca_not_connected"))
            #expect(try await connect(bob, try await authorize(bob)).status == .ok)
            let order = try await send(deployment, .post, "/v1/alpaca/orders", headers: bearer(alice),
                                       body: #"{"symbol":"AAPL","side":"buy","type":"limit","time_in_force":"gtc","qty":"1","limit_price":"1.00"}"#)
            try #require(order.status == .created, "\(order.text.prefix(300))")
            let orderID = try #require(try order.jsonObject()["id"] as? String)
            // Bob with Alice's order id: 404 (C-7); Alice: 204.
            #expect(try await send(deployment, .delete, "/v1/alpaca/orders/\(orderID)", headers: bearer(bob)).status == .notFound)
            #expect(try await send(deployment, .delete, "/v1/alpaca/orders/\(orderID)", headers: bearer(alice)).status == .noContent)
            let me = try await send(deployment, .get, "/v1/me", headers: bearer(alice))
            let aliceID = try #require(try me.jsonObject()["id"] as? String)
            #expect(try await send(deployment, .get, "/v1/users/\(aliceID)/subscription", headers: bearer(bob)).status == .notFound)
            #expect(try await send(deployment, .get, "/v1/users/\(aliceID)/subscription", headers: bearer(alice)).status == .ok)

            // X-1, as an attacker holding each process would try: the edge's uid cannot reach the
            // vault's socket nor read its keys or the broker's secrets; the broker's database role
            // cannot read the auth schema; a uid the vault does not name gets no Decrypt.
            #expect(await unixSocketAccepts(brokerDeployment.vaultSocket, as: Self.brokerUser))
            #expect(!(await unixSocketAccepts(brokerDeployment.vaultSocket, as: Self.edgeUser)))
            #expect(await unixSocketAccepts(brokerDeployment.brokerSocket, as: Self.edgeUser))
            #expect(!(await unixSocketAccepts(brokerDeployment.brokerSocket, as: Self.authUser)))
            #expect(!(await succeeds(as: Self.edgeUser, ["/bin/cat", deployment.directory + "/vault-keys/fernet-keys"])))
            #expect(!(await succeeds(as: Self.edgeUser, ["/bin/cat", deployment.directory + "/broker-credentials/stripe-secret-key"])))
            #expect(!(await succeeds(as: Self.brokerUser, ["/bin/cat", deployment.directory + "/auth-keys/jwt.pem"])))
            // Decrypt answers the broker's uid only, whoever else reaches the socket (root here): the
            // broker gets a verdict on the (bogus) token, any other uid PERMISSION_DENIED.
            let client = try copyFixtureToWorldReadableDirectory("rpc_call.py")
            let decrypt = "0a0141120f616c706163613a757365723a7878"
            func decryptCode(as user: String?) async throws -> Int? {
                let command = [client, brokerDeployment.vaultSocket, "clau.vault.Vault/Decrypt", decrypt]
                let output = user == nil
                    ? try await Shell.run("/usr/bin/python3", command)
                    : try await Shell.run("/usr/bin/setpriv", ["--reuid=\(user!)", "--regid=\(user!)", "--init-groups", "--no-new-privs", "/usr/bin/python3"] + command)
                return (try JSONSerialization.jsonObject(with: Data(output.utf8)) as? [String: Any])?["code"] as? Int
            }
            #expect(try await decryptCode(as: nil) == 7)
            #expect(try await decryptCode(as: Self.brokerUser) == 3)
            let pg = deployment.postgresSocket
            let pgDirectory = String(pg[..<pg.lastIndex(of: "/")!])
            let pgPort = String(pg.split(separator: ".").last!)
            let psql = ["/usr/bin/psql", "-h", pgDirectory, "-p", pgPort, "-d", "clau", "-v", "ON_ERROR_STOP=1", "-Atc"]
            #expect(await succeeds(as: "root", psql + ["SELECT count(*) FROM broker.alpaca_connections", "-U", "clau_broker"]))
            #expect(!(await succeeds(as: "root", psql + ["SELECT count(*) FROM auth.users", "-U", "clau_broker"])))
            #expect(!(await succeeds(as: "root", psql + ["SELECT count(*) FROM broker.alpaca_connections", "-U", "clau_auth"])))

            // R-11 as an operator runs it: the vault (its own user) writes a new key to the key file
            // it owns, the broker re-wraps every stored token, the old key is retired, and Alice's
            // connection still works under the new key alone.
            let keyFile = deployment.directory + "/vault-keys/fernet-keys"
            let clauctl = repositoryRoot + "/.build/debug/clauctl"
            func currentKeyID() async throws -> String {
                let status = try await Shell.run(clauctl, ["broker", "rotation-status", "--socket", brokerDeployment.brokerSocket])
                return try #require(status.firstMatch(of: /current key id: ([0-9a-f]+);/).map { String($0.1) }, "\(status)")
            }
            func keyLines() throws -> Int {
                try String(contentsOfFile: keyFile, encoding: .utf8).split(separator: "\n").count
            }
            let oldKeyID = try await currentKeyID()
            let rotated = try await Shell.run(clauctl, ["broker", "rotate", "--socket", brokerDeployment.brokerSocket])
            let newKeyID = try await currentKeyID()
            #expect(newKeyID != oldKeyID && rotated.contains("new current key id: \(newKeyID)") && rotated.contains(/done: [1-9][0-9]* re-wrapped/), "\(rotated)")
            #expect(try keyLines() == 2)
            var keyFileStatus = stat()
            let vaultUID = systemUser(Self.vaultUser)?.uid
            #expect(stat(keyFile, &keyFileStatus) == 0 && keyFileStatus.st_uid == vaultUID && keyFileStatus.st_mode & 0o777 == 0o400)
            _ = try await Shell.run(clauctl, ["broker", "retire-key", "--socket", brokerDeployment.brokerSocket, "--key-id", oldKeyID])
            #expect(try keyLines() == 1)
            let afterRotation = try await send(deployment, .get, "/v1/alpaca/account", headers: bearer(alice))
            #expect(afterRotation.status == .ok, "\(afterRotation.text.prefix(300))")

            // X-1 as one matrix: what each service's uid can read, reach and call, measured against
            // the running processes and compared with what the deployment intends; the table in
            // docs/threat-model.md is this measurement.
            try await checkAccessMatrix(deployment, brokerDeployment)
        }
    }
}

// MARK: One user's whole journey

extension EdgeProcessTests {
    /// Every step a user takes, over HTTPS against the installed services (each its own user):
    /// register → login → refresh → link Alpaca (OAuth against the fake) → account, positions →
    /// place, list and cancel an order → link a bank → balances → subscription checkout → the
    /// signed webhook → subscription active → a reset by the code that arrives by mail → every
    /// old token dead → log in with the new password → logout. (C-2, C-7, C-14, R-1, R-6.)
    @Test func oneUsersWholeJourneyOverHTTPSAcrossTheFourServices_C2_R1_C14() async throws {
        guard getuid() == 0 else {
            print("SKIP oneUsersWholeJourneyOverHTTPSAcrossTheFourServices_C2_R1_C14: needs root to create service users (uid \(getuid()))")
            return
        }
        try await withFourServices { deployment, brokerDeployment, _ in
            func call(_ method: HTTPRequest.Method, _ path: String, _ token: String?, _ body: String? = nil) async throws -> TestClient.Response {
                try await send(deployment, method, path, headers: token.map(bearer) ?? [:], body: body)
            }
            func fake(_ path: String) async throws -> [String: Any] {
                let output = try await Shell.run("/usr/bin/curl", ["-s", "-f", "-X", "POST", brokerDeployment.fakesURL + path])
                return try #require(try JSONSerialization.jsonObject(with: Data(output.utf8)) as? [String: Any])
            }
            let email = "journey@example.com"
            let first = try await signIn(deployment, email)

            // Refresh: a new pair; the new access token works.
            let refreshed = try await call(.post, "/v1/auth/refresh", nil, #"{"refresh_token":"\#(first.refresh)"}"#)
            try #require(refreshed.status == .ok, "\(refreshed.text.prefix(300))")
            let access = try #require(try refreshed.jsonObject()["access_token"] as? String)
            let refresh = try #require(try refreshed.jsonObject()["refresh_token"] as? String)
            let me = try await call(.get, "/v1/me", access)
            let userID = try #require(try me.jsonObject()["id"] as? String)

            // Alpaca: link, account, positions, an order placed, listed and cancelled.
            let grant = try await authorizeAlpaca(deployment, access)
            #expect(try await call(.post, "/v1/alpaca/oauth/callback", access, #"{"code":"\#(grant.code)","state":"\#(grant.state)"}"#).status == .ok)
            #expect(try await call(.get, "/v1/alpaca/account", access).status == .ok)
            let positions = try await call(.get, "/v1/alpaca/positions", access)
            #expect(positions.status == .ok, "\(positions.text.prefix(300))")
            let order = try await call(.post, "/v1/alpaca/orders", access, #"{"symbol":"MSFT","side":"buy","type":"limit","time_in_force":"day","qty":"2","limit_price":"10.50"}"#)
            try #require(order.status == .created, "\(order.text.prefix(300))")
            let orderID = try #require(try order.jsonObject()["id"] as? String)
            let orders = try await call(.get, "/v1/alpaca/orders", access)
            #expect(orders.status == .ok && orders.text.contains(orderID))
            #expect(try await call(.delete, "/v1/alpaca/orders/\(orderID)", access).status == .noContent)

            // A bank through Financial Connections: session, completed at the fake, linked, balances.
            let session = try await call(.post, "/v1/stripe/financial-connections/sessions", access, "{}")
            try #require(session.status == .created, "\(session.text.prefix(300))")
            let sessionID = try #require(try session.jsonObject()["session_id"] as? String)
            _ = try await fake("/_fake/stripe/financial_connections/sessions/\(sessionID)/complete?accounts=2")
            let linked = try await call(.post, "/v1/stripe/financial-connections/accounts", access, #"{"session_id":"\#(sessionID)"}"#)
            #expect(linked.status == .ok, "\(linked.text.prefix(300))")
            let balances = try await call(.get, "/v1/stripe/balances", access)
            let accounts = try balances.jsonObject()["accounts"] as? [[String: Any]]
            #expect(balances.status == .ok && accounts?.count == 2, "\(balances.text.prefix(300))")

            // Subscription: checkout, completed at the fake, its signed webhook through the edge.
            let checkout = try await call(.post, "/v1/stripe/subscription/checkout", access, "{}")
            try #require(checkout.status == .created, "\(checkout.text.prefix(300))")
            let checkoutID = try #require(try checkout.jsonObject()["session_id"] as? String)
            #expect(try await call(.get, "/v1/users/\(userID)/subscription", access).text.contains(#""status":"none""#))
            let delivery = try await fake("/_fake/stripe/checkout/sessions/\(checkoutID)/complete")
            let payload = try #require(delivery["payload"] as? String)
            let signature = try #require(delivery["stripe_signature"] as? String)
            let webhook = try await send(deployment, .post, "/v1/stripe/webhook", headers: [HTTPField.Name("Stripe-Signature")!: signature], body: payload)
            #expect(webhook.status == .ok, "\(webhook.text.prefix(300))")
            let subscription = try await call(.get, "/v1/users/\(userID)/subscription", access)
            #expect(subscription.text.contains(#""status":"active""#), "\(subscription.text.prefix(300))")

            // A reset by the code that arrives by mail ends every session (R-6, C-2).
            #expect(try await call(.post, "/v1/auth/password/forgot", nil, #"{"email":"\#(email)"}"#).status == .accepted)
            let mailbox = deployment.directory + "/mail/new"
            var code: String?
            _ = try await eventually(within: .seconds(10)) {
                let files = (try? FileManager.default.contentsOfDirectory(atPath: mailbox)) ?? []
                let text = files.compactMap { try? String(contentsOfFile: mailbox + "/" + $0, encoding: .utf8) }.joined()
                code = text.matches(of: /\b(\d{6})\b/).last.map { String($0.1) }
                return code != nil
            }
            let resetCode = try #require(code, "no reset code in \(mailbox)")
            let newPassword = "Quiet-harbour-7-lanterns"
            let reset = try await call(.post, "/v1/auth/password/reset", nil, #"{"email":"\#(email)","code":"\#(resetCode)","new_password":"\#(newPassword)"}"#)
            #expect(reset.status == .noContent, "\(reset.text.prefix(300))")
            let oldAccessDead = try await eventually(within: .seconds(2)) { try await call(.get, "/v1/me", access).status == .unauthorized }
            #expect(oldAccessDead, "R-1: the old access token still works after the reset")
            #expect(try await call(.post, "/v1/auth/refresh", nil, #"{"refresh_token":"\#(refresh)"}"#).status == .unauthorized)
            #expect(try await call(.get, "/v1/alpaca/account", access).status == .unauthorized)
            let login = try await send(deployment, .post, "/v1/auth/login", body: #"{"email":"\#(email)","password":"\#(newPassword)"}"#)
            try #require(login.status == .ok)
            let fresh = try #require(try login.jsonObject()["access_token"] as? String)
            // The linked Alpaca account survives the reset (it belongs to the user, not the session).
            #expect(try await call(.get, "/v1/alpaca/account", fresh).status == .ok)

            // Logout ends this session at once.
            #expect(try await call(.post, "/v1/auth/logout", fresh).status == .noContent)
            let loggedOut = try await eventually(within: .seconds(2)) { try await call(.get, "/v1/me", fresh).status == .unauthorized }
            #expect(loggedOut)
        }
    }
}

// MARK: Faults under load

/// What a steady load through the edge saw: per route, the statuses, the slowest answer, and when
/// each route last answered 200.
final class LoadTally: Sendable {
    struct State {
        var statuses: [String: [Int: Int]] = [:]
        var failures: [String] = []
        var slowest: Duration = .zero
        var lastOK: [String: ContinuousClock.Instant] = [:]
        var confirmedOrders: [String] = []
        var stopped = false
        /// The drill step under way, and what each step's requests answered.
        var phase = "steady"
        var statusesByPhase: [String: [Int: Int]] = [:]
    }
    let state = Mutex(State())

    var stopped: Bool { state.withLock { $0.stopped } }
    func stop() { state.withLock { $0.stopped = true } }
    func enter(_ phase: String) { state.withLock { $0.phase = phase } }
    func confirmed(order id: String) { state.withLock { $0.confirmedOrders.append(id) } }

    var phase: String { state.withLock { $0.phase } }

    /// `phase`: the drill step under way when the request was sent.
    func record(_ route: String, phase: String, status: Int?, elapsed: Duration, error: String? = nil) {
        state.withLock { state in
            state.slowest = max(state.slowest, elapsed)
            if let status {
                state.statuses[route, default: [:]][status, default: 0] += 1
                state.statusesByPhase["\(route) (\(phase))", default: [:]][status, default: 0] += 1
                if status == 200 { state.lastOK[route] = .now }
            } else {
                state.failures.append("\(route): \(error ?? "no answer")")
            }
        }
    }
}

extension EdgeProcessTests {
    /// Issue-level fault drill (R-16, X-1): under a steady mixed load through the edge, auth, the
    /// broker and the vault are each killed with SIGKILL and started again, and PostgreSQL is
    /// restarted. While a dependency is down the edge answers 503 and nothing else (no other 5xx,
    /// no connection error, nothing slower than the RPC deadline); within 2 s of the dependency
    /// accepting again, its routes answer 200; every order the API confirmed is at the fake, none
    /// twice; a refresh token rotated across an auth restart works once and is refused the second time.
    @Test func killedServicesAnswer503AndRecoverWithin2s_R16() async throws {
        guard getuid() == 0 else {
            print("SKIP killedServicesAnswer503AndRecoverWithin2s_R16: needs root to create service users (uid \(getuid()))")
            return
        }
        // Limits far above the load (the drill is about faults, not rate limits).
        try await withFourServices(edgeArguments: ["--rate-limit-multiplier", "1000"]) { deployment, brokerDeployment, processes in
            var (vault, broker, auth) = (processes[1], processes[2], processes[3])
            var restarted: [SpawnedProcess] = []
            defer { for process in restarted { process.kill() } }
            let session = try await signIn(deployment, "drill@example.com")
            let grant = try await authorizeAlpaca(deployment, session.access)
            try #require(try await send(deployment, .post, "/v1/alpaca/oauth/callback", headers: bearer(session.access),
                                        body: #"{"code":"\#(grant.code)","state":"\#(grant.state)"}"#).status == .ok)

            let tally = LoadTally()
            let routes: [(name: String, method: HTTPRequest.Method, path: String, body: String?)] = [
                ("me", .get, "/v1/me", nil),
                ("account", .get, "/v1/alpaca/account", nil),
                ("order", .post, "/v1/alpaca/orders", #"{"symbol":"AAPL","side":"buy","type":"limit","time_in_force":"day","qty":"1","limit_price":"1.00"}"#),
            ]
            let load = Task {
                await withTaskGroup(of: Void.self) { group in
                    for worker in 0..<6 {
                        let route = routes[worker % routes.count]
                        // A fixed rate per worker (about 10 reads and 3 orders a second): a steady
                        // load, and fewer orders than one listing returns.
                        let interval: Duration = route.name == "order" ? .milliseconds(300) : .milliseconds(100)
                        group.addTask {
                            while !tally.stopped {
                                let started = ContinuousClock.now
                                let phase = tally.phase
                                do {
                                    let response = try await self.send(deployment, route.method, route.path, headers: bearer(session.access), body: route.body)
                                    tally.record(route.name, phase: phase, status: Int(response.status.code), elapsed: .now - started)
                                    if route.name == "order", response.status == .created, let id = try? response.jsonObject()["id"] as? String {
                                        tally.confirmed(order: id)
                                    }
                                } catch {
                                    tally.record(route.name, phase: phase, status: nil, elapsed: .now - started, error: "\(error)")
                                }
                                try? await Task.sleep(until: started + interval)
                            }
                        }
                    }
                }
            }

            /// The route answered 200 after `instant`.
            func recovered(_ route: String, after instant: ContinuousClock.Instant) -> Bool {
                tally.state.withLock { ($0.lastOK[route] ?? instant) > instant }
            }
            /// Kills, waits until `route` has failed, restarts, and returns the seconds from the
            /// dependency accepting again to the route's first 200.
            func drill(_ name: String, route: String, socketPath: String, kill: () async throws -> Void, restart: () async throws -> Void) async throws -> Double {
                try #require(try await eventually(within: .seconds(10)) { recovered(route, after: .now - .milliseconds(500)) }, "\(name): \(route) not answering before the kill")
                tally.enter("\(name) down")
                try await kill()
                let killed = ContinuousClock.now
                let noticed = try await eventually(within: .seconds(10)) {
                    tally.state.withLock { ($0.statusesByPhase["\(route) (\(name) down)"]?[503] ?? 0) > 0 } && !recovered(route, after: killed + .milliseconds(200))
                }
                #expect(noticed, "\(name) down: \(route) never answered 503")
                tally.enter("\(name) restarting")
                try await restart()
                _ = try await eventually(within: .seconds(20)) { await unixSocketAccepts(socketPath) }
                tally.enter("\(name) back")
                let back = ContinuousClock.now
                let ok = try await eventually(within: .seconds(10)) { recovered(route, after: back) }
                #expect(ok, "\(name) back: \(route) did not answer 200 within 10 s")
                let lastOK = tally.state.withLock { $0.lastOK[route] } ?? back
                return Double((lastOK - back).components.attoseconds) / 1e18 + Double((lastOK - back).components.seconds)
            }

            var recovery: [String: Double] = [:]
            // A refresh token rotated across an auth restart: the new one works once.
            recovery["auth"] = try await drill("auth", route: "me", socketPath: deployment.authSocket, kill: { auth.kill() }, restart: {
                auth = try startAuth(deployment)
                restarted.append(auth)
            })
            let rotated = try await send(deployment, .post, "/v1/auth/refresh", body: #"{"refresh_token":"\#(session.refresh)"}"#)
            #expect(rotated.status == .ok, "refresh across the auth restart: \(rotated.status)")
            // Presented again: within the grace window auth hands back the same successor (C-2),
            // never a second one; past it, the reuse is refused.
            let again = try await send(deployment, .post, "/v1/auth/refresh", body: #"{"refresh_token":"\#(session.refresh)"}"#)
            let successor = try rotated.jsonObject()["refresh_token"] as? String
            let againToken = again.status == .ok ? try again.jsonObject()["refresh_token"] as? String : nil
            #expect(again.status == .unauthorized || (again.status == .ok && againToken == successor), "second presentation: \(again.status)")

            recovery["broker"] = try await drill("broker", route: "account", socketPath: brokerDeployment.brokerSocket, kill: { broker.kill() }, restart: {
                broker = try startBroker(deployment, brokerDeployment)
                restarted.append(broker)
            })
            recovery["vault"] = try await drill("vault", route: "account", socketPath: brokerDeployment.vaultSocket, kill: { vault.kill() }, restart: {
                vault = try startVault(deployment, brokerDeployment)
                restarted.append(vault)
            })
            let pgData = String(deployment.postgresSocket[..<deployment.postgresSocket.lastIndex(of: "/")!]) + "/data"
            recovery["postgres"] = try await drill("postgres", route: "me", socketPath: deployment.postgresSocket, kill: {
                _ = try await Shell.run("/usr/sbin/runuser", ["-u", "postgres", "--", "/usr/lib/postgresql/15/bin/pg_ctl", "-D", pgData, "stop", "-m", "immediate"])
            }, restart: {
                // The options scripts/pg-harness started it with: same port and socket directory.
                let port = String(deployment.postgresSocket.split(separator: ".").last!)
                let socketDirectory = String(deployment.postgresSocket[..<deployment.postgresSocket.lastIndex(of: "/")!])
                _ = try await Shell.run("/usr/sbin/runuser", ["-u", "postgres", "--", "/usr/lib/postgresql/15/bin/pg_ctl", "-D", pgData, "start", "-w",
                                                              "-l", socketDirectory + "/restart.log", "-o", "-p \(port) -k \(socketDirectory) -c listen_addresses=''"])
            })
            tally.stop()
            await load.value

            let state = tally.state.withLock { $0 }
            print("fault drill: statuses \(state.statuses), slowest \(state.slowest), recovery s \(recovery)")
            print("fault drill by step: \(state.statusesByPhase.sorted { $0.key < $1.key })")
            let unexpected = state.statuses.values.contains { statuses in !statuses.keys.allSatisfy { [200, 201, 503].contains($0) } }
            if unexpected {
                // What the edge logged for those answers, and the services' last lines, for the CI log.
                let edgeLines = processes[4].output.split(separator: "\n").filter { $0.contains(#""status":"5"#) && !$0.contains(#""status":"503""#) }
                print("fault drill: edge lines of unexpected answers: \(edgeLines.prefix(5))")
                // Every service line that names one of those requests (the request id crosses the RPC hop).
                let ids = edgeLines.compactMap { line in line.range(of: #""request_id":"[^"]+""#, options: .regularExpression).map { String(line[$0]) } }
                for (name, process) in [("auth", auth), ("broker", broker), ("vault", vault)] {
                    let lines = process.output.split(separator: "\n").filter { line in ids.contains { line.contains($0) } }
                    print("fault drill: \(name)'s lines for them: \(lines.prefix(10))")
                    print("fault drill: \(name)'s last lines: \(process.output.split(separator: "\n").filter { !$0.contains("Connection creation failed") }.suffix(15))")
                }
            }
            #expect(state.failures.isEmpty, "requests without an HTTP answer: \(state.failures.prefix(5))")
            // 503 while a dependency is down. With PostgreSQL down, a request waiting for a
            // connection fails UNAVAILABLE once the pool has handed out none for
            // `--db-connection-wait-ms`. One residual
            // exception, kept visible here: in about one drill in eight, one request sent just as
            // PostgreSQL stops still waits out the 5 s RPC deadline (504) after it got a
            // connection; the lines printed above name it when it happens.
            for (step, statuses) in state.statusesByPhase {
                let allowed: Set<Int> = step.hasSuffix("(postgres down)") ? [200, 201, 503, 504] : [200, 201, 503]
                #expect(statuses.keys.allSatisfy { allowed.contains($0) }, "\(step) answered \(statuses)")
                if step.hasSuffix("(postgres down)") { #expect((statuses[504] ?? 0) <= 1, "\(step) answered \(statuses)") }
            }
            #expect(state.slowest < .seconds(7), "slowest answer \(state.slowest): past the 5 s RPC deadline")
            for (dependency, seconds) in recovery { #expect(seconds <= 2, "\(dependency): \(seconds) s from back to the first 200") }

            // Every confirmed order is at the fake, each once.
            let confirmed = state.confirmedOrders
            let listed = try await send(deployment, .get, "/v1/alpaca/orders?status=all&limit=500", headers: bearer(session.access))
            let ids = ((try? listed.jsonObject()["orders"] as? [[String: Any]]) ?? []).compactMap { $0["id"] as? String }
            #expect(!confirmed.isEmpty && Set(confirmed).isSubset(of: Set(ids)), "confirmed \(confirmed.count), listed \(ids.count): \(listed.text.prefix(300))")
            #expect(Set(confirmed).count == confirmed.count && Set(ids).count == ids.count)
        }
    }
}

// MARK: The access matrix (X-1)

extension EdgeProcessTests {
    /// One probe per cell: as `user`, read a secret, connect to a socket, or call every method of a
    /// service with a payload that cannot decode (so an admitted call fails at decoding and never
    /// runs: no side effect), counting the methods that answer anything but PERMISSION_DENIED.
    func checkAccessMatrix(_ deployment: Deployment, _ broker: BrokerDeployment) async throws {
        let directory = deployment.directory
        let users: [(row: String, user: String)] = [
            ("clau-edge", Self.edgeUser), ("clau-auth", Self.authUser), ("clau-vault", Self.vaultUser), ("clau-broker", Self.brokerUser),
        ]
        let secrets: [(column: String, path: String, owner: String)] = [
            ("read JWT signing key", directory + "/auth-keys/jwt.pem", Self.authUser),
            ("read Fernet keys", directory + "/vault-keys/fernet-keys", Self.vaultUser),
            ("read Stripe secret key", directory + "/broker-credentials/stripe-secret-key", Self.brokerUser),
            ("read TLS private key", deployment.credentials + "/tls-key", Self.edgeUser),
        ]
        // Each server, its methods (generated from the proto), and the uids whose group may traverse
        // its socket directory (its clients, and its own uid).
        let services: [(name: String, socket: String, methods: [String], clients: Set<String>)] = [
            ("auth", deployment.authSocket, AuthAPI.methodNames, [Self.edgeUser, Self.authUser]),
            ("vault", broker.vaultSocket, VaultAPI.methodNames, [Self.brokerUser, Self.vaultUser]),
            ("broker", broker.brokerSocket, BrokerAPI.methodNames, [Self.edgeUser, Self.brokerUser]),
        ]
        // The allowlists each process was started with (--edge-user, --broker-user, --admin-user
        // root), through the policies generated from the proto's `callers:` lines.
        let policies: [String: RPCAccessPolicy] = try [
            "auth": AuthAPI.accessPolicy(callers: AuthRPCCallers(edge: CallerAllowlist(uids: [try #require(systemUser(Self.edgeUser)?.uid)]))),
            "vault": VaultAPI.accessPolicy(callers: VaultRPCCallers(broker: CallerAllowlist(uids: [try #require(systemUser(Self.brokerUser)?.uid)]))),
            "broker": BrokerAPI.accessPolicy(callers: BrokerRPCCallers(edge: CallerAllowlist(uids: [try #require(systemUser(Self.edgeUser)?.uid)]), admin: CallerAllowlist(uids: [0]))),
        ]
        let client = try copyFixtureToWorldReadableDirectory("rpc_call.py")

        var header = ["uid"] + secrets.map(\.column)
        header += services.map { "connect \($0.name).sock" } + services.map { "\($0.name) methods admitted" }
        var measured: [[String]] = []
        var intended: [[String]] = []
        for (row, user) in users {
            let uid = try #require(systemUser(user)?.uid)
            var cells = [row]
            var expected = [row]
            for secret in secrets {
                cells.append(await succeeds(as: user, ["/bin/cat", secret.path]) ? "yes" : "no")
                expected.append(user == secret.owner ? "yes" : "no")
            }
            var reachable: [String: Bool] = [:]
            for service in services {
                let canConnect = await unixSocketAccepts(service.socket, as: user)
                reachable[service.name] = canConnect
                cells.append(canConnect ? "yes" : "no")
                expected.append(service.clients.contains(user) ? "yes" : "no")
            }
            for service in services {
                let policy = try #require(policies[service.name])
                let intendedMethods = service.methods.filter { policy.allows(method: $0, peer: PeerCredentials(pid: 1, uid: uid, gid: 1)) }
                expected.append(service.clients.contains(user) ? Self.summary(admitted: intendedMethods, of: service.methods) : "cannot connect")
                guard reachable[service.name] == true else { cells.append("cannot connect"); continue }
                let calls = service.methods.flatMap { [$0, "ff"] }
                let output = try await Shell.run("/usr/bin/setpriv", ["--reuid=\(user)", "--regid=\(user)", "--init-groups", "--no-new-privs", "/usr/bin/python3", client, service.socket] + calls)
                let codes = output.split(separator: "\n").compactMap { line in
                    (try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])?["code"] as? Int
                }
                try #require(codes.count == service.methods.count, "\(row) → \(service.name): \(output.suffix(500))")
                let admitted = zip(service.methods, codes).filter { $0.1 != Int(RPCError.Code.permissionDenied.rawValue) }.map(\.0)
                cells.append(Self.summary(admitted: admitted, of: service.methods))
            }
            measured.append(cells)
            intended.append(expected)
        }
        #expect(measured == intended, "measured:\n\(Self.markdownTable(header, measured))\nintended:\n\(Self.markdownTable(header, intended))")

        // The document carries the measured table; a difference fails until it is regenerated.
        let table = Self.markdownTable(header, measured)
        let documentPath = repositoryRoot + "/docs/threat-model.md"
        let document = try String(contentsOfFile: documentPath, encoding: .utf8)
        let begin = "<!-- access-matrix:begin (generated by fourServicesAsFourUsersServeTheBrokerRoutesEndToEnd_X1_C7) -->\n"
        let end = "<!-- access-matrix:end -->"
        let start = try #require(document.range(of: begin), "docs/threat-model.md has no access-matrix markers")
        let stop = try #require(document.range(of: end, range: start.upperBound..<document.endIndex))
        let current = String(document[start.upperBound..<stop.lowerBound])
        if current != table {
            if ProcessInfo.processInfo.environment["CLAU_UPDATE_THREAT_MODEL"] == "1" {
                try (document[..<start.upperBound] + table + document[stop.lowerBound...]).write(toFile: documentPath, atomically: true, encoding: .utf8)
            } else {
                Issue.record("docs/threat-model.md's access matrix differs from the measurement; rerun with CLAU_UPDATE_THREAT_MODEL=1 to write it:\n\(table)")
            }
        }
    }

    /// "all N", "none", or the shorter of the admitted list and the "all but" list.
    static func summary(admitted: [String], of methods: [String]) -> String {
        let short = { (names: [String]) in names.map { String($0.split(separator: "/").last ?? "") }.joined(separator: ", ") }
        if admitted.isEmpty { return "none of \(methods.count)" }
        if admitted.count == methods.count { return "all \(methods.count)" }
        let refused = methods.filter { !admitted.contains($0) }
        return refused.count <= admitted.count
            ? "\(admitted.count) of \(methods.count): all but \(short(refused))"
            : "\(admitted.count) of \(methods.count): \(short(admitted))"
    }

    static func markdownTable(_ header: [String], _ rows: [[String]]) -> String {
        ([header, header.map { _ in "---" }] + rows).map { "| " + $0.joined(separator: " | ") + " |" }.joined(separator: "\n") + "\n"
    }
}
