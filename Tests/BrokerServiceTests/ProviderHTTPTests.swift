import AsyncHTTPClient
import Foundation
import Logging
import RPC
import Testing

@testable import BrokerService

/// Retries, the breaker, rate limits and log hygiene of `ProviderHTTP`, through the real clients
/// against the live fakes and their fault injection.
@Suite("Provider HTTP hygiene against the live fakes", .timeLimit(.minutes(3)))
struct ProviderHTTPTests {
    let capture = LogCapture()
    var logger: Logger { capture.logger() }

    @Test func anInjected500OnAnIdempotentGETIsRetriedAndSucceeds() async throws {
        try await withLiveFakes { live in
            let alpaca = try live.alpacaClient()
            let token = try await alpaca.exchangeCode(try await live.authorizationCode(), logger: logger).accessToken
            try await live.injectFault(path: "/v2/account", method: "GET", status: 500, count: 1)
            let account = try await alpaca.account(token: token, logger: logger)
            #expect(account.status == "ACTIVE")
            #expect(await live.remainingFaults() == 0)
            #expect(capture.all.contains { $0.contains("attempt=1") && $0.contains("status=500") && $0.contains("path=/v2/account") })
            #expect(capture.all.contains { $0.contains("attempt=2") && $0.contains("status=200") && $0.contains("path=/v2/account") })
        }
    }

    @Test func theOAuthCodeExchangeIsNeverRetried() async throws {
        try await withLiveFakes { live in
            let alpaca = try live.alpacaClient()
            let code = try await live.authorizationCode()
            try await live.injectFault(path: "/oauth/token", method: "POST", status: 500, count: 1)
            let error = await rpcError { try await alpaca.exchangeCode(code, logger: logger) }
            #expect(error == RPCError(code: .unavailable, message: "alpaca_unavailable"))
            // Exactly one request reached the fake: the fault is used up, and the code itself was
            // never seen by the token endpoint (the fault answered first), so it still works.
            #expect(await live.remainingFaults() == 0)
            #expect(!capture.all.contains { $0.contains("attempt=2") })
            let grant = try await alpaca.exchangeCode(code, logger: logger)
            #expect(!grant.accessToken.isEmpty)
        }
    }

    @Test func placingAnOrderIsNotRetriedAfterA5xx() async throws {
        try await withLiveFakes { live in
            let alpaca = try live.alpacaClient()
            let token = try await alpaca.exchangeCode(try await live.authorizationCode(), logger: logger).accessToken
            try await live.injectFault(path: "/v2/orders", method: "POST", status: 502, count: 2)
            let order = try OrderRequestValidation.validate(AlpacaOrderDraft(symbol: "TSLA", side: "buy", type: "market", timeInForce: "day", qty: "1"))
            let error = await rpcError { try await alpaca.placeOrder(token: token, order: order, logger: logger) }
            #expect(error?.code == .unavailable)
            #expect(await live.remainingFaults() == 1)
        }
    }

    @Test func alpacaRateLimitIsResourceExhaustedWithRetryAfterAndNotRetriedPastTheBackoffCap() async throws {
        try await withLiveFakes { live in
            let alpaca = try live.alpacaClient()
            let token = try await alpaca.exchangeCode(try await live.authorizationCode(), logger: logger).accessToken
            try await live.injectFault(path: "/v2/positions", status: 429, count: 1)
            let error = await rpcError { try await alpaca.positions(token: token, logger: logger) }
            #expect(error?.code == .resourceExhausted)
            #expect(error?.message == "rate_limited")
            let seconds = try #require(error?.details["retry_after"].flatMap(Int.init))
            #expect((1...60).contains(seconds))
            #expect(await live.remainingFaults() == 0)
            #expect(try await alpaca.positions(token: token, logger: logger).isEmpty)
        }
    }

    @Test func stripeRateLimitWithoutRetryAfterIsRetriedWithBackoff() async throws {
        try await withLiveFakes { live in
            let stripe = try live.stripeClient()
            let customer = try await stripe.createCustomer(userID: UUID(), idempotencyKey: UUID().uuidString, logger: logger)
            let session = try await stripe.createFinancialConnectionsSession(customerID: customer, idempotencyKey: UUID().uuidString, logger: logger)
            try await live.injectFault(path: "/v1/financial_connections/sessions/\(session.id)", method: "GET", status: 429, count: 1)
            let read = try await stripe.financialConnectionsSession(id: session.id, logger: logger)
            #expect(read.id == session.id)
            #expect(await live.remainingFaults() == 0)
        }
    }

    @Test func stripe5xxExhaustingEveryAttemptIsUnavailable() async throws {
        try await withLiveFakes { live in
            let stripe = try live.stripeClient()
            try await live.injectFault(path: "/v1/customers", method: "POST", status: 503, count: 5)
            let error = await rpcError { try await stripe.createCustomer(userID: UUID(), idempotencyKey: UUID().uuidString, logger: logger) }
            #expect(error == RPCError(code: .unavailable, message: "stripe_unavailable"))
            // maximumAttempts (3) requests, each with the same Idempotency-Key.
            #expect(await live.remainingFaults() == 2)
        }
    }

    @Test func theBreakerOpensAfterConsecutive503sAnswersWithoutCallingAndRecoversAfterTheCooldown() async throws {
        try await withLiveFakes { live in
            var policy = ProviderHTTPPolicy.fastTest
            policy.breakerFailureThreshold = 3
            policy.breakerCooldown = .milliseconds(200)
            policy.maximumAttempts = 1
            let http = ProviderHTTP(name: "alpaca", client: live.client, policy: policy)
            let alpaca = try AlpacaClient(configuration: live.alpacaConfiguration(), http: http)
            let token = try await alpaca.exchangeCode(try await live.authorizationCode(), logger: logger).accessToken

            try await live.injectFault(path: "/v2/account", status: 503, count: 10)
            for _ in 0..<3 {
                let error = await rpcError { try await alpaca.account(token: token, logger: logger) }
                #expect(error?.code == .unavailable)
            }
            #expect(await live.remainingFaults() == 7)
            #expect(http.breakerState != .closed(consecutiveFailures: 0))
            let refused = await rpcError { try await alpaca.account(token: token, logger: logger) }
            #expect(refused == RPCError(code: .unavailable, message: "alpaca_unavailable"))
            // Answered without calling: no fault use consumed.
            #expect(await live.remainingFaults() == 7)
            #expect(capture.all.contains { $0.contains("outcome=circuit_open") })

            // The provider recovers; after the breaker's own cooldown one probe goes through and
            // closes it. Bounded: at most 20 cooldowns.
            #expect(try await live.raw(.DELETE, "/_fake/faults").status == 204)
            var recovered = false
            for _ in 0..<20 where !recovered {
                try await Task.sleep(for: policy.breakerCooldown)
                recovered = (try? await alpaca.account(token: token, logger: logger)) != nil
            }
            #expect(recovered)
            #expect(http.breakerState == .closed(consecutiveFailures: 0))
        }
    }

    @Test func secretsAndTokensNeverAppearInLogLines_C11_C17() async throws {
        try await withLiveFakes { live in
            let alpaca = try live.alpacaClient()
            let stripe = try live.stripeClient()
            let grant = try await alpaca.exchangeCode(try await live.authorizationCode(), logger: logger)
            // Failures and retries log at warning: include them.
            try await live.injectFault(path: "/v2/account", status: 500, count: 1)
            _ = try await alpaca.account(token: grant.accessToken, logger: logger)
            let order = try OrderRequestValidation.validate(
                AlpacaOrderDraft(symbol: "AAPL", side: "buy", type: "limit", timeInForce: "day", qty: "1", limitPrice: "100")
            )
            let placed = try await alpaca.placeOrder(token: grant.accessToken, order: order, logger: logger)
            try await alpaca.cancelOrder(token: grant.accessToken, orderID: placed.id, logger: logger)
            _ = await rpcError { try await alpaca.account(token: grant.accessToken + "x", logger: logger) }
            let customer = try await stripe.createCustomer(userID: UUID(), idempotencyKey: "idem-log-1", logger: logger)
            try await live.injectFault(path: "/v1/customers", status: 500, count: 1)
            _ = try await stripe.createCustomer(userID: UUID(), idempotencyKey: "idem-log-2", logger: logger)
            let wrongKey = try StripeClient(
                configuration: StripeConfiguration(apiBaseURL: live.baseURL, secretKey: "sk_test_wrongKeyNeverLogged77"),
                http: ProviderHTTP(name: "stripe", client: live.client, policy: .fastTest)
            )
            let refused = await rpcError { try await wrongKey.createCustomer(userID: UUID(), idempotencyKey: "idem-log-3", logger: logger) }
            #expect(refused == RPCError(code: .internalError, message: "internal error"))

            let lines = capture.all
            #expect(lines.count >= 8)
            for secret in [
                grant.accessToken, ProviderTestCredentials.alpacaClientSecret, ProviderTestCredentials.stripeSecretKey,
                "sk_test_wrongKeyNeverLogged77", "Bearer", placed.id, customer, order.clientOrderID, "idem-log-",
            ] {
                #expect(!lines.contains { $0.contains(secret) }, "a log line contains \(secret.prefix(6))…")
            }
            // What is logged instead: the path template.
            #expect(lines.contains { $0.contains("path=/v2/orders/{id}") && $0.contains("method=DELETE") })
            #expect(lines.contains { $0.contains("stripe refused the platform key") })
        }
    }

    @Test func aRefusedConnectionIsRetriedThenUnavailable() async throws {
        // Port 1 on loopback: nothing listens, the connection is refused. AsyncHTTPClient keeps
        // trying to connect until the connect timeout, so each attempt lasts that long: 200 ms here.
        var policy = ProviderHTTPPolicy.fastTest
        policy.connectTimeout = .milliseconds(200)
        let client = HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: policy.httpClientConfiguration)
        let stripe = try StripeClient(
            configuration: StripeConfiguration(apiBaseURL: "http://127.0.0.1:1", secretKey: ProviderTestCredentials.stripeSecretKey),
            http: ProviderHTTP(name: "stripe", client: client, policy: policy)
        )
        let error = await rpcError { try await stripe.subscription(id: "sub_123", logger: logger) }
        #expect(error == RPCError(code: .unavailable, message: "stripe_unavailable"))
        #expect(capture.all.filter { $0.contains("outcome=transport") }.count == 3)
        try await client.shutdown()
    }

    @Test func aRequestOverItsTimeoutIsUnavailable() async throws {
        try await withLiveFakes { live in
            var policy = ProviderHTTPPolicy.fastTest
            policy.requestTimeout = .nanoseconds(1)
            policy.maximumAttempts = 1
            let alpaca = try AlpacaClient(configuration: live.alpacaConfiguration(), http: ProviderHTTP(name: "alpaca", client: live.client, policy: policy))
            let error = await rpcError { try await alpaca.account(token: "any-token", logger: logger) }
            #expect(error == RPCError(code: .unavailable, message: "alpaca_unavailable"))
        }
    }

    @Test func beyondTheConcurrencyLimitAndAFullQueueARequestFailsAtOnceWithoutCalling() async throws {
        try await withLiveFakes { live in
            var policy = ProviderHTTPPolicy.fastTest
            policy.maximumConcurrentRequests = 0
            policy.maximumQueuedRequests = 0
            let stripe = try live.stripeClient(policy: policy)
            try await live.injectFault(path: "/v1/customers", status: 500, count: 1)
            let error = await rpcError { try await stripe.createCustomer(userID: UUID(), idempotencyKey: "k", logger: logger) }
            #expect(error?.code == .resourceExhausted)
            #expect(await live.remainingFaults() == 1)
        }
    }

    @Test func requestsBeyondTheConcurrencyLimitWaitTheirTurn() async throws {
        try await withLiveFakes { live in
            var policy = ProviderHTTPPolicy.fastTest
            policy.maximumConcurrentRequests = 1
            policy.maximumQueuedRequests = 64
            let stripe = try live.stripeClient(policy: policy)
            let created = try await withThrowingTaskGroup(of: String.self) { group in
                for index in 0..<24 {
                    group.addTask { try await stripe.createCustomer(userID: UUID(), idempotencyKey: "queued-\(index)", logger: logger) }
                }
                var ids: Set<String> = []
                for try await id in group { ids.insert(id) }
                return ids
            }
            #expect(created.count == 24)
        }
    }

    @Test func aRequestCancelledWhileQueuedLeavesAtOnceWithoutCalling() async throws {
        try await withLiveFakes { live in
            var policy = ProviderHTTPPolicy.fastTest
            policy.maximumConcurrentRequests = 0
            policy.maximumQueuedRequests = 4
            let stripe = try live.stripeClient(policy: policy)
            try await live.injectFault(path: "/v1/customers", status: 500, count: 1)
            let waiting = Task { await rpcError { try await stripe.createCustomer(userID: UUID(), idempotencyKey: "k", logger: logger) } }
            waiting.cancel()
            let error = await waiting.value
            #expect(error?.code == .resourceExhausted || error?.code == .cancelled)
            #expect(await live.remainingFaults() == 1)
        }
    }

    @Test func plainHTTPToANonLoopbackHostIsRefused() async throws {
        let client = HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: ProviderHTTPPolicy().httpClientConfiguration)
        let http = ProviderHTTP(name: "test", client: client, policy: ProviderHTTPPolicy())
        func alpaca(_ api: String, _ token: String = "https://api.alpaca.markets/oauth/token") throws -> AlpacaClient {
            try AlpacaClient(
                configuration: AlpacaConfiguration(apiBaseURL: api, oauthTokenURL: token, clientID: "c", clientSecret: "s", redirectURI: "https://x/cb"),
                http: http
            )
        }
        func stripe(_ api: String, key: String = "sk_test_x") throws -> StripeClient {
            try StripeClient(configuration: StripeConfiguration(apiBaseURL: api, secretKey: key), http: http)
        }
        for refused in [
            "http://paper-api.alpaca.markets", "http://10.0.0.1:8099", "http://192.168.1.10", "http://127.0.0.1.evil.example",
            "ftp://127.0.0.1", "https://user:pw@api.alpaca.markets", "https://api.alpaca.markets?x=1", "not a url", "",
        ] {
            #expect(throws: ProviderConfigurationError.self, "\(refused)") { try alpaca(refused) }
            #expect(throws: ProviderConfigurationError.self, "\(refused)") { try alpaca("https://paper-api.alpaca.markets", refused) }
            #expect(throws: ProviderConfigurationError.self, "\(refused)") { try stripe(refused) }
        }
        for allowed in ["https://paper-api.alpaca.markets", "http://127.0.0.1:8099", "http://127.5.6.7", "http://localhost:1", "http://[::1]:8099"] {
            #expect(throws: Never.self, "\(allowed)") { try alpaca(allowed) }
            #expect(throws: Never.self, "\(allowed)") { try stripe(allowed) }
        }
        #expect(throws: ProviderConfigurationError.self) { try stripe("https://api.stripe.com", key: "pk_live_notASecretKey") }
        // The refusal names the setting, never the value.
        do {
            _ = try stripe("http://10.1.2.3", key: "sk_live_mustNotAppear")
        } catch let error as ProviderConfigurationError {
            #expect(!error.description.contains("sk_live"))
            #expect(!error.description.contains("10.1.2.3"))
        }
        try await client.shutdown()
    }
}
