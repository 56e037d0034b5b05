// Child processes for clauctl (pg_dump, pg_restore). posix_spawn, not Foundation.Process: the
// child gets exactly the descriptors given (everything from 3 up is closed), an explicit
// environment (no secret of ours leaks into it) and default signal handling. Waiting blocks:
// call `wait` from synchronous code or a dedicated thread, never from a Swift concurrency thread.

import CClauSystem
#if canImport(Glibc)
import Glibc
#endif

public enum ChildProcess {
    /// How a child ended.
    public enum Status: Sendable, Equatable, CustomStringConvertible {
        case exited(Int32)
        case signalled(Int32)

        public var succeeded: Bool { self == .exited(0) }

        public var description: String {
            switch self {
            case .exited(let code): "exit status \(code)"
            case .signalled(let signal): "killed by signal \(signal)"
            }
        }
    }

    /// Starts `executable` (an absolute path) with `arguments` and exactly `environment`
    /// ("NAME=value" strings). `stdin`, `stdout` and `stderr` are descriptors of ours to give the
    /// child as 0, 1 and 2; nil gives it /dev/null.
    ///
    /// `newProcessGroup` makes the child lead its own group, so a timeout can kill it together with
    /// anything it forked. Spawning is retried briefly on ETXTBSY: another thread's fork may hold
    /// a just-written executable open for writing for a moment.
    public static func spawn(
        _ executable: String, _ arguments: [String], environment: [String],
        stdin: Int32? = nil, stdout: Int32? = nil, stderr: Int32? = nil, newProcessGroup: Bool = false
    ) throws(ChildProcessError) -> pid_t {
        guard executable.hasPrefix("/"), !executable.utf8.contains(0), !arguments.contains(where: { $0.utf8.contains(0) }) else {
            throw ChildProcessError(executable: executable, step: "check arguments", reason: "the executable must be an absolute path; no NUL bytes")
        }
        var actions = posix_spawn_file_actions_t()
        guard posix_spawn_file_actions_init(&actions) == 0 else {
            throw ChildProcessError(executable: executable, step: "posix_spawn_file_actions_init", reason: errorMessage(errno))
        }
        defer { posix_spawn_file_actions_destroy(&actions) }
        var attributes = posix_spawnattr_t()
        guard posix_spawnattr_init(&attributes) == 0 else {
            throw ChildProcessError(executable: executable, step: "posix_spawnattr_init", reason: errorMessage(errno))
        }
        defer { posix_spawnattr_destroy(&attributes) }

        var setup: [Int32] = []
        for (target, source) in [(Int32(0), stdin), (1, stdout), (2, stderr)] {
            if let source {
                setup.append(posix_spawn_file_actions_adddup2(&actions, source, target))
            } else {
                setup.append(posix_spawn_file_actions_addopen(&actions, target, "/dev/null", target == 0 ? O_RDONLY : O_WRONLY, 0))
            }
        }
        // Descriptors opened without O_CLOEXEC (by a library) must not reach the child.
        setup.append(clau_spawn_close_from(&actions, 3))
        var emptyMask = sigset_t()
        sigemptyset(&emptyMask)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for signal in [SIGPIPE, SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGCHLD, SIGUSR1, SIGUSR2, SIGALRM] {
            sigaddset(&defaults, signal)
        }
        setup.append(posix_spawnattr_setsigmask(&attributes, &emptyMask))
        setup.append(posix_spawnattr_setsigdefault(&attributes, &defaults))
        var flags = Int32(POSIX_SPAWN_SETSIGMASK) | Int32(POSIX_SPAWN_SETSIGDEF)
        if newProcessGroup {
            setup.append(posix_spawnattr_setpgroup(&attributes, 0))
            flags |= Int32(POSIX_SPAWN_SETPGROUP)
        }
        setup.append(posix_spawnattr_setflags(&attributes, Int16(flags)))
        if let failed = setup.first(where: { $0 != 0 }) {
            throw ChildProcessError(executable: executable, step: "posix_spawn setup", reason: errorMessage(failed))
        }

        let argv: [UnsafeMutablePointer<CChar>?] = ([executable] + arguments).map { strdup($0) } + [nil]
        let envp: [UnsafeMutablePointer<CChar>?] = environment.map { strdup($0) } + [nil]
        defer {
            argv.forEach { free($0) }
            envp.forEach { free($0) }
        }
        var pid: pid_t = 0
        var result = posix_spawn(&pid, executable, &actions, &attributes, argv, envp)
        var attempt = 0
        while result == ETXTBSY && attempt < 10 {
            attempt += 1
            usleep(UInt32(5_000 * attempt))
            result = posix_spawn(&pid, executable, &actions, &attributes, argv, envp)
        }
        guard result == 0 else {
            throw ChildProcessError(executable: executable, step: "start", reason: errorMessage(result))
        }
        return pid
    }

    /// Blocks until `pid` exits and reaps it.
    public static func wait(_ pid: pid_t, executable: String) throws(ChildProcessError) -> Status {
        var status: Int32 = 0
        var waited: pid_t
        repeat { waited = waitpid(pid, &status, 0) } while waited < 0 && errno == EINTR
        // A failed wait (ECHILD) must never read as success.
        guard waited == pid else {
            throw ChildProcessError(executable: executable, step: "waitpid", reason: errorMessage(errno))
        }
        return status & 0x7f == 0 ? .exited((status >> 8) & 0xff) : .signalled(status & 0x7f)
    }

    /// A pipe whose two ends are close-on-exec from the start (a child spawned meanwhile by
    /// another thread must not hold the write end open).
    public static func makePipe() throws(ChildProcessError) -> (read: Int32, write: Int32) {
        var fds: [Int32] = [-1, -1]
        guard clau_pipe_cloexec(&fds) == 0 else {
            throw ChildProcessError(executable: "-", step: "pipe", reason: errorMessage(errno))
        }
        return (fds[0], fds[1])
    }

    /// The first executable file `name` in the directories of `searchPath` (colon-separated).
    public static func find(_ name: String, searchPath: String) -> String? {
        for directory in searchPath.split(separator: ":") where directory.hasPrefix("/") {
            let candidate = "\(directory)/\(name)"
            if access(candidate, X_OK) == 0 { return candidate }
        }
        return nil
    }

    static func errorMessage(_ code: Int32) -> String { String(cString: strerror(code)) }
}

/// A child that could not be started or waited for. Names the program and the step.
public struct ChildProcessError: Error, Sendable, CustomStringConvertible {
    public var executable: String
    public var step: String
    public var reason: String
    public var description: String { "\(executable): \(step) failed: \(reason)" }
}
