import Foundation

// MARK: - Public API

/// Why a password was refused (SPEC R-6, C-3). `code` is stable (snake_case, for clients and
/// logs); `message` is for people. Neither ever contains the password, e-mail or name.
public enum PasswordViolation: Sendable, Hashable {
    case tooShort(minimumBytes: Int, actualBytes: Int)
    case tooLong(maximumBytes: Int, actualBytes: Int)
    case containsNulCharacter
    case tooFewDistinctCharacters(minimum: Int, actual: Int)
    case commonPassword
    case containsSequence
    case containsRepeats
    case keyboardWalk
    case containsEmail
    case containsName
    case tooWeak(score: Int, minimum: Int)
    case missingUppercase
    case missingLowercase
    case missingDigit
    case missingSpecial

    public enum Code: String, Sendable, Hashable, CaseIterable {
        case tooShort = "too_short"
        case tooLong = "too_long"
        case containsNulCharacter = "contains_nul_character"
        case tooFewDistinctCharacters = "too_few_distinct_characters"
        case commonPassword = "common_password"
        case containsSequence = "contains_sequence"
        case containsRepeats = "contains_repeats"
        case keyboardWalk = "keyboard_walk"
        case containsEmail = "contains_email"
        case containsName = "contains_name"
        case tooWeak = "too_weak"
        case missingUppercase = "missing_uppercase"
        case missingLowercase = "missing_lowercase"
        case missingDigit = "missing_digit"
        case missingSpecial = "missing_special"
    }

    public var code: Code {
        switch self {
        case .tooShort: .tooShort
        case .tooLong: .tooLong
        case .containsNulCharacter: .containsNulCharacter
        case .tooFewDistinctCharacters: .tooFewDistinctCharacters
        case .commonPassword: .commonPassword
        case .containsSequence: .containsSequence
        case .containsRepeats: .containsRepeats
        case .keyboardWalk: .keyboardWalk
        case .containsEmail: .containsEmail
        case .containsName: .containsName
        case .tooWeak: .tooWeak
        case .missingUppercase: .missingUppercase
        case .missingLowercase: .missingLowercase
        case .missingDigit: .missingDigit
        case .missingSpecial: .missingSpecial
        }
    }

    public var message: String {
        switch self {
        case let .tooShort(minimum, actual):
            "Password must be at least \(minimum) bytes long (it is \(actual) bytes in UTF-8)."
        case let .tooLong(maximum, actual):
            "Password must be at most \(maximum) bytes long (it is \(actual) bytes in UTF-8). "
                + "Passwords are hashed with bcrypt, which ignores everything after 72 bytes; "
                + "longer passwords are refused rather than silently truncated. "
                + "Characters outside ASCII take 2 to 4 bytes each."
        case .containsNulCharacter:
            "Password must not contain the NUL character (U+0000): bcrypt implementations "
                + "stop reading at it, so the rest of the password would be ignored."
        case let .tooFewDistinctCharacters(minimum, actual):
            "Password must contain at least \(minimum) different characters (it has \(actual))."
        case .commonPassword:
            "Password is, or is built around, a commonly used password."
        case .containsSequence:
            "Password relies on a sequence such as \"abcd\" or \"4321\"."
        case .containsRepeats:
            "Password relies on repeated characters or blocks such as \"aaaa\" or \"abcabc\"."
        case .keyboardWalk:
            "Password relies on a keyboard pattern such as \"qwerty\" or \"1qaz\"."
        case .containsEmail:
            "Password must not contain your e-mail address or parts of it."
        case .containsName:
            "Password must not contain your name."
        case let .tooWeak(score, minimum):
            "Password is too easy to guess (strength \(score)/100, at least \(minimum) needed). "
                + "A few unrelated words or a longer password help most."
        case .missingUppercase: "Password must contain an uppercase letter."
        case .missingLowercase: "Password must contain a lowercase letter."
        case .missingDigit: "Password must contain a digit."
        case .missingSpecial: "Password must contain a character that is neither a letter nor a digit."
        }
    }
}

/// Result of `PasswordPolicy.evaluate`.
public struct PasswordEvaluation: Sendable, Hashable {
    /// Strength estimate, 0...100 (100 ≈ 80 bits or more of guessing work).
    public let score: Int
    /// Empty when the password is acceptable. Order is stable (length first, then content).
    public let violations: [PasswordViolation]
    /// Exact UTF-8 length of the password as received.
    public let byteCount: Int
    /// The estimate behind `score`, in bits (log2 of guesses).
    public let estimatedBits: Double

    public var isAcceptable: Bool { violations.isEmpty }
    public var codes: [PasswordViolation.Code] { violations.map(\.code) }

    public func has(_ code: PasswordViolation.Code) -> Bool {
        violations.contains { $0.code == code }
    }
}

/// Password rules (SPEC R-6, C-3). The password is judged exactly as received: lengths are
/// UTF-8 bytes, nothing is trimmed, case-folded or Unicode-normalised. Only comparisons
/// against the common list, the e-mail and the name use a lowercased copy.
public struct PasswordPolicy: Sendable, Hashable {
    /// bcrypt only reads the first 72 bytes of its input; the policy can never allow more.
    public static let bcryptMaximumBytes = 72

    public var minBytes: Int
    /// Clamped to `bcryptMaximumBytes`.
    public var maxBytes: Int
    public var minScore: Int
    public var minDistinctCharacters: Int
    /// Composition rules: off by default (ASVS 5.0 6.2.5 forbids them), configurable
    /// because the RoboSystems policy has them.
    public var requireUppercase: Bool
    public var requireLowercase: Bool
    public var requireDigit: Bool
    public var requireSpecial: Bool

    public init(
        minBytes: Int = 12,
        maxBytes: Int = 72,
        minScore: Int = 60,
        minDistinctCharacters: Int = 8,
        requireUppercase: Bool = false,
        requireLowercase: Bool = false,
        requireDigit: Bool = false,
        requireSpecial: Bool = false
    ) {
        self.minBytes = minBytes
        self.maxBytes = min(maxBytes, Self.bcryptMaximumBytes)
        self.minScore = minScore
        self.minDistinctCharacters = minDistinctCharacters
        self.requireUppercase = requireUppercase
        self.requireLowercase = requireLowercase
        self.requireDigit = requireDigit
        self.requireSpecial = requireSpecial
    }

    public func evaluate(_ password: String, email: String?, fullName: String?) -> PasswordEvaluation {
        let byteCount = password.utf8.count
        var violations: [PasswordViolation] = []

        // Length: bytes, because bcrypt reads bytes.
        if byteCount < minBytes {
            violations.append(.tooShort(minimumBytes: minBytes, actualBytes: byteCount))
        }
        if byteCount > min(maxBytes, Self.bcryptMaximumBytes) {
            violations.append(.tooLong(maximumBytes: min(maxBytes, Self.bcryptMaximumBytes), actualBytes: byteCount))
        }
        if password.utf8.contains(0) {
            violations.append(.containsNulCharacter)
        }

        let allScalars = Array(password.unicodeScalars)
        let distinct = Set(allScalars).count
        if distinct < minDistinctCharacters {
            violations.append(.tooFewDistinctCharacters(minimum: minDistinctCharacters, actual: distinct))
        }

        // Analyse a bounded prefix: the O(n²) pattern search must not become a denial of
        // service on a huge input. Anything that long is refused as too_long anyway.
        let analysis = PasswordAnalyzer.analyze(
            Array(allScalars.prefix(PasswordAnalyzer.maxAnalyzedScalars)),
            totalScalarCount: allScalars.count,
            email: email,
            fullName: fullName
        )
        let score = max(0, min(100, Int((analysis.bits * 100 / PasswordAnalyzer.bitsForFullScore).rounded(.down))))
        let weak = score < minScore

        if analysis.isDecoratedCommonPassword || (weak && analysis.usedKinds.contains(.dictionary)) {
            violations.append(.commonPassword)
        }
        func patternViolation(_ kind: PasswordAnalyzer.Kind) -> Bool {
            analysis.coverage(of: kind) * 2 >= max(1, analysis.analyzedCount)
                || (weak && analysis.usedKinds.contains(kind))
        }
        if patternViolation(.sequence) { violations.append(.containsSequence) }
        if patternViolation(.repeats) { violations.append(.containsRepeats) }
        if patternViolation(.keyboardWalk) { violations.append(.keyboardWalk) }
        if analysis.containsEmail { violations.append(.containsEmail) }
        if analysis.containsName { violations.append(.containsName) }
        if weak { violations.append(.tooWeak(score: score, minimum: minScore)) }

        if requireUppercase, !allScalars.contains(where: { $0.properties.isUppercase }) {
            violations.append(.missingUppercase)
        }
        if requireLowercase, !allScalars.contains(where: { $0.properties.isLowercase }) {
            violations.append(.missingLowercase)
        }
        if requireDigit, !allScalars.contains(where: { $0.properties.numericType != nil }) {
            violations.append(.missingDigit)
        }
        if requireSpecial, !allScalars.contains(where: {
            !$0.properties.isAlphabetic && $0.properties.numericType == nil
        }) {
            violations.append(.missingSpecial)
        }

        return PasswordEvaluation(
            score: score, violations: violations, byteCount: byteCount, estimatedBits: analysis.bits)
    }
}

// MARK: - Strength estimate

/// A small zxcvbn-style estimator: find guessable patterns (common passwords, sequences,
/// repeats, keyboard walks, years, the user's own e-mail/name), then take the cheapest way
/// to spell the password as patterns plus brute-forced characters. Bits = log2(guesses).
enum PasswordAnalyzer {
    static let maxAnalyzedScalars = 256
    /// 80 bits of estimated guessing work maps to 100; the default minimum 60 ⇔ 48 bits.
    static let bitsForFullScore = 80.0
    /// Substring checks against the common list start at this length (the list's shortest
    /// entries have 4 characters); shorter pieces are left to brute force.
    static let minDictionaryLength = 4
    static let minPersonalTokenLength = 3

    enum Kind: Hashable {
        case dictionary, sequence, repeats, keyboardWalk, year, personal
    }

    struct Match {
        var start: Int
        var end: Int  // exclusive
        var kind: Kind
        var bits: Double
        /// Counts for the coverage rule ("the password is mostly this pattern").
        var significant: Bool
    }

    struct Result {
        var bits: Double
        var analyzedCount: Int
        var matches: [Match]
        var usedKinds: Set<Kind>
        var isDecoratedCommonPassword: Bool
        var containsEmail: Bool
        var containsName: Bool

        /// Number of positions covered by significant matches of `kind`.
        func coverage(of kind: Kind) -> Int {
            var covered = [Bool](repeating: false, count: analyzedCount)
            for match in matches where match.kind == kind && match.significant {
                for index in match.start..<match.end { covered[index] = true }
            }
            return covered.lazy.filter { $0 }.count
        }
    }

    static func analyze(
        _ original: [Unicode.Scalar], totalScalarCount: Int, email: String?, fullName: String?
    ) -> Result {
        let count = original.count
        let lower = original.map(lowercased)
        let bitsPerChar = log2(Double(charsetSize(original)))

        var matches: [Match] = []
        dictionaryMatches(original: original, lower: lower, into: &matches)
        sequenceMatches(original: original, lower: lower, into: &matches)
        keyboardMatches(original: original, lower: lower, into: &matches)
        yearMatches(lower: lower, into: &matches)
        var blockCache: [[Unicode.Scalar]: Double] = [:]
        repeatMatches(lower: lower, bitsPerChar: bitsPerChar, cache: &blockCache, into: &matches)

        let emailTokens = personalTokens(fromEmail: email)
        let nameTokens = personalTokens(fromName: fullName)
        let variants = [lower] + leetVariants(lower)
        let containsEmail = personalMatches(tokens: emailTokens, variants: variants, original: original, into: &matches)
        let containsName = personalMatches(tokens: nameTokens, variants: variants, original: original, into: &matches)

        let (bits, used) = cheapestCover(count: count, bitsPerChar: bitsPerChar, matches: matches)
        // Cap by a distinct-characters estimate: pick the alphabet, then one of `distinct`
        // characters per position. Catches shuffles of few characters ("abcbacbcabca").
        let distinct = max(2, Set(original).count)
        let distinctCap = Double(Set(original).count) * bitsPerChar + Double(count) * log2(Double(distinct))
        var total = min(bits, distinctCap)
        // Whatever was not analysed (only for inputs refused as too long) counts as random.
        total += Double(max(0, totalScalarCount - count)) * bitsPerChar

        return Result(
            bits: total,
            analyzedCount: count,
            matches: matches,
            usedKinds: used,
            isDecoratedCommonPassword: isDecoratedCommon(variants),
            containsEmail: containsEmail,
            containsName: containsName
        )
    }

    // MARK: Character helpers

    /// Lowercases one scalar into exactly one scalar, so positions stay aligned with the
    /// original (a mapping to several scalars, like "İ", keeps the original scalar).
    static func lowercased(_ scalar: Unicode.Scalar) -> Unicode.Scalar {
        if scalar.isASCII {
            let value = scalar.value
            if value >= 0x41 && value <= 0x5A, let lowered = Unicode.Scalar(value + 0x20) { return lowered }
            return scalar
        }
        let mapping = scalar.properties.lowercaseMapping.unicodeScalars
        if mapping.count == 1, let only = mapping.first { return only }
        return scalar
    }

    static func isASCIILower(_ s: Unicode.Scalar) -> Bool { s.value >= 0x61 && s.value <= 0x7A }
    static func isASCIIUpper(_ s: Unicode.Scalar) -> Bool { s.value >= 0x41 && s.value <= 0x5A }
    static func isASCIIDigit(_ s: Unicode.Scalar) -> Bool { s.value >= 0x30 && s.value <= 0x39 }

    /// Size of the alphabet a brute-force attacker would need for this password.
    static func charsetSize(_ scalars: [Unicode.Scalar]) -> Int {
        var lower = false, upper = false, digit = false, symbol = false, other = false
        for s in scalars {
            if isASCIILower(s) { lower = true }
            else if isASCIIUpper(s) { upper = true }
            else if isASCIIDigit(s) { digit = true }
            else if s.isASCII { symbol = true }
            else { other = true }
        }
        var size = 0
        if lower { size += 26 }
        if upper { size += 26 }
        if digit { size += 10 }
        if symbol { size += 33 }
        if other { size += 100 }
        return max(size, 2)
    }

    /// Extra bits for capitalisation of a letter run, as in zxcvbn: none for all-lowercase,
    /// one bit for "Capitalised", "lastUpper" or "ALLCAPS", otherwise the combinations.
    static func capitalisationBits(_ slice: ArraySlice<Unicode.Scalar>) -> Double {
        let upper = slice.filter { $0.properties.isUppercase }.count
        let lowerCount = slice.filter { $0.properties.isLowercase }.count
        if upper == 0 { return 0 }
        if lowerCount == 0 { return 1 }
        if let first = slice.first, first.properties.isUppercase, upper == 1 { return 1 }
        if let last = slice.last, last.properties.isUppercase, upper == 1 { return 1 }
        var combinations = 0.0
        for k in 1...min(upper, lowerCount) { combinations += binomial(upper + lowerCount, k) }
        return log2(max(combinations, 2))
    }

    static func binomial(_ n: Int, _ k: Int) -> Double {
        guard k >= 0, k <= n else { return 0 }
        var result = 1.0
        for i in 0..<k { result = result * Double(n - i) / Double(i + 1) }
        return result
    }

    static func string(_ scalars: ArraySlice<Unicode.Scalar>) -> String {
        var view = String.UnicodeScalarView()
        view.append(contentsOf: scalars)
        return String(view)
    }

    // MARK: Common passwords

    static let listAlphabet: Set<Unicode.Scalar> = {
        var set = Set<Unicode.Scalar>()
        for word in CommonPasswords.ranks.keys { set.formUnion(word.unicodeScalars) }
        return set
    }()

    /// Common l33t substitutions, undone on a lowercased copy. "1" and "|" are ambiguous
    /// (i or l), hence two variants.
    static let leetTableI: [Unicode.Scalar: Unicode.Scalar] = [
        "4": "a", "@": "a", "8": "b", "(": "c", "3": "e", "6": "g", "9": "g",
        "1": "i", "!": "i", "|": "i", "0": "o", "$": "s", "5": "s", "7": "t", "+": "t", "2": "z",
    ]
    static let leetTableL: [Unicode.Scalar: Unicode.Scalar] = {
        var table = leetTableI
        table["1"] = "l"
        table["|"] = "l"
        return table
    }()

    static func leetVariants(_ lower: [Unicode.Scalar]) -> [[Unicode.Scalar]] {
        guard lower.contains(where: { leetTableL[$0] != nil }) else { return [] }
        let i = lower.map { leetTableI[$0] ?? $0 }
        let l = lower.map { leetTableL[$0] ?? $0 }
        return i == l ? [i] : [i, l]
    }

    static func dictionaryMatches(original: [Unicode.Scalar], lower: [Unicode.Scalar], into matches: inout [Match]) {
        let count = lower.count
        guard count >= minDictionaryLength else { return }
        let maxLength = CommonPasswords.maxLength

        func scan(_ text: [Unicode.Scalar], reversed: Bool, leet: Bool) {
            // Index of the first character at or after i that cannot occur in any entry:
            // no lookup can span it.
            var stop = [Int](repeating: count, count: count + 1)
            for i in stride(from: count - 1, through: 0, by: -1) {
                stop[i] = listAlphabet.contains(text[i]) ? stop[i + 1] : i
            }
            for i in 0..<count {
                let limit = min(stop[i], i + maxLength)
                guard limit - i >= minDictionaryLength else { continue }
                for j in (i + minDictionaryLength)...limit {
                    guard let rank = CommonPasswords.rank(of: string(text[i..<j])) else { continue }
                    // Positions in the original, un-reversed password.
                    let start = reversed ? count - j : i
                    let end = reversed ? count - i : j
                    var bits = max(1, log2(Double(rank))) + capitalisationBits(original[start..<end])
                    if reversed { bits += 1 }
                    if leet {
                        let substituted = (start..<end).filter { lower[$0] != text[reversed ? count - 1 - $0 : $0] }.count
                        if substituted == 0 { continue }  // already found without substitution
                        bits += Double(min(substituted, 4))
                    }
                    matches.append(Match(start: start, end: end, kind: .dictionary, bits: bits, significant: true))
                }
            }
        }

        scan(lower, reversed: false, leet: false)
        scan(Array(lower.reversed()), reversed: true, leet: false)
        for variant in leetVariants(lower) {
            scan(variant, reversed: false, leet: true)
        }
    }

    /// The whole password, or its letters once leading/trailing digits and symbols are
    /// stripped ("Password2024!!" → "password"), is on the list, directly or via l33t.
    static func isDecoratedCommon(_ variants: [[Unicode.Scalar]]) -> Bool {
        for text in variants {
            if CommonPasswords.rank(of: string(text[...])) != nil { return true }
            guard let first = text.firstIndex(where: { $0.properties.isAlphabetic }),
                  let last = text.lastIndex(where: { $0.properties.isAlphabetic }) else { continue }
            let core = string(text[first...last])
            if core.unicodeScalars.count >= minDictionaryLength, CommonPasswords.rank(of: core) != nil {
                return true
            }
        }
        return false
    }

    // MARK: Sequences

    static let obviousSequenceStarts: Set<Unicode.Scalar> = ["a", "z", "0", "1", "9"]

    /// Runs like "abcd", "4321", "mnop" (constant step of +1 or -1 inside letters or digits).
    static func sequenceMatches(original: [Unicode.Scalar], lower: [Unicode.Scalar], into matches: inout [Match]) {
        let count = lower.count
        guard count >= 3 else { return }
        func sameClass(_ a: Unicode.Scalar, _ b: Unicode.Scalar) -> Bool {
            (isASCIILower(a) && isASCIILower(b)) || (isASCIIDigit(a) && isASCIIDigit(b))
        }
        var start = 0
        while start < count - 1 {
            let delta = Int(lower[start + 1].value) - Int(lower[start].value)
            guard abs(delta) == 1, sameClass(lower[start], lower[start + 1]) else {
                start += 1
                continue
            }
            var end = start + 2
            while end < count, sameClass(lower[end - 1], lower[end]),
                  Int(lower[end].value) - Int(lower[end - 1].value) == delta {
                end += 1
            }
            if end - start >= 3 {
                // Every sub-run, so the cheapest cover can combine it with other patterns.
                for i in start..<(end - 2) {
                    for j in (i + 3)...end {
                        let first = lower[i]
                        let base: Double = obviousSequenceStarts.contains(first) ? 4 : (isASCIIDigit(first) ? 10 : 26)
                        let bits = log2(base * Double(j - i) * (delta < 0 ? 2 : 1))
                            + capitalisationBits(original[i..<j])
                        matches.append(Match(start: i, end: j, kind: .sequence, bits: bits, significant: j - i >= 4))
                    }
                }
            }
            start = end - 1
        }
    }

    // MARK: Keyboard walks

    /// QWERTY key positions, rows staggered as on a real keyboard; shifted characters sit
    /// on their unshifted key.
    static let keyPositions: [Unicode.Scalar: (x: Double, y: Double)] = {
        var positions: [Unicode.Scalar: (x: Double, y: Double)] = [:]
        let rows: [(String, String, Double)] = [
            ("`1234567890-=", "~!@#$%^&*()_+", 0),
            ("qwertyuiop[]\\", "QWERTYUIOP{}|", 1.5),
            ("asdfghjkl;'", "ASDFGHJKL:\"", 1.75),
            ("zxcvbnm,./", "ZXCVBNM<>?", 2.25),
        ]
        for (y, (plain, shifted, offset)) in rows.enumerated() {
            for (x, (a, b)) in zip(plain.unicodeScalars, shifted.unicodeScalars).enumerated() {
                positions[a] = (offset + Double(x), Double(y))
                positions[b] = (offset + Double(x), Double(y))
            }
        }
        return positions
    }()

    static let shiftedKeys: Set<Unicode.Scalar> = Set("~!@#$%^&*()_+{}|:\"<>?".unicodeScalars)

    static func adjacentKeys(_ a: Unicode.Scalar, _ b: Unicode.Scalar) -> (dx: Double, dy: Double)? {
        guard let p = keyPositions[a], let q = keyPositions[b] else { return nil }
        let dx = q.x - p.x, dy = q.y - p.y
        if dy == 0, abs(dx) == 1 { return (dx, dy) }
        if abs(dy) == 1, abs(dx) <= 0.75 { return (dx, dy) }  // diagonal neighbours: 1qaz, 2wsx, zaq1
        return nil
    }

    static func keyboardMatches(original: [Unicode.Scalar], lower: [Unicode.Scalar], into matches: inout [Match]) {
        let count = lower.count
        guard count >= 3 else { return }
        var start = 0
        while start < count - 1 {
            guard adjacentKeys(lower[start], lower[start + 1]) != nil else {
                start += 1
                continue
            }
            var end = start + 2
            while end < count, adjacentKeys(lower[end - 1], lower[end]) != nil { end += 1 }
            if end - start >= 3 {
                for i in start..<(end - 2) {
                    for j in (i + 3)...end {
                        var turns = 0
                        var previous: (dx: Double, dy: Double)?
                        for k in (i + 1)..<j {
                            let direction = adjacentKeys(lower[k - 1], lower[k])
                            if let p = previous, let d = direction, p.dx != d.dx || p.dy != d.dy { turns += 1 }
                            previous = direction
                        }
                        let shifted = original[i..<j].contains { isASCIIUpper($0) || shiftedKeys.contains($0) }
                        // ~47 start keys, ~6 neighbours per turn.
                        let bits = log2(47) + log2(Double(j - i)) + Double(turns) * log2(6) + (shifted ? 1 : 0)
                        matches.append(Match(start: i, end: j, kind: .keyboardWalk, bits: bits, significant: j - i >= 4))
                    }
                }
            }
            start = end - 1
        }
    }

    // MARK: Years

    static func yearMatches(lower: [Unicode.Scalar], into matches: inout [Match]) {
        guard lower.count >= 4 else { return }
        for i in 0...(lower.count - 4) {
            let digits = lower[i..<(i + 4)]
            guard digits.allSatisfy(isASCIIDigit) else { continue }
            let value = digits.reduce(0) { $0 * 10 + Int($1.value - 0x30) }
            if (1900...2099).contains(value) {
                matches.append(Match(start: i, end: i + 4, kind: .year, bits: log2(200), significant: false))
            }
        }
    }

    // MARK: Repeats

    /// "aaaa" and repeated blocks "abcabc", "1212". A block costs what its own cheapest
    /// cover costs, plus log2 of the repeat count.
    static func repeatMatches(
        lower: [Unicode.Scalar], bitsPerChar: Double,
        cache: inout [[Unicode.Scalar]: Double], into matches: inout [Match]
    ) {
        let count = lower.count
        guard count >= 2 else { return }
        for i in 0..<count {
            var blockLength = 1
            while i + 2 * blockLength <= count {
                let block = Array(lower[i..<(i + blockLength)])
                var repeats = 1
                while i + (repeats + 1) * blockLength <= count,
                      lower[(i + repeats * blockLength)..<(i + (repeats + 1) * blockLength)].elementsEqual(block) {
                    repeats += 1
                }
                let total = repeats * blockLength
                if repeats >= 2, total >= 3, blockLength == 1 || !isSingleCharRepeat(block) {
                    let blockBits: Double
                    if let cached = cache[block] {
                        blockBits = cached
                    } else {
                        blockBits = blockCost(block, bitsPerChar: bitsPerChar)
                        cache[block] = blockBits
                    }
                    let bits = blockBits + log2(Double(repeats))
                    let significant = blockLength == 1 ? total >= 3 : total >= 4
                    matches.append(Match(start: i, end: i + total, kind: .repeats, bits: bits, significant: significant))
                }
                blockLength += 1
            }
        }
    }

    static func isSingleCharRepeat(_ block: [Unicode.Scalar]) -> Bool {
        guard let first = block.first else { return true }
        return block.allSatisfy { $0 == first }
    }

    /// Cheapest cover of a block without further repeat detection (bounded recursion).
    static func blockCost(_ block: [Unicode.Scalar], bitsPerChar: Double) -> Double {
        var matches: [Match] = []
        dictionaryMatches(original: block, lower: block, into: &matches)
        sequenceMatches(original: block, lower: block, into: &matches)
        keyboardMatches(original: block, lower: block, into: &matches)
        yearMatches(lower: block, into: &matches)
        return cheapestCover(count: block.count, bitsPerChar: bitsPerChar, matches: matches).bits
    }

    // MARK: Personal data

    static func personalTokens(fromEmail email: String?) -> [String] {
        guard let email, !email.isEmpty else { return [] }
        let lowered = email.lowercased()
        let local: Substring = lowered.lastIndex(of: "@").map { lowered[..<$0] } ?? lowered[...]
        let withoutTag: Substring = local.firstIndex(of: "+").map { local[..<$0] } ?? local
        var tokens = [String(withoutTag)]
        tokens += splitTokens(String(withoutTag))
        return unique(tokens.filter { $0.unicodeScalars.count >= minPersonalTokenLength })
    }

    static func personalTokens(fromName name: String?) -> [String] {
        guard let name, !name.isEmpty else { return [] }
        return unique(splitTokens(name.lowercased()).filter { $0.unicodeScalars.count >= minPersonalTokenLength })
    }

    /// Splits at anything not alphanumeric and between letters and digits ("john.smith87"
    /// → john, smith, 87).
    static func splitTokens(_ text: String) -> [String] {
        var tokens: [String] = []
        var current = String.UnicodeScalarView()
        var currentIsDigit = false
        for scalar in text.unicodeScalars {
            let isDigit = isASCIIDigit(scalar)
            let isWordChar = isDigit || scalar.properties.isAlphabetic
            if !isWordChar || (!current.isEmpty && isDigit != currentIsDigit) {
                if !current.isEmpty { tokens.append(String(current)) }
                current = String.UnicodeScalarView()
            }
            if isWordChar {
                current.append(lowercased(scalar))
                currentIsDigit = isDigit
            }
        }
        if !current.isEmpty { tokens.append(String(current)) }
        return tokens
    }

    static func unique(_ items: [String]) -> [String] {
        var seen = Set<String>()
        return items.filter { seen.insert($0).inserted }
    }

    /// Adds a match for every occurrence of every token; true if any was found.
    static func personalMatches(
        tokens: [String], variants: [[Unicode.Scalar]], original: [Unicode.Scalar], into matches: inout [Match]
    ) -> Bool {
        var found = false
        for token in tokens {
            let needle = Array(token.unicodeScalars.map(lowercased))
            guard !needle.isEmpty else { continue }
            for text in variants where text.count >= needle.count {
                for i in 0...(text.count - needle.count) where text[i..<(i + needle.count)].elementsEqual(needle) {
                    found = true
                    // The attacker of an account knows its e-mail and name: almost free.
                    let bits = 1 + capitalisationBits(original[i..<(i + needle.count)])
                    matches.append(Match(start: i, end: i + needle.count, kind: .personal, bits: bits, significant: true))
                }
            }
        }
        return found
    }

    // MARK: Cheapest cover

    /// Shortest path over positions: each character is either brute-forced (`bitsPerChar`)
    /// or part of a pattern match. Returns the bits and the kinds of pattern used.
    static func cheapestCover(count: Int, bitsPerChar: Double, matches: [Match]) -> (bits: Double, kinds: Set<Kind>) {
        guard count > 0 else { return (0, []) }
        var byEnd = [[Int]](repeating: [], count: count + 1)
        for (index, match) in matches.enumerated() where match.start >= 0 && match.end <= count && match.start < match.end {
            byEnd[match.end].append(index)
        }
        var best = [Double](repeating: .infinity, count: count + 1)
        var via = [Int?](repeating: nil, count: count + 1)  // match index, nil = brute force
        best[0] = 0
        for end in 1...count {
            best[end] = best[end - 1] + bitsPerChar
            via[end] = nil
            for index in byEnd[end] {
                let candidate = best[matches[index].start] + matches[index].bits
                if candidate < best[end] {
                    best[end] = candidate
                    via[end] = index
                }
            }
        }
        var kinds = Set<Kind>()
        var position = count
        while position > 0 {
            if let index = via[position] {
                // Only patterns long enough to name count as the reason for a weak score.
                if matches[index].significant { kinds.insert(matches[index].kind) }
                position = matches[index].start
            } else {
                position -= 1
            }
        }
        return (best[count], kinds)
    }
}
