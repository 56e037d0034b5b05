import NIOCore

/// One RESP2 value, as a Redis server sends it.
public enum RESPValue: Sendable, Hashable {
    /// `+OK\r\n`
    case simpleString(String)
    /// `-ERR message\r\n`
    case error(String)
    /// `:42\r\n`
    case integer(Int64)
    /// `$3\r\nfoo\r\n`; `nil` for the null bulk string `$-1\r\n`.
    case bulkString(ByteBuffer?)
    /// `*2\r\n...`; `nil` for the null array `*-1\r\n`.
    case array([RESPValue]?)
}

extension RESPValue {
    /// Writes this value in RESP2 (used by the tests to round-trip values; commands use ``RESPCommand``).
    /// Simple strings and errors must not contain CR or LF.
    public func write(into buffer: inout ByteBuffer) {
        switch self {
        case .simpleString(let s):
            buffer.writeInteger(UInt8(ascii: "+"))
            buffer.writeString(s)
            buffer.writeStaticString("\r\n")
        case .error(let s):
            buffer.writeInteger(UInt8(ascii: "-"))
            buffer.writeString(s)
            buffer.writeStaticString("\r\n")
        case .integer(let i):
            buffer.writeInteger(UInt8(ascii: ":"))
            buffer.writeString(String(i))
            buffer.writeStaticString("\r\n")
        case .bulkString(nil):
            buffer.writeStaticString("$-1\r\n")
        case .bulkString(.some(let bytes)):
            buffer.writeInteger(UInt8(ascii: "$"))
            buffer.writeString(String(bytes.readableBytes))
            buffer.writeStaticString("\r\n")
            buffer.writeImmutableBuffer(bytes)
            buffer.writeStaticString("\r\n")
        case .array(nil):
            buffer.writeStaticString("*-1\r\n")
        case .array(.some(let elements)):
            buffer.writeInteger(UInt8(ascii: "*"))
            buffer.writeString(String(elements.count))
            buffer.writeStaticString("\r\n")
            for element in elements { element.write(into: &buffer) }
        }
    }

    /// The bulk or simple string as UTF-8 text, if this is one.
    public var string: String? {
        switch self {
        case .simpleString(let s): return s
        case .bulkString(.some(let b)): return String(buffer: b)
        default: return nil
        }
    }
}

/// A command: an array of bulk strings, the only form a client sends.
public struct RESPCommand: Sendable, Hashable {
    /// The command name and its arguments.
    public var arguments: [ByteBuffer]

    /// Creates a command from byte buffers.
    public init(_ arguments: [ByteBuffer]) { self.arguments = arguments }

    /// Creates a command from strings (sent as UTF-8).
    public init(_ arguments: String...) { self.init(strings: arguments) }

    /// Creates a command from strings (sent as UTF-8).
    public init(strings: [String]) { self.arguments = strings.map { ByteBuffer(string: $0) } }

    /// Writes `*N\r\n` followed by N bulk strings.
    public func write(into buffer: inout ByteBuffer) {
        buffer.writeInteger(UInt8(ascii: "*"))
        buffer.writeString(String(arguments.count))
        buffer.writeStaticString("\r\n")
        for argument in arguments {
            buffer.writeInteger(UInt8(ascii: "$"))
            buffer.writeString(String(argument.readableBytes))
            buffer.writeStaticString("\r\n")
            buffer.writeImmutableBuffer(argument)
            buffer.writeStaticString("\r\n")
        }
    }
}

/// Malformed or over-limit RESP input. The connection that produced it is closed.
public struct RESPParseError: Error, Sendable, Hashable, CustomStringConvertible {
    /// What was wrong.
    public enum Kind: Sendable, Hashable {
        /// The first byte is not one of `+ - : $ *`.
        case invalidTypeByte
        /// Not a decimal Int64 (sign, digits only, no overflow).
        case invalidInteger
        /// A bulk or array length below -1.
        case invalidLength
        /// A bulk length above ``RESPLimits/maximumBulkLength``.
        case bulkTooLong
        /// An array count above ``RESPLimits/maximumArrayElements``.
        case arrayTooLong
        /// Arrays nested deeper than ``RESPLimits/maximumDepth``.
        case tooDeep
        /// More than ``RESPLimits/maximumTotalElements`` array elements in one message.
        case tooManyElements
        /// A line longer than ``RESPLimits/maximumLineLength``.
        case lineTooLong
        /// A message larger than ``RESPLimits/maximumMessageBytes``.
        case messageTooLarge
        /// A bare CR or LF, or a bulk string not followed by CRLF.
        case missingCRLF
    }

    /// What was wrong.
    public var kind: Kind
    /// Offset in the message where it was detected.
    public var offset: Int

    public var description: String { "RESPParseError(\(kind) at \(offset))" }
}

/// Hard limits for ``RESPParser``, so a hostile or broken server cannot make the client
/// allocate or buffer without bound.
public struct RESPLimits: Sendable, Hashable {
    /// Largest bulk string accepted (bytes). Default 1 MiB.
    public var maximumBulkLength: Int = 1 << 20
    /// Most elements in one array. Default 1024.
    public var maximumArrayElements: Int = 1024
    /// Deepest nesting of arrays (a top-level array is depth 1). Default 8.
    public var maximumDepth: Int = 8
    /// Most array elements in one message, over all nesting levels. Default 4096.
    public var maximumTotalElements: Int = 4096
    /// Longest line (simple string, error, integer or length header), excluding CRLF. Default 64 KiB.
    public var maximumLineLength: Int = 64 << 10
    /// Largest whole message (bytes). Default 4 MiB.
    public var maximumMessageBytes: Int = 4 << 20

    /// The defaults.
    public init() {}
}

/// Pure RESP2 parsing, independent of channels: parses at most one value from the front of a buffer.
public struct RESPParser: Sendable {
    /// The limits enforced.
    public var limits: RESPLimits

    /// Creates a parser.
    public init(limits: RESPLimits = RESPLimits()) { self.limits = limits }

    /// Parses one complete value from the readable bytes of `buffer`.
    ///
    /// - Returns: the value, with the reader index moved past it; or `nil` when more bytes are needed
    ///   (the reader index is unchanged).
    /// - Throws: ``RESPParseError`` as soon as the input is known to be malformed or over a limit,
    ///   without waiting for (or buffering) the rest of an oversized value.
    public func parse(_ buffer: inout ByteBuffer) throws(RESPParseError) -> RESPValue? {
        let base = buffer
        var state = State(limits: limits, base: base)
        let result: Result<RESPValue?, RESPParseError> = base.withUnsafeReadableBytes { bytes in
            do throws(RESPParseError) {
                var position = 0
                let value = try state.parseValue(bytes, &position, depth: 0)
                if value != nil { state.consumed = position }
                return .success(value)
            } catch {
                return .failure(error)
            }
        }
        let value = try result.get()
        if value != nil { buffer.moveReaderIndex(forwardBy: state.consumed) }
        return value
    }

    private struct State {
        let limits: RESPLimits
        let base: ByteBuffer
        var elementsLeft: Int
        var consumed = 0

        init(limits: RESPLimits, base: ByteBuffer) {
            self.limits = limits
            self.base = base
            self.elementsLeft = limits.maximumTotalElements
        }

        func fail(_ kind: RESPParseError.Kind, _ offset: Int) -> RESPParseError {
            RESPParseError(kind: kind, offset: offset)
        }

        /// Finds the CRLF ending the line starting at `start`. Returns the index of CR, or nil if incomplete.
        func lineEnd(_ bytes: UnsafeRawBufferPointer, from start: Int) throws(RESPParseError) -> Int? {
            var i = start
            let limitEnd = start + limits.maximumLineLength
            while i < bytes.count {
                let byte = bytes[i]
                if byte == UInt8(ascii: "\r") {
                    guard i + 1 < bytes.count else { return nil }
                    guard bytes[i + 1] == UInt8(ascii: "\n") else { throw fail(.missingCRLF, i) }
                    return i
                }
                if byte == UInt8(ascii: "\n") { throw fail(.missingCRLF, i) }
                if i >= limitEnd { throw fail(.lineTooLong, start) }
                i += 1
            }
            if i - start > limits.maximumLineLength { throw fail(.lineTooLong, start) }
            return nil
        }

        func parseInteger(_ bytes: UnsafeRawBufferPointer, _ start: Int, _ end: Int) throws(RESPParseError) -> Int64 {
            var i = start
            var negative = false
            if i < end, bytes[i] == UInt8(ascii: "-") {
                negative = true
                i += 1
            }
            guard i < end, end - i <= 19 else { throw fail(.invalidInteger, start) }
            var value: Int64 = 0
            while i < end {
                let byte = bytes[i]
                guard byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") else { throw fail(.invalidInteger, i) }
                let digit = Int64(byte - UInt8(ascii: "0"))
                let (m, o1) = value.multipliedReportingOverflow(by: 10)
                // Accumulate negatively so Int64.min parses.
                let (s, o2) = negative ? m.subtractingReportingOverflow(digit) : m.addingReportingOverflow(digit)
                guard !o1, !o2 else { throw fail(.invalidInteger, start) }
                value = s
                i += 1
            }
            return value
        }

        mutating func parseValue(
            _ bytes: UnsafeRawBufferPointer,
            _ position: inout Int,
            depth: Int
        ) throws(RESPParseError) -> RESPValue? {
            guard position < bytes.count else { return nil }
            if position > limits.maximumMessageBytes { throw fail(.messageTooLarge, position) }
            let typeByte = bytes[position]
            switch typeByte {
            case UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: ":"), UInt8(ascii: "$"), UInt8(ascii: "*"):
                break
            default:
                throw fail(.invalidTypeByte, position)
            }
            let lineStart = position + 1
            guard let cr = try lineEnd(bytes, from: lineStart) else { return nil }
            let afterLine = cr + 2
            if afterLine > limits.maximumMessageBytes { throw fail(.messageTooLarge, position) }

            switch typeByte {
            case UInt8(ascii: "+"), UInt8(ascii: "-"):
                let text = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[lineStart..<cr]), as: UTF8.self)
                position = afterLine
                return typeByte == UInt8(ascii: "+") ? .simpleString(text) : .error(text)

            case UInt8(ascii: ":"):
                let value = try parseInteger(bytes, lineStart, cr)
                position = afterLine
                return .integer(value)

            case UInt8(ascii: "$"):
                let declared = try parseInteger(bytes, lineStart, cr)
                if declared == -1 {
                    position = afterLine
                    return .bulkString(nil)
                }
                guard declared >= 0 else { throw fail(.invalidLength, lineStart) }
                guard declared <= limits.maximumBulkLength else { throw fail(.bulkTooLong, lineStart) }
                let length = Int(declared)
                let end = afterLine + length
                if end + 2 > limits.maximumMessageBytes { throw fail(.messageTooLarge, position) }
                guard end + 2 <= bytes.count else {
                    // Fail early on a wrong terminator if what we have already shows it.
                    if end < bytes.count, bytes[end] != UInt8(ascii: "\r") { throw fail(.missingCRLF, end) }
                    return nil
                }
                guard bytes[end] == UInt8(ascii: "\r"), bytes[end + 1] == UInt8(ascii: "\n") else {
                    throw fail(.missingCRLF, end)
                }
                let slice = base.getSlice(at: base.readerIndex + afterLine, length: length)!
                position = end + 2
                return .bulkString(slice)

            default:  // "*"
                let declared = try parseInteger(bytes, lineStart, cr)
                if declared == -1 {
                    position = afterLine
                    return .array(nil)
                }
                guard declared >= 0 else { throw fail(.invalidLength, lineStart) }
                guard declared <= limits.maximumArrayElements else { throw fail(.arrayTooLong, lineStart) }
                guard depth + 1 <= limits.maximumDepth else { throw fail(.tooDeep, position) }
                let count = Int(declared)
                elementsLeft -= count
                guard elementsLeft >= 0 else { throw fail(.tooManyElements, position) }
                var cursor = afterLine
                var elements: [RESPValue] = []
                elements.reserveCapacity(count)
                for _ in 0..<count {
                    guard let element = try parseValue(bytes, &cursor, depth: depth + 1) else { return nil }
                    elements.append(element)
                }
                position = cursor
                return .array(elements)
            }
        }
    }
}

/// A `ByteToMessageDecoder` producing one ``RESPValue`` per reply; malformed input throws
/// ``RESPParseError``, which `ByteToMessageHandler` passes on as an error (the client closes the connection).
public struct RESPDecoder: ByteToMessageDecoder {
    public typealias InboundOut = RESPValue

    private let parser: RESPParser

    /// Creates a decoder.
    public init(limits: RESPLimits = RESPLimits()) { self.parser = RESPParser(limits: limits) }

    public mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let value = try parser.parse(&buffer) else { return .needMoreData }
        context.fireChannelRead(Self.wrapInboundOut(value))
        return .continue
    }

    public mutating func decodeLast(
        context: ChannelHandlerContext,
        buffer: inout ByteBuffer,
        seenEOF: Bool
    ) throws -> DecodingState {
        try decode(context: context, buffer: &buffer)
    }
}

/// A `MessageToByteEncoder` writing ``RESPCommand``s as arrays of bulk strings.
public struct RESPCommandEncoder: MessageToByteEncoder {
    public typealias OutboundIn = RESPCommand

    /// Creates an encoder.
    public init() {}

    public func encode(data: RESPCommand, out: inout ByteBuffer) throws {
        data.write(into: &out)
    }
}
