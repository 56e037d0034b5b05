import ClauSupport
import Foundation
import Testing
@testable import EdgeProxy

/// sd_listen_fds(3) as the edge reads it, and the checks on what it was handed (C-10, C-17).
@Suite("Edge: socket activation", .timeLimit(.minutes(2)))
struct SocketActivationTests {
    let pid: pid_t = 4242

    @Test func socketsMeantForThisProcessAreNamedByRole() throws {
        let sockets = try InheritedSockets.parse(environment: ["LISTEN_FDS": "3", "LISTEN_PID": "4242", "LISTEN_FDNAMES": "api:redirect:metrics"], pid: pid)
        #expect(sockets?.descriptors == [.api: 3, .redirect: 4, .metrics: 5])
    }

    /// As sd_listen_fds: no sockets at all, or sockets meant for another process (a parent that
    /// did not clear its environment), are not ours to adopt.
    @Test func absentOrForeignSocketsAreIgnored() throws {
        #expect(try InheritedSockets.parse(environment: [:], pid: pid) == nil)
        #expect(try InheritedSockets.parse(environment: ["LISTEN_FDS": "1", "LISTEN_PID": "1", "LISTEN_FDNAMES": "api"], pid: pid) == nil)
        #expect(try InheritedSockets.parse(environment: ["LISTEN_FDS": "1", "LISTEN_FDNAMES": "api"], pid: pid) == nil)
    }

    @Test(arguments: [
        ["LISTEN_FDS": "0", "LISTEN_PID": "4242", "LISTEN_FDNAMES": ""],
        ["LISTEN_FDS": "x", "LISTEN_PID": "4242", "LISTEN_FDNAMES": "api"],
        ["LISTEN_FDS": "99", "LISTEN_PID": "4242", "LISTEN_FDNAMES": "api"],
        ["LISTEN_FDS": "2", "LISTEN_PID": "4242", "LISTEN_FDNAMES": "api"],
        ["LISTEN_FDS": "1", "LISTEN_PID": "4242"],
        ["LISTEN_FDS": "1", "LISTEN_PID": "4242", "LISTEN_FDNAMES": "clau-edge.socket"],
        ["LISTEN_FDS": "2", "LISTEN_PID": "4242", "LISTEN_FDNAMES": "api:api"],
    ])
    func malformedHandOverIsAStartupError(_ environment: [String: String]) {
        #expect(throws: StartupError.self) { try InheritedSockets.parse(environment: environment, pid: pid) }
    }

    /// Only listening TCP sockets are served; /metrics only on loopback.
    @Test func onlyListeningTCPSocketsPassAndMetricsStayOnLoopback_C17() throws {
        let file = open("/dev/null", O_RDONLY)
        defer { close(file) }
        #expect(throws: StartupError.self) { try InheritedSockets(descriptors: [.api: file]).check() }

        let unlistened = try tcpSocket(host: "127.0.0.1", listen: false)
        defer { close(unlistened) }
        #expect(throws: StartupError.self) { try InheritedSockets(descriptors: [.api: unlistened]).check() }

        let loopback = try tcpSocket(host: "127.0.0.1", listen: true)
        defer { close(loopback) }
        try InheritedSockets(descriptors: [.api: loopback, .metrics: loopback]).check()

        let anyAddress = try tcpSocket(host: "0.0.0.0", listen: true)
        defer { close(anyAddress) }
        try InheritedSockets(descriptors: [.api: anyAddress]).check()
        #expect(throws: StartupError.self) { try InheritedSockets(descriptors: [.metrics: anyAddress]).check() }
    }

    @Test func dateHeaderIsIMFFixdate() {
        #expect(HTTPDate.format(784_111_777) == "Sun, 06 Nov 1994 08:49:37 GMT")
    }

    private func tcpSocket(host: String, listen shouldListen: Bool) throws -> CInt {
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        inet_pton(AF_INET, host, &address.sin_addr)
        let bound = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        try #require(descriptor >= 0 && bound == 0)
        if shouldListen { try #require(listen(descriptor, 4) == 0) }
        return descriptor
    }
}
