import Foundation
import HTTPTypes
import TestSupport
import Testing
@testable import EdgeProxy

/// C-7 through the edge and a real broker: a user who presents another user's ids gets the 404
/// an unknown id gets, never the data and never a change to it.
@Suite("Broker routes: another user's ids", .timeLimit(.minutes(5)))
struct BrokerOwnershipTests {
    /// Every broker route that takes an id (Routes.swift, BrokerRoutes.swift):
    /// `DELETE /v1/alpaca/orders/{orderId}`, `POST /v1/stripe/financial-connections/accounts`
    /// (`session_id`) and `GET /v1/users/{userId}/subscription`. The OAuth `state` of the callback
    /// is one too, but SPEC §3 gives a foreign state 400 `invalid_state`, checked here as well.
    /// Bank account and Checkout session ids go into no route: balances are listed per user.
    @Test func anotherUsersBrokerIdsAnswer404_C7() async throws {
        try await withBrokerStack { stack in
            let edge = stack.edge
            let alice = try await stack.session("alice-c7@example.com")
            let bob = try await stack.session("bob-c7@example.com")
            let aliceID = try #require(try await edge.send(.get, "/v1/me", headers: bearer(alice)).jsonObject()["id"] as? String)
            // Bob is connected too, so his refusals come from the ownership checks, not from
            // "not connected".
            try await stack.linkAlpaca(alice)
            try await stack.linkAlpaca(bob)

            // Alice's resources: an open (limit) order, linked bank accounts, a paid subscription.
            let placed = try await edge.send(.post, "/v1/alpaca/orders", headers: bearer(alice),
                                             body: #"{"symbol":"AAPL","side":"buy","type":"limit","time_in_force":"gtc","qty":"2","limit_price":"1.50"}"#)
            try #require(placed.status == .created, "\(placed.text.prefix(300))")
            let orderID = try #require(try placed.jsonObject()["id"] as? String)
            let bankSession = try await stack.completedBankSession(alice)
            let linked = try await edge.send(.post, "/v1/stripe/financial-connections/accounts", headers: bearer(alice), body: #"{"session_id":"\#(bankSession)"}"#)
            try #require(linked.status == .ok, "\(linked.text.prefix(300))")
            let checkout = try await edge.send(.post, "/v1/stripe/subscription/checkout", headers: bearer(alice))
            try #require(checkout.status == .created, "\(checkout.text.prefix(300))")
            let checkoutID = try #require(try checkout.jsonObject()["session_id"] as? String)
            let delivery = try await stack.fakes(.post, "/_fake/stripe/checkout/sessions/\(checkoutID)/complete").jsonObject()
            let payload = try #require(delivery["payload"] as? String)
            let signature = try #require(delivery["stripe_signature"] as? String)
            let webhook = try await edge.send(.post, "/v1/stripe/webhook", headers: [WebhookRoutes.signatureHeader: signature], body: payload)
            try #require(webhook.status == .ok, "\(webhook.text.prefix(300))")

            // What Alice sees, before and after Bob's attempts.
            func aliceView() async throws -> [NSDictionary] {
                var view: [NSDictionary] = []
                for path in ["/v1/alpaca/orders?status=all", "/v1/stripe/balances", "/v1/users/\(aliceID)/subscription"] {
                    let response = try await edge.send(.get, path, headers: bearer(alice))
                    #expect(response.status == .ok, "\(path): \(response.text.prefix(300))")
                    view.append(NSDictionary(dictionary: try response.jsonObject()))
                }
                return view
            }
            let before = try await aliceView()
            let orders = try #require(before[0]["orders"] as? [[String: Any]])
            #expect(orders.map { $0["id"] as? String } == [orderID])
            #expect((before[1]["accounts"] as? [Any])?.count == 2)
            #expect(before[2]["status"] as? String == "active")

            // Bob with Alice's ids, in the spelling she got them and upper-cased: 404, the same
            // JSON error shape as any unknown id.
            let attempts: [(HTTPRequest.Method, String, String?)] = [
                (.delete, "/v1/alpaca/orders/\(orderID)", nil),
                (.delete, "/v1/alpaca/orders/\(orderID.uppercased())", nil),
                (.post, "/v1/stripe/financial-connections/accounts", #"{"session_id":"\#(bankSession)"}"#),
                (.get, "/v1/users/\(aliceID)/subscription", nil),
                (.get, "/v1/users/\(aliceID.uppercased())/subscription", nil),
            ]
            for (method, path, body) in attempts {
                let response = try await edge.send(method, path, headers: bearer(bob), body: body)
                #expect(response.status == .notFound, "\(method) \(path): \(response.text.prefix(300))")
                #expect(try response.errorCode() == "not_found", "\(method) \(path)")
            }
            // An id nobody has answers the same.
            let unknown = try await edge.send(.delete, "/v1/alpaca/orders/\(UUID().uuidString.lowercased())", headers: bearer(bob))
            let unknownCode = try unknown.errorCode()
            #expect(unknown.status == .notFound && unknownCode == "not_found")

            // Alice's unused OAuth state presented by Bob: 400 invalid_state (SPEC §3), and it
            // stays usable by Alice.
            let aliceGrant = try await stack.authorizationGrant(alice)
            let foreign = try await edge.send(.post, "/v1/alpaca/oauth/callback", headers: bearer(bob), body: aliceGrant.body)
            let foreignCode = try foreign.errorCode()
            #expect(foreign.status == .badRequest && foreignCode == "invalid_state")

            // Nothing of Alice's changed, and nothing of hers became Bob's.
            #expect(try await aliceView() == before)
            let bobBalances = try await edge.send(.get, "/v1/stripe/balances", headers: bearer(bob))
            #expect(bobBalances.status == .ok && bobBalances.text == #"{"accounts":[]}"#, "\(bobBalances.text.prefix(300))")
            let bobOrders = try await edge.send(.get, "/v1/alpaca/orders?status=all", headers: bearer(bob))
            #expect(bobOrders.status == .ok && !bobOrders.text.contains(orderID))
            // Alice's own ids still work for her (a new connection is a new fake account, so the
            // order is cancelled first).
            #expect(try await edge.send(.delete, "/v1/alpaca/orders/\(orderID)", headers: bearer(alice)).status == .noContent)
            let reconnect = try await edge.send(.post, "/v1/alpaca/oauth/callback", headers: bearer(alice), body: aliceGrant.body)
            #expect(reconnect.status == .ok, "\(reconnect.text.prefix(300))")
        }
    }
}
