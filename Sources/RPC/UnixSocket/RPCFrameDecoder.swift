import NIOCore
import SwiftProtobuf

/// Splits a byte stream into frames: 4-byte big-endian length, then that many bytes.
///
/// NIOExtras' `LengthFieldBasedFrameDecoder` accepts lengths up to 2³² and buffers the whole frame
/// before anything can object; here the declared length is checked as soon as the 4 header bytes
/// arrive, so a peer cannot make us buffer more than `maximumFrameLength` (SPEC §2).
public struct RPCFrameDecoder: ByteToMessageDecoder, Sendable {
    public typealias InboundOut = ByteBuffer

    public let maximumFrameLength: Int
    /// How long a frame, once begun, may take to arrive in full; past it the decoder raises
    /// ``RPCFrameError/stalledFrame`` (the connection closes). Nil: no limit.
    public let frameReadTimeout: TimeAmount?
    /// Armed while a frame is partly received.
    private var stalledFrameTimer: Scheduled<Void>?

    public init(maximumFrameLength: Int, frameReadTimeout: TimeAmount? = nil) {
        self.maximumFrameLength = maximumFrameLength
        self.frameReadTimeout = frameReadTimeout
    }

    public mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let length = buffer.getInteger(at: buffer.readerIndex, endianness: .big, as: UInt32.self) else {
            awaitRestOfFrame(context: context, buffered: buffer.readableBytes)
            return .needMoreData
        }
        guard length <= maximumFrameLength else {
            throw RPCFrameError.frameTooLarge(length: Int(length), maximum: maximumFrameLength)
        }
        guard buffer.readableBytes >= 4 + Int(length) else {
            awaitRestOfFrame(context: context, buffered: buffer.readableBytes)
            return .needMoreData
        }
        buffer.moveReaderIndex(forwardBy: 4)
        // Non-nil: the readable byte count was checked just above.
        let frame = buffer.readSlice(length: Int(length))!
        // A whole frame arrived: the next one gets its own full timeout.
        stalledFrameTimer?.cancel()
        stalledFrameTimer = nil
        context.fireChannelRead(Self.wrapInboundOut(frame))
        return .continue
    }

    public mutating func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool) throws -> DecodingState {
        while try decode(context: context, buffer: &buffer) == .continue {}
        stalledFrameTimer?.cancel()
        stalledFrameTimer = nil
        if buffer.readableBytes > 0 {
            // The peer went away in the middle of a frame.
            throw RPCFrameError.truncatedFrame
        }
        return .needMoreData
    }

    public mutating func decoderRemoved(context: ChannelHandlerContext) {
        stalledFrameTimer?.cancel()
        stalledFrameTimer = nil
    }

    /// Starts the stall timer when bytes of a frame wait for the rest (once per frame: a peer that
    /// trickles one byte at a time does not restart it).
    private mutating func awaitRestOfFrame(context: ChannelHandlerContext, buffered: Int) {
        guard buffered > 0, stalledFrameTimer == nil, let frameReadTimeout else { return }
        let loopBound = NIOLoopBound(context, eventLoop: context.eventLoop)
        stalledFrameTimer = context.eventLoop.scheduleTask(in: frameReadTimeout) {
            let context = loopBound.value
            guard context.channel.isActive else { return }
            context.fireErrorCaught(RPCFrameError.stalledFrame)
        }
    }
}

public enum RPCFrameError: Error, Sendable, Hashable, CustomStringConvertible {
    case frameTooLarge(length: Int, maximum: Int)
    case truncatedFrame
    case stalledFrame
    case malformedFrame
    case protocolViolation(String)

    public var description: String {
        switch self {
        case let .frameTooLarge(length, maximum): "frame of \(length) bytes exceeds the maximum of \(maximum)"
        case .truncatedFrame: "connection closed in the middle of a frame"
        case .stalledFrame: "a frame did not arrive in full within the read timeout"
        case .malformedFrame: "frame is not a valid clau.rpc.Frame"
        case let .protocolViolation(what): "protocol violation: \(what)"
        }
    }
}

extension ChannelPipeline.SynchronousOperations {
    /// Inbound framing, with the maximum frame size enforced from the header. Outbound frames are
    /// built with their header already in place (`ByteBuffer(rpcFrame:)`): one buffer per frame,
    /// no separate 4-byte buffer through the pipeline.
    func addRPCFraming(maximumFrameLength: Int, frameReadTimeout: TimeAmount? = nil) throws {
        try addHandler(ByteToMessageHandler(RPCFrameDecoder(maximumFrameLength: maximumFrameLength, frameReadTimeout: frameReadTimeout), maximumBufferSize: maximumFrameLength + 4))
    }
}

extension AdaptiveRecvByteBufferAllocator {
    /// NIO's default read size grows to 64 KiB at most, so a 64 KiB payload's frame takes two
    /// reads and a copy into the decoder's buffer. Up to 256 KiB (about a Unix socket's default
    /// receive buffer) it arrives in one read and is sliced, not copied; reads still start small.
    static let rpcFrames = AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 2048, maximum: 256 * 1024)
}

extension ByteBuffer {
    /// A frame on the wire: the 4-byte big-endian length, then the serialized `Frame`.
    init(rpcFrame bytes: [UInt8]) {
        self.init()
        reserveCapacity(4 + bytes.count)
        writeInteger(UInt32(bytes.count), endianness: .big)
        writeBytes(bytes)
    }

    /// `frame` serialized straight into a wire frame (header included): no intermediate array
    /// and no second copy of the payload per frame.
    init(rpcFrame frame: RPCWireFrame) throws {
        let framed: FramedProtobufBytes = try frame.serializedBytes()
        // Non-nil: protobuf built `framed` with `init(repeating:count:)`.
        self = framed.frame!
    }
}

extension RPCWireFrame {
    /// Parses a frame body where the decoder left it, without copying it into an array first.
    init(frameBody: ByteBuffer) throws {
        try self.init(serializedBytes: FramedProtobufBytes(body: frameBody))
    }
}

/// A `ByteBuffer` as protobuf's bag of bytes: parsing reads the buffer in place, and serializing
/// writes into a buffer that already holds the frame's 4-byte length header in front of the
/// message bytes. (The protocol's other requirements are what protobuf needs to build a value.)
struct FramedProtobufBytes: SwiftProtobufContiguousBytes {
    /// The message bytes (readable); for a value protobuf built, the header sits just before them.
    private var buffer: ByteBuffer
    private var hasHeader: Bool

    init(body: ByteBuffer) {
        buffer = body
        hasHeader = false
    }

    /// What `serializedBytes()` calls with the exact encoded size: header, then `count` zero bytes
    /// for the encoder to overwrite.
    init(repeating: UInt8, count: Int) {
        buffer = ByteBuffer()
        buffer.reserveCapacity(4 + count)
        buffer.writeInteger(UInt32(truncatingIfNeeded: count), endianness: .big)
        buffer.writeRepeatingByte(repeating, count: count)
        buffer.moveReaderIndex(forwardBy: 4)
        hasHeader = true
    }

    init<S: Sequence>(_ sequence: S) where S.Element == UInt8 {
        let bytes = Array(sequence)
        self.init(repeating: 0, count: bytes.count)
        buffer.setBytes(bytes, at: buffer.readerIndex)
    }

    var count: Int { buffer.readableBytes }

    /// The whole frame, header first; nil for a value that wraps a received body.
    var frame: ByteBuffer? {
        guard hasHeader else { return nil }
        var frame = buffer
        frame.moveReaderIndex(to: buffer.readerIndex - 4)
        return frame
    }

    func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try buffer.withUnsafeReadableBytes(body)
    }

    mutating func withUnsafeMutableBytes<R>(_ body: (UnsafeMutableRawBufferPointer) throws -> R) rethrows -> R {
        try buffer.withUnsafeMutableReadableBytes(body)
    }
}
