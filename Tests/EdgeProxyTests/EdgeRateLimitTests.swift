import Foundation
import HTTPTypes
import HummingbirdTesting
import Logging
import RateLimiting
import TestSupport
import Testing
@testable import EdgeProxy

/// Time that does not move: GCRA refills continuously (read: one request per second), so on a
/// loaded machine a test that sends a whole budget could see a request refilled before the one
/// that must be refused. The refill itself is tested with a manual clock in RateLimitingTests.
private struct FrozenClock: RateLimiterClock {
    func now() -> Duration { .seconds(1000) }
}

/// The spec's limits on an in-process limiter whose budgets never refill during the test.
private func specLimitsWithoutRefill(_ configuration: inout EdgeConfiguration) {
    configuration.rateLimitRules = .spec
    configuration.rateLimiter = InProcessRateLimiter(clock: FrozenClock())
}

@Suite("Edge: rate limits (C-9, R-15, X-3)", .timeLimit(.minutes(5)))
struct EdgeRateLimitTests {
    private func expectLimitHeaders(_ response: TestClient.Response, limit: Int, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(response.headers[.init("X-RateLimit-Limit")!] == "\(limit)", sourceLocation: sourceLocation)
        #expect(response.headers[.init("X-RateLimit-Remaining")!].flatMap(Int.init) != nil, sourceLocation: sourceLocation)
        #expect(response.headers[.init("X-RateLimit-Reset")!].flatMap(Int.init).map { $0 >= 0 } == true, sourceLocation: sourceLocation)
    }

    private func expect429(_ response: TestClient.Response, limit: Int, sourceLocation: SourceLocation = #_sourceLocation) throws {
        #expect(response.status == .tooManyRequests, sourceLocation: sourceLocation)
        #expect(try response.errorCode(sourceLocation: sourceLocation) == "rate_limited", sourceLocation: sourceLocation)
        #expect(response.headers[.retryAfter].flatMap(Int.init).map { $0 >= 1 } == true, sourceLocation: sourceLocation)
        #expect(response.headers[.init("X-RateLimit-Remaining")!] == "0", sourceLocation: sourceLocation)
        expectLimitHeaders(response, limit: limit, sourceLocation: sourceLocation)
    }

    @Test func loginIsLimitedPerIPAndAccount_R15() async throws {
        try await withEdge(mode: .behindProxy(trusted: []), configure: specLimitsWithoutRefill) { edge in
            try await edge.register("target@example.com")
            // Successful logins: auth's own per-IP delay (failures only) stays out of the way.
            for attempt in 1...5 {
                let response = try await edge.send(.post, "/v1/auth/login", body: #"{"email":"target@example.com","password":"\#(goodPassword)"}"#)
                #expect(response.status == .ok)
                expectLimitHeaders(response, limit: 5)
                #expect(response.headers[.init("X-RateLimit-Remaining")!] == "\(5 - attempt)")
            }
            // The sixth is refused before auth sees it (same account, any spelling).
            let blocked = try await edge.send(.post, "/v1/auth/login", body: #"{"email":"TARGET@example.com","password":"\#(goodPassword)"}"#)
            try expect429(blocked, limit: 5)
            // Another account from the same IP has its own budget.
            try await edge.register("other@example.com")
            let other = try await edge.send(.post, "/v1/auth/login", body: #"{"email":"other@example.com","password":"\#(goodPassword)"}"#)
            #expect(other.status == .ok)
            #expect(other.headers[.init("X-RateLimit-Remaining")!] == "4")
        }
    }

    @Test func registerIsLimitedPerIP_R15() async throws {
        try await withEdge(mode: .behindProxy(trusted: ["127.0.0.1"]), configure: specLimitsWithoutRefill) { edge in
            let from = { (ip: String) -> HTTPFields in [.init("X-Forwarded-For")!: ip] }
            for index in 1...3 {
                let response = try await edge.send(.post, "/v1/auth/register", headers: from("198.51.100.7"), body: #"{"email":"r\#(index)@example.com","password":"\#(goodPassword)","full_name":"R"}"#)
                #expect(response.status == .accepted)
                expectLimitHeaders(response, limit: 3)
            }
            let fourth = try await edge.send(.post, "/v1/auth/register", headers: from("198.51.100.7"), body: #"{"email":"r4@example.com","password":"\#(goodPassword)","full_name":"R"}"#)
            try expect429(fourth, limit: 3)
            #expect(try await edge.send(.post, "/v1/auth/register", headers: from("198.51.100.8"), body: #"{"email":"r5@example.com","password":"\#(goodPassword)","full_name":"R"}"#).status == .accepted)
        }
    }

    @Test func categoriesAreLimitedPerUser_C9() async throws {
        try await withEdge(mode: .behindProxy(trusted: []), configure: specLimitsWithoutRefill) { edge in
            let alice = try await edge.registerAndLogin("limits-a@example.com")
            let bob = try await edge.registerAndLogin("limits-b@example.com")
            let cases: [(HTTPRequest.Method, String, Int)] = [
                (.delete, "/v1/me", 5),                      // high-risk
                (.post, "/v1/alpaca/orders", 10),            // sensitive
                (.post, "/v1/me/devices", 30),               // write
                (.get, "/v1/alpaca/positions", 60),          // read
            ]
            for (method, path, limit) in cases {
                for _ in 0..<limit {
                    let response = try await edge.send(method, path, headers: bearer(alice.access), body: method == .get ? nil : "{}")
                    #expect(response.status != .tooManyRequests, "\(method) \(path)")
                    expectLimitHeaders(response, limit: limit)
                }
                try expect429(try await edge.send(method, path, headers: bearer(alice.access), body: method == .get ? nil : "{}"), limit: limit)
                // Keyed by user, not by IP: Bob (same IP) is not affected.
                #expect(try await edge.send(method, path, headers: bearer(bob.access), body: method == .get ? nil : "{}").status != .tooManyRequests, "\(method) \(path)")
            }
        }
    }

    @Test func twoEdgesShareOneRedisBudget_X3() async throws {
        let directory = try makeWorldReadableTemporaryDirectory(prefix: "clau-edge-redis")
        let socket = directory + "/redis.sock"
        let redis = try SpawnedProcess.start("/usr/bin/redis-server", ["--port", "0", "--unixsocket", socket, "--unixsocketperm", "700", "--save", "", "--appendonly", "no"], outputPath: directory + "/redis.log")
        defer { redis.signal(SIGTERM) }
        try await waitForFile(socket)
        // A generous command timeout: CI runs the suites in parallel on 2 cores.
        let redisConfiguration = {
            var configuration = RedisConfiguration(address: .unixSocket(path: socket))
            configuration.commandTimeout = .seconds(3)
            return configuration
        }()
        let limiterA = RedisClient(configuration: redisConfiguration, logger: quietLogger)
        try await withEdge(mode: .behindProxy(trusted: []), configure: {
            $0.rateLimitRules = .spec
            $0.rateLimiter = RedisRateLimiter(client: limiterA, keyPrefix: "edge-test:", logger: quietLogger)
        }, dependencies: [limiterA]) { edgeA in
            // A second edge process in front of the same auth, with its own Redis connection.
            let limiterB = RedisClient(configuration: redisConfiguration, logger: quietLogger)
            var configuration = EdgeConfiguration(listener: .behindProxy(host: "127.0.0.1", port: 0, trustedProxies: []), authSocketPath: edgeA.edge.state.configuration.authSocketPath)
            configuration.rateLimiter = RedisRateLimiter(client: limiterB, keyPrefix: "edge-test:", logger: quietLogger)
            let edgeB = try buildApplication(configuration: configuration, logger: quietLogger, dependencies: [limiterB])
            let task = Task { try await edgeB.run() }
            defer { task.cancel() }
            let portB = await edgeB.waitUntilListening().api
            for index in 1...3 {
                let response = try await edgeA.send(.post, "/v1/auth/register", body: #"{"email":"shared\#(index)@example.com","password":"\#(goodPassword)","full_name":"S"}"#)
                #expect(response.status == .accepted)
            }
            let viaB = try await TestClient.withClient(host: "127.0.0.1", port: portB) { client in
                try await client.execute(TestClient.Request("/v1/auth/register", method: .post, headers: [.contentType: "application/json"], body: .init(string: #"{"email":"shared4@example.com","password":"\#(goodPassword)","full_name":"S"}"#)))
            }
            try expect429(viaB, limit: 3)
        }
    }
}
