import Crypto

extension SHA256 {
    /// Lower-case hex of the SHA-256 of `bytes` (swift-crypto), for bounded storage keys.
    static func hexDigest(_ bytes: [UInt8]) -> String {
        SHA256.hash(data: bytes).map { byte in
            let hex = String(byte, radix: 16)
            return byte < 0x10 ? "0" + hex : hex
        }.joined()
    }
}
