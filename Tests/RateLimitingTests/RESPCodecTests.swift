import NIOCore
import NIOEmbedded
import NIOTestUtils
import Testing

@testable import RateLimiting
import TestSupport

@Suite("RESP2 codec", .timeLimit(.minutes(5)))
struct RESPCodecTests {
    static func bytes(_ s: String) -> ByteBuffer { ByteBuffer(string: s) }
    static func bulk(_ s: String) -> RESPValue { .bulkString(ByteBuffer(string: s)) }

    func parseAll(_ input: String, limits: RESPLimits = RESPLimits()) throws -> [RESPValue] {
        var buffer = Self.bytes(input)
        let parser = RESPParser(limits: limits)
        var values: [RESPValue] = []
        while let value = try parser.parse(&buffer) { values.append(value) }
        return values
    }

    @Test func parsesEveryType() throws {
        let values = try parseAll(
            "+OK\r\n-ERR bad thing\r\n:42\r\n:-9223372036854775808\r\n$3\r\nfoo\r\n$0\r\n\r\n$-1\r\n*-1\r\n*0\r\n"
                + "*2\r\n*1\r\n:1\r\n$2\r\n\r\n\r\n$4\r\na\r\nb\r\n")
        #expect(
            values == [
                .simpleString("OK"), .error("ERR bad thing"), .integer(42), .integer(Int64.min), Self.bulk("foo"),
                Self.bulk(""), .bulkString(nil), .array(nil), .array([]),
                .array([.array([.integer(1)]), Self.bulk("\r\n")]), Self.bulk("a\r\nb"),
            ])
    }

    @Test func incompleteInputWaitsWithoutConsuming() throws {
        let parser = RESPParser()
        for input in ["", "+OK", "+OK\r", "$3\r\nfo", "$3\r\nfoo\r", "*2\r\n:1\r\n", ":12"] {
            var buffer = Self.bytes(input)
            #expect(try parser.parse(&buffer) == nil, "\(input.debugDescription)")
            #expect(buffer.readableBytes == input.utf8.count)
        }
    }

    @Test func encodesCommandsAsArraysOfBulkStrings() {
        var buffer = ByteBuffer()
        RESPCommand("EVALSHA", "abc", "1", "k€y").write(into: &buffer)
        #expect(String(buffer: buffer) == "*4\r\n$7\r\nEVALSHA\r\n$3\r\nabc\r\n$1\r\n1\r\n$5\r\nk€y\r\n")
        var empty = ByteBuffer()
        RESPCommand(strings: []).write(into: &empty)
        #expect(String(buffer: empty) == "*0\r\n")
    }

    @Test func decoderPassesByteToMessageDecoderVerifier() throws {
        let pairs: [(ByteBuffer, [RESPValue])] = [
            (Self.bytes("+PONG\r\n"), [.simpleString("PONG")]),
            (Self.bytes("-NOSCRIPT No matching script\r\n"), [.error("NOSCRIPT No matching script")]),
            (Self.bytes(":0\r\n:-1\r\n"), [.integer(0), .integer(-1)]),
            (Self.bytes("$5\r\nhello\r\n$-1\r\n"), [Self.bulk("hello"), .bulkString(nil)]),
            (
                Self.bytes("*4\r\n:1\r\n:4\r\n:12000000\r\n:0\r\n"),
                [.array([.integer(1), .integer(4), .integer(12_000_000), .integer(0)])]
            ),
            (Self.bytes("*3\r\n*-1\r\n*1\r\n$1\r\nx\r\n+\r\n"), [.array([.array(nil), .array([Self.bulk("x")]), .simpleString("")])]),
        ]
        try ByteToMessageDecoderVerifier.verifyDecoder(inputOutputPairs: pairs, decoderFactory: { RESPDecoder() })
    }

    @Test(arguments: [
        ("?x\r\n", RESPParseError.Kind.invalidTypeByte),
        ("+OK\n", .missingCRLF),
        ("+OK\rX", .missingCRLF),
        (":12a\r\n", .invalidInteger),
        (":\r\n", .invalidInteger),
        (":99999999999999999999\r\n", .invalidInteger),
        (":9223372036854775808\r\n", .invalidInteger),
        ("$-2\r\n", .invalidLength),
        ("*-5\r\n", .invalidLength),
        ("$3\r\nfooXY", .missingCRLF),
        ("$3\r\nfooX", .missingCRLF),
        ("$+3\r\nfoo\r\n", .invalidInteger),
    ])
    func malformedInputIsATypedError(input: String, kind: RESPParseError.Kind) {
        #expect(throws: RESPParseError.self) { try parseAll(input) }
        do {
            _ = try parseAll(input)
        } catch let error as RESPParseError {
            #expect(error.kind == kind)
        } catch {
            Issue.record("unexpected error \(error)")
        }
    }

    @Test func oversizedBulkLengthIsRejectedFromTheHeaderAlone() throws {
        let parser = RESPParser()
        // Only the header has arrived; the parser must not wait for (and buffer) 2 GB.
        var buffer = Self.bytes("$2000000000\r\n")
        #expect(throws: RESPParseError(kind: .bulkTooLong, offset: 1)) { try parser.parse(&buffer) }
        var justOver = Self.bytes("$\(1 << 20 + 1)\r\n")
        #expect(throws: RESPParseError.self) { try parser.parse(&justOver) }
        // The limit itself is fine (incomplete → nil).
        var atLimit = Self.bytes("$\(1 << 20)\r\n")
        let atLimitResult = try parser.parse(&atLimit)
        #expect(atLimitResult == nil)
    }

    @Test func arrayAndNestingLimits() throws {
        var limits = RESPLimits()
        limits.maximumArrayElements = 4
        limits.maximumDepth = 3
        limits.maximumTotalElements = 10
        #expect(try parseAll("*4\r\n:1\r\n:2\r\n:3\r\n:4\r\n", limits: limits).count == 1)
        #expect(throws: RESPParseError(kind: .arrayTooLong, offset: 1)) { try parseAll("*5\r\n", limits: limits) }
        #expect(throws: RESPParseError(kind: .arrayTooLong, offset: 1)) { try parseAll("*4294967296\r\n") }
        #expect(try parseAll("*1\r\n*1\r\n*0\r\n", limits: limits).count == 1)
        #expect(throws: RESPParseError.self) { try parseAll("*1\r\n*1\r\n*1\r\n*0\r\n", limits: limits) }
        // 3 * 4 = 12 elements in total > 10
        #expect(throws: RESPParseError.self) { try parseAll("*3\r\n*4\r\n:1\r\n:1\r\n:1\r\n:1\r\n*4\r\n:1\r\n:1\r\n:1\r\n:1\r\n*4\r\n", limits: limits) }
        // Default depth limit holds against a deeply nested stream.
        #expect(throws: RESPParseError.self) { try parseAll(String(repeating: "*1\r\n", count: 100_000)) }
    }

    @Test func overlongLinesAndMessagesAreRejected() throws {
        var limits = RESPLimits()
        limits.maximumLineLength = 16
        limits.maximumMessageBytes = 64
        let parser = RESPParser(limits: limits)
        var line = Self.bytes("+" + String(repeating: "a", count: 17))
        #expect(throws: RESPParseError(kind: .lineTooLong, offset: 1)) { try parser.parse(&line) }
        var okLine = Self.bytes("+" + String(repeating: "a", count: 16) + "\r\n")
        let okResult = try parser.parse(&okLine)
        #expect(okResult == .simpleString(String(repeating: "a", count: 16)))
        var big = Self.bytes("$60\r\n")
        #expect(throws: RESPParseError.self) { try parser.parse(&big) }
        var many = Self.bytes("*30\r\n" + String(repeating: ":1\r\n", count: 20))
        #expect(throws: RESPParseError.self) { try parser.parse(&many) }
    }

    @Test func malformedInputClosesTheChannel() throws {
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(RESPDecoder()))
        #expect(throws: RESPParseError.self) { try channel.writeInbound(Self.bytes("+OK\r\n!boom\r\n")) }
        #expect(try channel.readInbound(as: RESPValue.self) == .simpleString("OK"))
        _ = try? channel.finish()
    }

    // MARK: property / fuzz

    static func randomValue(_ rng: inout some RandomNumberGenerator, depth: Int = 0) -> RESPValue {
        let printable = Array("abcdefghijklmnopqrstuvwxyz ABC-_:0123456789+$*€".unicodeScalars)
        func text(_ rng: inout some RandomNumberGenerator) -> String {
            String(String.UnicodeScalarView((0..<Int.random(in: 0...12, using: &rng)).map { _ in printable.randomElement(using: &rng)! }))
        }
        switch Int.random(in: 0..<(depth < 3 ? 7 : 5), using: &rng) {
        case 0: return .simpleString(text(&rng))
        case 1: return .error(text(&rng))
        case 2: return .integer(Int64.random(in: Int64.min...Int64.max, using: &rng))
        case 3:
            let bytes = (0..<Int.random(in: 0...40, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            return .bulkString(ByteBuffer(bytes: bytes))
        case 4: return Bool.random(using: &rng) ? .bulkString(nil) : .array(nil)
        default:
            return .array((0..<Int.random(in: 0...5, using: &rng)).map { _ in randomValue(&rng, depth: depth + 1) })
        }
    }

    @Test func roundTripsRandomValuesSplitAnywhere() throws {
        var rng = SplitMix64(seed: 0x5EED)
        let parser = RESPParser()
        for _ in 0..<3000 {
            let value = Self.randomValue(&rng)
            var encoded = ByteBuffer()
            value.write(into: &encoded)
            // Whole.
            var whole = encoded
            #expect(try parser.parse(&whole) == value)
            #expect(whole.readableBytes == 0)
            // Every strict prefix is incomplete (never an error, never a value).
            let cut = Int.random(in: 0..<encoded.readableBytes, using: &rng)
            var prefix = encoded.getSlice(at: encoded.readerIndex, length: cut)!
            #expect(try parser.parse(&prefix) == nil)
        }
    }

    @Test func survivesRandomAndMutatedInput() throws {
        var rng = SplitMix64(seed: 0xF022)
        var limits = RESPLimits()
        limits.maximumBulkLength = 4096
        let parser = RESPParser(limits: limits)
        var outcomes = (values: 0, errors: 0, incomplete: 0)
        for round in 0..<6000 {
            var input: ByteBuffer
            if round % 3 == 0 {
                // Pure noise, biased towards protocol bytes.
                let alphabet: [UInt8] = Array("+-:$*\r\n0123456789-1abc".utf8)
                let bytes = (0..<Int.random(in: 0...64, using: &rng)).map { _ in
                    Bool.random(using: &rng) ? alphabet.randomElement(using: &rng)! : UInt8.random(in: 0...255, using: &rng)
                }
                input = ByteBuffer(bytes: bytes)
            } else {
                // A valid encoding with a few bytes flipped, inserted or removed.
                var encoded = ByteBuffer()
                Self.randomValue(&rng).write(into: &encoded)
                var bytes = Array(encoded.readableBytesView)
                for _ in 0..<Int.random(in: 1...3, using: &rng) where !bytes.isEmpty {
                    let i = Int.random(in: 0..<bytes.count, using: &rng)
                    switch Int.random(in: 0..<3, using: &rng) {
                    case 0: bytes[i] = UInt8.random(in: 0...255, using: &rng)
                    case 1: bytes.insert(UInt8.random(in: 0...255, using: &rng), at: i)
                    default: bytes.remove(at: i)
                    }
                }
                input = ByteBuffer(bytes: bytes)
            }
            // Parse as a stream until error or incomplete; must never crash or loop.
            var steps = 0
            while steps < 1000 {
                steps += 1
                do {
                    let before = input.readableBytes
                    guard let _ = try parser.parse(&input) else {
                        outcomes.incomplete += 1
                        break
                    }
                    outcomes.values += 1
                    #expect(input.readableBytes < before)
                } catch {
                    outcomes.errors += 1
                    break
                }
            }
        }
        #expect(outcomes.values > 100)
        #expect(outcomes.errors > 100)
    }

    @Test func decoderHandlesRandomChunking() throws {
        var rng = SplitMix64(seed: 42)
        for _ in 0..<200 {
            let values = (0..<Int.random(in: 1...8, using: &rng)).map { _ in Self.randomValue(&rng) }
            var stream = ByteBuffer()
            for value in values { value.write(into: &stream) }
            let channel = EmbeddedChannel()
            try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(RESPDecoder()))
            while stream.readableBytes > 0 {
                let n = min(stream.readableBytes, Int.random(in: 1...16, using: &rng))
                try channel.writeInbound(stream.readSlice(length: n)!)
            }
            var decoded: [RESPValue] = []
            while let value = try channel.readInbound(as: RESPValue.self) { decoded.append(value) }
            #expect(decoded == values)
            #expect(try channel.finish().isClean)
        }
    }
}

