import Foundation

/// Time intervals in this module are half-open: a duration `d` starting at `t` covers
/// `[t, t + d)`. At exactly `t + d` the time is up (expired, window closed, lock released).
/// Comparisons are written on Doubles so that a NaN date fails closed (Date's derived `>=`
/// would not).

/// State of one stored refresh token (C-2 / R-1).
public enum RefreshTokenState: Sendable, Hashable {
    /// Not used yet: presenting it rotates it.
    case active
    /// Used once, at `at`; `successorID` is the token issued in exchange.
    case rotated(at: Date, successorID: UUID)
    /// Revoked individually (logout of this session, admin action).
    case revoked
}

public struct RefreshTokenRecord: Sendable, Hashable {
    public var id: UUID
    public var familyID: UUID
    public var state: RefreshTokenState

    public init(id: UUID, familyID: UUID, state: RefreshTokenState) {
        self.id = id
        self.familyID = familyID
        self.state = state
    }
}

/// A refresh-token family: one login session and every token rotated from it.
public struct RefreshFamily: Sendable, Hashable {
    public var id: UUID
    public var createdAt: Date
    /// Last successful rotation (or creation); drives the idle timeout.
    public var lastUsedAt: Date
    public var revokedAt: Date?

    public init(id: UUID, createdAt: Date, lastUsedAt: Date, revokedAt: Date? = nil) {
        self.id = id
        self.createdAt = createdAt
        self.lastUsedAt = lastUsedAt
        self.revokedAt = revokedAt
    }
}

public struct RefreshPolicy: Sendable, Hashable {
    /// a rotated token presented again within this window returns the same successor.
    public var graceWindow: TimeInterval
    /// a session unused this long ends.
    public var idleTimeout: TimeInterval
    /// no session lives longer than this, however active.
    public var absoluteLifetime: TimeInterval

    public init(
        graceWindow: TimeInterval = 5,
        idleTimeout: TimeInterval = 30 * 86_400,
        absoluteLifetime: TimeInterval = 90 * 86_400
    ) {
        self.graceWindow = max(0, graceWindow)
        self.idleTimeout = idleTimeout
        self.absoluteLifetime = absoluteLifetime
    }

    /// When the family stops being usable if not used again: the earlier of the idle and
    /// absolute limits (e.g. for a cookie's Max-Age or a database cleanup job).
    public func expiry(of family: RefreshFamily) -> Date {
        min(family.lastUsedAt.addingTimeInterval(idleTimeout), family.createdAt.addingTimeInterval(absoluteLifetime))
    }
}

public enum RefreshRejection: Sendable, Hashable {
    /// No such token, or it does not belong to the family passed in.
    case unknownToken
    case familyRevoked
    /// This token was revoked on its own (its family was not).
    case tokenRevoked
    case idleExpired
    case absoluteExpired
}

public enum RefreshRevocationReason: String, Sendable, Hashable {
    /// A rotated token came back after the grace window: someone holds a stolen copy.
    case reuseDetected = "reuse_detected"
}

/// What to do with a presented refresh token.
public enum RefreshDecision: Sendable, Hashable {
    /// Mark the token rotated (atomically: `UPDATE … WHERE state = 'active'`), issue a
    /// successor in the same family, bump `lastUsedAt`.
    case rotate
    /// Parallel refresh inside the grace window: answer with the successor already issued
    /// (the caller must still have it, e.g. cached for the grace window).
    case returnExistingSuccessor(successorID: UUID)
    /// Revoke the family and every access token minted from it, audit-log at high risk,
    /// and refuse the request.
    case revokeFamily(reason: RefreshRevocationReason)
    /// Refuse the request (401), nothing to change.
    case reject(RefreshRejection)
}

/// Pure decision logic for refresh-token presentation (C-2 / R-1, X-6).
///
/// Order of checks:
/// 1. unknown token or family mismatch → `.reject(.unknownToken)`
/// 2. family revoked → `.reject(.familyRevoked)`; token revoked → `.reject(.tokenRevoked)`
/// 3. rotated token outside the grace window → `.revokeFamily(.reuseDetected)`, even if the
///    family has also expired: the theft signal is worth acting on and logging.
/// 4. absolute lifetime, then idle timeout → `.reject(...)`
/// 5. rotated inside the grace window → `.returnExistingSuccessor`; active → `.rotate`.
///
/// Grace window boundary: the window is `[rotatedAt, rotatedAt + graceWindow)`, so a reuse
/// exactly `graceWindow` (5 s) after the rotation revokes the family. A reuse that appears
/// slightly *before* the rotation time (clock skew between servers) by less than
/// `graceWindow` is treated as inside the window.
public struct RefreshFamilyStateMachine: Sendable {
    public var policy: RefreshPolicy

    public init(policy: RefreshPolicy = RefreshPolicy()) {
        self.policy = policy
    }

    public func decide(token: RefreshTokenRecord?, family: RefreshFamily?, now: Date) -> RefreshDecision {
        guard let token, let family, token.familyID == family.id else {
            return .reject(.unknownToken)
        }
        if family.revokedAt != nil {
            return .reject(.familyRevoked)
        }

        var graceSuccessor: UUID?
        switch token.state {
        case .revoked:
            return .reject(.tokenRevoked)
        case let .rotated(at, successorID):
            let elapsed = now.timeIntervalSince(at)
            guard abs(elapsed) < policy.graceWindow else {
                return .revokeFamily(reason: .reuseDetected)
            }
            graceSuccessor = successorID
        case .active:
            break
        }

        // "Valid only while time remains > 0", as Doubles, so that NaN counts as expired.
        if !(family.createdAt.addingTimeInterval(policy.absoluteLifetime).timeIntervalSince(now) > 0) {
            return .reject(.absoluteExpired)
        }
        if !(family.lastUsedAt.addingTimeInterval(policy.idleTimeout).timeIntervalSince(now) > 0) {
            return .reject(.idleExpired)
        }
        if let graceSuccessor {
            return .returnExistingSuccessor(successorID: graceSuccessor)
        }
        return .rotate
    }
}
