import CClauSystem
#if canImport(Glibc)
import Glibc
#endif

/// Start-up hardening for processes that hold secrets (C-11): no core dumps (they would contain
/// keys) and no ptrace attach from other processes of the same uid.
public enum ProcessHardening {
    public static func disableCoreDumpsAndPtrace() throws(HardeningError) {
        var limit = rlimit(rlim_cur: 0, rlim_max: 0)
        guard setrlimit(Int32(RLIMIT_CORE.rawValue), &limit) == 0 else { throw .failed("setrlimit(RLIMIT_CORE, 0)") }
        guard clau_set_dumpable(0) == 0 else { throw .failed("prctl(PR_SET_DUMPABLE, 0)") }
    }

    /// Whether this process can currently dump core / be ptrace-attached (for tests).
    public static var isDumpable: Bool { clau_get_dumpable() == 1 }
}

public struct HardeningError: Error, CustomStringConvertible {
    public var step: String
    static func failed(_ step: String) -> HardeningError { HardeningError(step: step) }
    public var description: String { "\(step) failed: \(String(cString: strerror(errno)))" }
}
