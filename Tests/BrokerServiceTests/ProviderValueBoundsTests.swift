import Foundation
import Logging
import RPC
import Testing

@testable import BrokerService

/// Whatever Stripe returns, a linked account is stored without breaking a CHECK of
/// migrations/broker/0001_init.sql: an institution name over 200 characters used to fail the
/// insert, which the edge answered with a 500.
@Suite("Provider values are brought within the broker schema's bounds", .timeLimit(.minutes(3)))
struct ProviderValueBoundsTests {
    /// 10 scalars, a NUL, then 150 characters of two scalars each ("Ä" decomposed): 310 scalars.
    static let longName = "First\\u0000Bank " + String(repeating: "A\u{0308}", count: 150)

    func hostileAccount() throws -> BrokerLinkedBankAccount {
        try StripeClient.account(ProviderJSON.parse(Array(#"""
            {"id":"fca_hostile","institution_name":"\#(Self.longName)","last4":"12345","category":"\#(String(repeating: "c", count: 40))\u001b",
             "balance":{"as_of":9223372036854775807,"type":"cash\u0000","current":{"usd":100,"u\u0000d":5,"EUR":7}},
             "balance_refresh":{"status":"exploded"}}
            """#.utf8)))
    }

    @Test func aStripeAccountIsShortenedAndCleanedNotRefused() throws {
        let record = BankAccountRecord(try hostileAccount())
        #expect(record.institutionName.unicodeScalars.count == 200)
        #expect(record.institutionName.hasPrefix("FirstBank A\u{0308}"))
        #expect(record.institutionName.hasSuffix("A\u{0308}"), "cut between characters, not inside one")
        #expect(!UntrustedText.containsControlCharacter(record.institutionName))
        #expect(record.last4 == "")
        #expect(record.category == String(repeating: "c", count: 32))
        #expect(record.balanceCurrent == ["usd": 100])
        #expect(record.balanceAsOf == nil)
        #expect(record.balanceType == "cash")
        #expect(record.refreshStatus == "")
        // What a well-behaved Stripe sends is kept as it is.
        var plain = BrokerLinkedBankAccount()
        plain.id = "fca_1"
        plain.institutionName = "Crédit Agricole"
        plain.last4 = "0042"
        plain.category = "cash"
        plain.refreshStatus = "succeeded"
        plain.balance.current = ["eur": -300]
        plain.balance.asOf = 1_764_763_200
        let kept = BankAccountRecord(plain)
        #expect(kept.message == plain)
    }

    @Test func theHostileAccountIsStoredAndReadBack() async throws {
        try await withBroker { broker in
            let user = UUID()
            let logger = Logger(label: "test")
            let record = BankAccountRecord(try hostileAccount())
            let saved = try await broker.handlers.store.saveBankAccount(record, userID: user, now: Date(), logger: logger)
            #expect(saved)
            let stored = try await broker.handlers.store.bankAccounts(userID: user, logger: logger)
            #expect(stored == [record])
        }
    }
}
