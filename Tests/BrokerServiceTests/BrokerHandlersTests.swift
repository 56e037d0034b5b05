import Foundation
import Logging
import PostgresNIO
import RPC
import Synchronization
import TestSupport
import Testing

@testable import BrokerService
@testable import VaultService

/// The broker's handlers end to end: real PostgreSQL, a real vault, the fakes over real HTTP.
@Suite("Broker handlers", .timeLimit(.minutes(6)))
struct BrokerHandlersTests {
    // MARK: Alpaca OAuth

    @Test func oauthFlowStoresOnlyCiphertext_C14_X4() async throws {
        try await withBroker { broker in
            let user = UUID()
            let connected = try await broker.connectAlpaca(user)
            #expect(connected.status == "connected")
            #expect(connected.scope.contains("trading"))

            // The stored ciphertext opens (as the broker's uid) to the token the fake issued, and
            // that token appears nowhere in the schema.
            let rows = try await broker.postgres.query("SELECT token_ciphertext FROM broker.alpaca_connections WHERE user_id = \(user)", logger: Logger(label: "t"))
            var ciphertext = ""
            for try await value in rows.decode(String.self) { ciphertext = value }
            var decrypt = VaultDecryptRequest()
            decrypt.token = ciphertext
            decrypt.context = "alpaca:user:\(user.uuidString.lowercased())"
            let token = String(decoding: try await broker.vaultAsBroker.decrypt(decrypt).plaintext, as: UTF8.self)
            #expect(token.count >= 16)
            let dump = try await broker.dumpBrokerSchema()
            #expect(dump.contains(ciphertext))
            #expect(!dump.contains(token))
            // Nor in any log line (C-11, C-17).
            #expect(!broker.logs.all.contains { $0.contains(token) })

            var status = BrokerGetAlpacaConnectionRequest()
            status.userID = user.uuidString
            #expect(try await broker.broker.getAlpacaConnection(status).status == "connected")
            #expect(try await broker.account(user).status == "ACTIVE")
        }
    }

    @Test func oauthStateReusedExpiredOrForeignIsRefused_C7() async throws {
        try await withBroker { broker in
            let owner = UUID()
            let intruder = UUID()
            func complete(_ user: UUID, _ code: String, _ state: String) async -> RPCError? {
                var request = BrokerCompleteAlpacaOAuthRequest()
                request.userID = user.uuidString
                request.code = code
                request.state = state
                return await rpcError { try await broker.broker.completeAlpacaOAuth(request) }
            }
            // Another user presenting the owner's state is refused and does not consume it.
            let (code, state) = try await broker.authorize(owner)
            let foreign = await complete(intruder, code, state)
            #expect(foreign?.code == .invalidArgument && foreign?.message == "invalid_state")
            #expect(await complete(owner, code, state) == nil)
            // Single use.
            let reused = await complete(owner, code, state)
            #expect(reused?.code == .invalidArgument && reused?.message == "invalid_state")
            // Ten minutes later a state is dead, and the code was never sent anywhere.
            let (laterCode, laterState) = try await broker.authorize(owner)
            broker.clock.advance(by: OAuthState.lifetime + 1)
            let expired = await complete(owner, laterCode, laterState)
            #expect(expired?.message == "invalid_state")
            // Made-up and malformed states: the same answer.
            #expect(await complete(owner, laterCode, String(repeating: "A", count: 43))?.message == "invalid_state")
            #expect(await complete(owner, laterCode, "x\u{0}y")?.message == "invalid_state")
            // The state table holds hashes only.
            #expect(!(try await broker.dumpBrokerSchema()).contains(state))
        }
    }

    @Test func ciphertextCopiedToAnotherUserFailsToDecrypt_X4() async throws {
        try await withBroker { broker in
            let alice = UUID()
            let mallory = UUID()
            try await broker.connectAlpaca(alice)
            try await broker.connectAlpaca(mallory)
            // Mallory's row gets Alice's ciphertext (what an attacker with write access to the
            // table would try): the vault refuses it for Mallory's context.
            try await broker.sql("""
                UPDATE broker.alpaca_connections SET token_ciphertext = (SELECT token_ciphertext FROM broker.alpaca_connections WHERE user_id = \(alice))
                WHERE user_id = \(mallory)
                """)
            let error = await rpcError { try await broker.account(mallory) }
            #expect(error?.code == .conflict && error?.message == "alpaca_connection_lost")
            var status = BrokerGetAlpacaConnectionRequest()
            status.userID = mallory.uuidString
            #expect(try await broker.broker.getAlpacaConnection(status).status == "connection_lost")
            // Alice is unaffected.
            #expect(try await broker.account(alice).status == "ACTIVE")
        }
    }

    @Test func ordersArePlacedListedAndCancelledOnlyInTheOwnersAccount_C7() async throws {
        try await withBroker { broker in
            let alice = UUID()
            let bob = UUID()
            try await broker.connectAlpaca(alice)
            try await broker.connectAlpaca(bob)
            var place = BrokerPlaceAlpacaOrderRequest()
            place.userID = alice.uuidString
            place.symbol = "AAPL"
            place.side = "buy"
            place.type = "limit"
            place.timeInForce = "gtc"
            place.qty = "1"
            place.limitPrice = "1.00"
            let order = try await broker.broker.placeAlpacaOrder(place).order
            #expect(order.status == "new" || order.status == "accepted")
            #expect(order.clientOrderID.hasPrefix("clau-"))

            var list = BrokerListAlpacaOrdersRequest()
            list.userID = alice.uuidString
            list.status = "open"
            #expect(try await broker.broker.listAlpacaOrders(list).orders.map(\.id) == [order.id])
            list.userID = bob.uuidString
            #expect(try await broker.broker.listAlpacaOrders(list).orders.isEmpty)

            // Bob cancelling Alice's order: 404, and the order stays open.
            var cancel = BrokerCancelAlpacaOrderRequest()
            cancel.userID = bob.uuidString
            cancel.orderID = order.id
            #expect(await rpcError { try await broker.broker.cancelAlpacaOrder(cancel) }?.code == .notFound)
            cancel.userID = alice.uuidString
            _ = try await broker.broker.cancelAlpacaOrder(cancel)
            list.userID = alice.uuidString
            #expect(try await broker.broker.listAlpacaOrders(list).orders.isEmpty)
            // Cancelled already: the order's state refuses it (409 at the edge), not the request.
            let again = await rpcError { try await broker.broker.cancelAlpacaOrder(cancel) }
            #expect(again == RPCError(code: .failedPrecondition, message: "order_not_cancelable"))

            // Validation happens before Alpaca is called.
            place.limitPrice = ""
            let invalid = await rpcError { try await broker.broker.placeAlpacaOrder(place) }
            #expect(invalid?.code == .invalidArgument && invalid?.details["field"] == "limit_price")
        }
    }

    @Test func withoutAConnectionTradingIsConflictAndDisconnectDeletesTheCiphertext() async throws {
        try await withBroker { broker in
            let user = UUID()
            let before = await rpcError { try await broker.account(user) }
            #expect(before?.code == .conflict && before?.message == "alpaca_not_connected")
            try await broker.connectAlpaca(user)
            var disconnect = BrokerDisconnectAlpacaRequest()
            disconnect.userID = user.uuidString
            _ = try await broker.broker.disconnectAlpaca(disconnect)
            #expect(!(try await broker.dumpBrokerSchema()).contains(user.uuidString.lowercased() + "\",\"token"))
            let after = await rpcError { try await broker.account(user) }
            #expect(after?.message == "alpaca_not_connected")
        }
    }

    @Test func userIDMustBeAUUIDAndOnlyTheEdgeMayCall_X1() async throws {
        try await withBroker { broker in
            var request = BrokerGetAlpacaAccountRequest()
            request.userID = "../admin"
            let invalid = await rpcError { try await broker.broker.getAlpacaAccount(request) }
            #expect(invalid?.code == .invalidArgument && invalid?.details["field"] == "user_id")
            // The operator's uid may read rotation status but not act for a user; nobody else may call.
            request.userID = UUID().uuidString
            #expect(await rpcError { try await broker.client(as: BrokerHarness.operatorCLI).getAlpacaAccount(request) }?.code == .permissionDenied)
            #expect(await rpcError { try await broker.client(as: BrokerHarness.brokerPeer).rotationStatus(BrokerRotationStatusRequest()) }?.code == .permissionDenied)
            _ = try await broker.client(as: BrokerHarness.operatorCLI).rotationStatus(BrokerRotationStatusRequest())
        }
    }

    // MARK: Stripe

    @Test func bankLinkBalancesAndRefreshAreTheOwnersOnly_C7() async throws {
        try await withBroker { broker in
            let alice = UUID()
            let bob = UUID()
            var create = BrokerCreateFinancialConnectionsSessionRequest()
            create.userID = alice.uuidString
            let session = try await broker.broker.createFinancialConnectionsSession(create)
            #expect(session.sessionID.hasPrefix("fcsess_"))
            #expect(session.clientSecret.contains("_secret_"))
            let completed = try await broker.fakes.raw(.POST, "/_fake/stripe/financial_connections/sessions/\(session.sessionID)/complete?accounts=2")
            try #require(completed.status == 200)

            // Bob cannot link Alice's session.
            var link = BrokerLinkFinancialConnectionsAccountsRequest()
            link.userID = bob.uuidString
            link.sessionID = session.sessionID
            #expect(await rpcError { try await broker.broker.linkFinancialConnectionsAccounts(link) }?.code == .notFound)
            link.userID = alice.uuidString
            let linked = try await broker.broker.linkFinancialConnectionsAccounts(link).accounts
            #expect(linked.count == 2)
            #expect(linked.allSatisfy { $0.id.hasPrefix("fca_") && !$0.institutionName.isEmpty })

            var balances = BrokerListBankBalancesRequest()
            balances.userID = alice.uuidString
            #expect(try await broker.broker.listBankBalances(balances).accounts.count == 2)
            balances.userID = bob.uuidString
            #expect(try await broker.broker.listBankBalances(balances).accounts.isEmpty)

            var refresh = BrokerRefreshBankBalanceRequest()
            refresh.userID = bob.uuidString
            refresh.accountID = linked[0].id
            #expect(await rpcError { try await broker.broker.refreshBankBalance(refresh) }?.code == .notFound)
            refresh.userID = alice.uuidString
            let refreshed = try await broker.broker.refreshBankBalance(refresh).account
            #expect(refreshed.id == linked[0].id)
            #expect(refreshed.hasBalance && !refreshed.balance.current.isEmpty)

            // One customer per user, stored sealed: the cus_ id is not in the schema.
            let dump = try await broker.dumpBrokerSchema()
            let customers = await broker.fakes.fakes.stripe.customerIDs
            #expect(customers.count == 1)
            #expect(customers.allSatisfy { !dump.contains($0) })
        }
    }

    @Test func checkoutWebhookSetsTheSubscriptionAndOnlyItsOwnerReadsIt_C7() async throws {
        try await withBroker { broker in
            let alice = UUID()
            var checkout = BrokerCreateSubscriptionCheckoutRequest()
            checkout.userID = alice.uuidString
            let session = try await broker.broker.createSubscriptionCheckout(checkout)
            #expect(session.sessionID.hasPrefix("cs_"))
            #expect(!session.checkoutURL.isEmpty)
            // A price outside the configured ones is refused.
            checkout.priceID = "price_somethingCheaper"
            #expect(await rpcError { try await broker.broker.createSubscriptionCheckout(checkout) }?.details["field"] == "price_id")

            var read = BrokerGetSubscriptionRequest()
            read.userID = alice.uuidString
            read.subjectUserID = alice.uuidString
            #expect(try await broker.broker.getSubscription(read).status == "none")

            let completed = try await broker.fakes.raw(.POST, "/_fake/stripe/checkout/sessions/\(session.sessionID)/complete")
            try #require(completed.status == 200)
            let delivery = try JSONSerialization.jsonObject(with: Data(completed.body.utf8)) as? [String: Any]
            var webhook = BrokerHandleStripeWebhookRequest()
            webhook.payload = Data(try #require(delivery?["payload"] as? String).utf8)
            webhook.signatureHeader = try #require(delivery?["stripe_signature"] as? String)
            let handled = try await broker.broker.handleStripeWebhook(webhook)
            #expect(handled.received && !handled.duplicate)
            let subscription = try await broker.broker.getSubscription(read)
            #expect(subscription.status == "active")
            #expect(subscription.currentPeriodEnd > Int64(Date().timeIntervalSince1970))

            // Another user asking for Alice's subscription: 404, checked in the broker too.
            read.userID = UUID().uuidString
            #expect(await rpcError { try await broker.broker.getSubscription(read) }?.code == .notFound)
        }
    }

    // MARK: Webhooks

    @Test func webhookWithBadSignatureOrOldTimestampIsRefused() async throws {
        try await withBroker { broker in
            let payload = #"{"id":"evt_test1","object":"event","type":"invoice.paid","created":1700000000,"data":{"object":{}}}"#
            var request = BrokerHandleStripeWebhookRequest()
            request.payload = Data(payload.utf8)
            request.signatureHeader = StripeWebhookSignature(secret: "whsec_someoneElse").header(payload: Data(payload.utf8), timestamp: Int64(Date().timeIntervalSince1970))
            #expect(await rpcError { try await broker.broker.handleStripeWebhook(request) }?.message == "invalid_signature")
            request.signatureHeader = ""
            #expect(await rpcError { try await broker.broker.handleStripeWebhook(request) }?.message == "invalid_signature")
            let old = await rpcError { try await broker.deliver(payload, timestamp: Int64(broker.clock.now.timeIntervalSince1970) - 301) }
            #expect(old?.code == .invalidArgument && old?.message == "invalid_signature")
            // Nothing was recorded by the refused deliveries; the good one is applied, its replay is not.
            let first = try await broker.deliver(payload)
            let replay = try await broker.deliver(payload)
            #expect(!first.duplicate)
            #expect(replay.duplicate)
        }
    }

    @Test func sameEventDeliveredTwentyTimesConcurrentlyIsAppliedOnce() async throws {
        try await withBroker { broker in
            let user = UUID()
            // A customer for the user, so the subscription event maps to them.
            var create = BrokerCreateFinancialConnectionsSessionRequest()
            create.userID = user.uuidString
            _ = try await broker.broker.createFinancialConnectionsSession(create)
            let customer = try #require(await broker.fakes.fakes.stripe.customerIDs.first)
            let now = Int64(broker.clock.now.timeIntervalSince1970)
            let payload = #"{"id":"evt_concurrent1","object":"event","type":"customer.subscription.updated","created":\#(now),"data":{"object":{"id":"sub_concurrent1","object":"subscription","customer":"\#(customer)","status":"past_due","current_period_end":\#(now + 86400)}}}"#
            let applied = try await withThrowingTaskGroup(of: Bool.self) { group in
                for _ in 0..<20 { group.addTask { try await !broker.deliver(payload).duplicate } }
                var count = 0
                for try await wasApplied in group where wasApplied { count += 1 }
                return count
            }
            #expect(applied == 1)
            var read = BrokerGetSubscriptionRequest()
            read.userID = user.uuidString
            read.subjectUserID = user.uuidString
            #expect(try await broker.broker.getSubscription(read).status == "past_due")
            // An older event delivered late does not undo a newer one.
            let stale = #"{"id":"evt_stale1","object":"event","type":"customer.subscription.updated","created":\#(now - 600),"data":{"object":{"id":"sub_concurrent1","object":"subscription","customer":"\#(customer)","status":"active","current_period_end":\#(now)}}}"#
            _ = try await broker.deliver(stale)
            #expect(try await broker.broker.getSubscription(read).status == "past_due")
        }
    }

    // MARK: Key rotation

    /// Five rotations begun at once (an operator's retry racing the admin route) add one key
    /// between them: the others see the re-wrap that key opened and add none (R-11).
    @Test func rotationsBegunAtOnceAddOneKey_R11() async throws {
        try await withBroker { broker in
            let oldKeyID = try await broker.handlers.vault.currentKeyID(options: CallOptions())
            let user = UUID()
            let sealed = try await broker.handlers.vault.seal("alpaca-token-race", for: CredentialContext(provider: .alpaca, userID: user), options: CallOptions())
            try await broker.sql("""
                INSERT INTO broker.alpaca_connections (user_id, token_ciphertext, key_id, scope, status, connected_at, updated_at)
                VALUES (\(user), \(sealed.ciphertext), \(oldKeyID), 'trading', 'connected', now(), now())
                """)
            let operatorClient = broker.client(as: BrokerHarness.operatorCLI)
            let responses = try await withThrowingTaskGroup(of: BrokerBeginKeyRotationResponse.self) { group in
                for _ in 0..<5 { group.addTask { try await operatorClient.beginKeyRotation(BrokerBeginKeyRotationRequest()) } }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            let added = responses.filter(\.keyAdded)
            #expect(added.count == 1, "\(responses.map(\.keyAdded))")
            #expect(Set(responses.map(\.currentKeyID)).count == 1 && responses.allSatisfy { $0.stale == 1 })
            #expect(try FernetKeyFile.load(path: broker.keyFile).map(\.id) == [added.first?.currentKeyID ?? "", oldKeyID])
        }
    }

    /// R-11 end to end through the broker's RPCs, as `clauctl broker rotate` and the admin route
    /// run it: the vault adds and persists a key, 10,000 tokens are re-wrapped in batches, the old
    /// key cannot be retired while a ciphertext needs it and can afterwards, and every token still
    /// opens to the same plaintext.
    @Test func rotationRewrapsTenThousandTokensAndEverythingDecryptsUnderTheNewKey_R11() async throws {
        try await withBroker { broker in
            let count = 10_000
            let oldKeyID = try await broker.handlers.vault.currentKeyID(options: CallOptions())
            // 10,000 sealed tokens, each under its own user's context, inserted in bulk.
            var users: [UUID] = []
            var tokens: [String] = []
            var ciphertexts: [String] = []
            for index in 0..<count {
                let user = UUID()
                let token = "alpaca-token-\(index)-\(UUID().uuidString)"
                let sealed = try await broker.handlers.vault.seal(token, for: CredentialContext(provider: .alpaca, userID: user), options: CallOptions())
                users.append(user)
                tokens.append(token)
                ciphertexts.append(sealed.ciphertext)
            }
            try await broker.sql("""
                INSERT INTO broker.alpaca_connections (user_id, token_ciphertext, key_id, scope, status, connected_at, updated_at)
                SELECT u, c, \(oldKeyID), 'trading', 'connected', now(), now() FROM unnest(\(users)::uuid[], \(ciphertexts)::text[]) AS t(u, c)
                """)

            let operatorClient = broker.client(as: BrokerHarness.operatorCLI)
            let begun = try await operatorClient.beginKeyRotation(BrokerBeginKeyRotationRequest())
            #expect(begun.keyAdded && begun.currentKeyID != oldKeyID && begun.stale == UInt64(count))
            // The new key is in the key file (first), not only in memory: a restart keeps it.
            let fileKeys = try FernetKeyFile.load(path: broker.keyFile).map(\.id)
            #expect(fileKeys == [begun.currentKeyID, oldKeyID])
            // Called again before the re-wrap is done: no second key.
            let again = try await operatorClient.beginKeyRotation(BrokerBeginKeyRotationRequest())
            #expect(!again.keyAdded && again.currentKeyID == begun.currentKeyID)
            await #expect(throws: RPCError(code: .failedPrecondition, message: "key_in_use", details: ["ciphertexts": "\(count)"])) {
                var retire = BrokerRetireKeyRequest()
                retire.keyID = oldKeyID
                _ = try await operatorClient.retireKey(retire)
            }

            var rounds = 0
            var total: UInt64 = 0
            while true {
                var request = BrokerRewrapAllRequest()
                request.batchSize = 2000
                let batch = try await operatorClient.rewrapAll(request)
                total += batch.rewrapped
                #expect(batch.failed == 0)
                rounds += 1
                if batch.done { break }
                try #require(rounds < 20)
            }
            #expect(total == UInt64(count))
            let status = try await operatorClient.rotationStatus(BrokerRotationStatusRequest())
            #expect(status.stale == 0 && status.ciphertextsByKeyID == [begun.currentKeyID: UInt64(count)])

            // The current key never leaves; the old one does, from the file too.
            await #expect(throws: RPCError(code: .failedPrecondition, message: "current_key")) {
                var retire = BrokerRetireKeyRequest()
                retire.keyID = begun.currentKeyID
                _ = try await operatorClient.retireKey(retire)
            }
            var retire = BrokerRetireKeyRequest()
            retire.keyID = oldKeyID
            let retired = try await operatorClient.retireKey(retire)
            #expect(retired.keyIds == [begun.currentKeyID])
            #expect(try FernetKeyFile.load(path: broker.keyFile).map(\.id) == [begun.currentKeyID])
            await #expect(throws: RPCError(code: .notFound, message: "unknown_key")) { _ = try await operatorClient.retireKey(retire) }
            // Only operators retire keys (the edge's admin route cannot).
            await #expect(throws: RPCError.self) { _ = try await broker.broker.retireKey(retire) }

            // Every token still opens under the remaining key, to the same plaintext.
            try broker.vault.reloadKeys()
            let rows = try await broker.postgres.query("SELECT user_id, token_ciphertext FROM broker.alpaca_connections", logger: Logger(label: "t"))
            var stored: [UUID: String] = [:]
            for try await (user, ciphertext) in rows.decode((UUID, String).self) { stored[user] = ciphertext }
            let expected = Dictionary(uniqueKeysWithValues: zip(users, tokens))
            var opened = 0
            for (user, ciphertext) in stored {
                let plaintext = try await broker.handlers.vault.open(SealedCredential(ciphertext: ciphertext, keyID: begun.currentKeyID), for: CredentialContext(provider: .alpaca, userID: user), options: CallOptions())
                if plaintext == expected[user] { opened += 1 }
            }
            #expect(opened == count)
        }
    }
}
