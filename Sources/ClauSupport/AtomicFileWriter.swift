// Files that appear whole or not at all (backups, backup keys): written to a temporary file in
// the target's directory (created 0600 with O_EXCL, so never readable by others), fsynced, given
// their final mode, renamed (or linked, to refuse an existing file) into place, and the directory
// fsynced. A crash leaves at most a hidden temporary file, never a partial target.

#if canImport(Glibc)
import Glibc
#endif

public final class AtomicFileWriter {
    public let path: String
    public let temporaryPath: String
    private let directory: String
    private var fd: Int32
    private var finished = false

    /// Creates the temporary file next to `path`.
    public init(path: String) throws {
        guard !path.isEmpty, !path.utf8.contains(0), !path.hasSuffix("/") else {
            throw FileWriteError(path: path, step: "check path", reason: "not a file path")
        }
        self.path = path
        let slash = path.lastIndex(of: "/")
        directory = slash.map { $0 == path.startIndex ? "/" : String(path[..<$0]) } ?? "."
        let name = slash.map { String(path[path.index(after: $0)...]) } ?? path
        temporaryPath = "\(directory)/.\(name).tmp-\(UInt64.random(in: 0...UInt64.max))"
        fd = open(temporaryPath, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard fd >= 0 else {
            throw FileWriteError(path: path, step: "create a temporary file in \(directory)", reason: String(cString: strerror(errno)))
        }
    }

    deinit { discard() }

    /// Appends `bytes`.
    public func write(_ bytes: UnsafeRawBufferPointer) throws {
        var written = 0
        while written < bytes.count {
            let count = Glibc.write(fd, bytes.baseAddress! + written, bytes.count - written)
            if count < 0 {
                if errno == EINTR { continue }
                throw failure("write")
            }
            written += count
        }
    }

    public func write(_ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { try write($0) }
    }

    /// Overwrites bytes already written at `offset` (a header completed at the end).
    public func write(_ bytes: [UInt8], at offset: Int) throws {
        let count = bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, off_t(offset)) }
        guard count == bytes.count else { throw failure("pwrite") }
    }

    /// Makes the file `mode`, fsyncs it and moves it to `path`. With `replacing: false` an existing
    /// file at `path` is refused (link(2) fails with EEXIST) and kept.
    public func commit(mode: mode_t, replacing: Bool) throws {
        guard fchmod(fd, mode) == 0 else { throw failure("chmod \(String(mode, radix: 8))") }
        guard fsync(fd) == 0 else { throw failure("fsync") }
        let closed = close(fd)
        fd = -1
        guard closed == 0 else { throw failure("close") }
        if replacing {
            guard rename(temporaryPath, path) == 0 else { throw failure("rename into place") }
        } else {
            guard link(temporaryPath, path) == 0 else {
                throw errno == EEXIST ? discarding(FileWriteError(path: path, step: "create", reason: "the file exists already; refusing to replace it")) : failure("link into place")
            }
            unlink(temporaryPath)
        }
        finished = true
        let directoryFD = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard directoryFD >= 0 else { throw FileWriteError(path: path, step: "open directory \(directory)", reason: String(cString: strerror(errno))) }
        defer { close(directoryFD) }
        guard fsync(directoryFD) == 0 else { throw FileWriteError(path: path, step: "fsync directory \(directory)", reason: String(cString: strerror(errno))) }
    }

    /// Removes the temporary file (also done when the writer goes away uncommitted).
    public func discard() {
        guard !finished else { return }
        finished = true
        if fd >= 0 { close(fd) }
        fd = -1
        unlink(temporaryPath)
    }

    private func failure(_ step: String) -> FileWriteError {
        discarding(FileWriteError(path: path, step: step, reason: String(cString: strerror(errno))))
    }

    private func discarding(_ error: FileWriteError) -> FileWriteError {
        discard()
        return error
    }
}

/// Names the file, the step and the system's reason; never contents.
public struct FileWriteError: Error, Sendable, CustomStringConvertible {
    public var path: String
    public var step: String
    public var reason: String
    public var description: String { "\(path): \(step) failed: \(reason)" }
}
