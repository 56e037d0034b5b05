/// The vault's limits; its methods are generated from Protos/vault.proto (Generated/vault.rpc.swift).
extension VaultAPI {
    // 2,000 tokens of a 200-byte secret (≈420 bytes each) fit a 1 MiB frame with room to spare.
    public static let maximumRewrapBatch = 2000
    /// The largest secret `Encrypt` takes (INVALID_ARGUMENT beyond): OAuth tokens and Stripe ids
    /// are a few hundred bytes; 64 KiB encrypts to ≈ 88 KiB, far below the 1 MiB frame limit.
    public static let maximumPlaintextBytes = 64 * 1024
    /// The most token and context bytes one `Rewrap` call takes (INVALID_ARGUMENT beyond). A
    /// rewrapped token is as long as the one it replaces, so the reply is about the request's size:
    /// 512 KiB keeps both under the 1 MiB frame limit whatever the secrets' sizes. Callers batch by
    /// this and by ``maximumRewrapBatch``, whichever comes first.
    public static let maximumRewrapBatchBytes = 512 * 1024

    /// The most keys the vault holds (`AddKey` answers FAILED_PRECONDITION beyond): each is tried
    /// on every decrypt of an old token, and a long list means old keys were never retired.
    public static let maximumKeys = 16

    /// The bytes an item counts against ``maximumRewrapBatchBytes``.
    public static func rewrapCost(of item: VaultRewrapItem) -> Int {
        item.token.utf8.count + item.context.utf8.count
    }
}
