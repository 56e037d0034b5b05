import ClauSupport
import Foundation
import HTTPTypes
import HummingbirdTesting
import NIOCore
import RateLimiting
import TestSupport
import Testing
@testable import EdgeProxy

/// One sample of the text exposition.
struct MetricSample: Equatable {
    var name: String
    var labels: [String: String]
    var value: Double
}

/// A strict reader of Prometheus text format 0.0.4: `# HELP`/`# TYPE` comments, and every other
/// line `name{label="value",…} value` with `\\`, `\"`, `\n` escapes. Throws on anything else.
enum MetricsText {
    static func parse(_ text: String) throws -> [MetricSample] {
        var samples: [MetricSample] = []
        var types: [String: String] = [:]
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.isEmpty { continue }
            if line.hasPrefix("#") {
                let parts = line.split(separator: " ", maxSplits: 3)
                guard parts.count >= 3, parts[0] == "#", parts[1] == "HELP" || parts[1] == "TYPE", isName(parts[2]) else { throw HarnessError("bad comment: \(line)") }
                if parts[1] == "TYPE" {
                    guard parts.count == 4, ["counter", "gauge", "histogram", "summary", "untyped"].contains(String(parts[3])) else { throw HarnessError("bad TYPE: \(line)") }
                    guard types[String(parts[2])] == nil else { throw HarnessError("TYPE twice: \(line)") }
                    types[String(parts[2])] = String(parts[3])
                }
                continue
            }
            samples.append(try sample(Array(line.unicodeScalars), line: String(line)))
        }
        // Every sample belongs to a declared family (histograms: `_bucket`, `_sum`, `_count`).
        for sample in samples {
            let family = types[sample.name] != nil ? sample.name
                : ["_bucket", "_sum", "_count"].compactMap { suffix in sample.name.hasSuffix(suffix) ? String(sample.name.dropLast(suffix.count)) : nil }.first { types[$0] == "histogram" }
            guard family != nil else { throw HarnessError("sample without TYPE: \(sample.name)") }
        }
        return samples
    }

    static func isName(_ text: Substring) -> Bool {
        guard let first = text.unicodeScalars.first, first == "_" || first == ":" || (first.isASCII && first.properties.isAlphabetic) else { return false }
        return text.unicodeScalars.allSatisfy { $0 == "_" || $0 == ":" || ($0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0))) }
    }

    private static func sample(_ s: [Unicode.Scalar], line: String) throws -> MetricSample {
        var i = 0
        func fail() -> HarnessError { HarnessError("bad sample line: \(line)") }
        var name = ""
        while i < s.count, s[i] != "{", s[i] != " " { name.unicodeScalars.append(s[i]); i += 1 }
        guard isName(Substring(name)) else { throw fail() }
        var labels: [String: String] = [:]
        if i < s.count, s[i] == "{" {
            i += 1
            while i < s.count, s[i] != "}" {
                var label = ""
                while i < s.count, s[i] != "=" { label.unicodeScalars.append(s[i]); i += 1 }
                guard isName(Substring(label)), i + 1 < s.count, s[i + 1] == "\"" else { throw fail() }
                i += 2
                var value = ""
                while i < s.count, s[i] != "\"" {
                    if s[i] == "\\" {
                        guard i + 1 < s.count else { throw fail() }
                        switch s[i + 1] {
                        case "\\": value += "\\"
                        case "\"": value += "\""
                        case "n": value += "\n"
                        default: throw fail()
                        }
                        i += 2
                    } else {
                        guard s[i] != "\n" else { throw fail() }
                        value.unicodeScalars.append(s[i]); i += 1
                    }
                }
                guard i < s.count, labels[label] == nil else { throw fail() }
                labels[label] = value
                i += 1
                if i < s.count, s[i] == "," { i += 1 } else if i < s.count, s[i] != "}" { throw fail() }
            }
            guard i < s.count else { throw fail() }
            i += 1
        }
        guard i < s.count, s[i] == " " else { throw fail() }
        var valueText = ""
        i += 1
        while i < s.count { valueText.unicodeScalars.append(s[i]); i += 1 }
        let value: Double
        switch valueText {
        case "+Inf": value = .infinity
        case "-Inf": value = -.infinity
        case "NaN": value = .nan
        default:
            guard let parsed = Double(valueText), !valueText.isEmpty, !valueText.contains(" ") else { throw fail() }
            value = parsed
        }
        return MetricSample(name: name, labels: labels, value: value)
    }
}

extension Array where Element == MetricSample {
    /// The value of the one sample with exactly these labels (nil: absent).
    func value(_ name: String, _ labels: [String: String] = [:]) -> Double? {
        first { $0.name == name && $0.labels == labels }?.value
    }
}

extension EdgeHarness {
    /// `GET path` on the metrics listener: plain HTTP on 127.0.0.1.
    func scrape(_ path: String = "/metrics", method: HTTPRequest.Method = .get) async throws -> TestClient.Response {
        let port = try #require(ports.metrics, "metrics listener configured")
        let configuration = TestClient.Configuration(tlsConfiguration: nil, timeout: .seconds(20), serverName: nil)
        return try await TestClient.withClient(host: "127.0.0.1", port: port, configuration: configuration) { client in
            try await client.execute(TestClient.Request(path, method: method, authority: "127.0.0.1"))
        }
    }

    func metricSamples() async throws -> (text: String, samples: [MetricSample]) {
        let response = try await scrape()
        #expect(response.status == .ok)
        #expect(response.headers[.contentType] == "text/plain; version=0.0.4; charset=utf-8")
        return (response.text, try MetricsText.parse(response.text))
    }
}

@Suite("Edge: Prometheus metrics on a loopback listener (C-17, R-16)", .timeLimit(.minutes(5)))
struct EdgeMetricsTests {
    let duration = "clau_edge_http_request_duration_seconds"
    let requests = "clau_edge_http_requests_total"

    @Test func metricsListenerIsLoopbackOnlyAndCounts_C17() async throws {
        try await withEdge(configure: { $0.metricsPort = 0 }) { edge in
            let metricsPort = try #require(edge.ports.metrics)
            #expect(metricsPort != edge.ports.api)
            #expect(try await edge.send(.get, "/healthz").status == .ok)
            #expect(try await edge.send(.get, "/healthz").status == .ok)
            #expect(try await edge.send(.get, "/no/such/path").status == .notFound)
            #expect(try await edge.send(.get, "/v1/me").status == .unauthorized)
            #expect(try await edge.send(.get, "/v1/me", headers: bearer("not.a.token")).status == .unauthorized)
            #expect(try await edge.send(.delete, "/healthz").status == .methodNotAllowed)

            let (text, samples) = try await edge.metricSamples()
            #expect(samples.value(requests, ["route": "/healthz", "method": "GET", "status": "200"]) == 2)
            #expect(samples.value(requests, ["route": "unmatched", "method": "GET", "status": "404"]) == 1)
            #expect(samples.value(requests, ["route": "unmatched", "method": "DELETE", "status": "405"]) == 1)
            #expect(samples.value(requests, ["route": "/v1/me", "method": "GET", "status": "401"]) == 2)
            #expect(samples.filter { $0.name == requests }.reduce(0) { $0 + $1.value } == 6, "nothing else counted: \(text)")
            #expect(samples.value("clau_edge_token_rejections_total") == 1, "the malformed bearer, not the missing one")
            #expect(samples.value("clau_edge_http_in_flight_requests") == 0)
            #expect(samples.value("clau_edge_admission_rejections_total") == 0)

            // Histogram: cumulative buckets ending in +Inf = _count; _sum plausible.
            for (route, count) in [("/healthz", 2.0), ("/v1/me", 2.0), ("unmatched", 2.0)] {
                #expect(samples.value(duration + "_count", ["route": route]) == count, "\(route)")
                #expect(samples.value(duration + "_bucket", ["route": route, "le": "+Inf"]) == count, "\(route)")
                let sum = try #require(samples.value(duration + "_sum", ["route": route]))
                #expect(sum > 0 && sum < 60)
                let buckets = samples.filter { $0.name == duration + "_bucket" && $0.labels["route"] == route }
                #expect(buckets.count == EdgeMetrics.durationBuckets.count + 1)
                #expect(zip(buckets, buckets.dropFirst()).allSatisfy { $0.value <= $1.value }, "cumulative")
            }
            for family in ["clau_edge_http_requests_total counter", "clau_edge_http_request_duration_seconds histogram", "clau_edge_http_in_flight_requests gauge",
                           "clau_edge_admission_rejections_total counter", "clau_edge_rate_limited_total counter", "clau_edge_rpc_calls_total counter", "clau_edge_auth_rpc_failures_total counter",
                           "clau_edge_token_rejections_total counter"] {
                #expect(text.contains("# TYPE \(family)\n"), "\(family)")
                #expect(text.contains("# HELP \(family.split(separator: " ")[0]) "), "\(family)")
            }

            // Scrapes are not requests of the public API; the metrics listener has nothing else.
            let again = try await edge.metricSamples().samples
            #expect(again.filter { $0.name == requests }.reduce(0) { $0 + $1.value } == 6)
            #expect(try await edge.scrape("/healthz").status == .notFound)
            #expect(try await edge.scrape("/metrics", method: .post).status == .methodNotAllowed)
            // Bound to loopback, not a wildcard: this machine's other addresses do not reach it.
            #expect(edge.edge.state.configuration.metricsHost == "127.0.0.1")
            #expect(canConnect(to: "127.0.0.1", port: metricsPort))
            for address in nonLoopbackIPv4Addresses() {
                #expect(!canConnect(to: address, port: metricsPort), "metrics listener reachable on \(address)")
            }
        }
    }

    @Test func metricsAreNotServedOnPublicListeners_C17() async throws {
        try await withEdge(redirect: true, configure: { $0.metricsPort = 0 }) { edge in
            let response = try await edge.send(.get, "/metrics")
            #expect(response.status == .notFound)
            #expect(!response.text.contains("clau_edge_"))
            #expect(try response.errorCode() == "not_found")
            // The redirect listener only ever answers 301 (to the HTTPS origin, where it is 404).
            let redirect = try RawConnection(port: try #require(edge.ports.redirect))
            redirect.send("GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
            let raw = try await redirect.receive(until: responseComplete)
            #expect(raw.hasPrefix("HTTP/1.1 301"))
            #expect(!raw.contains("clau_edge_"))
            // Not part of the public API document either.
            let openapi = try await edge.send(.get, "/openapi.json")
            #expect(openapi.status == .ok)
            #expect(!openapi.text.contains("/metrics"))
            let samples = try await edge.metricSamples().samples
            #expect(samples.value(requests, ["route": "unmatched", "method": "GET", "status": "404"]) == 1)
        }
        try await withEdge(mode: .behindProxy(trusted: []), configure: { $0.metricsPort = 0 }) { (edge) async throws in
            #expect(try await edge.send(.get, "/metrics").status == .notFound)
            #expect(try await edge.scrape().status == .ok)
        }
        // Off unless configured.
        try await withEdge { (edge) async throws in
            #expect(edge.ports.metrics == nil)
            #expect(try await edge.send(.get, "/metrics").status == .notFound)
        }
    }

    @Test func nonLoopbackMetricsHostIsRefused_C17() async throws {
        var configuration = EdgeConfiguration(listener: .behindProxy(host: "127.0.0.1", port: 0, trustedProxies: []), authSocketPath: "/nonexistent/auth.sock")
        configuration.metricsPort = 9464
        for host in ["127.0.0.1", "127.0.0.53", "::1"] {
            configuration.metricsHost = host
            #expect(throws: Never.self, "\(host)") { try configuration.validate() }
        }
        for host in ["0.0.0.0", "::", "10.0.0.1", "192.168.1.20", "203.0.113.7", "2001:db8::1", "::ffff:127.0.0.1", "localhost", "metrics.example", "", "127.0.0.1 "] {
            configuration.metricsHost = host
            let error = #expect(throws: StartupError.self, "\(host)") { try configuration.validate() }
            #expect(error?.description.contains("metrics host must be a loopback address") == true)
            #expect(throws: StartupError.self, "buildApplication refuses too: \(host)") {
                _ = try buildApplication(configuration: configuration, logger: quietLogger)
            }
        }
        // Even with the listener off, a public host is a mistake worth refusing.
        configuration.metricsPort = nil
        configuration.metricsHost = "0.0.0.0"
        #expect(throws: StartupError.self) { try configuration.validate() }
        configuration.metricsHost = "127.0.0.1"
        configuration.metricsPort = 70000
        #expect(throws: StartupError.self) { try configuration.validate() }
    }

    @Test func metricsNeverHoldIDsTokensOrEmails_C17() async throws {
        try await withEdge(configure: { $0.metricsPort = 0 }) { edge in
            let email = "metrics-private@example.com"
            let tokens = try await edge.registerAndLogin(email)
            let userID = try edge.userID(of: tokens.access)
            let foreign = UUID().uuidString.lowercased()
            let own = try await edge.send(.get, "/v1/users/\(userID)/subscription", headers: bearer(tokens.access))
            #expect(own.status == .serviceUnavailable, "broker route stub")
            #expect(try await edge.send(.get, "/v1/users/\(foreign)/subscription", headers: bearer(tokens.access)).status == .notFound)
            #expect(try await edge.send(.get, "/v1/me?email=\(email)", headers: bearer(tokens.access)).status == .ok)
            #expect(try await edge.send(.get, "/v1/\(foreign)/\(email)").status == .notFound)
            #expect(try await edge.send(.get, "/v1/me", headers: bearer(tokens.access + "x")).status == .unauthorized)
            _ = try await edge.send(HTTPRequest.Method("PROPFIND")!, "/healthz")

            let (text, samples) = try await edge.metricSamples()
            for secret in [userID, foreign, email, "metrics-private", tokens.access, tokens.refresh, String(tokens.access.prefix(20)), "PROPFIND"] {
                #expect(!text.contains(secret), "\(secret.prefix(40)) leaked into /metrics")
            }
            #expect(samples.value(requests, ["route": "/v1/users/{userId}/subscription", "method": "GET", "status": "503"]) == 1)
            #expect(samples.value(requests, ["route": "/v1/users/{userId}/subscription", "method": "GET", "status": "404"]) == 1)
            #expect(samples.value(requests, ["route": "unmatched", "method": "OTHER", "status": "405"]) == 1)
            #expect(samples.value("clau_edge_token_rejections_total") == 1)
            // Every route label is a template of the table or `unmatched`.
            let templates = Set(RouteTable.clau().routes.map(\.template)).union(["unmatched"])
            #expect(samples.compactMap { $0.labels["route"] }.allSatisfy(templates.contains))
        }
    }

    @Test func rateLimitsAndAuthFailuresAreCounted_C17() async throws {
        try await withEdge(configure: { configuration in
            configuration.metricsPort = 0
            configuration.rateLimitRules.register = RateLimitRule(name: "register", limit: 2, window: .seconds(3600))
            configuration.revocationCacheTTL = .zero
        }) { edge in
            // Register is limited to 2 per IP here: one real registration, then 1 refused body (422), then 2 × 429.
            let tokens = try await edge.registerAndLogin("rpc-fail@example.com")
            for _ in 0..<3 { _ = try await edge.send(.post, "/v1/auth/register", body: "{}") }
            var samples = try await edge.metricSamples().samples
            #expect(samples.value("clau_edge_rate_limited_total", ["category": "register"]) == 2, "the third and fourth registration attempt")
            #expect(samples.value(requests, ["route": "/v1/auth/register", "method": "POST", "status": "429"]) == 2)

            edge.stopAuth()
            // Until auth's task has ended (and a cached "not revoked" has expired) a request may
            // still be checked successfully: 10 s at most.
            let stopped = ContinuousClock.now + .seconds(10)
            repeat {
                #expect(try await edge.send(.get, "/v1/alpaca/account", headers: bearer(tokens.access)).status == .serviceUnavailable)
                samples = try await edge.metricSamples().samples
                if (samples.value("clau_edge_auth_rpc_failures_total", ["method": "CheckRevoked"]) ?? 0) >= 1 { break }
                try await Task.sleep(for: .milliseconds(50))
            } while ContinuousClock.now < stopped
            #expect((samples.value("clau_edge_auth_rpc_failures_total", ["method": "CheckRevoked"]) ?? 0) >= 1)
            #expect(samples.value("clau_edge_token_rejections_total") == 0, "auth down is not a token rejection")
        }
    }

    // MARK: Exposition, without a server

    @Test func expositionEscapesLabelsAndBucketsCumulatively_C17() throws {
        #expect(EdgeMetrics.escapeLabelValue(#"a\b"c"# + "\nd") == #"a\\b\"c\nd"#)
        let metrics = EdgeMetrics()
        metrics.requestStarted()
        metrics.requestFinished(route: "/x", method: "GET", status: 200, duration: .milliseconds(3))
        metrics.requestStarted()
        metrics.requestFinished(route: "/x", method: "GET", status: 200, duration: .milliseconds(30))
        metrics.requestStarted()
        metrics.requestFinished(route: "/x", method: "GET", status: 500, duration: .seconds(20))
        metrics.requestStarted()
        metrics.requestFinished(route: nil, method: "PROPFIND", status: 404, duration: .milliseconds(1))
        metrics.requestStarted()
        metrics.rateLimited(.highRisk)
        metrics.rateLimited(.highRisk)
        metrics.admissionRejected()
        metrics.rpcFailed("Weird\"Method\\\n")
        let text = metrics.render()
        #expect(text.contains(#"clau_edge_auth_rpc_failures_total{method="Weird\"Method\\\n"} 1"#))
        let samples = try MetricsText.parse(text)
        #expect(samples.value("clau_edge_auth_rpc_failures_total", ["method": "Weird\"Method\\\n"]) == 1, "escapes round-trip")
        #expect(samples.value(requests, ["route": "/x", "method": "GET", "status": "200"]) == 2)
        #expect(samples.value(requests, ["route": "/x", "method": "GET", "status": "500"]) == 1)
        #expect(samples.value(requests, ["route": "unmatched", "method": "OTHER", "status": "404"]) == 1)
        #expect(samples.value(duration + "_bucket", ["route": "/x", "le": "0.005"]) == 1)
        #expect(samples.value(duration + "_bucket", ["route": "/x", "le": "0.025"]) == 1)
        #expect(samples.value(duration + "_bucket", ["route": "/x", "le": "0.05"]) == 2)
        #expect(samples.value(duration + "_bucket", ["route": "/x", "le": "10.0"]) == 2)
        #expect(samples.value(duration + "_bucket", ["route": "/x", "le": "+Inf"]) == 3)
        #expect(samples.value(duration + "_count", ["route": "/x"]) == 3)
        #expect(abs((samples.value(duration + "_sum", ["route": "/x"]) ?? 0) - 20.033) < 1e-9)
        #expect(samples.value("clau_edge_http_in_flight_requests") == 1)
        #expect(samples.value("clau_edge_rate_limited_total", ["category": "high_risk"]) == 2)
        #expect(samples.value("clau_edge_admission_rejections_total") == 1)
        #expect(samples.value("clau_edge_token_rejections_total") == 0)
        // The reader is strict: malformed lines are refused.
        for bad in ["x{a=\"1} 1", "x 1 2 3", "x{a=\"\\q\"} 1", "1x 2", "x{a=\"b\"}1", "x"] {
            #expect(throws: HarnessError.self, "\(bad)") { _ = try MetricsText.parse("# TYPE x counter\n" + bad + "\n") }
        }
    }

    @Test func concurrentUpdatesAreNotLost_C17() async {
        let metrics = EdgeMetrics()
        await withTaskGroup(of: Void.self) { group in
            for task in 0..<8 {
                group.addTask {
                    for _ in 0..<1000 {
                        metrics.requestStarted()
                        metrics.requestFinished(route: task % 2 == 0 ? "/a" : "/b", method: "GET", status: 200, duration: .microseconds(100))
                    }
                }
            }
        }
        let samples = (try? MetricsText.parse(metrics.render())) ?? []
        #expect(samples.value(requests, ["route": "/a", "method": "GET", "status": "200"]) == 4000)
        #expect(samples.value(duration + "_count", ["route": "/b"]) == 4000)
        #expect(samples.value("clau_edge_http_in_flight_requests") == 0)
    }
}

/// A TCP connect to `host:port` succeeds (IPv4).
func canConnect(to host: String, port: Int) -> Bool {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return false }
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = in_port_t(UInt16(port).bigEndian)
    guard inet_pton(AF_INET, host, &address.sin_addr) == 1 else { return false }
    return withUnsafePointer(to: &address) { pointer in
        pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    } == 0
}

/// This machine's IPv4 addresses outside 127.0.0.0/8.
func nonLoopbackIPv4Addresses() -> [String] {
    var list: UnsafeMutablePointer<ifaddrs>?
    guard getifaddrs(&list) == 0, let first = list else { return [] }
    defer { freeifaddrs(list) }
    var addresses: [String] = []
    for entry in sequence(first: first, next: { $0.pointee.ifa_next }) {
        guard let raw = entry.pointee.ifa_addr, raw.pointee.sa_family == sa_family_t(AF_INET) else { continue }
        var address = raw.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { $0.pointee.sin_addr }
        guard UInt32(bigEndian: address.s_addr) >> 24 != 127 else { continue }
        var buffer = [CChar](repeating: 0, count: Int(INET_ADDRSTRLEN))
        guard inet_ntop(AF_INET, &address, &buffer, socklen_t(buffer.count)) != nil else { continue }
        addresses.append(String(cString: buffer))
    }
    return addresses
}
