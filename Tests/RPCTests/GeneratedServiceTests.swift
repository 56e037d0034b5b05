import RPC
import Testing

/// The service surface generated from Protos/*.proto (scripts/gen-rpc-services.py): every method
/// has a rule, and the rule is what the proto's `callers:` line says.
@Suite("Generated RPC services", .timeLimit(.minutes(5)))
struct GeneratedServiceTests {
    let edge = CallerAllowlist(uids: [100])
    let broker = CallerAllowlist(uids: [200])
    let admin = CallerAllowlist(uids: [300])

    func callers(of method: String, in policy: RPCAccessPolicy) -> Set<UInt32> {
        [100, 200, 300].filter { policy.allows(method: method, peer: PeerCredentials(pid: 1, uid: $0, gid: 9999)) }.reduce(into: []) { $0.insert($1) }
    }

    @Test func everyAuthMethodHasARuleAndOnlyOperatorsCreateAdmins_X1() {
        let policy = AuthAPI.accessPolicy(callers: AuthRPCCallers(edge: edge, admin: admin))
        #expect(Set(policy.rules.keys) == Set(AuthAPI.methodNames))
        #expect(AuthAPI.methodNames.count == 33)
        #expect(callers(of: AuthAPI.createAdmin.fullName, in: policy) == [300], "never through the network")
        #expect(callers(of: AuthAPI.login.fullName, in: policy) == [100])
        #expect(callers(of: AuthAPI.blockIP.fullName, in: policy) == [100, 300])
        #expect(AuthAPI.methodNames.allSatisfy { $0.hasPrefix("clau.auth.Auth/") })
    }

    @Test func onlyTheBrokerMayDecrypt_X1() {
        let policy = VaultAPI.accessPolicy(callers: VaultRPCCallers(broker: broker, admin: admin))
        #expect(Set(policy.rules.keys) == Set(VaultAPI.methodNames))
        #expect(callers(of: VaultAPI.decrypt.fullName, in: policy) == [200])
        for method in [VaultAPI.encrypt.fullName, VaultAPI.rewrap.fullName, VaultAPI.keyStatus.fullName] {
            #expect(callers(of: method, in: policy) == [200, 300], "\(method)")
        }
    }

    @Test func anEmptyRoleAdmitsNobody() {
        let policy = VaultAPI.accessPolicy(callers: VaultRPCCallers(broker: broker))
        #expect(callers(of: VaultAPI.keyStatus.fullName, in: policy) == [200])
        #expect(!policy.allows(method: VaultAPI.keyStatus.fullName, peer: PeerCredentials(pid: 1, uid: 0, gid: 0)))
    }
}
