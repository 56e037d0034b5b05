import PostgresNIO

extension PostgresClient.Configuration {
    /// A fixed pool of `connections` to a PostgreSQL server on a local Unix socket: opened at
    /// start, no keep-alive pings, no idle timeouts. postgres-nio arms a keep-alive timer (and,
    /// above the minimum size, an idle timer) each time a connection goes back to the pool: a
    /// task group and a dispatch timer per query, a tenth of auth's CPU on `GET /v1/me`
    /// (perf, docs/benchmarks.md). Over a local socket there is no middlebox to keep a
    /// connection alive for, and a broken connection is replaced by the pool anyway.
    public mutating func useFixedLocalPool(connections: Int) {
        options.maximumConnections = max(1, connections)
        options.minimumConnections = options.maximumConnections
        options.keepAliveBehavior = nil
    }
}
