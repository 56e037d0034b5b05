import ArgumentParser
import Logging
import ServiceLifecycle
import UnixSignals

/// The start-up every `clau-*` service executable shares, so each `main` only reads its
/// configuration: JSON logs; no core dumps and no ptrace before any secret is read (C-11); the
/// services in one `ServiceGroup` that drains on SIGTERM or SIGINT. An error while starting or
/// running is logged once as "`name` refused to start" with the error's description (which names
/// the setting or file at fault, never a secret: R-20) and the process exits with status 1.
public enum ServiceProcess {
    /// What `start` hands back: the services to run, and what the "starting" line should say.
    public struct Plan {
        public var services: [ServiceGroupConfiguration.ServiceConfiguration]
        public var startingMetadata: Logger.Metadata

        public init(services: [ServiceGroupConfiguration.ServiceConfiguration], startingMetadata: Logger.Metadata = [:]) {
            self.services = services
            self.startingMetadata = startingMetadata
        }
    }

    /// `name`: `vault`, `auth`, `edge`, … (the logger is `clau-<name>`). `start` builds the
    /// services once the process is hardened.
    public static func run(name: String, logLevel: String, start: (Logger) async throws -> Plan) async throws {
        LoggingSystem.bootstrapJSON(level: Logger.Level(rawValue: logLevel) ?? .info)
        let logger = Logger(label: "clau-\(name)")
        do {
            try ProcessHardening.disableCoreDumpsAndPtrace()
            let plan = try await start(logger)
            let group = ServiceGroup(configuration: .init(services: plan.services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
            logger.info("\(name) starting", metadata: plan.startingMetadata)
            try await group.run()
        } catch {
            logger.critical("\(name) refused to start", metadata: ["error": "\(error)"])
            throw ExitCode(1)
        }
    }
}

/// Why a service refused to start (a loose secret file, a bad flag, an unreachable dependency).
/// The message names the file or setting, never a secret; the process prints it and exits 1.
public struct StartupError: Error, Sendable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}
