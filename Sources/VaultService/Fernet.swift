// Fernet (https://github.com/fernet/spec), spec-exact, for the vault (C-14 / R-9 / R-11).
//
// Token layout (all big-endian), URL-safe base64 WITH padding:
//
//     0x80 | timestamp (8) | IV (16) | AES-128-CBC/PKCS#7 ciphertext (16·n, n ≥ 1) | HMAC-SHA256 (32)
//
// The HMAC covers every byte before it and is keyed with the first 16 bytes of the Fernet key;
// AES uses the last 16. Verification order: strict base64url decode → structure → MAC (constant
// time) → timestamp rules → decrypt → unpad. Every failure on a token is the single
// `FernetError.invalidToken`, so a caller (or an attacker watching replies) cannot tell a bad MAC
// from bad padding, a wrong key, an expired token or (see `ContextBoundCipher`) a wrong context.

import Crypto
import _CryptoExtras

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

// MARK: - Errors

/// Errors of the Fernet layer. Deliberately coarse: the cases never carry token or key bytes.
public enum FernetError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The token is malformed, forged, tampered with, expired, dated too far in the future, was
    /// made with another key, or (with `ContextBoundCipher`) belongs to another context.
    /// One case for all of them, on purpose: no oracle.
    case invalidToken
    /// The key is not exactly 32 bytes of strict URL-safe base64.
    case invalidKey
    /// `MultiFernet` was given no keys.
    case noKeys
    /// A context string for `ContextBoundCipher` is empty, longer than 255 bytes or not visible ASCII.
    case invalidContext

    public var description: String {
        switch self {
        case .invalidToken: "invalid Fernet token"
        case .invalidKey: "invalid Fernet key: expected 32 bytes as URL-safe base64 with padding"
        case .noKeys: "MultiFernet needs at least one key"
        case .invalidContext: "invalid context: expected 1-255 visible ASCII characters (0x21-0x7E)"
        }
    }
}

// MARK: - Key

/// A Fernet key: 16 bytes HMAC-SHA256 signing key followed by 16 bytes AES-128 encryption key.
///
/// `description`, `debugDescription` and the reflection mirror show only `id`, so the key can be
/// logged or `dump`ed by accident without leaking material.
public struct FernetKey: Sendable, Equatable, CustomStringConvertible, CustomDebugStringConvertible,
    CustomReflectable
{
    /// Number of raw key bytes (signing + encryption).
    public static let byteCount = 32

    private let material: KeyMaterial

    var signingKey: SymmetricKey { material.signingKey }
    var encryptionKey: SymmetricKey { material.encryptionKey }
    var keyedMAC: KeyedHMAC { material.keyedMAC }

    /// Non-secret key identifier: the first 8 hex characters of SHA-256 over the 32 raw key bytes.
    /// Stored next to ciphertexts and written to audit logs to tell which key is in use.
    public let id: String

    /// Parses a key as produced by `Fernet.generate_key()` / `clauctl vault keygen`: exactly 32 bytes
    /// in URL-safe base64 with padding (44 characters). Strict: no whitespace, no other alphabet.
    public init(base64URL: String) throws {
        var encoded = base64URL
        guard let key = encoded.withUTF8({ Self.parse(base64URL: $0) }) else { throw FernetError.invalidKey }
        self = key
    }

    /// Byte-level parser, so key files can be parsed without creating Strings of key material.
    static func parse(base64URL: UnsafeBufferPointer<UInt8>) -> FernetKey? {
        guard var raw = Base64URL.decode(base64URL) else { return nil }
        defer { wipe(&raw) }
        guard raw.count == byteCount else { return nil }
        return FernetKey(rawBytes: raw)
    }

    /// Creates a key from 32 raw bytes. Internal: outside the module keys come from text or `generate()`.
    init(rawBytes: [UInt8]) {
        precondition(rawBytes.count == Self.byteCount, "FernetKey needs 32 bytes")
        let signingKey = SymmetricKey(data: rawBytes[0..<16])
        material = KeyMaterial(
            signingKey: signingKey,
            encryptionKey: SymmetricKey(data: rawBytes[16..<32]),
            keyedMAC: KeyedHMAC(HMAC<SHA256>(key: signingKey)))
        id = Self.makeID(rawBytes)
    }

    /// A fresh random key from the system CSPRNG (`getrandom` via `SymmetricKey(size:)`).
    public static func generate() -> FernetKey {
        let fresh = SymmetricKey(size: .bits256)
        var raw = fresh.withUnsafeBytes { Array($0) }
        defer { wipe(&raw) }
        return FernetKey(rawBytes: raw)
    }

    /// The key as URL-safe base64 with padding (interoperable with Python's `Fernet(key)`).
    /// This IS the secret: only for `clauctl vault keygen` and key files, never for logs.
    public var base64URLEncoded: String {
        var raw = rawBytes()
        defer { Self.wipe(&raw) }
        return raw.withUnsafeBytes { Base64URL.encode($0) }
    }

    public var description: String { "FernetKey(id: \(id))" }
    public var debugDescription: String { description }
    public var customMirror: Mirror { Mirror(self, children: ["id": id], displayStyle: .struct) }

    /// Constant-time comparison (SymmetricKey's `==` is constant time).
    public static func == (lhs: FernetKey, rhs: FernetKey) -> Bool {
        // Evaluate both halves without short-circuiting so timing does not depend on which half differs.
        let signingEqual = lhs.signingKey == rhs.signingKey
        let encryptionEqual = lhs.encryptionKey == rhs.encryptionKey
        return signingEqual && encryptionEqual
    }

    func rawBytes() -> [UInt8] {
        var raw = [UInt8]()
        raw.reserveCapacity(Self.byteCount)
        signingKey.withUnsafeBytes { raw.append(contentsOf: $0) }
        encryptionKey.withUnsafeBytes { raw.append(contentsOf: $0) }
        return raw
    }

    private static func makeID(_ raw: [UInt8]) -> String {
        let digest = SHA256.hash(data: raw)
        let hexDigits: [Character] = Array("0123456789abcdef")
        var id = ""
        for byte in digest.prefix(4) {
            id.append(hexDigits[Int(byte >> 4)])
            id.append(hexDigits[Int(byte & 0x0F)])
        }
        return id
    }

    /// Best-effort zeroing of a temporary copy of key material.
    static func wipe(_ bytes: inout [UInt8]) {
        bytes.withUnsafeMutableBytes { buffer in
            guard let base = buffer.baseAddress else { return }
            // Best effort: Swift has no guaranteed secure-zero, but a memset of storage the Array
            // still owns is not removed in practice. SymmetricKey zeroes its own storage.
            _ = memset(base, 0, buffer.count)
        }
    }
}

/// The two halves of a Fernet key plus the keyed HMAC prototype.
///
/// `@unchecked Sendable` because swift-crypto 3.x marks neither `SymmetricKey` nor `HMAC`
/// `Sendable` (4.x marks both). All three are immutable here (value types over copy-on-write
/// storage), so sharing them across threads is safe.
struct KeyMaterial: @unchecked Sendable {
    let signingKey: SymmetricKey
    let encryptionKey: SymmetricKey
    /// HMAC already keyed with `signingKey` (ipad/opad blocks absorbed). Copying it per token
    /// saves re-deriving the padded key and two SHA-256 compressions on every call.
    let keyedMAC: KeyedHMAC
}

/// A keyed `HMAC<SHA256>` prototype, copied (never mutated in place) for each token.
/// `@unchecked Sendable` for the same reason as `KeyMaterial`.
struct KeyedHMAC: @unchecked Sendable {
    private let prototype: HMAC<SHA256>

    init(_ prototype: HMAC<SHA256>) {
        self.prototype = prototype
    }

    func authenticationCode(for message: UnsafeRawBufferPointer) -> HMAC<SHA256>.MAC {
        var mac = prototype
        mac.update(data: message)
        return mac.finalize()
    }

    /// Constant-time comparison through swift-crypto's `safeCompare` (the `MAC == DataProtocol` operator).
    func isValid(_ tag: UnsafeRawBufferPointer, for message: UnsafeRawBufferPointer) -> Bool {
        authenticationCode(for: message) == tag
    }
}

// MARK: - Single-key Fernet

/// Fernet with one key. Use `MultiFernet` for rotation; this type holds the per-key primitives.
public struct Fernet: Sendable {
    /// Tokens dated more than this many seconds after `now` are rejected (fernet/spec rule).
    public static let maxClockSkewSeconds: Int64 = 60

    static let versionByte: UInt8 = 0x80
    static let timestampOffset = 1
    static let ivOffset = 9
    static let ciphertextOffset = 25
    static let blockSize = 16
    static let macSize = 32
    /// Version + timestamp + IV + one cipher block + HMAC.
    static let minimumTokenBytes = ciphertextOffset + blockSize + macSize

    public let key: FernetKey

    public init(key: FernetKey) {
        self.key = key
    }

    /// Encrypts `plaintext` into a Fernet token dated `now` with a fresh random IV.
    public func encrypt(_ plaintext: [UInt8], now: Date = Date()) -> String {
        encrypt(plaintext, timestamp: Self.timestamp(of: now), iv: Self.randomIV())
    }

    /// Decrypts and verifies a token. `ttl` (whole seconds, as the spec) rejects tokens older than
    /// `now - ttl`; tokens dated more than 60 s after `now` are always rejected.
    /// - Throws: `FernetError.invalidToken` for every kind of bad token.
    public func decrypt(_ token: String, ttl: Duration? = nil, now: Date = Date()) throws -> [UInt8] {
        let bytes = try Self.decodeToken(token)
        return try Self.verifyAndDecrypt(bytes, with: key, ttl: ttl, now: now).plaintext
    }

    // MARK: Internals shared with MultiFernet

    /// Encrypts with an explicit timestamp and IV. Internal so that only tests (known-answer
    /// vectors) and re-wrapping (which keeps the original timestamp) can choose them; a fixed IV
    /// in production would be a catastrophic bug.
    func encrypt(_ plaintext: [UInt8], timestamp: UInt64, iv: [UInt8]) -> String {
        precondition(iv.count == Self.blockSize, "IV must be 16 bytes")
        // PKCS#7 done here (always 1...16 bytes) so the result does not depend on which
        // swift-crypto version's AES._CBC padding code is linked.
        let padLength = Self.blockSize - plaintext.count % Self.blockSize
        var padded = [UInt8]()
        padded.reserveCapacity(plaintext.count + padLength)
        padded.append(contentsOf: plaintext)
        padded.append(contentsOf: repeatElement(UInt8(padLength), count: padLength))
        defer { FernetKey.wipe(&padded) }

        let ciphertext: Data
        do {
            ciphertext = try AES._CBC.encrypt(
                padded, using: key.encryptionKey, iv: AES._CBC.IV(ivBytes: iv), noPadding: true)
        } catch {
            // Only reachable if the key were not 16 bytes or the input not block-aligned, both
            // guaranteed by construction above.
            preconditionFailure("AES-128-CBC encryption failed: \(error)")
        }

        var token = [UInt8]()
        token.reserveCapacity(Self.ciphertextOffset + ciphertext.count + Self.macSize)
        token.append(Self.versionByte)
        withUnsafeBytes(of: timestamp.bigEndian) { token.append(contentsOf: $0) }
        token.append(contentsOf: iv)
        token.append(contentsOf: ciphertext)
        let mac = token.withUnsafeBytes { key.keyedMAC.authenticationCode(for: $0) }
        token.append(contentsOf: mac)
        return token.withUnsafeBytes { Base64URL.encode($0) }
    }

    /// Strict base64url decode plus the structural checks that need no key.
    static func decodeToken(_ token: String) throws -> [UInt8] {
        var token = token
        // Token bytes are public (anyone holding the token sees them), so the faster table decoder is fine.
        let decoded: [UInt8]? = token.withUTF8 { Base64URL.decodePublic($0) }
        guard let bytes = decoded,
            bytes.count >= minimumTokenBytes,
            (bytes.count - ciphertextOffset - macSize) % blockSize == 0,
            bytes[0] == versionByte
        else { throw FernetError.invalidToken }
        return bytes
    }

    /// Constant-time HMAC check over everything before the trailing 32-byte tag.
    /// `bytes` must have passed `decodeToken`.
    static func hasValidMAC(_ bytes: [UInt8], for key: FernetKey) -> Bool {
        bytes.withUnsafeBytes { buffer in
            let macStart = buffer.count - macSize
            let signed = UnsafeRawBufferPointer(rebasing: buffer[..<macStart])
            let mac = UnsafeRawBufferPointer(rebasing: buffer[macStart...])
            return key.keyedMAC.isValid(mac, for: signed)
        }
    }

    static func timestamp(in bytes: [UInt8]) -> UInt64 {
        var value: UInt64 = 0
        for index in timestampOffset..<ivOffset {
            value = value << 8 | UInt64(bytes[index])
        }
        return value
    }

    /// Timestamp rules, after the MAC has been verified (so the timestamp is authentic).
    static func isFresh(timestamp: UInt64, ttl: Duration?, now: Date) -> Bool {
        let nowSeconds = unixSeconds(now)
        // Too far in the future: timestamp > now + 60. Tokens past Int64.max are always "future".
        guard let tokenSeconds = Int64(exactly: timestamp) else { return false }
        let (latestAccepted, overflow) = nowSeconds.addingReportingOverflow(maxClockSkewSeconds)
        if !overflow && tokenSeconds > latestAccepted { return false }
        // Expired: now > timestamp + ttl.
        if let ttl {
            let (expiry, overflow) = tokenSeconds.addingReportingOverflow(ttl.components.seconds)
            if overflow {
                // Positive overflow: never expires; negative (absurd negative ttl): expired.
                return ttl.components.seconds >= 0
            }
            if nowSeconds > expiry { return false }
        }
        return true
    }

    /// The full verification for one key. `bytes` must have passed `decodeToken`.
    static func verifyAndDecrypt(
        _ bytes: [UInt8], with key: FernetKey, ttl: Duration?, now: Date
    ) throws -> (plaintext: [UInt8], timestamp: UInt64) {
        guard hasValidMAC(bytes, for: key) else { throw FernetError.invalidToken }
        return try decryptAuthenticated(bytes, with: key, ttl: ttl, now: now)
    }

    /// Timestamp checks and decryption of a token whose MAC `key` has already verified.
    static func decryptAuthenticated(
        _ bytes: [UInt8], with key: FernetKey, ttl: Duration?, now: Date
    ) throws -> (plaintext: [UInt8], timestamp: UInt64) {
        let timestamp = timestamp(in: bytes)
        guard isFresh(timestamp: timestamp, ttl: ttl, now: now) else { throw FernetError.invalidToken }

        var decrypted: Data
        do {
            decrypted = try bytes.withUnsafeBytes { buffer in
                let iv = try AES._CBC.IV(ivBytes: buffer[ivOffset..<ciphertextOffset])
                let ciphertext = UnsafeRawBufferPointer(
                    rebasing: buffer[ciphertextOffset..<(buffer.count - macSize)])
                // noPadding: PKCS#7 is removed below in constant time, independent of the
                // swift-crypto version (3.x removes it with data-dependent branches).
                return try AES._CBC.decrypt(ciphertext, using: key.encryptionKey, iv: iv, noPadding: true)
            }
        } catch {
            throw FernetError.invalidToken
        }
        defer {
            decrypted.withUnsafeMutableBytes { buffer in
                if let base = buffer.baseAddress { _ = memset(base, 0, buffer.count) }
            }
        }
        guard let plaintext = removePKCS7Padding(decrypted) else { throw FernetError.invalidToken }
        return (plaintext, timestamp)
    }

    /// Constant-time (over the last block) PKCS#7 check; returns the unpadded bytes or nil.
    static func removePKCS7Padding(_ padded: Data) -> [UInt8]? {
        padded.withUnsafeBytes { buffer -> [UInt8]? in
            let count = buffer.count
            guard count >= blockSize, count % blockSize == 0 else { return nil }
            let padLength = Int(buffer[count - 1])
            // bad != 0 iff padLength ∉ 1...16 or some padding byte differs from padLength.
            var bad = (padLength &- 1) >> 8  // padLength == 0 → -1 (all ones)
            bad |= (blockSize &- padLength) >> 8  // padLength > 16 → negative
            for distance in 1...blockSize {
                let byte = Int(buffer[count - distance])
                // inPadding: all ones when distance <= padLength.
                let inPadding = ~((padLength &- distance) >> 8)
                bad |= inPadding & (byte ^ padLength)
            }
            guard bad == 0 else { return nil }
            return Array(UnsafeRawBufferPointer(rebasing: buffer[..<(count - padLength)]))
        }
    }

    static func timestamp(of date: Date) -> UInt64 {
        UInt64(clamping: max(0, unixSeconds(date)))
    }

    /// Whole seconds since the epoch, rounded down (as Python's `int(time.time())`), never trapping.
    static func unixSeconds(_ date: Date) -> Int64 {
        let seconds = date.timeIntervalSince1970.rounded(.down)
        guard seconds.isFinite else { return seconds < 0 ? Int64.min : Int64.max }
        if seconds >= 9.2e18 { return Int64.max }
        if seconds <= -9.2e18 { return Int64.min }
        return Int64(seconds)
    }

    static func randomIV() -> [UInt8] {
        var generator = SystemRandomNumberGenerator()
        var iv = [UInt8](repeating: 0, count: blockSize)
        iv.withUnsafeMutableBytes { buffer in
            let high = generator.next() as UInt64
            let low = generator.next() as UInt64
            buffer.storeBytes(of: high, toByteOffset: 0, as: UInt64.self)
            buffer.storeBytes(of: low, toByteOffset: 8, as: UInt64.self)
        }
        return iv
    }
}

// MARK: - Multiple keys (rotation)

/// Fernet over a key list for rotation: the first key encrypts, every key decrypts.
public struct MultiFernet: Sendable {
    /// All keys, current (encrypting) key first.
    public let keys: [FernetKey]

    /// Throws `FernetError.noKeys` for an empty list.
    public init(keys: [FernetKey]) throws {
        guard !keys.isEmpty else { throw FernetError.noKeys }
        self.keys = keys
    }

    /// The key that encrypts (first in the list).
    public var currentKey: FernetKey { keys[0] }
    public var currentKeyID: String { keys[0].id }

    /// Encrypts under the current key.
    public func encrypt(_ plaintext: [UInt8], now: Date = Date()) -> String {
        Fernet(key: currentKey).encrypt(plaintext, now: now)
    }

    /// Decrypts with whichever key's MAC verifies, and says which key that was.
    /// - Throws: `FernetError.invalidToken` for every kind of bad token.
    public func decrypt(
        _ token: String, ttl: Duration? = nil, now: Date = Date()
    ) throws -> (plaintext: [UInt8], keyID: String) {
        let opened = try open(token, ttl: ttl, now: now)
        return (opened.plaintext, opened.key.id)
    }

    /// Re-encrypts a token under the current key, keeping its original timestamp (as
    /// Python's `MultiFernet.rotate`), so a TTL still counts from when the secret was stored.
    /// Callers can skip the database write when `oldKeyID == newKeyID`.
    public func rewrap(
        _ token: String, ttl: Duration? = nil, now: Date = Date()
    ) throws -> (token: String, oldKeyID: String, newKeyID: String) {
        var opened = try open(token, ttl: ttl, now: now)
        defer { FernetKey.wipe(&opened.plaintext) }
        let newToken = Fernet(key: currentKey).encrypt(
            opened.plaintext, timestamp: opened.timestamp, iv: Fernet.randomIV())
        return (newToken, opened.key.id, currentKeyID)
    }

    /// Decode once, find the key whose MAC verifies, then check time and decrypt.
    func open(
        _ token: String, ttl: Duration?, now: Date
    ) throws -> (plaintext: [UInt8], timestamp: UInt64, key: FernetKey) {
        let bytes = try Fernet.decodeToken(token)
        for key in keys where Fernet.hasValidMAC(bytes, for: key) {
            let result = try Fernet.decryptAuthenticated(bytes, with: key, ttl: ttl, now: now)
            return (result.plaintext, result.timestamp, key)
        }
        throw FernetError.invalidToken
    }
}

// MARK: - Strict URL-safe base64

/// RFC 4648 §5 base64url with mandatory `=` padding, decoded strictly: only `A-Z a-z 0-9 - _`,
/// length a multiple of 4, at most two `=` and only at the end, nothing after them, no whitespace,
/// and unused trailing bits must be zero (canonical encoding). `decode`/`encode` map characters with
/// branch-free arithmetic rather than a table lookup, so key material does not leak via the cache;
/// `decodePublic` uses a table for speed on non-secret data (tokens).
enum Base64URL {
    static func encode(_ bytes: UnsafeRawBufferPointer) -> String {
        let outputCount = (bytes.count + 2) / 3 * 4
        guard outputCount > 0 else { return "" }
        return String(unsafeUninitializedCapacity: outputCount) { output in
            var out = 0
            var index = 0
            while index + 3 <= bytes.count {
                let group = UInt32(bytes[index]) << 16 | UInt32(bytes[index + 1]) << 8 | UInt32(bytes[index + 2])
                output[out] = encodeSextet(group >> 18)
                output[out + 1] = encodeSextet(group >> 12)
                output[out + 2] = encodeSextet(group >> 6)
                output[out + 3] = encodeSextet(group)
                out += 4
                index += 3
            }
            let remaining = bytes.count - index
            if remaining > 0 {
                let second = remaining == 2 ? UInt32(bytes[index + 1]) : 0
                let group = UInt32(bytes[index]) << 16 | second << 8
                output[out] = encodeSextet(group >> 18)
                output[out + 1] = encodeSextet(group >> 12)
                output[out + 2] = remaining == 2 ? encodeSextet(group >> 6) : UInt8(ascii: "=")
                output[out + 3] = UInt8(ascii: "=")
                out += 4
            }
            return out
        }
    }

    /// Returns nil for anything that is not canonical, padded base64url. Constant time in the
    /// content (only the length and padding shape, which are public, affect timing): use for keys.
    static func decode(_ input: UnsafeBufferPointer<UInt8>) -> [UInt8]? {
        decode(input, using: ConstantTimeDecoder())
    }

    /// Same result as `decode`, via a lookup table (about 5x faster, but table indexing depends on
    /// the data). Only for data that is not secret, such as Fernet tokens.
    static func decodePublic(_ input: UnsafeBufferPointer<UInt8>) -> [UInt8]? {
        lookupTable.withUnsafeBufferPointer { table in
            decode(input, using: TableDecoder(table: table))
        }
    }

    protocol CharacterDecoder {
        /// 0...63 for an alphabet character, any negative value otherwise.
        func value(of character: UInt8) -> Int32
    }

    struct ConstantTimeDecoder: CharacterDecoder {
        @inline(__always) func value(of character: UInt8) -> Int32 { decodeChar(character) }
    }

    struct TableDecoder: CharacterDecoder {
        let table: UnsafeBufferPointer<Int8>
        @inline(__always) func value(of character: UInt8) -> Int32 { Int32(table[Int(character)]) }
    }

    /// 256 entries: the sextet value, or -1 outside the alphabet.
    static let lookupTable: [Int8] = (0...255).map { Int8(decodeChar(UInt8($0))) }

    @inline(__always)
    static func decode<Decoder: CharacterDecoder>(
        _ input: UnsafeBufferPointer<UInt8>, using decoder: Decoder
    ) -> [UInt8]? {
        let count = input.count
        guard count % 4 == 0 else { return nil }
        guard count > 0 else { return [] }
        let equals = UInt8(ascii: "=")
        let padding = input[count - 1] != equals ? 0 : (input[count - 2] != equals ? 1 : 2)
        let outputCount = count / 4 * 3 - padding
        let fullQuads = padding == 0 ? count / 4 : count / 4 - 1

        // Accumulates a negative value (sign bit set) on any invalid character or non-zero
        // trailing bits; checked once at the end so the loop has no data-dependent branches.
        var invalid: Int32 = 0
        let output = [UInt8](unsafeUninitializedCapacity: outputCount) { buffer, initialized in
            var out = 0
            var base = 0
            for _ in 0..<fullQuads {
                let a = decoder.value(of: input[base]), b = decoder.value(of: input[base + 1])
                let c = decoder.value(of: input[base + 2]), d = decoder.value(of: input[base + 3])
                invalid |= a | b | c | d
                let group = UInt32(truncatingIfNeeded: a << 18 | b << 12 | c << 6 | d)
                buffer[out] = UInt8(truncatingIfNeeded: group >> 16)
                buffer[out + 1] = UInt8(truncatingIfNeeded: group >> 8)
                buffer[out + 2] = UInt8(truncatingIfNeeded: group)
                out += 3
                base += 4
            }
            if padding == 1 {
                let a = decoder.value(of: input[base]), b = decoder.value(of: input[base + 1])
                let c = decoder.value(of: input[base + 2])
                invalid |= a | b | c
                invalid |= -(c & 0x03)  // the 2 unused low bits must be zero
                let group = UInt32(truncatingIfNeeded: a << 18 | b << 12 | c << 6)
                buffer[out] = UInt8(truncatingIfNeeded: group >> 16)
                buffer[out + 1] = UInt8(truncatingIfNeeded: group >> 8)
                out += 2
            } else if padding == 2 {
                let a = decoder.value(of: input[base]), b = decoder.value(of: input[base + 1])
                invalid |= a | b
                invalid |= -(b & 0x0F)  // the 4 unused low bits must be zero
                let group = UInt32(truncatingIfNeeded: a << 18 | b << 12)
                buffer[out] = UInt8(truncatingIfNeeded: group >> 16)
                out += 1
            }
            initialized = out
        }
        return invalid < 0 ? nil : output
    }

    /// Maps one base64url character to 0...63, or to -1 (any negative) if it is not in the alphabet.
    /// Each term is (mask: all ones iff c is in the range) & (value + 1); exactly one range can match.
    @inline(__always)
    static func decodeChar(_ character: UInt8) -> Int32 {
        let c = Int32(character)
        var value: Int32 = -1
        value += ((64 &- c) & (c &- 91)) >> 8 & (c &- 64)  // A-Z → 0...25
        value += ((96 &- c) & (c &- 123)) >> 8 & (c &- 70)  // a-z → 26...51
        value += ((47 &- c) & (c &- 58)) >> 8 & (c &+ 5)  // 0-9 → 52...61
        value += ((44 &- c) & (c &- 46)) >> 8 & 63  // '-' → 62
        value += ((94 &- c) & (c &- 96)) >> 8 & 64  // '_' → 63
        return value
    }

    /// Maps 0...63 (low 6 bits of `sextet`) to its base64url character, branch-free.
    @inline(__always)
    static func encodeSextet(_ sextet: UInt32) -> UInt8 {
        let v = Int32(sextet & 0x3F)
        var shift: Int32 = 65  // 'A'
        shift &+= ((25 &- v) >> 8) & 6  // v ≥ 26: 'a' - 26
        shift &-= ((51 &- v) >> 8) & 75  // v ≥ 52: '0' - 52
        shift &-= ((61 &- v) >> 8) & 13  // v == 62: '-' - 62
        shift &+= ((62 &- v) >> 8) & 49  // v == 63: '_' - 63
        return UInt8(truncatingIfNeeded: v &+ shift)
    }
}
