import HummingbirdBcrypt
import NIOPosix

/// bcrypt hashing and verification (C-3 / R-6), always on a dedicated `NIOThreadPool`: never on
/// an event loop and never on the Swift cooperative pool, so a login storm queues on the pool
/// (bounded by its thread count) instead of stalling RPC handling or PostgreSQL I/O.
///
/// HummingbirdBcrypt silently truncates input past 72 bytes and stops at a NUL byte (C string):
/// both are refused here *before* bcrypt is called, never hashed.
public struct PasswordHasher: Sendable {
    /// bcrypt's input limit in bytes.
    public static let maximumPasswordBytes = 72
    /// The lowest cost `init(cost:threadPool:)` accepts (SPEC C-3: default 12, minimum 10).
    public static let minimumProductionCost = 10
    public static let defaultCost = 12

    public let cost: Int
    private let threadPool: NIOThreadPool
    /// A hash at `cost` of a random secret: unknown accounts are "verified" against it so that
    /// an unknown e-mail costs the same bcrypt time as a wrong password.
    private let dummyHash: String

    public enum Failure: Error, Sendable, Equatable {
        /// More than 72 bytes: refused, never truncated.
        case passwordTooLong(bytes: Int)
        /// A NUL byte would end the C string early: refused, never truncated.
        case passwordContainsNul
        case costOutOfRange(Int)
    }

    /// Production hasher: cost 10...31 (refuses anything below 10).
    public static func make(cost: Int = defaultCost, threadPool: NIOThreadPool) async throws -> PasswordHasher {
        guard (minimumProductionCost...31).contains(cost) else { throw Failure.costOutOfRange(cost) }
        return try await PasswordHasher(uncheckedCost: cost, threadPool: threadPool)
    }

    /// Tests only: allows bcrypt's own minimum cost 4 so that suites run fast. Production
    /// configuration goes through `make(cost:threadPool:)`, which refuses costs below 10.
    public static func makeForTesting(cost: Int, threadPool: NIOThreadPool) async throws -> PasswordHasher {
        // Below 4 HummingbirdBcrypt crashes the process instead of throwing.
        guard (4...31).contains(cost) else { throw Failure.costOutOfRange(cost) }
        return try await PasswordHasher(uncheckedCost: cost, threadPool: threadPool)
    }

    private init(uncheckedCost cost: Int, threadPool: NIOThreadPool) async throws {
        self.cost = cost
        self.threadPool = threadPool
        let secret = Hex.encode(SecureRandom.bytes(32))
        self.dummyHash = try await threadPool.runIfActive { Bcrypt.hash(secret, cost: UInt8(cost)) }
    }

    /// Throws `Failure` for input bcrypt would silently alter.
    public static func checkInput(_ password: String) throws(Failure) {
        let bytes = password.utf8.count
        guard bytes <= maximumPasswordBytes else { throw .passwordTooLong(bytes: bytes) }
        guard !password.utf8.contains(0) else { throw .passwordContainsNul }
    }

    /// A `$2b$` hash at the configured cost.
    public func hash(_ password: String) async throws -> String {
        try Self.checkInput(password)
        let cost = UInt8(self.cost)
        return try await threadPool.runIfActive { Bcrypt.hash(password, cost: cost) }
    }

    /// True when `password` matches `hash`. Input bcrypt would alter never matches (we never
    /// stored such a hash); neither does a hash we do not accept (`$2b$`/`$2a$` only).
    public func verify(_ password: String, against hash: String) async throws -> Bool {
        guard (try? Self.checkInput(password)) != nil, Self.cost(of: hash) != nil else {
            // Same bcrypt time as a real verify, so refusing the input reveals nothing.
            return try await dummyVerify("-")
        }
        return try await threadPool.runIfActive { Bcrypt.verify(password, hash: hash) }
    }

    /// Spends the same bcrypt time as `verify` for an account that does not exist.
    /// Always false.
    public func dummyVerify(_ password: String) async throws -> Bool {
        let input = (try? Self.checkInput(password)) != nil ? password : "-"
        let hash = dummyHash
        _ = try await threadPool.runIfActive { Bcrypt.verify(input, hash: hash) }
        return false
    }

    /// True when the stored hash should be replaced at the next successful login: its cost is
    /// below the configured one (the configured cost rose), or it is not a `$2b$` hash.
    public func needsRehash(_ hash: String) -> Bool {
        guard hash.hasPrefix("$2b$"), let stored = Self.cost(of: hash) else { return true }
        return stored < cost
    }

    /// The cost of a `$2a$`/`$2b$` modular-crypt hash, nil if it is not one.
    public static func cost(of hash: String) -> Int? {
        let bytes = Array(hash.utf8)
        guard bytes.count == 60, bytes[0] == UInt8(ascii: "$"), bytes[1] == UInt8(ascii: "2"),
              bytes[2] == UInt8(ascii: "a") || bytes[2] == UInt8(ascii: "b"), bytes[3] == UInt8(ascii: "$"),
              bytes[6] == UInt8(ascii: "$"),
              let tens = digit(bytes[4]), let ones = digit(bytes[5])
        else { return nil }
        let cost = tens * 10 + ones
        return (4...31).contains(cost) ? cost : nil
    }

    private static func digit(_ byte: UInt8) -> Int? {
        (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) ? Int(byte - UInt8(ascii: "0")) : nil
    }
}
