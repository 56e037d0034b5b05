import NIOCore
#if canImport(Glibc)
import Glibc
#endif

/// `struct ucred` as the kernel lays it out; Glibc does not export it to Swift.
private struct UCred {
    var pid: Int32 = 0
    var uid: UInt32 = 0
    var gid: UInt32 = 0
}

extension Channel {
    /// The connected peer's pid/uid/gid from SO_PEERCRED. Only valid on a connected socket
    /// (an accepted child channel, or a client after `connect`).
    func peerCredentials() -> EventLoopFuture<PeerCredentials> {
        guard let provider = self as? any SocketOptionProvider else {
            return eventLoop.makeFailedFuture(RPCFrameError.protocolViolation("not a socket channel"))
        }
        #if os(Linux)
        return provider.unsafeGetSocketOption(level: .socket, name: .init(rawValue: SO_PEERCRED)).map { (cred: UCred) in
            PeerCredentials(pid: cred.pid, uid: cred.uid, gid: cred.gid)
        }
        #else
        return eventLoop.makeFailedFuture(RPCFrameError.protocolViolation("SO_PEERCRED is Linux-only"))
        #endif
    }
}
