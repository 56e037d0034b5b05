import SwiftProtobuf

/// A unary method: its wire name and the protobuf types it takes and returns.
public struct MethodDescriptor<Request: SwiftProtobuf.Message, Response: SwiftProtobuf.Message>: Sendable {
    /// e.g. "clau.vault.Vault"
    public let service: String
    /// e.g. "Decrypt"
    public let method: String

    public init(service: String, method: String) {
        self.service = service
        self.method = method
    }

    /// The name on the wire and in access policies: "clau.vault.Vault/Decrypt".
    public var fullName: String { "\(service)/\(method)" }
}
