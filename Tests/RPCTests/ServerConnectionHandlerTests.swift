import Foundation
import NIOCore
import NIOEmbedded
@testable import RPC
import Synchronization
import Testing

/// The server's per-connection handler on an `EmbeddedChannel`: frames are decoded, dispatched and
/// answered on the channel's loop, and a handler that does not suspend is answered within the read
/// that brought its request (no task hop, no later tick).
@Suite("Server connection handler", .timeLimit(.minutes(5)))
struct ServerConnectionHandlerTests {
    static let peer = PeerCredentials(pid: 4242, uid: getuid(), gid: getgid())

    func makeChannel(policy: RPCAccessPolicy = Echo.openPolicy(), router: RPCRouter = Echo.router(), flushes: ServerFlushCounter? = nil) throws -> EmbeddedChannel {
        let channel = EmbeddedChannel()
        if let flushes { try channel.pipeline.syncOperations.addHandler(flushes) }
        let core = RPCServerCore(router: router, accessPolicy: policy, logger: testLogger)
        let connection = RPCServerConnection(channel: channel, peer: Self.peer, core: core, maximumConcurrentCalls: 64, maximumFrameLength: 1 << 20)
        try channel.pipeline.syncOperations.addRPCFraming(maximumFrameLength: 1 << 20)
        try channel.pipeline.syncOperations.addHandler(CallReader(connection: connection))
        try channel.connect(to: SocketAddress(unixDomainSocketPath: "/peer")).wait()
        return channel
    }

    func request(_ callID: UInt64, _ text: String, method: String = Echo.echo.fullName, delayMillis: UInt64 = 0) throws -> ByteBuffer {
        var frame = RPCWireFrame()
        frame.callID = callID
        frame.request.method = method
        frame.request.requestID = "req-\(callID)"
        frame.request.payload = try Echo.request(text, delayMillis: delayMillis).serializedData()
        return ByteBuffer(bytes: frameBytes(try frame.serializedBytes()))
    }

    func replies(_ channel: EmbeddedChannel) throws -> [RPCWireFrame] {
        let decoder = EmbeddedChannel(handler: ByteToMessageHandler(RPCFrameDecoder(maximumFrameLength: 1 << 20)))
        while let bytes = try channel.readOutbound(as: ByteBuffer.self) { try decoder.writeInbound(bytes) }
        var frames: [RPCWireFrame] = []
        while let body = try decoder.readInbound(as: ByteBuffer.self) { frames.append(try RPCWireFrame(frameBody: body)) }
        return frames
    }

    /// Synchronous on purpose: nothing here lets another task run, so the reply can only have been
    /// produced by the read itself; running the loop's queued work only flushes it.
    @Test func aHandlerThatDoesNotSuspendIsAnsweredWithinTheRead() throws {
        let flushes = ServerFlushCounter()
        let channel = try makeChannel(flushes: flushes)
        try channel.writeInbound(try request(7, "hello"))
        #expect(try channel.readOutbound(as: ByteBuffer.self) == nil, "written, not yet flushed")
        channel.embeddedEventLoop.run()
        let frames = try replies(channel)
        #expect(frames.count == 1)
        let reply = try #require(frames.first)
        #expect(reply.callID == 7)
        #expect(reply.response.status.code == 0)
        let echoed = try RPCWireEchoResponse(serializedBytes: reply.response.payload)
        #expect(echoed.text == "hello")
        #expect(echoed.requestID == "req-7")
        #expect(echoed.peerUid == getuid())
        #expect(flushes.count == 1)
        _ = try channel.finish()
    }

    /// Many requests in one read: each answered, all with one flush.
    @Test func requestsOfOneReadShareOneFlush() throws {
        let flushes = ServerFlushCounter()
        let channel = try makeChannel(flushes: flushes)
        var batch = ByteBuffer()
        for id in 1...20 { var one = try request(UInt64(id), "call \(id)"); batch.writeBuffer(&one) }
        try channel.writeInbound(batch)
        channel.embeddedEventLoop.run()
        let frames = try replies(channel)
        #expect(frames.map(\.callID).sorted() == Array(1...20))
        for frame in frames {
            #expect(try RPCWireEchoResponse(serializedBytes: frame.response.payload).text == "call \(frame.callID)")
        }
        #expect(flushes.count == 1)
        _ = try channel.finish()
    }

    /// A peer no rule admits is refused on the loop whatever the method, with no handler run.
    @Test func aRefusedPeerIsDeniedForEveryMethodName() throws {
        let started = Atomic<Int>(0)
        let channel = try makeChannel(policy: Echo.openPolicy(uids: [getuid() &+ 1]), router: Echo.router(onStart: { started.add(1, ordering: .relaxed) }))
        try channel.writeInbound(try request(1, "x"))
        try channel.writeInbound(try request(2, "x", method: "clau.test.Echo/Nope"))
        channel.embeddedEventLoop.run()
        let frames = try replies(channel)
        #expect(frames.map(\.callID) == [1, 2])
        #expect(frames.allSatisfy { $0.response.status.code == RPCError.Code.permissionDenied.rawValue })
        #expect(started.load(ordering: .relaxed) == 0)
        _ = try channel.finish()
    }

    /// A handler that suspends keeps its call registered: its id cannot be reused meanwhile (the
    /// connection closes), and a Cancel frame reaches it (no reply). On a thread-safe testing
    /// channel: the test awaits, so it may resume on another thread.
    @Test func aSuspendedCallCanBeCancelledAndItsIDIsNotReusable() async throws {
        let cancelled = Atomic<Bool>(false)
        let channel = NIOAsyncTestingChannel()
        let core = RPCServerCore(router: Echo.router(onCancel: { cancelled.store(true, ordering: .relaxed) }), accessPolicy: Echo.openPolicy(), logger: testLogger)
        try await channel.testingEventLoop.executeInContext {
            let connection = RPCServerConnection(channel: channel, peer: Self.peer, core: core, maximumConcurrentCalls: 64, maximumFrameLength: 1 << 20)
            try channel.pipeline.syncOperations.addRPCFraming(maximumFrameLength: 1 << 20)
            try channel.pipeline.syncOperations.addHandler(CallReader(connection: connection))
        }
        try await channel.connect(to: SocketAddress(unixDomainSocketPath: "/peer"))
        try await channel.writeInbound(try request(5, "slow", delayMillis: 60_000))
        var cancel = RPCWireFrame()
        cancel.callID = 5
        cancel.cancel = RPCWireCancel()
        try await channel.writeInbound(ByteBuffer(bytes: frameBytes(try cancel.serializedBytes())))
        try await waitUntil { cancelled.load(ordering: .relaxed) }
        await channel.testingEventLoop.run()
        #expect(try await channel.readOutbound(as: ByteBuffer.self) == nil, "a cancelled call gets no reply")

        try await channel.writeInbound(try request(6, "slow", delayMillis: 60_000))
        try await channel.writeInbound(try request(6, "again"))
        await channel.testingEventLoop.run()
        #expect(try await channel.closeFuture.map { true }.get(), "a call id reused while in flight closes the connection")
    }
}

/// Counts flushes that reach the head of the pipeline.
final class ServerFlushCounter: ChannelOutboundHandler, @unchecked Sendable {  // used on one EmbeddedChannel's thread only
    typealias OutboundIn = ByteBuffer
    var count = 0
    func flush(context: ChannelHandlerContext) {
        count += 1
        context.flush()
    }
}

@Suite("CoalescingFrameWriter across threads", .timeLimit(.minutes(5)))
struct CoalescingFrameWriterOrderTests {
    /// Frames queued from another thread are not overtaken by a frame written later on the loop
    /// (which otherwise goes straight to the channel).
    @Test func aFrameWrittenOnTheLoopNeverOvertakesFramesQueuedFromElsewhere() async throws {
        let channel = NIOAsyncTestingChannel()
        let writer = CoalescingFrameWriter(channel: channel)
        writer.write(ByteBuffer(string: "a"))
        writer.write(ByteBuffer(string: "b"))
        try await channel.testingEventLoop.executeInContext { writer.write(ByteBuffer(string: "c")) }
        await channel.testingEventLoop.run()
        try await channel.testingEventLoop.executeInContext {
            writer.write(ByteBuffer(string: "d"))
            writer.write(ByteBuffer(string: "e"))
        }
        await channel.testingEventLoop.run()
        var written: [String] = []
        while let frame = try await channel.readOutbound(as: ByteBuffer.self) { written.append(String(buffer: frame)) }
        #expect(written == ["a", "b", "c", "d", "e"])
        _ = try await channel.finish()
    }
}

@Suite("In-place frame codec", .timeLimit(.minutes(5)))
struct InPlaceFrameCodecTests {
    /// The wire format is unchanged: a frame serialized into its buffer is the length header
    /// followed by exactly the bytes protobuf's array serialization gives.
    @Test func framesSerializedInPlaceMatchTheArrayEncoding() throws {
        var generator = SystemRandomNumberGenerator()
        for size in [0, 1, 127, 128, 200, 16_383, 16_384, 65_536, 300_000] {
            var frame = RPCWireFrame()
            frame.callID = UInt64.random(in: 0...UInt64.max, using: &generator)
            frame.response.status.code = UInt32.random(in: 0...17, using: &generator)
            frame.response.status.message = "status"
            frame.response.payload = Data((0..<size).map { _ in UInt8.random(in: 0...255, using: &generator) })
            let expected: [UInt8] = try frame.serializedBytes()
            let framed = try ByteBuffer(rpcFrame: frame)
            #expect(framed == ByteBuffer(rpcFrame: expected))
            var body = framed
            body.moveReaderIndex(forwardBy: 4)
            #expect(try RPCWireFrame(frameBody: body) == frame)
        }
    }

    /// Parsing in place accepts and refuses exactly what parsing a copied array does.
    @Test func parsingInPlaceAgreesWithParsingACopy() {
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<3000 {
            let count = Int.random(in: 0...300, using: &generator)
            let bytes = (0..<count).map { _ in UInt8.random(in: 0...255, using: &generator) }
            var buffer = ByteBuffer(repeating: 0xAA, count: 7)  // a slice that does not start at 0
            buffer.writeBytes(bytes)
            buffer.moveReaderIndex(forwardBy: 7)
            let inPlace = try? RPCWireFrame(frameBody: buffer)
            let copied = try? RPCWireFrame(serializedBytes: bytes)
            #expect(inPlace == copied)
        }
    }
}
