#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Who is on the other end of a Unix socket, as the kernel reports it (`SO_PEERCRED`):
/// not something the peer can claim about itself.
public struct PeerCredentials: Sendable, Hashable, CustomStringConvertible {
    public var pid: Int32
    public var uid: UInt32
    public var gid: UInt32

    public init(pid: Int32, uid: UInt32, gid: UInt32) {
        self.pid = pid
        self.uid = uid
        self.gid = gid
    }

    /// This process, for the in-process transport.
    public static func currentProcess() -> PeerCredentials {
        PeerCredentials(pid: getpid(), uid: getuid(), gid: getgid())
    }

    public var description: String { "uid=\(uid) gid=\(gid) pid=\(pid)" }
}

/// The callers allowed to call one method: a peer is allowed when its uid or its primary gid
/// is listed.
public struct CallerAllowlist: Sendable, Hashable {
    public var uids: Set<UInt32>
    public var gids: Set<UInt32>

    public init(uids: Set<UInt32> = [], gids: Set<UInt32> = []) {
        self.uids = uids
        self.gids = gids
    }

    public func allows(_ peer: PeerCredentials) -> Bool {
        uids.contains(peer.uid) || gids.contains(peer.gid)
    }

    /// Both lists' callers (a method several caller roles may call).
    public static func + (lhs: CallerAllowlist, rhs: CallerAllowlist) -> CallerAllowlist {
        CallerAllowlist(uids: lhs.uids.union(rhs.uids), gids: lhs.gids.union(rhs.gids))
    }
}

/// Per-method caller allowlists. A method without a rule is denied to everyone: the
/// policy fails closed, so adding a handler never silently opens it.
public struct RPCAccessPolicy: Sendable {
    public var rules: [String: CallerAllowlist]

    public init(rules: [String: CallerAllowlist] = [:]) {
        self.rules = rules
    }

    public func allows(method: String, peer: PeerCredentials) -> Bool {
        rules[method]?.allows(peer) ?? false
    }

    /// Whether any rule admits `peer`, for any method. A peer no rule admits learns nothing about
    /// the service, not even which method names exist (``RPCServerCore/handle(_:peer:deadline:refusalAudited:)``).
    public func admitsAnyMethod(_ peer: PeerCredentials) -> Bool {
        rules.values.contains { $0.allows(peer) }
    }

    public mutating func allow(_ method: String, _ callers: CallerAllowlist) {
        allow(method, uids: callers.uids, gids: callers.gids)
    }

    public mutating func allow(_ method: String, uids: Set<UInt32> = [], gids: Set<UInt32> = []) {
        var rule = rules[method] ?? CallerAllowlist()
        rule.uids.formUnion(uids)
        rule.gids.formUnion(gids)
        rules[method] = rule
    }

    /// Parses `METHOD=uid:N,gid:M;METHOD2=uid:K` (whitespace ignored), the form used in service
    /// configuration files. Names are resolved to numbers by the caller before this point.
    public static func parse(_ text: String) throws(RPCAccessPolicyParseError) -> RPCAccessPolicy {
        var policy = RPCAccessPolicy()
        for rawRule in text.split(separator: ";") {
            let rule = rawRule.filter { !$0.isWhitespace }
            if rule.isEmpty { continue }
            let parts = rule.split(separator: "=", maxSplits: 1)
            guard parts.count == 2, parts[0].contains("/") else {
                throw RPCAccessPolicyParseError(rule: String(rule), problem: "expected METHOD=uid:N,gid:M")
            }
            var uids: Set<UInt32> = []
            var gids: Set<UInt32> = []
            for principal in parts[1].split(separator: ",") {
                let kv = principal.split(separator: ":", maxSplits: 1)
                guard kv.count == 2, let id = UInt32(kv[1]) else {
                    throw RPCAccessPolicyParseError(rule: String(rule), problem: "bad principal '\(principal)'")
                }
                switch kv[0] {
                case "uid": uids.insert(id)
                case "gid": gids.insert(id)
                default: throw RPCAccessPolicyParseError(rule: String(rule), problem: "principal must be uid:N or gid:N")
                }
            }
            policy.allow(String(parts[0]), uids: uids, gids: gids)
        }
        return policy
    }
}

public struct RPCAccessPolicyParseError: Error, Sendable, CustomStringConvertible {
    public var rule: String
    public var problem: String
    public var description: String { "invalid access rule '\(rule)': \(problem)" }
}
