import Foundation
import Logging
import NIOCore
import NIOPosix
import RPC
import ServiceLifecycle

let testLogger: Logger = {
    var logger = Logger(label: "rpc-test")
    logger.logLevel = .critical
    return logger
}()

/// A fresh short directory for sockets (sun_path is limited to 108 bytes).
func makeSocketDirectory() throws -> String {
    let template = "/tmp/clau-rpc-XXXXXX"
    var bytes = Array(template.utf8CString)
    guard let result = mkdtemp(&bytes) else { throw POSIXError(.EIO) }
    let path = String(cString: result)
    chmod(path, 0o755)
    return path
}

/// Runs a server and a connected client for the duration of `body`, then tears both down.
func withServerAndClient<T: Sendable>(
    router: RPCRouter = Echo.router(),
    policy: RPCAccessPolicy = Echo.openPolicy(),
    configure: (inout UnixSocketServer.Configuration) -> Void = { _ in },
    _ body: @Sendable (UnixSocketServer, UnixSocketClient, String) async throws -> T
) async throws -> T {
    let directory = try makeSocketDirectory()
    defer { try? FileManager.default.removeItem(atPath: directory) }
    var configuration = UnixSocketServer.Configuration(path: directory + "/test.sock")
    configure(&configuration)
    let server = UnixSocketServer(
        configuration: configuration,
        core: RPCServerCore(router: router, accessPolicy: policy, logger: testLogger),
        logger: testLogger
    )
    let client = UnixSocketClient(configuration: .init(path: configuration.path), logger: testLogger)
    return try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask { try await server.run() }
        await server.waitUntilListening()
        group.addTask { try await client.run() }
        await client.waitUntilConnected()
        do {
            let result = try await body(server, client, configuration.path)
            group.cancelAll()
            return result
        } catch {
            group.cancelAll()
            throw error
        }
    }
}

/// A raw blocking Unix-socket connection, for sending bytes no well-behaved client would.
struct RawConnection {
    let fd: Int32

    init(path: String) throws {
        fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw POSIXError(.EIO) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            let bytes = Array(path.utf8)
            raw.copyBytes(from: bytes.prefix(raw.count - 1))
        }
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard result == 0 else { Glibc.close(fd); throw POSIXError(.ECONNREFUSED) }
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    }

    func send(_ bytes: [UInt8]) {
        _ = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
    }

    /// Half-closes our side, as a peer that went away mid-frame would.
    func shutdownWrite() { shutdown(fd, Int32(SHUT_WR)) }

    /// True when the server closed the connection (read returns 0 or a reset) within 5 s.
    func serverClosed() -> Bool {
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n == 0 { return true }
            if n < 0 { return errno == ECONNRESET }
        }
    }

    func close() { _ = Glibc.close(fd) }
}

func frameBytes(_ body: [UInt8]) -> [UInt8] {
    withUnsafeBytes(of: UInt32(body.count).bigEndian, Array.init) + body
}
