// swift-tools-version:6.2
// Clau secure backend: four processes that talk over protobuf-framed Unix sockets.
// Each process links only what it needs (SPEC §1): the edge and the vault never link the
// PostgreSQL driver, and the vault links no HTTP client or server.
import PackageDescription

let swiftSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
]

let package = Package(
    name: "clau-backend",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "clau-vault", targets: ["clau-vault"]),
        .executable(name: "clau-auth", targets: ["clau-auth"]),
        .executable(name: "clau-edge", targets: ["clau-edge"]),
        .executable(name: "clauctl", targets: ["clauctl"]),
        .executable(name: "rpc-bench", targets: ["rpc-bench"]),
        .executable(name: "vault-bench", targets: ["vault-bench"]),
        .executable(name: "auth-bench", targets: ["auth-bench"]),
        .executable(name: "clau-fuzz", targets: ["clau-fuzz"]),
        .executable(name: "clau-fakes", targets: ["clau-fakes"]),
        .executable(name: "clau-broker", targets: ["clau-broker"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.81.0"),
        .package(url: "https://github.com/apple/swift-protobuf.git", from: "1.28.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.6.0"),
        // 4.x: 3.12's AES-CBC redoes key setup per block (Fernet 5x slower); jwt-kit 5.8 needs 4.x too.
        .package(url: "https://github.com/apple/swift-crypto.git", "4.0.0"..<"5.0.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.5.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.6.0"),
        .package(url: "https://github.com/vapor/postgres-nio.git", from: "1.21.0"),
        .package(url: "https://github.com/vapor/jwt-kit.git", from: "5.0.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird-auth.git", from: "2.5.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-nio-extras.git", from: "1.35.2"),
        .package(url: "https://github.com/apple/swift-http-types.git", from: "1.0.0"),
        // clau-broker's outbound HTTPS to Alpaca and Stripe (Sources/BrokerService/Providers).
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
    ],
    targets: [
        // Shared protocol library: envelope, status codes, Unix-socket and in-process transports,
        // and the generated messages of every service (Protos/).
        .target(
            name: "RPC",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            exclude: ["README.md"],
            swiftSettings: swiftSettings
        ),
        // Process plumbing every service shares: JSON log lines, secret files, hardening.
        .target(name: "CClauSystem", exclude: ["README.md"]),
        .target(
            name: "ClauSupport",
            dependencies: [
                "CClauSystem",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            exclude: ["README.md"],
            swiftSettings: swiftSettings
        ),
        // Database plumbing for the two services that own a schema (auth, broker) and clauctl.
        .target(
            name: "ClauDatabase",
            dependencies: [
                "ClauSupport", "RPC",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            exclude: ["README.md"],
            swiftSettings: swiftSettings
        ),
        // Per-client rate limits for the edge (C-9, R-15, X-3): GCRA, in-process or on a shared
        // Redis (a small pipelined RESP2 client; no Swift Redis client is available here).
        .target(
            name: "RateLimiting",
            dependencies: [
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            exclude: ["README.md"],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "VaultService",
            dependencies: [
                "RPC", "ClauSupport",
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "_CryptoExtras", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            exclude: ["README.md"],
            swiftSettings: swiftSettings
        ),
        // clau-broker's library: Alpaca and Stripe on users' behalf. So far its I/O-free domain core
        // (webhook signatures, order validation, OAuth state, vault contexts, Alpaca error mapping);
        // the process, its database and its HTTP clients come later.
        .target(
            name: "BrokerService",
            dependencies: [
                "RPC",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOFoundationCompat", package: "swift-nio"),
                "ClauSupport", "ClauDatabase",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            exclude: ["README.md"],
            swiftSettings: swiftSettings
        ),
        // Access-token verification shared by auth (signs) and the edge (verifies with public
        // keys only): one allowlist, one set of claim checks (C-2 / R-1).
        .target(
            name: "AccessTokens",
            dependencies: [
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "JWTKit", package: "jwt-kit"),
            ],
            exclude: ["README.md"],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "AuthService",
            dependencies: [
                "RPC", "CClauSystem", "ClauSupport", "ClauDatabase", "AccessTokens",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "_CryptoExtras", package: "swift-crypto"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "JWTKit", package: "jwt-kit"),
                .product(name: "HummingbirdBcrypt", package: "hummingbird-auth"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            exclude: ["README.md"],
            swiftSettings: swiftSettings
        ),
        // The HTTPS API (SPEC §3). Links no PostgreSQL driver, no AuthService, no vault, no bcrypt:
        // it holds the TLS key, the JWT public keys and the admin-key hash only (SPEC §1).
        .target(
            name: "EdgeProxy",
            dependencies: [
                "RPC", "ClauSupport", "RateLimiting", "AccessTokens",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "HummingbirdTLS", package: "hummingbird"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOExtras", package: "swift-nio-extras"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "_CryptoExtras", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            // Resources/openapi.json is compiled in (Generated/), never read at run time.
            exclude: ["README.md", "Resources"],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "clau-edge",
            dependencies: [
                "EdgeProxy", "ClauSupport", "RateLimiting",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            ],
            exclude: ["README.md"],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "clau-vault",
            dependencies: [
                "VaultService", "ClauSupport",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            ],
            exclude: ["README.md"],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "clau-broker",
            dependencies: [
                "BrokerService", "ClauDatabase", "ClauSupport",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            exclude: ["README.md"],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "clau-auth",
            dependencies: [
                "AuthService", "ClauDatabase", "ClauSupport",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            exclude: ["README.md"],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "clauctl",
            dependencies: [
                "RPC", "ClauSupport", "ClauDatabase", "VaultService",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
            ],
            exclude: ["README.md"],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "rpc-bench",
            dependencies: ["RPC", "ClauSupport", .product(name: "NIOPosix", package: "swift-nio")],
            path: "Benchmarks/rpc-bench",
            swiftSettings: swiftSettings
        ),
        // Timing loops shared by the benchmark executables.
        .target(name: "BenchSupport", path: "Benchmarks/BenchSupport", swiftSettings: swiftSettings),
        .executableTarget(
            name: "vault-bench",
            dependencies: ["RPC", "VaultService", "BenchSupport", .product(name: "Logging", package: "swift-log")],
            path: "Benchmarks/vault-bench",
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "auth-bench",
            dependencies: [
                "AuthService", "RPC", "TestSupport", "BenchSupport",
                .product(name: "HummingbirdBcrypt", package: "hummingbird-auth"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            path: "Benchmarks/auth-bench",
            swiftSettings: swiftSettings
        ),
        // Fake Alpaca and Stripe HTTP servers for tests and the dev stack; never deployed.
        .target(
            name: "ProviderFakes",
            dependencies: [
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
            ],
            exclude: ["README.md"],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "clau-fakes",
            dependencies: [
                "ProviderFakes", "ClauSupport",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            exclude: ["README.md"],
            swiftSettings: swiftSettings
        ),
        // libFuzzer harness of the parsers fed by the network or another process (scripts/fuzz);
        // a plain build replays saved inputs.
        .target(name: "CClauFuzz", path: "Sources/CClauFuzz", exclude: ["README.md"]),
        .executableTarget(
            name: "clau-fuzz",
            dependencies: [
                "CClauFuzz", "RPC", "RateLimiting", "AccessTokens", "EdgeProxy", "BrokerService",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
            ],
            exclude: ["README.md"],
            swiftSettings: swiftSettings
        ),
        // Test helpers: a throwaway PostgreSQL cluster, process launching as other users.
        .target(
            name: "TestSupport",
            dependencies: [
                "ClauDatabase",
                "ClauSupport",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Tests/TestSupport",
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "RPCTests",
            dependencies: [
                "RPC", "TestSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOTestUtils", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "RateLimitingTests",
            dependencies: [
                "RateLimiting", "TestSupport",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOTestUtils", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "DatabaseTests",
            dependencies: ["ClauDatabase", "RPC", "TestSupport"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "VaultServiceTests",
            dependencies: ["VaultService", "RPC", "TestSupport"],
            exclude: ["Fixtures"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "BrokerServiceTests",
            dependencies: [
                "BrokerService", "RPC", "ProviderFakes", "TestSupport", "VaultService",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            exclude: ["Fixtures"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "AuthServiceTests",
            // BrokerService and VaultService: the backup test (BackupRestoreTests) restores a
            // vault-sealed token beside the accounts.
            dependencies: [
                "AuthService", "RPC", "TestSupport", "ClauSupport", "BrokerService", "VaultService",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "_CryptoExtras", package: "swift-crypto"),
                .product(name: "JWTKit", package: "jwt-kit"),
                .product(name: "HummingbirdBcrypt", package: "hummingbird-auth"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            exclude: ["Fixtures"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "ProviderFakesTests",
            dependencies: [
                "ProviderFakes",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            exclude: ["Fixtures"],
            swiftSettings: swiftSettings
        ),
        // Through real sockets: the edge on 127.0.0.1 and a real auth service on a real PostgreSQL;
        // the broker routes also against a real broker and vault, with the fakes as Alpaca/Stripe;
        // and, in memory, the edge's pipeline in front of a scripted auth (EdgeInMemoryTests).
        .testTarget(
            name: "EdgeProxyTests",
            dependencies: [
                "EdgeProxy", "AuthService", "RPC", "TestSupport", "ClauSupport", "RateLimiting",
                "BrokerService", "VaultService", "ProviderFakes",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),
    ]
)
