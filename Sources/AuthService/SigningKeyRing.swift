import ClauSupport
import Crypto
import Foundation
import Synchronization
import _CryptoExtras

/// The live `TokenIssuer`, swapped atomically on rotation: a new key signs from then on, older
/// keys keep verifying until every token they signed has expired (C-2 / R-1).
public final class SigningKeyRing: Sendable {
    private let state: Mutex<TokenIssuer>
    /// Where rotated keys are written; nil when keys come from configuration only.
    public let directory: SigningKeyDirectory?

    public init(issuer: TokenIssuer, directory: SigningKeyDirectory?) {
        self.state = Mutex(issuer)
        self.directory = directory
    }

    public var issuer: TokenIssuer { state.withLock { $0 } }

    /// Generates a key, writes it to the directory (0400, fsync, rename) and makes it the signing
    /// key. Keys retired longer ago than the longest token lifetime are dropped.
    /// `retiredAt` maps kids to the time they stopped signing (from `auth.signing_keys`).
    public func rotate(algorithm: AccessTokenAlgorithm?, now: Date, retiredAt: [String: Date]) async throws -> (new: SigningKey, issuer: TokenIssuer) {
        guard let directory else {
            throw RotationRefused("signing keys come from configuration (--signing-key or a credential); start clau-auth with --signing-key-dir to rotate online")
        }
        let current = issuer
        let algorithm = algorithm ?? current.current.algorithm
        let kid = "k" + String(Int64(now.timeIntervalSince1970)) + "-" + Hex.encode(SecureRandom.bytes(3))
        let pem = Self.generatePEM(algorithm)
        let key = try await SigningKey.load(pem: pem, algorithm: algorithm, kid: kid)
        try directory.write(pem: pem, kid: kid, algorithm: algorithm)
        let horizon = now.addingTimeInterval(-TokenIssuer.maximumLifetime)
        let kept = ([current.current] + current.previous).filter { key in
            guard let retired = retiredAt[key.kid] else { return true }
            return retired > horizon
        }
        let next = try TokenIssuer(current: key, previous: kept, issuer: current.issuer, audience: current.audience, lifetime: current.lifetime)
        try directory.setCurrent(kid: kid)
        let dropped = Set(([current.current] + current.previous).map(\.kid)).subtracting(kept.map(\.kid))
        for kid in dropped { directory.remove(kid: kid) }
        state.withLock { $0 = next }
        return (key, next)
    }

    /// A new private key in PEM (PKCS#8 for EC/Ed25519, PKCS#1 for RSA); HS256 as 64 hex digits.
    static func generatePEM(_ algorithm: AccessTokenAlgorithm) -> String {
        switch algorithm {
        case .rs256:
            // Cannot fail for a supported size.
            (try! _RSA.Signing.PrivateKey(keySize: .bits2048)).pemRepresentation
        case .es256: P256.Signing.PrivateKey().pemRepresentation
        case .edDSA: Curve25519.Signing.PrivateKey().pemRepresentation
        case .hs256: Hex.encode(SecureRandom.bytes(32))
        }
    }
}

public struct RotationRefused: Error, CustomStringConvertible {
    public var description: String
    init(_ description: String) { self.description = description }
}

/// A directory of signing keys, one file per key (`<kid>.<ALG>.pem`, mode 0400) and a `current`
/// file naming the kid that signs. Only the auth user can read it (0700).
public struct SigningKeyDirectory: Sendable {
    public let path: String

    public init(path: String) {
        self.path = path
    }

    /// Loads every key; the one named by `current` first. An empty directory is started with
    /// `generate` (a new key of that algorithm) when given.
    public func load(generate algorithm: AccessTokenAlgorithm?) async throws -> [SigningKey] {
        var info = stat()
        guard stat(path, &info) == 0, (info.st_mode & S_IFMT) == S_IFDIR else {
            throw StartupError("signing key directory \(path) does not exist")
        }
        guard info.st_mode & 0o077 == 0 else {
            throw StartupError("signing key directory \(path) is accessible to group or others (mode \(String(info.st_mode & 0o777, radix: 8))); chmod 700 it")
        }
        var keys: [SigningKey] = []
        let names = try FileManager.default.contentsOfDirectory(atPath: path).filter { $0.hasSuffix(".pem") }.sorted()
        for name in names {
            let parts = name.dropLast(4).split(separator: ".")
            guard parts.count == 2, let algorithm = AccessTokenAlgorithm(rawValue: String(parts[1])) else {
                throw StartupError("\(path)/\(name) is not named <kid>.<ALG>.pem")
            }
            let pem = try SecretFile.readString(at: "\(path)/\(name)")
            keys.append(try await SigningKey.load(pem: pem, algorithm: algorithm, kid: String(parts[0])))
        }
        if keys.isEmpty, let algorithm {
            let kid = "k" + String(Int64(Date().timeIntervalSince1970)) + "-" + Hex.encode(SecureRandom.bytes(3))
            let pem = SigningKeyRing.generatePEM(algorithm)
            try write(pem: pem, kid: kid, algorithm: algorithm)
            try setCurrent(kid: kid)
            return [try await SigningKey.load(pem: pem, algorithm: algorithm, kid: kid)]
        }
        let current = (try? String(contentsOfFile: "\(path)/current", encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
        guard let current, let index = keys.firstIndex(where: { $0.kid == current }) else {
            throw StartupError("\(path)/current does not name one of the keys in the directory")
        }
        let signing = keys.remove(at: index)
        return [signing] + keys
    }

    func write(pem: String, kid: String, algorithm: AccessTokenAlgorithm) throws {
        try Self.atomicWrite(Data(pem.utf8), to: "\(path)/\(kid).\(algorithm.rawValue).pem", mode: 0o400)
    }

    func setCurrent(kid: String) throws {
        try Self.atomicWrite(Data((kid + "\n").utf8), to: "\(path)/current", mode: 0o600)
    }

    func remove(kid: String) {
        for algorithm in AccessTokenAlgorithm.allCases {
            unlink("\(path)/\(kid).\(algorithm.rawValue).pem")
        }
    }

    /// temp file (O_EXCL, mode set at creation), write, fsync, rename, fsync the directory.
    static func atomicWrite(_ data: Data, to target: String, mode: mode_t) throws {
        let temporary = target + ".tmp-" + Hex.encode(SecureRandom.bytes(4))
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode)
        guard fd >= 0 else { throw StartupError("cannot create \(temporary): errno \(errno)") }
        let written = data.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
        guard written == data.count, fsync(fd) == 0 else {
            close(fd)
            unlink(temporary)
            throw StartupError("cannot write \(temporary)")
        }
        close(fd)
        guard rename(temporary, target) == 0 else {
            unlink(temporary)
            throw StartupError("cannot rename into \(target): errno \(errno)")
        }
        let directory = open((target as NSString).deletingLastPathComponent, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if directory >= 0 {
            fsync(directory)
            close(directory)
        }
    }
}
