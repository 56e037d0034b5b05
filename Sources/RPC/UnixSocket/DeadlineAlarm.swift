import NIOCore

/// One NIO timer standing in for the deadlines of many calls: it rings at the earliest of them.
///
/// Calls mostly share one timeout, so their deadlines come in increasing order: a new call rarely
/// moves the earliest one, and the timer is re-armed about once per timeout instead of armed and
/// cancelled once per call (each of those takes the event loop's lock and updates its timer heap,
/// a measurable part of a short call). A call that ends early is just dropped from its owner's
/// table. When the alarm rings, the owner sweeps its table (``sweep(_:now:)``), expires what is due
/// and calls ``rang(next:fire:)`` to re-arm for the earliest deadline left.
///
/// A value kept inside its owner's locked state: every method runs under that lock. `fire` runs
/// on `eventLoop`, outside that lock.
struct DeadlineAlarm {
    private let eventLoop: any EventLoop
    private var armedAt: NIODeadline?
    private var timer: Scheduled<Void>?

    init(eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
    }

    /// Makes sure the alarm rings no later than `deadline`.
    mutating func ensureRings(by deadline: NIODeadline, fire: @escaping @Sendable () -> Void) {
        if let armedAt, armedAt <= deadline { return }
        timer?.cancel()
        armedAt = deadline
        timer = eventLoop.scheduleTask(deadline: deadline, fire)
    }

    /// The alarm has rung: it is re-armed for `next`, the earliest deadline still pending, if any.
    /// (A timer armed meanwhile for an earlier deadline is replaced: the sweep that called this
    /// already saw every deadline registered before it.)
    mutating func rang(next: NIODeadline?, fire: @escaping @Sendable () -> Void) {
        disarm()
        if let next { ensureRings(by: next, fire: fire) }
    }

    /// Stops the alarm (the owner is closing).
    mutating func disarm() {
        timer?.cancel()
        timer = nil
        armedAt = nil
    }

    /// The ids whose deadline is at or before `now`, and the earliest deadline after it.
    static func sweep<ID>(_ deadlines: some Sequence<(ID, NIODeadline?)>, now: NIODeadline) -> (due: [ID], next: NIODeadline?) {
        var due: [ID] = []
        var next: NIODeadline?
        for (id, deadline) in deadlines {
            guard let deadline else { continue }
            if deadline <= now {
                due.append(id)
            } else if next.map({ deadline < $0 }) ?? true {
                next = deadline
            }
        }
        return (due, next)
    }
}

extension NIODeadline {
    /// The NIO deadline of a `ContinuousClock` deadline (NIO timers run on their own clock).
    init(_ deadline: ContinuousClock.Instant) {
        self = .now() + .nanoseconds(max(0, deadline.remainingNanoseconds))
    }
}
