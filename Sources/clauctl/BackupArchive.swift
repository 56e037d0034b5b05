// The encrypted backup file (C-18). Layout, version 1:
//
//   header, 64 bytes
//     0  magic "CLAUBKUP"                 8
//     8  format version, u16 BE = 1        2
//    10  cipher, u8 = 1 (AES-256-GCM)      1
//    11  reserved, u8 = 0                  1
//    12  chunk size, u32 BE (plaintext)    4
//    16  key id: SHA-256(key)[0..<8]        8   (identifies the key, reveals nothing of it)
//    24  salt, 32 random bytes             32
//    56  plaintext length, u64 BE          8   (written last; covered by the checksum)
//   chunks: AES-256-GCM of each chunk-size piece of the pg_dump output (the last may be shorter),
//     ciphertext then 16-byte tag. Key: HKDF-SHA256(backup key, salt, "clau-backup v1 AES-256-GCM"),
//     so each file has its own key and the nonce can be the chunk index (u64 BE, 4 zero bytes
//     first). Additional data: header bytes 0..<56, the index (u64 BE) and 1 on the last chunk,
//     else 0 — chunks cannot be reordered, dropped, or cut off at a chunk boundary unnoticed.
//   trailer: SHA-256 of the chunks followed by the header (32 bytes; that order lets the writer
//     stream, the length being known last), so a damaged or truncated file is refused before any
//     decryption, with a message that says so.
//
// Streamed in 1 MiB chunks: the dump is never held in memory, and plaintext never touches disk
// on the backup side (pg_dump writes into a pipe).

import ClauSupport
import Crypto
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The symmetric key of the backups: 32 random bytes, base64 on one line in a 0400/0600 file.
/// Its own key, never one of the vault's Fernet keys.
struct BackupKey: Sendable {
    static let byteCount = 32
    let key: SymmetricKey

    /// Hex of the first 8 bytes of SHA-256(key): printed and stored in every backup.
    var id: String { idBytes.map { String(format: "%02x", $0) }.joined() }

    var idBytes: [UInt8] {
        key.withUnsafeBytes { Array(SHA256.hash(data: $0).prefix(8)) }
    }

    static func generate() -> BackupKey { BackupKey(key: SymmetricKey(size: .bits256)) }

    /// The file's text: base64 and a newline.
    var fileContents: [UInt8] {
        key.withUnsafeBytes { Array((Data($0).base64EncodedString() + "\n").utf8) }
    }

    /// Reads the key with SecretFile's checks: a regular file, no group or other permission bit,
    /// not a symlink. Errors name the path, never contents.
    static func load(path: String) throws -> BackupKey {
        let text = try SecretFile.readString(at: path)
        guard let bytes = Data(base64Encoded: text), bytes.count == byteCount else {
            throw BackupError("\(path): not a backup key (expected \(byteCount) bytes as base64 on one line; make one with `clauctl backup keygen`)")
        }
        return BackupKey(key: SymmetricKey(data: bytes))
    }
}

struct BackupHeader: Equatable, Sendable {
    static let magic = Array("CLAUBKUP".utf8)
    static let size = 64
    static let authenticatedSize = 56
    static let version: UInt16 = 1
    static let cipherAESGCM: UInt8 = 1
    static let tagSize = 16
    static let checksumSize = 32
    static let defaultChunkSize: UInt32 = 1 << 20
    /// Bounds a reader's memory whatever a header says.
    static let chunkSizeRange: ClosedRange<UInt32> = 4096...(16 << 20)

    var chunkSize: UInt32
    var keyID: [UInt8]
    var salt: [UInt8]
    var plaintextLength: UInt64

    var bytes: [UInt8] {
        var out = Self.magic
        out += withUnsafeBytes(of: Self.version.bigEndian, Array.init)
        out += [Self.cipherAESGCM, 0]
        out += withUnsafeBytes(of: chunkSize.bigEndian, Array.init)
        out += keyID + salt
        out += withUnsafeBytes(of: plaintextLength.bigEndian, Array.init)
        return out
    }

    var chunkCount: UInt64 { max(1, (plaintextLength + UInt64(chunkSize) - 1) / UInt64(chunkSize)) }

    /// Size of the whole file this header describes, or nil when it would not fit in 63 bits.
    var expectedFileSize: UInt64? {
        let (tags, overflow1) = chunkCount.multipliedReportingOverflow(by: UInt64(Self.tagSize))
        let (body, overflow2) = plaintextLength.addingReportingOverflow(tags)
        let (total, overflow3) = body.addingReportingOverflow(UInt64(Self.size + Self.checksumSize))
        return overflow1 || overflow2 || overflow3 || total > UInt64(Int64.max) ? nil : total
    }

    static func parse(_ bytes: [UInt8], path: String) throws -> BackupHeader {
        guard bytes.count == size, Array(bytes[0..<8]) == magic else {
            throw BackupError("\(path): not a Clau backup (no CLAUBKUP header)")
        }
        let version = UInt16(bytes[8]) << 8 | UInt16(bytes[9])
        guard version == Self.version else {
            throw BackupError("\(path): backup format version \(version); this clauctl reads version \(Self.version)")
        }
        guard bytes[10] == cipherAESGCM, bytes[11] == 0 else {
            throw BackupError("\(path): unknown cipher \(bytes[10]) in the header (corrupted?)")
        }
        let chunkSize = bytes[12..<16].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
        guard chunkSizeRange.contains(chunkSize) else {
            throw BackupError("\(path): chunk size \(chunkSize) out of range in the header (corrupted?)")
        }
        let length = bytes[56..<64].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        return BackupHeader(chunkSize: chunkSize, keyID: Array(bytes[16..<24]), salt: Array(bytes[24..<56]), plaintextLength: length)
    }

    func fileKey(_ key: BackupKey) -> SymmetricKey {
        HKDF<SHA256>.deriveKey(inputKeyMaterial: key.key, salt: salt, info: Array("clau-backup v1 AES-256-GCM".utf8), outputByteCount: 32)
    }

    static func nonce(_ index: UInt64) -> AES.GCM.Nonce {
        // Cannot fail: 12 bytes.
        try! AES.GCM.Nonce(data: [UInt8](repeating: 0, count: 4) + withUnsafeBytes(of: index.bigEndian, Array.init))
    }

    func additionalData(index: UInt64, final: Bool) -> [UInt8] {
        Array(bytes[0..<Self.authenticatedSize]) + withUnsafeBytes(of: index.bigEndian, Array.init) + [final ? 1 : 0]
    }
}

/// A refusal or failure with one clear message; never key material or row data.
struct BackupError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

enum BackupArchive {
    /// Reads `input` (pg_dump's stdout) to its end and writes it encrypted to `writer`.
    /// Returns the plaintext length and the file's checksum.
    static func encrypt(from input: Int32, key: BackupKey, to writer: AtomicFileWriter) throws -> (length: UInt64, checksum: String) {
        var header = BackupHeader(
            chunkSize: BackupHeader.defaultChunkSize, keyID: key.idBytes,
            salt: (0..<32).map { _ in UInt8.random(in: 0...255) }, plaintextLength: 0
        )
        let fileKey = header.fileKey(key)
        var hash = SHA256()
        try writer.write(header.bytes)  // the length is filled in at the end

        // One chunk is held back, so the last one is known when it is sealed.
        var pending = try readChunk(input, size: Int(header.chunkSize))
        var index: UInt64 = 0
        var total = UInt64(pending.count)
        while true {
            let next = pending.count == Int(header.chunkSize) ? try readChunk(input, size: Int(header.chunkSize)) : []
            let final = next.isEmpty
            let sealed = try AES.GCM.seal(pending, using: fileKey, nonce: BackupHeader.nonce(index), authenticating: header.additionalData(index: index, final: final))
            var out = Array(sealed.ciphertext)
            out += sealed.tag
            hash.update(data: out)
            try writer.write(out)
            if final { break }
            index += 1
            total += UInt64(next.count)
            pending = next
        }
        header.plaintextLength = total
        try writer.write(header.bytes, at: 0)
        hash.update(data: header.bytes)
        let checksum = Array(hash.finalize())
        try writer.write(checksum)
        return (total, hex(checksum))
    }

    /// Checks a backup without decrypting anything: header, size (truncation), checksum, key id,
    /// in that order. Returns the header.
    static func verify(fd: Int32, path: String, key: BackupKey) throws -> BackupHeader {
        var status = stat()
        guard fstat(fd, &status) == 0 else { throw BackupError("\(path): cannot stat: \(String(cString: strerror(errno)))") }
        guard status.st_mode & S_IFMT == S_IFREG else { throw BackupError("\(path): not a regular file") }
        let size = UInt64(status.st_size)
        guard size >= UInt64(BackupHeader.size) else {
            throw BackupError("\(path): truncated or not a Clau backup (\(size) bytes, less than a header)")
        }
        let rawHeader = try readExactly(fd, at: 0, count: BackupHeader.size, path: path)
        let header = try BackupHeader.parse(rawHeader, path: path)
        guard let expected = header.expectedFileSize else { throw BackupError("\(path): impossible length in the header (corrupted)") }
        guard size >= expected else {
            throw BackupError("\(path): truncated: \(size) bytes, the header announces \(expected); nothing was restored")
        }
        guard size == expected else {
            throw BackupError("\(path): corrupted: \(size) bytes, the header announces \(expected)")
        }
        var hash = SHA256()
        var offset = UInt64(BackupHeader.size)
        let end = size - UInt64(BackupHeader.checksumSize)
        while offset < end {
            let count = Int(min(UInt64(1 << 20), end - offset))
            hash.update(data: try readExactly(fd, at: offset, count: count, path: path))
            offset += UInt64(count)
        }
        hash.update(data: rawHeader)
        let stored = try readExactly(fd, at: end, count: BackupHeader.checksumSize, path: path)
        guard Array(hash.finalize()) == stored else {
            throw BackupError("\(path): corrupted: the SHA-256 checksum does not match (damaged in storage or transfer?); nothing was restored")
        }
        guard header.keyID == key.idBytes else {
            throw BackupError("\(path): made with backup key \(hex(header.keyID)), not with this key (\(key.id)); give the key file it was made with")
        }
        return header
    }

    /// Decrypts a verified backup chunk by chunk into `output` (a 0600 temporary file's writer);
    /// any chunk failing authentication stops it.
    static func decrypt(fd: Int32, path: String, header: BackupHeader, key: BackupKey, to output: (UnsafeRawBufferPointer) throws -> Void) throws {
        let fileKey = header.fileKey(key)
        let chunks = header.chunkCount
        var offset = UInt64(BackupHeader.size)
        var remaining = header.plaintextLength
        for index in 0..<chunks {
            let plainCount = Int(min(remaining, UInt64(header.chunkSize)))
            let sealed = try readExactly(fd, at: offset, count: plainCount + BackupHeader.tagSize, path: path)
            let box = try AES.GCM.SealedBox(nonce: BackupHeader.nonce(index), ciphertext: sealed[0..<plainCount], tag: sealed[plainCount...])
            let plaintext: Data
            do {
                plaintext = try AES.GCM.open(box, using: fileKey, authenticating: header.additionalData(index: index, final: index == chunks - 1))
            } catch {
                throw BackupError("\(path): chunk \(index) fails authentication: the file was altered or the key is not the one it was made with; nothing was restored")
            }
            try plaintext.withUnsafeBytes { try output($0) }
            offset += UInt64(plainCount + BackupHeader.tagSize)
            remaining -= UInt64(plainCount)
        }
    }

    /// Up to `size` bytes; fewer only at end of input.
    private static func readChunk(_ fd: Int32, size: Int) throws -> [UInt8] {
        var buffer = [UInt8](repeating: 0, count: size)
        var filled = 0
        while filled < size {
            let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress! + filled, size - filled) }
            if count < 0 {
                if errno == EINTR { continue }
                throw BackupError("reading pg_dump's output failed: \(String(cString: strerror(errno)))")
            }
            if count == 0 { break }
            filled += count
        }
        buffer.removeSubrange(filled...)
        return buffer
    }

    private static func readExactly(_ fd: Int32, at offset: UInt64, count: Int, path: String) throws -> [UInt8] {
        var buffer = [UInt8](repeating: 0, count: count)
        var filled = 0
        while filled < count {
            let n = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress! + filled, count - filled, off_t(offset) + off_t(filled)) }
            if n < 0 {
                if errno == EINTR { continue }
                throw BackupError("\(path): read failed: \(String(cString: strerror(errno)))")
            }
            guard n > 0 else { throw BackupError("\(path): truncated while reading; nothing was restored") }
            filled += n
        }
        return buffer
    }

    static func hex(_ bytes: [UInt8]) -> String { bytes.map { String(format: "%02x", $0) }.joined() }
}
