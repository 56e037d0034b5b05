import NIOCore
import Synchronization

/// Writes frames to one connection with one flush (one `writev`) per event-loop tick, however
/// many calls produced a frame in it.
///
/// Under load many calls start or finish in the same tick; flushing each frame on its own costs a
/// system call, and a wake-up of the peer, per frame. Frames written from another thread are
/// handed to the channel's loop in one task per batch, not one per frame. Ordering is kept: frames
/// reach the socket in the order `write` was called.
///
/// There is no back-pressure here: the number of frames in flight is bounded by the calls in
/// flight on the connection, each of which holds its frame anyway.
final class CoalescingFrameWriter: Sendable {
    private struct State {
        /// Frames written off the loop, in order, waiting for the drain.
        var frames: [ByteBuffer] = []
        /// A drain (which flushes) is queued on the loop.
        var drainQueued = false
    }

    private let channel: any Channel
    private let state = Mutex(State())

    init(channel: any Channel) {
        self.channel = channel
    }

    /// Queues a frame; it is written and flushed on the channel's loop before the next I/O wait.
    /// A frame written after the channel closed is dropped (the caller learns of the closed
    /// connection through `channelInactive`).
    func write(_ frame: ByteBuffer) {
        let onLoop = channel.eventLoop.inEventLoop
        let (direct, queueDrain) = state.withLock { state -> (Bool, Bool) in
            // On the loop with nothing queued ahead of it (queued frames are written only by a
            // drain, on this thread), a frame goes straight into the channel's outbound buffer:
            // order is kept, and only the flush waits.
            let direct = onLoop && state.frames.isEmpty
            if !direct { state.frames.append(frame) }
            defer { state.drainQueued = true }
            return (direct, !state.drainQueued)
        }
        if direct { channel.write(frame, promise: nil) }
        // `execute` runs after the tasks already queued for this tick, so the frames of every
        // call that finishes in this tick share the flush.
        if queueDrain { channel.eventLoop.execute { self.drain() } }
    }

    /// Returns once every frame written so far has been handed to the channel and flushed (before
    /// a close, which on the loop's own thread would otherwise overtake a queued drain).
    func flush() async {
        try? await channel.eventLoop.submit { self.drain() }.get()
    }

    /// Hands every queued frame to the channel at once; only on the channel's loop, before this
    /// side closes the connection (a drain queued behind the close would find it closed).
    func drainOnLoop() {
        channel.eventLoop.preconditionInEventLoop()
        drain()
    }

    private func drain() {
        let frames = state.withLock { state in
            var taken: [ByteBuffer] = []
            swap(&taken, &state.frames)
            state.drainQueued = false
            return taken
        }
        for frame in frames { channel.write(frame, promise: nil) }
        channel.flush()
    }
}
