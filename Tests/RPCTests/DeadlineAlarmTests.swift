import NIOCore
import NIOEmbedded
@testable import RPC
import Synchronization
import Testing

/// The one-timer-per-connection deadline alarm (both RPC ends use it, so a call never outlives its
/// deadline however many other calls share the connection).
@Suite("Deadline alarm", .timeLimit(.minutes(5)))
struct DeadlineAlarmTests {
    private final class Rings: Sendable {
        private let count = Mutex(0)
        func ring() { count.withLock { $0 += 1 } }
        var value: Int { count.withLock { $0 } }
    }

    private func at(_ milliseconds: Int64) -> NIODeadline { .uptimeNanoseconds(UInt64(milliseconds) * 1_000_000) }

    @Test func anEarlierDeadlineReplacesTheArmedOneAndALaterOneDoesNot() {
        let loop = EmbeddedEventLoop()
        let rings = Rings()
        var alarm = DeadlineAlarm(eventLoop: loop)
        alarm.ensureRings(by: at(1000)) { rings.ring() }
        alarm.ensureRings(by: at(100)) { rings.ring() }
        alarm.ensureRings(by: at(500)) { rings.ring() }
        loop.advanceTime(to: at(99))
        #expect(rings.value == 0)
        loop.advanceTime(to: at(100))
        #expect(rings.value == 1, "rings at the earliest deadline")
        loop.advanceTime(to: at(2000))
        #expect(rings.value == 1, "the replaced timer was cancelled, the later deadline armed none")
    }

    @Test func rangReArmsForTheNextDeadlineAndDisarmStopsIt() {
        let loop = EmbeddedEventLoop()
        let rings = Rings()
        var alarm = DeadlineAlarm(eventLoop: loop)
        alarm.ensureRings(by: at(10)) { rings.ring() }
        loop.advanceTime(to: at(10))
        #expect(rings.value == 1)
        alarm.rang(next: at(50)) { rings.ring() }
        loop.advanceTime(to: at(50))
        #expect(rings.value == 2)
        alarm.rang(next: at(80)) { rings.ring() }
        alarm.disarm()
        loop.advanceTime(to: at(200))
        #expect(rings.value == 2)
        alarm.rang(next: nil) { rings.ring() }
        loop.advanceTime(to: at(10_000))
        #expect(rings.value == 2, "nothing pending, nothing armed")
    }

    @Test func sweepReturnsWhatIsDueAndTheEarliestDeadlineLeft() {
        let entries: [(UInt64, NIODeadline?)] = [(1, at(5)), (2, at(30)), (3, nil), (4, at(10)), (5, at(20)), (6, at(10))]
        let (due, next) = DeadlineAlarm.sweep(entries, now: at(10))
        #expect(due.sorted() == [1, 4, 6], "a deadline equal to now is due")
        #expect(next == at(20))
        let (none, nothing) = DeadlineAlarm.sweep([(UInt64, NIODeadline?)](), now: at(10))
        #expect(none.isEmpty && nothing == nil)
    }
}
