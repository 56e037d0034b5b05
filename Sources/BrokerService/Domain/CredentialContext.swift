import Foundation

/// The vault context a stored third-party credential is bound to: what it is and whose it
/// is, e.g. `alpaca:user:3f2b9c1e-8d4a-4e71-9a0b-5c6d7e8f9a01`. The vault mixes it into the
/// ciphertext, so a token copied into another user's row, or an Alpaca token moved to a Stripe
/// column, fails to decrypt.
///
/// Built only from a parsed UUID and rendered in one canonical form (lowercase), so the same user
/// can never end up with two spellings of a context — that would make their own tokens undecryptable.
public struct CredentialContext: Sendable, Hashable, CustomStringConvertible {
    public enum Provider: String, Sendable, Hashable, CaseIterable {
        case alpaca
        case stripe
    }

    public enum ParseError: Error, Sendable, Hashable {
        /// The user id is not a UUID in its 36-character hyphenated form.
        case invalidUserID
    }

    public let provider: Provider
    public let userID: UUID

    public init(provider: Provider, userID: UUID) {
        self.provider = provider
        self.userID = userID
    }

    /// From a user id as it arrives over RPC. Only the 36-character hyphenated form is accepted
    /// (either case); anything else — braces, surrounding spaces, control characters — is refused
    /// rather than cleaned up.
    public init(provider: Provider, userID text: String) throws(ParseError) {
        guard text.utf8.count == 36, !UntrustedText.containsControlCharacter(text), let id = UUID(uuidString: text) else {
            throw .invalidUserID
        }
        self.init(provider: provider, userID: id)
    }

    /// The string passed to the vault's `Encrypt`/`Decrypt`/`Rewrap` as `context`.
    public var value: String { "\(provider.rawValue):user:\(userID.uuidString.lowercased())" }

    public var description: String { value }
}
