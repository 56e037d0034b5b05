import Logging
import ServiceLifecycle
import UnixSignals

/// Runs `reload` on each delivery of `signal` (SIGHUP: `systemctl reload …`) until graceful
/// shutdown. A reload that throws is logged and the process keeps what it had: a bad key file or
/// certificate never takes a running service down.
public struct ReloadOnSignal: Service {
    let signal: UnixSignal
    let what: String
    let logger: Logger
    let reload: @Sendable () throws -> Void

    /// `what` names the thing reloaded in the log (e.g. "tls certificate", "vault keys").
    public init(_ signal: UnixSignal = .sighup, what: String, logger: Logger, reload: @escaping @Sendable () throws -> Void) {
        self.signal = signal
        self.what = what
        self.logger = logger
        self.reload = reload
    }

    public func run() async throws {
        for await _ in await UnixSignalsSequence(trapping: signal).cancelOnGracefulShutdown() {
            do {
                try reload()
                logger.notice("\(what) reloaded", metadata: ["event": "reloaded", "what": "\(what)"])
            } catch {
                logger.error("\(what) reload failed; keeping the current one", metadata: ["event": "reload_failed", "what": "\(what)", "error": "\(error)"])
            }
        }
    }
}
