import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import RPC
import Synchronization

/// One outbound request as the provider clients describe it. `pathTemplate` (`/v2/orders/{id}`)
/// is what is logged; `url` (with ids and query) never is.
struct ProviderRequest: Sendable {
    var method: HTTPMethod
    var pathTemplate: String
    var url: String
    var headers: HTTPHeaders
    var body: [UInt8]?
    /// Safe to send again after a 429/5xx/transport failure: GETs, DELETEs, and Stripe POSTs that
    /// carry an `Idempotency-Key` (resent with the same key).
    var idempotent: Bool
}

/// A response read whole (at most `maximumResponseBytes`).
struct ProviderResponse: Sendable {
    var status: Int
    var headers: HTTPHeaders
    var body: [UInt8]
}

/// Why no usable response came back; each client turns it into its own RPC error.
enum ProviderHTTPFailure: Error, Sendable, Equatable {
    /// The breaker is open: nothing was sent.
    case circuitOpen
    /// Too many requests to this provider in flight: nothing was sent.
    case overloaded
    /// Connect failure, reset, TLS failure, or no whole answer within the request timeout.
    case transport
    /// The body was longer than the cap.
    case responseTooLarge(status: Int)
    /// The caller's task was cancelled.
    case cancelled
}

/// One provider's HTTP plumbing over a shared `HTTPClient`: a concurrency limit, a circuit breaker
/// (refuses at once while open, without calling), retries with jittered exponential backoff only
/// for idempotent requests after 429/5xx/transport failures, a response size cap, and one log line
/// per attempt with the method, the path template, status, attempt and duration — never headers,
/// tokens, secrets, query strings or bodies (C-11/R-10, C-17).
public final class ProviderHTTP: Sendable {
    public let name: String
    let client: HTTPClient
    let policy: ProviderHTTPPolicy

    private struct State: Sendable {
        var breaker: CircuitBreaker
        var inFlight = 0
        /// Requests waiting for a slot, oldest first; each resumes with true (slot handed over)
        /// or false (cancelled while waiting).
        var waiters: [(id: UInt64, continuation: CheckedContinuation<Bool, Never>)] = []
        var nextWaiterID: UInt64 = 0
    }

    private let state: Mutex<State>

    public init(name: String, client: HTTPClient, policy: ProviderHTTPPolicy) {
        self.name = name
        self.client = client
        self.policy = policy
        self.state = Mutex(State(breaker: CircuitBreaker(failureThreshold: policy.breakerFailureThreshold, cooldown: policy.breakerCooldown)))
    }

    /// A slot among `maximumConcurrentRequests`: at once when one is free, else after the requests
    /// queued before this one (at most `maximumQueuedRequests` wait; one more is refused at once,
    /// so the queue is bounded). A caller cancelled while waiting (its RPC deadline passed) leaves
    /// the queue. False: refused or cancelled.
    private func acquireSlot() async -> Bool {
        let id = state.withLock { state -> UInt64 in
            state.nextWaiterID += 1
            return state.nextWaiterID
        }
        return await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Bool, Never>) in
                let immediate = state.withLock { state -> Bool? in
                    if state.inFlight < policy.maximumConcurrentRequests {
                        state.inFlight += 1
                        return true
                    }
                    // Checked under the lock: a cancellation after this point finds the waiter.
                    guard !Task.isCancelled, state.waiters.count < policy.maximumQueuedRequests else { return false }
                    state.waiters.append((id, continuation))
                    return nil
                }
                if let immediate { continuation.resume(returning: immediate) }
            }
        } onCancel: {
            let waiter = state.withLock { state -> CheckedContinuation<Bool, Never>? in
                guard let index = state.waiters.firstIndex(where: { $0.id == id }) else { return nil }
                return state.waiters.remove(at: index).continuation
            }
            waiter?.resume(returning: false)
        }
    }

    /// Hands the slot to the oldest waiter, or frees it.
    private func releaseSlot() {
        let next = state.withLock { state -> CheckedContinuation<Bool, Never>? in
            guard !state.waiters.isEmpty else {
                state.inFlight -= 1
                return nil
            }
            return state.waiters.removeFirst().continuation
        }
        next?.resume(returning: true)
    }

    /// The breaker's state now (for tests and health reporting).
    public var breakerState: CircuitBreaker.State { state.withLock { $0.breaker.state } }

    /// The wait before retry number `attempt` (1 = the first retry): full jitter over an
    /// exponential ceiling, `uniform(0, min(maximum, base · 2^(attempt-1)))`.
    public static func backoff(
        beforeRetry attempt: Int, base: Duration, maximum: Duration, using generator: inout some RandomNumberGenerator
    ) -> Duration {
        let exponent = min(max(attempt - 1, 0), 30)
        let ceiling = min(maximum.secondsDouble, base.secondsDouble * Double(1 << exponent))
        guard ceiling > 0 else { return .zero }
        // One draw, 53 random bits → [0, 1): no rejection loop, so any generator (a fixed one in
        // tests) gives an answer.
        let unit = Double(generator.next() >> 11) * 0x1.0p-53
        return .nanoseconds(Int64(unit * ceiling * 1e9))
    }

    /// Sends `request`, retrying as the policy allows. Returns the last response whatever its status
    /// (the client maps non-2xx); throws `ProviderHTTPFailure` when there is none to return.
    func send(_ request: ProviderRequest, logger: Logger, retryAfter: @Sendable (ProviderResponse) -> Duration? = { _ in nil }) async throws(ProviderHTTPFailure) -> ProviderResponse {
        guard await acquireSlot() else {
            log(logger, .warning, request, status: nil, attempt: 0, duration: .zero, outcome: "overloaded")
            throw .overloaded
        }
        defer { releaseSlot() }

        var generator = SystemRandomNumberGenerator()
        let attempts = request.idempotent ? max(1, policy.maximumAttempts) : 1
        var attempt = 0
        while true {
            attempt += 1
            let allowed = state.withLock { $0.breaker.admit(now: .now) }
            guard allowed else {
                log(logger, .warning, request, status: nil, attempt: attempt, duration: .zero, outcome: "circuit_open")
                throw .circuitOpen
            }
            let started = ContinuousClock.now
            let outcome = await perform(request)
            let duration = ContinuousClock.now - started

            var waitHint: Duration?
            switch outcome {
            case .success(let response):
                let failed = response.status == 429 || (500...599).contains(response.status)
                if failed {
                    state.withLock { $0.breaker.recordFailure(now: .now) }
                } else {
                    state.withLock { $0.breaker.recordSuccess() }
                }
                log(logger, failed ? .warning : .info, request, status: response.status, attempt: attempt, duration: duration, outcome: failed ? "retryable_status" : "answered")
                guard failed, attempt < attempts else { return response }
                if response.status == 429 {
                    // A rate limit that resets later than our longest backoff is not retried here:
                    // the caller gets RESOURCE_EXHAUSTED with the provider's retry_after.
                    if let hint = retryAfter(response) {
                        guard hint <= policy.maximumBackoff else { return response }
                        waitHint = hint
                    }
                }
            case .failure(.cancelled):
                state.withLock { $0.breaker.recordAbandoned() }
                log(logger, .info, request, status: nil, attempt: attempt, duration: duration, outcome: "cancelled")
                throw .cancelled
            case .failure(let failure):
                state.withLock { $0.breaker.recordFailure(now: .now) }
                var status: Int?
                if case .responseTooLarge(let answered) = failure { status = answered }
                log(logger, .warning, request, status: status, attempt: attempt, duration: duration, outcome: "\(failure)")
                guard failure == .transport, attempt < attempts else { throw failure }
            }
            let delay = waitHint ?? Self.backoff(beforeRetry: attempt, base: policy.baseBackoff, maximum: policy.maximumBackoff, using: &generator)
            do {
                try await Task.sleep(for: delay)
            } catch {
                throw .cancelled
            }
        }
    }

    /// One attempt, bounded by the request timeout from the first byte sent to the last byte read.
    private func perform(_ request: ProviderRequest) async -> Result<ProviderResponse, ProviderHTTPFailure> {
        if Task.isCancelled { return .failure(.cancelled) }
        let outgoing = {
            var outgoing = HTTPClientRequest(url: request.url)
            outgoing.method = request.method
            outgoing.headers = request.headers
            if let body = request.body {
                outgoing.body = .bytes(body)
            }
            return outgoing
        }()
        let timeout = policy.requestTimeout
        let maximumBytes = policy.maximumResponseBytes
        let client = self.client
        // AsyncHTTPClient's own logging stays quiet: it could name the URL, which carries ids.
        let quietLogger = Logger(label: "clau.broker.provider-http", factory: { _ in SwiftLogNoOpLogHandler() })
        let result: Result<ProviderResponse, ProviderHTTPFailure>? = await withTaskGroup(of: Result<ProviderResponse, ProviderHTTPFailure>?.self) { group in
            group.addTask {
                do {
                    let response = try await client.execute(outgoing, deadline: .now() + TimeAmount(timeout), logger: quietLogger)
                    let status = Int(response.status.code)
                    if let length = response.headers.first(name: "content-length").flatMap(Int.init), length > maximumBytes {
                        return .failure(.responseTooLarge(status: status))
                    }
                    do {
                        let buffer = try await response.body.collect(upTo: maximumBytes)
                        return .success(ProviderResponse(status: status, headers: response.headers, body: Array(buffer.readableBytesView)))
                    } catch is NIOTooManyBytesError {
                        return .failure(.responseTooLarge(status: status))
                    }
                } catch {
                    return .failure(Task.isCancelled ? .cancelled : .transport)
                }
            }
            group.addTask {
                // The timer: nil when it fires; a cancelled timer ends quietly.
                do {
                    try await Task.sleep(for: timeout)
                    return nil
                } catch {
                    return .failure(.cancelled)
                }
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            return first
        }
        guard let result else { return .failure(Task.isCancelled ? .cancelled : .transport) }
        if case .failure(.cancelled) = result, !Task.isCancelled {
            // The timer child ended first only because the whole attempt was cancelled; if the
            // parent is not cancelled this cannot happen, but report it as a transport failure.
            return .failure(.transport)
        }
        return result
    }

    private func log(
        _ logger: Logger, _ level: Logger.Level, _ request: ProviderRequest, status: Int?, attempt: Int, duration: Duration, outcome: String
    ) {
        var metadata: Logger.Metadata = [
            "provider": "\(name)",
            "method": "\(request.method.rawValue)",
            "path": "\(request.pathTemplate)",
            "attempt": "\(attempt)",
            "duration_ms": "\(Int((duration.secondsDouble * 1000).rounded()))",
            "outcome": "\(outcome)",
        ]
        if let status { metadata["status"] = "\(status)" }
        logger.log(level: level, "provider request", metadata: metadata)
    }
}
