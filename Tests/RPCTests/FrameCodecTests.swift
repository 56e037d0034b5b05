import NIOCore
import NIOEmbedded
import NIOTestUtils
@testable import RPC
import Testing

@Suite("Frame codec", .timeLimit(.minutes(5)))
struct FrameCodecTests {
    private func framed(_ body: String) -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.writeInteger(UInt32(body.utf8.count), endianness: .big)
        buffer.writeString(body)
        return buffer
    }

    @Test func decoderPassesByteToMessageDecoderVerifier() throws {
        let pairs: [(ByteBuffer, [ByteBuffer])] = [
            (framed("hello"), [ByteBuffer(string: "hello")]),
            (framed(""), [ByteBuffer()]),
            (framed(String(repeating: "x", count: 1000)), [ByteBuffer(string: String(repeating: "x", count: 1000))]),
        ]
        try ByteToMessageDecoderVerifier.verifyDecoder(inputOutputPairs: pairs) {
            RPCFrameDecoder(maximumFrameLength: 4096)
        }
    }

    @Test func oversizedLengthIsRejectedFromTheHeaderAlone() throws {
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(RPCFrameDecoder(maximumFrameLength: 1024)))
        var header = ByteBuffer()
        header.writeInteger(UInt32(1025), endianness: .big)
        #expect(throws: RPCFrameError.frameTooLarge(length: 1025, maximum: 1024)) {
            try channel.writeInbound(header)
        }
    }

    @Test func frameAtTheLimitIsAccepted() throws {
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(RPCFrameDecoder(maximumFrameLength: 16)))
        try channel.writeInbound(framed(String(repeating: "a", count: 16)))
        #expect(try channel.readInbound(as: ByteBuffer.self)?.readableBytes == 16)
    }

    @Test func eofInsideAFrameIsReportedAsTruncated() throws {
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(RPCFrameDecoder(maximumFrameLength: 1024)))
        var partial = framed("0123456789")
        partial.moveWriterIndex(to: partial.writerIndex - 3)
        try channel.writeInbound(partial)
        #expect(throws: RPCFrameError.truncatedFrame) { try channel.finish() }
    }

    /// A peer that begins a frame and stalls is reported after the read timeout, on the loop's
    /// clock; trickling more bytes of the same frame does not buy it more time (SPEC §2).
    @Test func aFrameThatStallsPastTheReadTimeoutIsReported() throws {
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(RPCFrameDecoder(maximumFrameLength: 1024, frameReadTimeout: .seconds(10))))
        try channel.connect(to: SocketAddress(unixDomainSocketPath: "/peer")).wait()  // an active connection, as in the server
        var partial = framed("0123456789")
        partial.moveWriterIndex(to: partial.writerIndex - 3)
        try channel.writeInbound(partial)
        channel.embeddedEventLoop.advanceTime(by: .seconds(9))
        try channel.throwIfErrorCaught()
        try channel.writeInbound(ByteBuffer(string: "7"))
        channel.embeddedEventLoop.advanceTime(by: .seconds(1))
        #expect(throws: RPCFrameError.stalledFrame) { try channel.throwIfErrorCaught() }
    }

    /// Each frame gets the whole timeout from its first byte, and a connection between frames
    /// (nothing buffered) is not timed by the decoder at all.
    @Test func eachFrameGetsTheWholeReadTimeout() throws {
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(RPCFrameDecoder(maximumFrameLength: 1024, frameReadTimeout: .seconds(10))))
        try channel.connect(to: SocketAddress(unixDomainSocketPath: "/peer")).wait()  // an active connection, as in the server
        for round in 0..<3 {
            var partial = framed("frame \(round)")
            let tail = partial.readSlice(length: partial.readableBytes - 2)!
            try channel.writeInbound(tail)
            channel.embeddedEventLoop.advanceTime(by: .seconds(9))
            try channel.writeInbound(partial)
            #expect(try channel.readInbound(as: ByteBuffer.self).map { String(buffer: $0) } == "frame \(round)")
            channel.embeddedEventLoop.advanceTime(by: .seconds(60))
            try channel.throwIfErrorCaught()
        }
        #expect(try channel.finish().isClean)
    }

    /// Property test: any byte sequence either decodes into frames or fails with a typed error,
    /// and never makes the decoder hold more than the limit.
    @Test func randomInputNeverCrashesTheDecoder() throws {
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<2000 {
            let channel = EmbeddedChannel(handler: ByteToMessageHandler(RPCFrameDecoder(maximumFrameLength: 256), maximumBufferSize: 260))
            let count = Int.random(in: 0...600, using: &generator)
            let bytes = (0..<count).map { _ in UInt8.random(in: 0...255, using: &generator) }
            do {
                try channel.writeInbound(ByteBuffer(bytes: bytes))
                while let frame = try channel.readInbound(as: ByteBuffer.self) {
                    #expect(frame.readableBytes <= 256)
                    _ = try? RPCWireFrame(serializedBytes: Array(frame.readableBytesView))
                }
            } catch is RPCFrameError {
            } catch is ByteToMessageDecoderError {
            }
            _ = try? channel.finish()
        }
    }

    @Test func requestIDsAreSanitizedBeforeReachingLogs() {
        #expect(RPCServerCore.sanitizedRequestID("abc-123") == "abc-123")
        #expect(RPCServerCore.sanitizedRequestID("evil\n{\"level\":\"critical\"}") == "evillevel:critical")
        #expect(RPCServerCore.sanitizedRequestID(nil) == "-")
        #expect(RPCServerCore.sanitizedRequestID(String(repeating: "a", count: 500)).count == 128)
    }
}

/// Counts flushes that reach the head of the pipeline.
private final class FlushCounter: ChannelOutboundHandler, @unchecked Sendable {
    typealias OutboundIn = ByteBuffer
    var flushes = 0
    func flush(context: ChannelHandlerContext) {
        flushes += 1
        context.flush()
    }
}

@Suite("Outbound frames", .timeLimit(.minutes(5)))
struct OutboundFrameTests {
    @Test func outboundFramesCarryTheirLengthHeaderAndDecodeBackUnchanged() throws {
        let decoder = EmbeddedChannel(handler: ByteToMessageHandler(RPCFrameDecoder(maximumFrameLength: 1 << 16)))
        for size in [0, 1, 200, 65_536] {
            let body = (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 31) }
            let frame = ByteBuffer(rpcFrame: body)
            #expect(frame.getInteger(at: frame.readerIndex, as: UInt32.self) == UInt32(size), "big-endian length first")
            #expect(frame.readableBytes == 4 + size)
            try decoder.writeInbound(frame)
            let decoded = try #require(try decoder.readInbound(as: ByteBuffer.self))
            #expect(Array(decoded.readableBytesView) == body)
        }
    }
}

@Suite("CoalescingFrameWriter", .timeLimit(.minutes(5)))
struct CoalescingFrameWriterTests {
    @Test func framesOfOneTickShareOneFlushAndKeepTheirOrder() throws {
        let counter = FlushCounter()
        let channel = EmbeddedChannel(handler: counter)
        let writer = CoalescingFrameWriter(channel: channel)
        for index in 0..<5 { writer.write(ByteBuffer(string: "frame \(index)")) }
        #expect(try channel.readOutbound(as: ByteBuffer.self) == nil, "nothing is written before the loop runs its tasks")
        channel.embeddedEventLoop.run()
        var written: [String] = []
        while let frame = try channel.readOutbound(as: ByteBuffer.self) { written.append(String(buffer: frame)) }
        #expect(written == (0..<5).map { "frame \($0)" })
        #expect(counter.flushes == 1)

        // The next tick's frames get their own flush.
        writer.write(ByteBuffer(string: "later"))
        channel.embeddedEventLoop.run()
        #expect(try channel.readOutbound(as: ByteBuffer.self).map { String(buffer: $0) } == "later")
        #expect(counter.flushes == 2)
    }
}
