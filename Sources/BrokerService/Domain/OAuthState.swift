import Crypto
import Foundation
import RPC

/// The anti-forgery `state` of one Alpaca OAuth authorization: 32 random bytes, URL-safe base64,
/// handed to the user inside the authorize URL. Only its SHA-256 hash is stored (`OAuthStateRecord`),
/// so a database dump cannot be used to complete someone else's authorization.
public struct OAuthState: Sendable {
    public static let byteCount = 32
    /// 32 bytes as unpadded base64url.
    public static let encodedLength = 43
    /// How long an issued state can be redeemed.
    public static let lifetime: TimeInterval = 600

    /// The value for the URL. Never logged, never stored.
    public let value: String

    /// A fresh state from the system CSPRNG.
    public static func generate() -> OAuthState {
        var generator = SystemRandomNumberGenerator()
        let bytes = (0..<byteCount).map { _ in UInt8.random(in: .min ... .max, using: &generator) }
        return OAuthState(value: Base64URL.encode(bytes))
    }

    /// The stored form of a state value. Nil for anything that cannot be a state this type issued
    /// (wrong length, a character outside base64url), so malformed input never reaches a lookup.
    public static func hash(of presented: String) -> [UInt8]? {
        guard presented.utf8.count == encodedLength, presented.utf8.allSatisfy(Base64URL.isAlphabetByte) else { return nil }
        return Array(SHA256.hash(data: Array(presented.utf8)))
    }

    public var hash: [UInt8] {
        // A generated value always has the right shape.
        Self.hash(of: value) ?? Array(SHA256.hash(data: Array(value.utf8)))
    }
}

/// Why a presented state was refused. All of them reach the user as the same INVALID_ARGUMENT
/// "invalid_state" (SPEC §3: reused, expired or foreign → `invalid_state`), so a caller cannot tell
/// another user's live state from a made-up one; the cases are for logs and tests.
public enum OAuthStateError: Error, Sendable, Hashable, RPCErrorConvertible {
    case malformed
    case unknown
    case issuedToAnotherUser
    case expired
    case alreadyUsed

    public var rpcError: RPCError { RPCError(code: .invalidArgument, message: "invalid_state") }
}

/// What the broker stores for one issued state: the hash, the user it was issued to, its expiry,
/// and whether it was used. The database row mirrors it; the rules live here so they are tested
/// without a database.
public struct OAuthStateRecord: Sendable, Hashable {
    public let stateHash: [UInt8]
    public let userID: UUID
    public let issuedAt: Date
    public let expiresAt: Date
    public private(set) var usedAt: Date?

    public init(stateHash: [UInt8], userID: UUID, issuedAt: Date, expiresAt: Date, usedAt: Date? = nil) {
        self.stateHash = stateHash
        self.userID = userID
        self.issuedAt = issuedAt
        self.expiresAt = expiresAt
        self.usedAt = usedAt
    }

    /// Marks the state used by `userID` at `now`. Checked in this order: used, foreign, expired —
    /// a used state stays used even for its owner, and the record is consumed only on success.
    public mutating func redeem(by userID: UUID, now: Date) throws(OAuthStateError) {
        guard usedAt == nil else { throw .alreadyUsed }
        guard userID == self.userID else { throw .issuedToAnotherUser }
        guard now < expiresAt else { throw .expired }
        usedAt = now
    }
}

/// The set of issued states, as a value: `issue` for the authorize URL, `redeem` for the callback.
/// The broker's database table holds the same records and enforces single use with
/// `UPDATE … WHERE used_at IS NULL`; this type states the rules and serves tests and the fakes.
public struct OAuthStateLedger: Sendable {
    private var records: [[UInt8]: OAuthStateRecord] = [:]

    public init() {}

    public var count: Int { records.count }

    /// A new state bound to `userID`, valid for `OAuthState.lifetime` from `now`. The value is
    /// returned once; only its hash is kept.
    public mutating func issue(for userID: UUID, now: Date) -> (state: OAuthState, record: OAuthStateRecord) {
        let state = OAuthState.generate()
        let record = OAuthStateRecord(stateHash: state.hash, userID: userID, issuedAt: now, expiresAt: now.addingTimeInterval(OAuthState.lifetime))
        records[record.stateHash] = record
        return (state, record)
    }

    /// Consumes `presented` for `userID` at `now`. A failed attempt by another user does not
    /// consume the state, so a stolen value cannot be used to lock its owner out.
    @discardableResult
    public mutating func redeem(_ presented: String, by userID: UUID, now: Date) throws(OAuthStateError) -> OAuthStateRecord {
        guard let hash = OAuthState.hash(of: presented) else { throw .malformed }
        guard var record = records[hash] else { throw .unknown }
        try record.redeem(by: userID, now: now)
        records[hash] = record
        return record
    }

    /// Drops records that can no longer be redeemed (expired, or used), as the broker's periodic
    /// clean-up does.
    public mutating func removeSpent(now: Date) {
        records = records.filter { $0.value.usedAt == nil && now < $0.value.expiresAt }
    }
}

/// Alpaca's OAuth authorize URL (contracts README, "Alpaca OAuth"): GET
/// https://app.alpaca.markets/oauth/authorize with `response_type=code`, `client_id`,
/// `redirect_uri` (one the app registered), `scope` (space-separated) and `state`.
public struct AlpacaAuthorizeURLBuilder: Sendable {
    public static let productionAuthorizeEndpoint = "https://app.alpaca.markets/oauth/authorize"

    public enum ConfigurationError: Error, Sendable, Hashable {
        case invalidEndpoint
        case invalidClientID
        case invalidRedirectURI
        case invalidScope
    }

    /// The scopes Alpaca defines. With none, access is read-only.
    public enum Scope: String, Sendable, Hashable, CaseIterable {
        case accountWrite = "account:write"
        case trading
        case data
    }

    public let endpoint: String
    public let clientID: String
    public let redirectURI: String
    public let scopes: [Scope]

    /// `endpoint` is configuration so that development and tests reach the fake (SPEC §5). It must
    /// be https, or http on a loopback host (the fake); the redirect URI likewise.
    public init(endpoint: String = AlpacaAuthorizeURLBuilder.productionAuthorizeEndpoint, clientID: String, redirectURI: String, scopes: [Scope]) throws(ConfigurationError) {
        guard Self.isAcceptableURL(endpoint) else { throw .invalidEndpoint }
        guard !clientID.isEmpty, clientID.utf8.count <= 256, UntrustedText.isPrintableASCII(clientID), !clientID.contains(" ") else {
            throw .invalidClientID
        }
        guard Self.isAcceptableURL(redirectURI) else { throw .invalidRedirectURI }
        guard Set(scopes).count == scopes.count else { throw .invalidScope }
        self.endpoint = endpoint
        self.clientID = clientID
        self.redirectURI = redirectURI
        self.scopes = scopes
    }

    public func url(state: OAuthState) -> String {
        var items: [(String, String)] = [
            ("response_type", "code"),
            ("client_id", clientID),
            ("redirect_uri", redirectURI),
        ]
        if !scopes.isEmpty {
            items.append(("scope", scopes.map(\.rawValue).joined(separator: " ")))
        }
        items.append(("state", state.value))
        return endpoint + "?" + items.map { "\(Self.percentEncode($0.0))=\(Self.percentEncode($0.1))" }.joined(separator: "&")
    }

    /// RFC 3986 unreserved characters stay; every other byte is %XX (a space is %20, never `+`,
    /// which some servers would read literally).
    static func percentEncode(_ text: String) -> String {
        var out = ""
        for byte in text.utf8 {
            switch byte {
            case 0x41...0x5A, 0x61...0x7A, 0x30...0x39, 0x2D, 0x2E, 0x5F, 0x7E:
                out.unicodeScalars.append(Unicode.Scalar(byte))
            default:
                let digits = Array("0123456789ABCDEF")
                out.append("%")
                out.append(digits[Int(byte >> 4)])
                out.append(digits[Int(byte & 0x0F)])
            }
        }
        return out
    }

    static func isAcceptableURL(_ text: String) -> Bool {
        guard text.utf8.count <= 2048, UntrustedText.isPrintableASCII(text), !text.contains(" "),
            let components = URLComponents(string: text), let scheme = components.scheme?.lowercased(),
            let host = components.host, !host.isEmpty,
            components.query == nil, components.fragment == nil, components.user == nil, components.password == nil
        else { return false }
        switch scheme {
        case "https": return true
        case "http": return ["127.0.0.1", "localhost", "::1", "[::1]"].contains(host.lowercased())
        default: return false
        }
    }
}
