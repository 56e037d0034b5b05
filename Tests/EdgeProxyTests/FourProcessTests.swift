import Foundation
import HTTPTypes
import HummingbirdTesting
import NIOCore
import TestSupport
import Testing
@testable import EdgeProxy

/// All four services as installed binaries, each as its own system user with the socket layout of
/// deploy/ (X-1, SPEC §1): the edge reaches auth and the broker, the broker reaches the vault and
/// PostgreSQL (schema broker only), the fakes stand in for Alpaca and Stripe over real HTTP. In
/// the `EdgeProcessTests` suite so its service users are never created and removed concurrently.
extension EdgeProcessTests {
    static let vaultUser = "clau-t4-vault"
    static let brokerUser = "clau-t4-broker"

    struct BrokerDeployment {
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
        let vault = try SpawnedProcess.start(as: Self.vaultUser, directory + "/clau-vault", [
            "--socket", broker.vaultSocket, "--socket-mode", "0666", "--key-file", directory + "/vault-keys/fernet-keys", "--broker-user", Self.brokerUser,
        ], outputPath: directory + "/vault.log")
        try await waitForFile(broker.vaultSocket)
        let brokerProcess = try SpawnedProcess.start(as: Self.brokerUser, directory + "/clau-broker", [
            "--socket", broker.brokerSocket, "--socket-mode", "0666", "--vault-socket", broker.vaultSocket,
            "--db-socket", deployment.postgresSocket, "--db-connections", "2", "--edge-user", Self.edgeUser,
            "--alpaca-api-url", broker.fakesURL, "--alpaca-token-url", broker.fakesURL + "/oauth/token", "--alpaca-authorize-url", broker.fakesURL + "/oauth/authorize",
            "--alpaca-client-id", "fake-alpaca-client", "--alpaca-redirect-uri", broker.redirectURI,
            "--stripe-api-url", broker.fakesURL, "--stripe-price", "price_clauMonthly",
            "--checkout-success-url", "https://app.clau.invalid/paid", "--checkout-cancel-url", "https://app.clau.invalid/cancelled",
        ], outputPath: directory + "/broker.log", environment: ["CREDENTIALS_DIRECTORY": directory + "/broker-credentials"])
        do {
            try await waitForFile(broker.brokerSocket, timeout: .seconds(20))
        } catch {
            throw HarnessError("broker did not start: \(brokerProcess.output.suffix(2000)) vault: \(vault.output.suffix(1000))")
        }
        return [fakes, vault, brokerProcess]
    }

    func startEdge(_ deployment: Deployment, brokerSocket: String) throws -> SpawnedProcess {
        try SpawnedProcess.start(as: Self.edgeUser, deployment.directory + "/clau-edge", [
            "--host", "127.0.0.1", "--port", "\(deployment.port)", "--redirect-port", "0",
            "--auth-socket", deployment.authSocket, "--broker-socket", brokerSocket, "--public-base-url", "https://localhost:\(deployment.port)",
        ], outputPath: deployment.directory + "/edge.log", environment: ["CREDENTIALS_DIRECTORY": deployment.credentials])
    }

    /// `command` run as `user` with its own groups (setpriv); true when it exited 0.
    func succeeds(as user: String, _ command: [String]) async -> Bool {
        (try? await Shell.run("/usr/bin/setpriv", ["--reuid=\(user)", "--regid=\(user)", "--init-groups", "--no-new-privs"] + command)) != nil
    }

    @Test func fourServicesAsFourUsersServeTheBrokerRoutesEndToEnd_X1_C7() async throws {
        guard getuid() == 0 else {
            print("SKIP fourServicesAsFourUsersServeTheBrokerRoutesEndToEnd_X1_C7: needs root to create service users (uid \(getuid()))")
            return
        }
        defer { for user in [Self.edgeUser, Self.authUser, Self.vaultUser, Self.brokerUser] { removeSystemUser(user) } }
        let deployment = try await deploy()
        defer { deployment.cleanUp() }
        let brokerDeployment = try await deployBroker(deployment)
        let auth = try startAuth(deployment)
        try await waitForFile(deployment.authSocket)
        let backends = try await startVaultBrokerAndFakes(deployment, brokerDeployment)
        let edge = try startEdge(deployment, brokerSocket: brokerDeployment.brokerSocket)
        defer { for process in [edge, auth] + backends { process.kill() } }
        let ready = try await eventually(within: .seconds(30)) { (try? await send(deployment, .get, "/readyz").status) == .ok }
        try #require(ready, "edge not ready: \(edge.output.suffix(1500)) broker: \(backends[2].output.suffix(1500))")

        // Each process runs as its own user.
        #expect(try uid(of: backends[1]) == systemUser(Self.vaultUser)?.uid)
        #expect(try uid(of: backends[2]) == systemUser(Self.brokerUser)?.uid)
        #expect(try uid(of: edge) == systemUser(Self.edgeUser)?.uid)

        func session(_ email: String) async throws -> String {
            let password = "Tq7!vexing-Walrus-orbit"
            _ = try await send(deployment, .post, "/v1/auth/register", body: #"{"email":"\#(email)","password":"\#(password)","full_name":"Four Process"}"#)
            let login = try await send(deployment, .post, "/v1/auth/login", body: #"{"email":"\#(email)","password":"\#(password)"}"#)
            try #require(login.status == .ok, "\(login.text.prefix(300))")
            return try #require(try login.jsonObject()["access_token"] as? String)
        }
        let alice = try await session("alice4@example.com")
        let bob = try await session("bob4@example.com")

        // Alpaca OAuth through the edge, the broker, the vault and the fake.
        func authorize(_ token: String) async throws -> (code: String, state: String) {
            let authorize = try await send(deployment, .get, "/v1/alpaca/oauth/authorize-url", headers: bearer(token))
            try #require(authorize.status == .ok, "\(authorize.text.prefix(300))")
            let url = try #require(try authorize.jsonObject()["url"] as? String)
            let location = try await Shell.run("/usr/bin/curl", ["-s", "-o", "/dev/null", "-w", "%{redirect_url}", url])
            let query = try #require(URLComponents(string: location)?.queryItems)
            return (try #require(query.first { $0.name == "code" }?.value), try #require(query.first { $0.name == "state" }?.value))
        }
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
        let connect = ["/usr/bin/python3", "-c", "import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])"]
        #expect(await succeeds(as: Self.brokerUser, connect + [brokerDeployment.vaultSocket]))
        #expect(!(await succeeds(as: Self.edgeUser, connect + [brokerDeployment.vaultSocket])))
        #expect(await succeeds(as: Self.edgeUser, connect + [brokerDeployment.brokerSocket]))
        #expect(!(await succeeds(as: Self.authUser, connect + [brokerDeployment.brokerSocket])))
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
    }
}
