/// Planned failures for retry and circuit-breaker tests: "the next N requests to this path answer
/// 500 (or 429)". Rules are consumed in the order they were added; a request matches a rule by
/// exact path and, when the rule names one, method.
public actor FaultInjector {
    public struct Rule: Sendable, Equatable {
        public var method: String?
        public var path: String
        public var status: Int
        public var remaining: Int

        public init(method: String? = nil, path: String, status: Int, remaining: Int) {
            self.method = method?.uppercased()
            self.path = path
            self.status = status
            self.remaining = remaining
        }
    }

    /// The statuses a rule may inject: the ones a client retries or backs off on.
    public static let injectableStatuses: Set<Int> = [429, 500, 502, 503]
    /// Bounds so a test typo cannot wedge the fake for hours.
    public static let maximumRules = 100
    public static let maximumCount = 10_000

    private var rules: [Rule] = []

    public init() {}

    public enum RuleError: Error, CustomStringConvertible {
        case statusNotInjectable(Int)
        case countOutOfRange(Int)
        case pathInvalid
        case tooManyRules

        public var description: String {
            switch self {
            case .statusNotInjectable(let status): "status \(status) cannot be injected (use one of 429, 500, 502, 503)"
            case .countOutOfRange(let count): "count \(count) is out of range (1...\(FaultInjector.maximumCount))"
            case .pathInvalid: "path must start with / and be at most 512 characters"
            case .tooManyRules: "at most \(FaultInjector.maximumRules) fault rules at a time"
            }
        }
    }

    public func add(_ rule: Rule) throws(RuleError) {
        guard Self.injectableStatuses.contains(rule.status) else { throw .statusNotInjectable(rule.status) }
        guard (1...Self.maximumCount).contains(rule.remaining) else { throw .countOutOfRange(rule.remaining) }
        guard rule.path.hasPrefix("/"), rule.path.utf8.count <= 512 else { throw .pathInvalid }
        guard rules.count < Self.maximumRules else { throw .tooManyRules }
        rules.append(rule)
    }

    public func removeAll() { rules.removeAll() }

    public var activeRules: [Rule] { rules }

    /// The status to inject for this request, consuming one use of the first matching rule.
    public func take(method: String, path: String) -> Int? {
        guard let index = rules.firstIndex(where: { $0.path == path && ($0.method == nil || $0.method == method.uppercased()) }) else {
            return nil
        }
        let status = rules[index].status
        rules[index].remaining -= 1
        if rules[index].remaining == 0 { rules.remove(at: index) }
        return status
    }
}
