import Foundation
import RPC
import TestSupport
import Testing

@Suite("Caller allowlists (X-1)", .serialized, .timeLimit(.minutes(5)))
struct AccessPolicyTests {
    @Test func inProcessCallerOutsideAllowlistGetsPermissionDenied_X1() async throws {
        let core = RPCServerCore(router: Echo.router(), accessPolicy: Echo.openPolicy(uids: [4242]), logger: testLogger)
        let allowed = RPCClient(transport: InProcessTransport(server: core, peer: PeerCredentials(pid: 1, uid: 4242, gid: 4242)))
        #expect(try await allowed.call(Echo.echo, Echo.request("hi")).peerUid == 4242)

        let stranger = RPCClient(transport: InProcessTransport(server: core, peer: PeerCredentials(pid: 1, uid: 1000, gid: 1000)))
        let error = await #expect(throws: RPCError.self) { try await stranger.call(Echo.echo, Echo.request("hi")) }
        #expect(error?.code == .permissionDenied)
    }

    /// Refuse first: a peer that no rule admits gets the same PERMISSION_DENIED for a real method
    /// and for a name that does not exist, so it cannot probe the method list; an admitted peer
    /// still learns UNIMPLEMENTED for an unknown name.
    @Test func refusedPeerCannotTellRealMethodsFromUnknownOnes_X1() async throws {
        let core = RPCServerCore(router: Echo.router(), accessPolicy: Echo.openPolicy(uids: [4242]), logger: testLogger)
        let stranger = RPCClient(transport: InProcessTransport(server: core, peer: PeerCredentials(pid: 1, uid: 1000, gid: 1000)))
        let real = await #expect(throws: RPCError.self) { try await stranger.call(Echo.echo, Echo.request("hi")) }
        let unknown = await #expect(throws: RPCError.self) { try await stranger.call(Echo.unregistered, Echo.request("hi")) }
        #expect(real?.code == .permissionDenied && unknown?.code == .permissionDenied)
        #expect(real?.message == unknown?.message, "the same answer: \(String(describing: real)) / \(String(describing: unknown))")
        #expect(real?.message.contains("Echo") == false, "no method name echoed back")

        let allowed = RPCClient(transport: InProcessTransport(server: core, peer: PeerCredentials(pid: 1, uid: 4242, gid: 4242)))
        let admittedUnknown = await #expect(throws: RPCError.self) { try await allowed.call(Echo.unregistered, Echo.request("hi")) }
        #expect(admittedUnknown?.code == .unimplemented)
    }

    @Test func methodWithoutRuleIsDeniedToEveryone_X1() async throws {
        let core = RPCServerCore(router: Echo.router(), accessPolicy: RPCAccessPolicy(), logger: testLogger)
        let rpc = RPCClient(transport: InProcessTransport(server: core))
        let error = await #expect(throws: RPCError.self) { try await rpc.call(Echo.echo, Echo.request("hi")) }
        #expect(error?.code == .permissionDenied)
    }

    @Test func groupRuleAdmitsMembersOfThatPrimaryGroup() {
        let policy = try! RPCAccessPolicy.parse("clau.test.Echo/Echo = uid:10, gid:20; clau.test.Echo/Fail=uid:11")
        #expect(policy.allows(method: "clau.test.Echo/Echo", peer: PeerCredentials(pid: 0, uid: 99, gid: 20)))
        #expect(policy.allows(method: "clau.test.Echo/Echo", peer: PeerCredentials(pid: 0, uid: 10, gid: 99)))
        #expect(!policy.allows(method: "clau.test.Echo/Fail", peer: PeerCredentials(pid: 0, uid: 10, gid: 20)))
        #expect(throws: RPCAccessPolicyParseError.self) { try RPCAccessPolicy.parse("Echo=uid:1") }
        #expect(throws: RPCAccessPolicyParseError.self) { try RPCAccessPolicy.parse("a/b=user:1") }
    }

    @Test func deadlineIsEnforcedInProcess() async throws {
        let core = RPCServerCore(router: Echo.router(), accessPolicy: Echo.openPolicy(), logger: testLogger)
        let rpc = RPCClient(transport: InProcessTransport(server: core))
        let error = await #expect(throws: RPCError.self) {
            try await rpc.call(Echo.echo, Echo.request("slow", delayMillis: 2000), options: CallOptions(timeout: .milliseconds(50)))
        }
        #expect(error?.code == .deadlineExceeded)
    }

    /// Runs a client written from docs/rpc.md (Python, hand-rolled protobuf) as another uid.
    @Test func callerWithAnotherUidOverTheSocketGetsPermissionDenied_X1() async throws {
        guard getuid() == 0 else {
            print("SKIP callerWithAnotherUidOverTheSocketGetsPermissionDenied_X1: needs root to run the client as 'nobody' (running as uid \(getuid()))")
            return
        }
        let nobody = try #require(systemUser("nobody")).uid
        let script = try copyFixtureToWorldReadableDirectory("rpc_call.py")
        try await withServerAndClient(policy: Echo.openPolicy(uids: [0]), configure: { $0.socketMode = 0o666 }) { _, _, path in
            let asNobody = try await Shell.run("/usr/bin/setpriv", ["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--no-new-privs", "/usr/bin/python3", script, path, "clau.test.Echo/Echo", "1203686921"])
            let refused = try JSONSerialization.jsonObject(with: Data(asNobody.utf8)) as? [String: Any]
            #expect(refused?["code"] as? Int == Int(RPCError.Code.permissionDenied.rawValue), "uid \(nobody) must be refused: \(asNobody)")
            // Refuse first over the socket too: an unknown method name gets the very same reply.
            let probing = try await Shell.run("/usr/bin/setpriv", ["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--no-new-privs", "/usr/bin/python3", script, path, "clau.test.Echo/NoSuchMethod", "1203686921"])
            #expect(probing == asNobody, "unknown and real methods answered alike: \(probing) vs \(asNobody)")

            let asRoot = try await Shell.run("/usr/bin/python3", [script, path, "clau.test.Echo/Echo", "1203686921"])
            let accepted = try JSONSerialization.jsonObject(with: Data(asRoot.utf8)) as? [String: Any]
            #expect(accepted?["code"] as? Int == 0, "root is on the allowlist: \(asRoot)")
        }
    }
}

