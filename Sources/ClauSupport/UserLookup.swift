#if canImport(Glibc)
import Glibc
#endif

/// Resolves user and group names from configuration to ids, so allowlists name services
/// (`clau-broker`) rather than numbers that differ between machines.
public enum UserLookup {
    public static func uid(of nameOrID: String) throws(UserLookupError) -> uid_t {
        if let id = uid_t(nameOrID) { return id }
        guard let entry = getpwnam(nameOrID) else { throw .unknownUser(nameOrID) }
        return entry.pointee.pw_uid
    }

    public static func gid(of nameOrID: String) throws(UserLookupError) -> gid_t {
        if let id = gid_t(nameOrID) { return id }
        guard let entry = getgrnam(nameOrID) else { throw .unknownGroup(nameOrID) }
        return entry.pointee.gr_gid
    }
}

public enum UserLookupError: Error, Equatable, CustomStringConvertible {
    case unknownUser(String)
    case unknownGroup(String)

    public var description: String {
        switch self {
        case .unknownUser(let name): "no such user: \(name)"
        case .unknownGroup(let name): "no such group: \(name)"
        }
    }
}
