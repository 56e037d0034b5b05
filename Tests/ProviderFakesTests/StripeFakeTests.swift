import Foundation
import ProviderFakes
import Testing

@Suite("Stripe fake", .timeLimit(.minutes(5)))
struct StripeFakeTests {
    @Test("no key or a wrong key is 401 in Stripe's error shape; Basic auth with the key as user works")
    func authentication() async throws {
        try await withFakes { fakes in
            let missing = try await fakes.send(.post, "/v1/customers", body: "email=a%40b.c")
            #expect(missing.status == 401)
            #expect(missing.json?["error"]?["type"] == "invalid_request_error")
            let wrong = try await fakes.send(.get, "/v1/customers/cus_x", headers: ["Authorization": "Bearer sk_test_other"])
            #expect(wrong.status == 401)
            let basic = Data((FakesClient.stripeKey + ":").utf8).base64EncodedString()
            let created = try await fakes.send(.post, "/v1/customers", headers: ["Authorization": "Basic \(basic)"], body: "email=a%40b.c")
            #expect(created.status == 200)
        }
    }

    @Test("customers: form-encoded create with metadata, retrieve, 404 in Stripe's shape, unknown parameters refused")
    func customers() async throws {
        try await withFakes { fakes in
            let created = try await fakes.stripe(.post, "/v1/customers", form: "email=ann%40example.com&name=Ann+Lee&metadata[user_id]=42")
            #expect(created.status == 200)
            let id = try #require(created.json?["id"]?.stringValue)
            #expect(id.hasPrefix("cus_"))
            #expect(created.json?["object"] == "customer")
            #expect(created.json?["name"] == "Ann Lee")
            #expect(created.json?["email"] == "ann@example.com")
            #expect(created.json?["metadata"]?["user_id"] == "42")
            #expect(created.header("Request-Id")?.hasPrefix("req_") == true)

            let fetched = try await fakes.stripe(.get, "/v1/customers/\(id)")
            #expect(fetched.json == created.json)

            let missing = try await fakes.stripe(.get, "/v1/customers/cus_nope")
            #expect(missing.status == 404)
            #expect(missing.json?["error"]?["code"] == "resource_missing")
            #expect(missing.json?["error"]?["param"] == "id")

            let unknown = try await fakes.stripe(.post, "/v1/customers", form: "emial=x")
            #expect(unknown.status == 400)
            #expect(unknown.json?["error"]?["param"] == "emial")
        }
    }

    @Test("Idempotency-Key: the same body replays the same response; another body is 400 idempotency_error")
    func idempotency() async throws {
        try await withFakes { fakes in
            let first = try await fakes.stripe(.post, "/v1/customers", form: "email=x%40y.z", idempotencyKey: "key-1")
            let replay = try await fakes.stripe(.post, "/v1/customers", form: "email=x%40y.z", idempotencyKey: "key-1")
            #expect(first.status == 200)
            #expect(replay.status == 200)
            #expect(replay.body == first.body)
            #expect(replay.header("Idempotent-Replayed") == "true")
            #expect(replay.header("Request-Id") == first.header("Request-Id"))

            let conflict = try await fakes.stripe(.post, "/v1/customers", form: "email=other%40y.z", idempotencyKey: "key-1")
            #expect(conflict.status == 400)
            #expect(conflict.json?["error"]?["type"] == "idempotency_error")

            let fresh = try await fakes.stripe(.post, "/v1/customers", form: "email=x%40y.z", idempotencyKey: "key-2")
            #expect(fresh.json?["id"] != first.json?["id"])

            // A request refused by validation saves nothing: the corrected retry runs.
            let refused = try await fakes.stripe(.post, "/v1/customers", form: "bogus=1", idempotencyKey: "key-3")
            #expect(refused.status == 400)
            let corrected = try await fakes.stripe(.post, "/v1/customers", form: "email=x%40y.z", idempotencyKey: "key-3")
            #expect(corrected.status == 200)
        }
    }

    @Test("twenty concurrent requests with one Idempotency-Key create one customer and all get its response")
    func concurrentIdempotency() async throws {
        try await withFakes { fakes in
            let bodies = try await withThrowingTaskGroup(of: [UInt8].self) { group in
                for _ in 0..<20 {
                    group.addTask { try await fakes.stripe(.post, "/v1/customers", form: "email=same%40y.z", idempotencyKey: "race").body }
                }
                return try await group.reduce(into: [[UInt8]]()) { $0.append($1) }
            }
            #expect(bodies.count == 20)
            #expect(Set(bodies).count == 1)
            let id = try #require(try JSONValue.decode(bodies[0])["id"]?.stringValue)
            #expect(try await fakes.stripe(.get, "/v1/customers/\(id)").status == 200)
        }
    }

    @Test("Financial Connections: permissions[]=balances session, linked accounts, balance refresh")
    func financialConnections() async throws {
        try await withFakes { fakes in
            let customer = try await fakes.createCustomer()
            let noPermissions = try await fakes.stripe(.post, "/v1/financial_connections/sessions",
                                                       form: "account_holder[type]=customer&account_holder[customer]=\(customer)")
            #expect(noPermissions.status == 400)
            #expect(noPermissions.json?["error"]?["param"] == "permissions")
            #expect(noPermissions.json?["error"]?["code"] == "parameter_missing")

            let created = try await fakes.stripe(.post, "/v1/financial_connections/sessions",
                                                 form: "account_holder[type]=customer&account_holder[customer]=\(customer)&permissions[]=balances")
            let sessionID = try #require(created.json?["id"]?.stringValue)
            #expect(sessionID.hasPrefix("fcsess_"))
            #expect(created.json?["client_secret"]?.stringValue?.hasPrefix(sessionID + "_secret_") == true)
            #expect(created.json?["permissions"] == ["balances"])
            #expect(created.json?["accounts"]?["data"] == [])

            let completed = try await fakes.send(.post, "/_fake/stripe/financial_connections/sessions/\(sessionID)/complete?accounts=2")
            #expect(completed.status == 200)
            let fetched = try await fakes.stripe(.get, "/v1/financial_connections/sessions/\(sessionID)")
            let accounts = try #require(fetched.json?["accounts"]?["data"]?.arrayValue)
            #expect(accounts.count == 2)
            let accountID = try #require(accounts.first?["id"]?.stringValue)
            #expect(accountID.hasPrefix("fca_"))
            #expect(accounts.first?["balance"] == .null)

            let noFeatures = try await fakes.stripe(.post, "/v1/financial_connections/accounts/\(accountID)/refresh", form: "")
            #expect(noFeatures.status == 400)
            let refreshed = try await fakes.stripe(.post, "/v1/financial_connections/accounts/\(accountID)/refresh", form: "features[]=balance")
            #expect(refreshed.status == 200)
            #expect(refreshed.json?["balance_refresh"]?["status"] == "succeeded")
            let cents = try #require(refreshed.json?["balance"]?["current"]?["usd"]?.integerValue)
            #expect(cents > 0)
            #expect(refreshed.json?["balance"]?["type"] == "cash")

            let disconnected = try await fakes.stripe(.post, "/v1/financial_connections/accounts/\(accountID)/disconnect", form: "")
            #expect(disconnected.json?["status"] == "disconnected")
            #expect(try await fakes.stripe(.post, "/v1/financial_connections/accounts/\(accountID)/refresh", form: "features[]=balance").status == 400)
        }
    }

    @Test("list pagination: limit, has_more, starting_after, ending_before, newest first")
    func listPagination() async throws {
        try await withFakes { fakes in
            let customer = try await fakes.createCustomer()
            _ = try await fakes.linkedSession(customer: customer, accounts: 5)
            let all = try await fakes.stripe(.get, "/v1/financial_connections/accounts?account_holder[customer]=\(customer)")
            #expect(all.json?["object"] == "list")
            #expect(all.json?["url"] == "/v1/financial_connections/accounts")
            #expect(all.json?["has_more"] == false)
            let ids = try #require(all.json?["data"]?.arrayValue?.compactMap { $0["id"]?.stringValue })
            #expect(ids.count == 5)

            var collected: [String] = []
            var cursor: String?
            var pages = 0
            repeat {
                let after = cursor.map { "&starting_after=\($0)" } ?? ""
                let page = try await fakes.stripe(.get, "/v1/financial_connections/accounts?account_holder[customer]=\(customer)&limit=2\(after)")
                let pageIDs = try #require(page.json?["data"]?.arrayValue?.compactMap { $0["id"]?.stringValue })
                collected += pageIDs
                cursor = pageIDs.last
                pages += 1
                if page.json?["has_more"] != true { break }
            } while pages < 10
            #expect(collected == ids)
            #expect(pages == 3)

            let before = try await fakes.stripe(.get, "/v1/financial_connections/accounts?limit=2&ending_before=\(ids[4])")
            #expect(before.json?["data"]?.arrayValue?.compactMap { $0["id"]?.stringValue } == [ids[2], ids[3]])
            #expect(before.json?["has_more"] == true)

            #expect(try await fakes.stripe(.get, "/v1/financial_connections/accounts?limit=101").status == 400)
            let malformed = try await fakes.stripe(.get, "/v1/financial_connections/accounts?limit=%G1")
            #expect(malformed.status == 400)
            #expect(malformed.json?["error"]?["type"] == "invalid_request_error")
            let badCursor = try await fakes.stripe(.get, "/v1/financial_connections/accounts?starting_after=fca_nope")
            #expect(badCursor.status == 404)
            #expect(badCursor.json?["error"]?["param"] == "starting_after")
        }
    }

    @Test("checkout (mode subscription) completes into an active subscription and a correctly signed event")
    func checkoutAndSubscription() async throws {
        try await withFakes { fakes in
            let customer = try await fakes.createCustomer()
            let notSubscription = try await fakes.stripe(.post, "/v1/checkout/sessions",
                                                         form: "mode=payment&customer=\(customer)&success_url=https%3A%2F%2Fx.test%2Fok&line_items[0][price]=price_1")
            #expect(notSubscription.status == 400)
            #expect(notSubscription.json?["error"]?["param"] == "mode")

            let created = try await fakes.stripe(.post, "/v1/checkout/sessions",
                                                 form: "mode=subscription&customer=\(customer)&success_url=https%3A%2F%2Fx.test%2Fok&line_items[0][price]=price_pro&line_items[0][quantity]=1",
                                                 idempotencyKey: "checkout-1")
            #expect(created.status == 200)
            let sessionID = try #require(created.json?["id"]?.stringValue)
            #expect(sessionID.hasPrefix("cs_"))
            #expect(created.json?["mode"] == "subscription")
            #expect(created.json?["status"] == "open")
            #expect(created.json?["url"]?.stringValue?.hasPrefix("https://checkout.stripe.com/") == true)

            let delivery = try await fakes.send(.post, "/_fake/stripe/checkout/sessions/\(sessionID)/complete")
            #expect(delivery.status == 200)
            let payload = try #require(delivery.json?["payload"]?.stringValue)
            let header = try #require(delivery.json?["stripe_signature"]?.stringValue)
            let timestamp = try #require(header.split(separator: ",").first.flatMap { Int64($0.dropFirst(2)) })
            #expect(header == StripeWebhookSigner.signatureHeader(payload: Array(payload.utf8), secret: "whsec_unit", timestamp: timestamp))
            let event = try JSONValue.decode(Array(payload.utf8))
            #expect(event["type"] == "checkout.session.completed")
            #expect(event["data"]?["object"]?["id"]?.stringValue == sessionID)
            let subscriptionID = try #require(event["data"]?["object"]?["subscription"]?.stringValue)
            #expect(subscriptionID.hasPrefix("sub_"))

            let eventID = try #require(event["id"]?.stringValue)
            #expect(try await fakes.stripe(.get, "/v1/events/\(eventID)").json == event)

            let subscription = try await fakes.stripe(.get, "/v1/subscriptions/\(subscriptionID)")
            #expect(subscription.json?["status"] == "active")
            #expect(subscription.json?["customer"]?.stringValue == customer)
            #expect(subscription.json?["items"]?["data"]?.arrayValue?.first?["price"]?["id"] == "price_pro")

            let session = try await fakes.stripe(.get, "/v1/checkout/sessions/\(sessionID)")
            #expect(session.json?["status"] == "complete")
            #expect(session.json?["payment_status"] == "paid")

            let canceled = try await fakes.stripe(.delete, "/v1/subscriptions/\(subscriptionID)")
            #expect(canceled.json?["status"] == "canceled")
            #expect(try await fakes.stripe(.get, "/v1/subscriptions/sub_nope").status == 404)
        }
    }

    @Test("a body over the limit is refused with 413 in Stripe's shape, not parsed")
    func bodyLimit() async throws {
        try await withFakes { fakes in
            let huge = "email=" + String(repeating: "a", count: 70 * 1024)
            let response = try await fakes.stripe(.post, "/v1/customers", form: huge)
            #expect(response.status == 413)
            #expect(response.json?["error"]?["type"] == "invalid_request_error")
        }
    }
}
