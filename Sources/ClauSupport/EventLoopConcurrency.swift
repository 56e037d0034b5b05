import NIOCore
import NIOPosix

/// Where a service process runs Swift Concurrency.
public enum EventLoopConcurrency {
    /// Makes NIO's event loops Swift Concurrency's global executor, so a request is not handed
    /// between the concurrency pool and the I/O threads at every await (docs/benchmarks.md,
    /// edge-bench). Call first thing in `main`, on the main thread, before any task runs. Work
    /// that blocks must then never run on a task: bcrypt has its own NIOThreadPool, sendmail its
    /// own thread.
    @MainActor public static func install() {
        _ = NIOSingletons.unsafeTryInstallSingletonPosixEventLoopGroupAsConcurrencyGlobalExecutor()
    }
}
