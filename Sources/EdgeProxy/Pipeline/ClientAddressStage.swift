import Foundation
import HTTPTypes
import Hummingbird

/// requests from an address on the admin-managed blocklist (auth's, polled by every edge)
/// are refused with 403. The address itself is resolved on entry (`AccessLogStage`), so that the
/// log line of a request shed before this stage still names its client.
struct ClientAddressStage: RouterMiddleware {
    typealias Context = EdgeRequestContext
    let blocklist: IPBlocklist

    func handle(_ request: Request, context: EdgeRequestContext, next: (Request, EdgeRequestContext) async throws -> Response) async throws -> Response {
        if !context.exemptFromAdmission, blocklist.isBlocked(context.clientIP) {
            throw EdgeError(.forbidden, code: "ip_blocked", message: "requests from this address are blocked")
        }
        return try await next(request, context)
    }
}

/// `package`: the fuzzer (Sources/clau-fuzz) feeds it header values directly.
package enum IPAddress {
    static func isValid(_ text: String) -> Bool { canonical(text) != nil }

    /// One spelling per address, so the peer, a forwarded hop, a trusted-proxy setting and a
    /// blocklist entry agree however each was written: `inet_ntop`'s form (RFC 5952: lower case,
    /// longest zero run compressed), and an IPv4-mapped IPv6 address (a dual-stack listener's
    /// view of an IPv4 client) as the IPv4 address. Nil for anything that is not an IP literal.
    package static func canonical(_ text: String) -> String? {
        var v4 = in_addr()
        if inet_pton(AF_INET, text, &v4) == 1 { return format(AF_INET, &v4, length: INET_ADDRSTRLEN) }
        var v6 = in6_addr()
        guard inet_pton(AF_INET6, text, &v6) == 1 else { return nil }
        let isIPv4Mapped = withUnsafeBytes(of: &v6) { bytes in bytes.prefix(10).allSatisfy { $0 == 0 } && bytes[10] == 0xFF && bytes[11] == 0xFF }
        if isIPv4Mapped {
            withUnsafeBytes(of: &v6) { bytes in withUnsafeMutableBytes(of: &v4) { $0.copyMemory(from: UnsafeRawBufferPointer(rebasing: bytes[12..<16])) } }
            return format(AF_INET, &v4, length: INET_ADDRSTRLEN)
        }
        return format(AF_INET6, &v6, length: INET6_ADDRSTRLEN)
    }

    private static func format<Address>(_ family: Int32, _ address: inout Address, length: Int32) -> String? {
        var buffer = [CChar](repeating: 0, count: Int(length))
        let written = withUnsafeBytes(of: &address) { inet_ntop(family, $0.baseAddress, &buffer, socklen_t(length)) }
        guard written != nil else { return nil }
        return buffer.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
    }
}

extension IPAddress {
    /// The client IP: the TCP peer, unless the peer is a configured proxy — then the right-most
    /// `X-Forwarded-For` entry that is not itself a trusted proxy (C-12).
    /// Addresses come back canonical (`IPAddress.canonical`); `trustedProxies` must be canonical.
    package static func clientAddress(peer rawPeer: String, headers: HTTPFields, trustedProxies: Set<String>?) -> (String, Bool) {
        let peer = IPAddress.canonical(rawPeer) ?? rawPeer
        guard let trustedProxies, trustedProxies.contains(peer) else { return (peer, false) }
        let forwardedHTTPS = headers[values: .forwardedProto].last?.trimmingOptionalWhitespace.lowercased() == "https"
        let hops = headers[values: .forwardedFor].flatMap { $0.split(separator: ",") }
        for rawHop in hops.reversed() {
            guard let hop = IPAddress.canonical(String(rawHop.trimmingOptionalWhitespace)) else { break }
            if !trustedProxies.contains(hop) { return (hop, forwardedHTTPS) }
        }
        return (peer, forwardedHTTPS)
    }
}
