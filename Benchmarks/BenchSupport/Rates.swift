import Foundation

/// Timing loops shared by the benchmark executables: calls per second of a body, run for a
/// fixed wall time after a warm-up.
public enum Rates {
    /// Calls of `body` per second on this thread; `batch` calls between clock reads (fast bodies).
    public static func perSecond(_ seconds: Double, warmup: Int = 1, batch: Int = 1, _ body: () -> Void) -> Double {
        for _ in 0..<warmup { body() }
        let clock = ContinuousClock()
        let start = clock.now
        var count = 0
        while clock.now - start < .milliseconds(Int(seconds * 1000)) {
            for _ in 0..<batch { body() }
            count += batch
        }
        return Double(count) / Self.seconds(clock.now - start)
    }

    /// Calls per second of `body` with `workers` tasks calling it in a loop.
    public static func perSecondAsync(_ seconds: Double, workers: Int, warmup: Int = 1, _ body: @escaping @Sendable () async throws -> Void) async throws -> Double {
        for _ in 0..<warmup { try await body() }
        let clock = ContinuousClock()
        let start = clock.now
        let end = start + .milliseconds(Int(seconds * 1000))
        let count = try await withThrowingTaskGroup(of: Int.self) { group in
            for _ in 0..<workers {
                group.addTask {
                    var n = 0
                    while clock.now < end { try await body(); n += 1 }
                    return n
                }
            }
            return try await group.reduce(0, +)
        }
        return Double(count) / Self.seconds(clock.now - start)
    }

    /// Calls per second of `body` on `threads` OS threads (blocking work such as bcrypt).
    public static func perSecondOnThreads(_ seconds: Double, threads: Int, _ body: @escaping @Sendable () -> Void) async -> Double {
        let clock = ContinuousClock()
        let start = clock.now
        let end = start + .milliseconds(Int(seconds * 1000))
        let counts = await withTaskGroup(of: Int.self) { group in
            for _ in 0..<threads {
                group.addTask {
                    await withCheckedContinuation { continuation in
                        Thread {
                            var n = 0
                            while clock.now < end { body(); n += 1 }
                            continuation.resume(returning: n)
                        }.start()
                    }
                }
            }
            return await group.reduce(0, +)
        }
        return Double(counts) / Self.seconds(clock.now - start)
    }

    public static func seconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
    }
}
