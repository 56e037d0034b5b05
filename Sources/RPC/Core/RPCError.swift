/// The error every RPC call fails with. `message` is safe to show to the caller: a server never
/// puts internals (SQL, file paths, stack traces, secrets) in it — unknown errors become a bare
/// `INTERNAL` (SPEC §2, R-14).
public struct RPCError: Error, Sendable, Hashable, CustomStringConvertible {
    /// An open set of status codes (gRPC's values plus `conflict`). Unknown values received on
    /// the wire are kept, not coerced, so newer peers can add codes.
    public struct Code: RawRepresentable, Sendable, Hashable, CustomStringConvertible {
        public var rawValue: UInt32
        public init(rawValue: UInt32) { self.rawValue = rawValue }

        public static let ok = Code(rawValue: 0)
        public static let cancelled = Code(rawValue: 1)
        public static let unknown = Code(rawValue: 2)
        public static let invalidArgument = Code(rawValue: 3)
        public static let deadlineExceeded = Code(rawValue: 4)
        public static let notFound = Code(rawValue: 5)
        public static let alreadyExists = Code(rawValue: 6)
        public static let permissionDenied = Code(rawValue: 7)
        public static let resourceExhausted = Code(rawValue: 8)
        public static let failedPrecondition = Code(rawValue: 9)
        public static let aborted = Code(rawValue: 10)
        public static let outOfRange = Code(rawValue: 11)
        public static let unimplemented = Code(rawValue: 12)
        public static let internalError = Code(rawValue: 13)
        public static let unavailable = Code(rawValue: 14)
        public static let dataLoss = Code(rawValue: 15)
        public static let unauthenticated = Code(rawValue: 16)
        public static let conflict = Code(rawValue: 17)

        private static let names: [UInt32: String] = [
            0: "OK", 1: "CANCELLED", 2: "UNKNOWN", 3: "INVALID_ARGUMENT", 4: "DEADLINE_EXCEEDED",
            5: "NOT_FOUND", 6: "ALREADY_EXISTS", 7: "PERMISSION_DENIED", 8: "RESOURCE_EXHAUSTED",
            9: "FAILED_PRECONDITION", 10: "ABORTED", 11: "OUT_OF_RANGE", 12: "UNIMPLEMENTED",
            13: "INTERNAL", 14: "UNAVAILABLE", 15: "DATA_LOSS", 16: "UNAUTHENTICATED", 17: "CONFLICT",
        ]

        public var description: String { Self.names[rawValue] ?? "CODE_\(rawValue)" }
    }

    public var code: Code
    public var message: String
    /// Machine-readable extras for the caller, e.g. `retry_after_seconds` or field violations.
    public var details: [String: String]

    public init(code: Code, message: String, details: [String: String] = [:]) {
        self.code = code
        self.message = message
        self.details = details
    }

    public var description: String { "\(code): \(message)" }
}

/// Domain errors that know their RPC status conform to this, so handlers can throw them directly;
/// anything else thrown by a handler becomes `INTERNAL` with a generic message.
public protocol RPCErrorConvertible: Error {
    var rpcError: RPCError { get }
}

extension RPCError: RPCErrorConvertible {
    public var rpcError: RPCError { self }
}
