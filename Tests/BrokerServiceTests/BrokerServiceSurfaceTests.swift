import RPC
import Testing

/// The broker's service surface as generated from Protos/broker.proto: every method has a rule,
/// user methods admit the edge only, and the rotation methods admit the edge's admin route and
/// operators — never another service.
@Suite("Broker RPC surface", .timeLimit(.minutes(5)))
struct BrokerServiceSurfaceTests {
    let edgeUID: UInt32 = 100
    let adminUID: UInt32 = 300
    let vaultUID: UInt32 = 400
    var policy: RPCAccessPolicy {
        BrokerAPI.accessPolicy(callers: BrokerRPCCallers(edge: CallerAllowlist(uids: [edgeUID]), admin: CallerAllowlist(uids: [adminUID])))
    }

    /// Rotation methods the edge's admin route and operators both call.
    static let operatorMethods: Set<String> = [BrokerAPI.rewrapAll.fullName, BrokerAPI.rotationStatus.fullName, BrokerAPI.beginKeyRotation.fullName]
    /// Removing a key is destructive: operators on the host only, never through the edge.
    static let operatorOnlyMethods: Set<String> = [BrokerAPI.retireKey.fullName]

    func callers(of method: String) -> Set<UInt32> {
        Set([edgeUID, adminUID, vaultUID, 0].filter { policy.allows(method: method, peer: PeerCredentials(pid: 1, uid: $0, gid: 9999)) })
    }

    @Test func everyMethodHasARuleUnderTheBrokerService_X1() {
        #expect(Set(policy.rules.keys) == Set(BrokerAPI.methodNames))
        #expect(BrokerAPI.methodNames.count == 20)
        #expect(Set(BrokerAPI.methodNames).count == BrokerAPI.methodNames.count)
        #expect(BrokerAPI.methodNames.allSatisfy { $0.hasPrefix("clau.broker.Broker/") })
    }

    @Test func userMethodsAdmitTheEdgeOnly_X1() {
        let userMethods = BrokerAPI.methodNames.filter { !Self.operatorMethods.contains($0) && !Self.operatorOnlyMethods.contains($0) }
        #expect(userMethods.count == 16)
        for method in userMethods {
            #expect(callers(of: method) == [edgeUID], "\(method)")
        }
        // The ones that reach a user's stored credential or money, named so a proto edit that
        // widens them fails here by name.
        let sensitive = [
            BrokerAPI.placeAlpacaOrder.fullName, BrokerAPI.cancelAlpacaOrder.fullName,
            BrokerAPI.completeAlpacaOAuth.fullName, BrokerAPI.handleStripeWebhook.fullName,
        ]
        for method in sensitive {
            #expect(!callers(of: method).contains(adminUID), "\(method)")
        }
    }

    @Test func rotationMethodsAdmitTheEdgeAndOperatorsOnly_X1_R11() {
        for method in Self.operatorMethods {
            #expect(callers(of: method) == [edgeUID, adminUID], "\(method)")
        }
        for method in Self.operatorOnlyMethods {
            #expect(callers(of: method) == [adminUID], "\(method)")
        }
    }

    @Test func anEmptyRoleAdmitsNobody_X1() {
        let edgeOnly = BrokerAPI.accessPolicy(callers: BrokerRPCCallers(edge: CallerAllowlist(uids: [edgeUID])))
        #expect(!edgeOnly.allows(method: BrokerAPI.rewrapAll.fullName, peer: PeerCredentials(pid: 1, uid: adminUID, gid: 9999)))
        #expect(!edgeOnly.allows(method: BrokerAPI.rewrapAll.fullName, peer: PeerCredentials(pid: 1, uid: 0, gid: 0)))
        #expect(!edgeOnly.allows(method: "clau.broker.Broker/NoSuchMethod", peer: PeerCredentials(pid: 1, uid: edgeUID, gid: 9999)))
    }
}
