import Foundation
import HummingbirdTesting
import ProviderFakes
import Testing

@Suite("clau-fakes over a real socket", .timeLimit(.minutes(5)))
struct LiveServerTests {
    @Test("the application the executable runs serves both providers on 127.0.0.1")
    func live() async throws {
        let application = buildProviderFakesApplication(configuration: testConfiguration())
        try await application.test(.live) { client in
            let fakes = FakesClient(client: client)
            let token = try await fakes.alpacaToken()
            #expect(try await fakes.alpaca(.get, "/v2/account", token: token).status == 200)
            #expect(try await fakes.createCustomer().hasPrefix("cus_"))
        }
    }
}
