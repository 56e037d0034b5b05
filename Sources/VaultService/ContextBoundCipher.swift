// every stored secret is bound to its owner and purpose, so a token copied into another
// user's row (or another column) does not decrypt there.

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Fernet encryption bound to a context string such as `alpaca:user:<uuid>`.
///
/// ## Envelope format (version `CLV1`)
///
/// The Fernet *plaintext* is an envelope, so the stored token stays an ordinary, spec-valid
/// Fernet token (any Fernet implementation with the key can open it and see the envelope):
///
/// | offset  | size | field                                                    |
/// |---------|------|----------------------------------------------------------|
/// | 0       | 4    | magic `"CLV1"` (0x43 0x4C 0x56 0x31), envelope version 1 |
/// | 4       | 2    | context length `n`, unsigned big-endian, 1...255         |
/// | 6       | n    | context, ASCII 0x21...0x7E (e.g. `alpaca:user:<uuid>`)   |
/// | 6 + n   | rest | the secret bytes (may be empty)                          |
///
/// The context is authenticated by Fernet's HMAC together with the secret, and the envelope is
/// encrypted, so the context is not visible in the stored token. On decryption the caller states
/// the context it expects; it is compared in constant time with the one in the envelope. A wrong
/// context, a malformed envelope, a wrong key and a forged token all throw the same
/// `FernetError.invalidToken`. A context that breaks the rules above throws
/// `FernetError.invalidContext` before any cryptography runs (it is the caller's bug, not the
/// token's).
///
/// Contexts are restricted to visible ASCII (no space, no control characters, no Unicode) so the
/// same logical context cannot have two byte spellings (Unicode normalisation, trailing blanks).
public struct ContextBoundCipher: Sendable {
    /// `"CLV1"`: identifies the envelope and its version.
    static let magic: [UInt8] = [0x43, 0x4C, 0x56, 0x31]
    static let headerSize = 6  // magic + 2-byte length
    public static let maxContextBytes = 255

    public let fernet: MultiFernet

    public init(fernet: MultiFernet) {
        self.fernet = fernet
    }

    /// Convenience: the first key encrypts, all decrypt. Throws `FernetError.noKeys` when empty.
    public init(keys: [FernetKey]) throws {
        self.fernet = try MultiFernet(keys: keys)
    }

    /// Encrypts `plaintext` under the current key, bound to `context`.
    /// - Throws: `FernetError.invalidContext` if the context breaks the format rules.
    public func encrypt(plaintext: [UInt8], context: String, now: Date = Date()) throws -> String {
        let contextBytes = try Self.validatedContext(context)
        var envelope = Self.makeEnvelope(secret: plaintext, context: contextBytes)
        defer { FernetKey.wipe(&envelope) }
        return fernet.encrypt(envelope, now: now)
    }

    /// Decrypts a token that must have been bound to `context`.
    /// - Throws: `FernetError.invalidContext` for a malformed `context` argument;
    ///   `FernetError.invalidToken` for any bad token, including one bound to another context.
    public func decrypt(
        token: String, context: String, ttl: Duration? = nil, now: Date = Date()
    ) throws -> (plaintext: [UInt8], keyID: String) {
        let contextBytes = try Self.validatedContext(context)
        var opened = try fernet.open(token, ttl: ttl, now: now)
        defer { FernetKey.wipe(&opened.plaintext) }
        guard let secretRange = Self.secretRange(in: opened.plaintext, expectedContext: contextBytes) else {
            throw FernetError.invalidToken
        }
        return (Array(opened.plaintext[secretRange]), opened.key.id)
    }

    /// Re-encrypts under the current key after checking the token belongs to `context`.
    /// Keeps the original timestamp. Callers can skip the write when `oldKeyID == newKeyID`.
    public func rewrap(
        token: String, context: String, ttl: Duration? = nil, now: Date = Date()
    ) throws -> (token: String, oldKeyID: String, newKeyID: String) {
        let contextBytes = try Self.validatedContext(context)
        var opened = try fernet.open(token, ttl: ttl, now: now)
        defer { FernetKey.wipe(&opened.plaintext) }
        guard Self.secretRange(in: opened.plaintext, expectedContext: contextBytes) != nil else {
            throw FernetError.invalidToken
        }
        // The envelope is re-encrypted as is: it was just checked to carry `context`.
        let newToken = Fernet(key: fernet.currentKey).encrypt(
            opened.plaintext, timestamp: opened.timestamp, iv: Fernet.randomIV())
        return (newToken, opened.key.id, fernet.currentKeyID)
    }

    // MARK: Envelope

    /// 1...255 bytes of visible ASCII (0x21...0x7E), else `FernetError.invalidContext`.
    static func validatedContext(_ context: String) throws -> [UInt8] {
        let bytes = Array(context.utf8)
        guard !bytes.isEmpty, bytes.count <= maxContextBytes,
            bytes.allSatisfy({ (0x21...0x7E).contains($0) })
        else { throw FernetError.invalidContext }
        return bytes
    }

    static func makeEnvelope(secret: [UInt8], context: [UInt8]) -> [UInt8] {
        var envelope = [UInt8]()
        envelope.reserveCapacity(headerSize + context.count + secret.count)
        envelope.append(contentsOf: magic)
        envelope.append(UInt8(truncatingIfNeeded: context.count >> 8))
        envelope.append(UInt8(truncatingIfNeeded: context.count))
        envelope.append(contentsOf: context)
        envelope.append(contentsOf: secret)
        return envelope
    }

    /// Where the secret lies in `envelope`, if the envelope is well formed and carries exactly
    /// `expectedContext`. The context bytes are compared without early exit (constant time in
    /// their content).
    static func secretRange(in envelope: [UInt8], expectedContext: [UInt8]) -> Range<Int>? {
        guard envelope.count >= headerSize,
            envelope[0] == magic[0], envelope[1] == magic[1],
            envelope[2] == magic[2], envelope[3] == magic[3]
        else { return nil }
        let storedLength = Int(envelope[4]) << 8 | Int(envelope[5])
        guard storedLength >= 1, storedLength <= maxContextBytes,
            envelope.count >= headerSize + storedLength
        else { return nil }

        // Lengths are not secret; the content comparison runs over every expected byte.
        var difference: UInt8 = storedLength == expectedContext.count ? 0 : 1
        for (offset, expected) in expectedContext.enumerated() {
            // Clamp so a shorter stored context is still read in bounds (the length check above
            // already marked it as different).
            let index = headerSize + min(offset, storedLength - 1)
            difference |= envelope[index] ^ expected
        }
        guard difference == 0 else { return nil }
        return (headerSize + storedLength)..<envelope.count
    }
}
