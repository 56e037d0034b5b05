import NIOCore

/// Splits a byte stream into frames: 4-byte big-endian length, then that many bytes.
///
/// NIOExtras' `LengthFieldBasedFrameDecoder` accepts lengths up to 2³² and buffers the whole frame
/// before anything can object; here the declared length is checked as soon as the 4 header bytes
/// arrive, so a peer cannot make us buffer more than `maximumFrameLength` (SPEC §2).
public struct RPCFrameDecoder: ByteToMessageDecoder, Sendable {
    public typealias InboundOut = ByteBuffer

    public let maximumFrameLength: Int

    public init(maximumFrameLength: Int) {
        self.maximumFrameLength = maximumFrameLength
    }

    public mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let length = buffer.getInteger(at: buffer.readerIndex, endianness: .big, as: UInt32.self) else {
            return .needMoreData
        }
        guard length <= maximumFrameLength else {
            throw RPCFrameError.frameTooLarge(length: Int(length), maximum: maximumFrameLength)
        }
        guard buffer.readableBytes >= 4 + Int(length) else {
            return .needMoreData
        }
        buffer.moveReaderIndex(forwardBy: 4)
        // Non-nil: the readable byte count was checked just above.
        let frame = buffer.readSlice(length: Int(length))!
        context.fireChannelRead(Self.wrapInboundOut(frame))
        return .continue
    }

    public mutating func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool) throws -> DecodingState {
        while try decode(context: context, buffer: &buffer) == .continue {}
        if buffer.readableBytes > 0 {
            // The peer went away in the middle of a frame.
            throw RPCFrameError.truncatedFrame
        }
        return .needMoreData
    }
}

public enum RPCFrameError: Error, Sendable, Hashable, CustomStringConvertible {
    case frameTooLarge(length: Int, maximum: Int)
    case truncatedFrame
    case malformedFrame
    case protocolViolation(String)

    public var description: String {
        switch self {
        case let .frameTooLarge(length, maximum): "frame of \(length) bytes exceeds the maximum of \(maximum)"
        case .truncatedFrame: "connection closed in the middle of a frame"
        case .malformedFrame: "frame is not a valid clau.rpc.Frame"
        case let .protocolViolation(what): "protocol violation: \(what)"
        }
    }
}

extension ChannelPipeline.SynchronousOperations {
    /// Inbound framing, with the maximum frame size enforced from the header. Outbound frames are
    /// built with their header already in place (`ByteBuffer(rpcFrame:)`): one buffer per frame,
    /// no separate 4-byte buffer through the pipeline.
    func addRPCFraming(maximumFrameLength: Int) throws {
        try addHandler(ByteToMessageHandler(RPCFrameDecoder(maximumFrameLength: maximumFrameLength), maximumBufferSize: maximumFrameLength + 4))
    }
}

extension ByteBuffer {
    /// A frame on the wire: the 4-byte big-endian length, then the serialized `Frame`.
    init(rpcFrame bytes: [UInt8]) {
        self.init()
        reserveCapacity(4 + bytes.count)
        writeInteger(UInt32(bytes.count), endianness: .big)
        writeBytes(bytes)
    }
}
