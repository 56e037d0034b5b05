import Foundation
import Logging
import RPC

/// Alpaca OAuth and trading. Alpaca documents no revoke endpoint and no expiry for OAuth tokens:
/// disconnecting deletes the stored ciphertext only, and a 401 from Alpaca marks the connection
/// lost so the user is asked to reconnect.
extension BrokerHandlers {
    /// FAILED_PRECONDITION message of a cancel Alpaca refused for the order's state.
    static let orderNotCancelable = "order_not_cancelable"

    /// Longest authorization code accepted from the redirect (Alpaca's are far shorter).
    static let maximumCodeLength = 512

    public func startAlpacaOAuth(_ request: BrokerStartAlpacaOAuthRequest, _ context: ServerContext) async throws -> BrokerStartAlpacaOAuthResponse {
        let userID = try Self.actingUser(request.userID)
        let issuedAt = now()
        let state = OAuthState.generate()
        let record = OAuthStateRecord(stateHash: state.hash, userID: userID, issuedAt: issuedAt, expiresAt: issuedAt.addingTimeInterval(OAuthState.lifetime))
        try await store.insertOAuthState(record, logger: context.logger)
        var response = BrokerStartAlpacaOAuthResponse()
        response.url = authorizeURL.url(state: state)
        response.expiresAt = Int64(record.expiresAt.timeIntervalSince1970)
        return response
    }

    public func completeAlpacaOAuth(_ request: BrokerCompleteAlpacaOAuthRequest, _ context: ServerContext) async throws -> BrokerCompleteAlpacaOAuthResponse {
        let userID = try Self.actingUser(request.userID)
        let code = try UntrustedText.check(request.code, field: "code", maximumLength: Self.maximumCodeLength)
        // The state is checked (and consumed) before the code is sent anywhere.
        guard let stateHash = OAuthState.hash(of: request.state) else { throw OAuthStateError.malformed }
        do {
            try await store.redeemOAuthState(hash: stateHash, by: userID, now: now(), logger: context.logger)
        } catch let error as OAuthStateError {
            context.logger.notice("alpaca oauth state refused", metadata: ["event": "alpaca_oauth_state_refused", "reason": "\(error)", "user_id": "\(userID)"])
            throw error
        }
        let grant = try await alpaca.exchangeCode(code, logger: context.logger)
        let sealed = try await vault.seal(grant.accessToken, for: CredentialContext(provider: .alpaca, userID: userID), options: context.downstreamOptions())
        let scope = String(grant.scope.unicodeScalars.filter { $0.isASCII && $0.value >= 0x20 && $0.value < 0x7F }.prefix(200).map(Character.init))
        try await store.saveAlpacaConnection(userID: userID, token: sealed, scope: scope, now: now(), logger: context.logger)
        context.logger.info("alpaca connected", metadata: ["event": "alpaca_connected", "user_id": "\(userID)", "key_id": "\(sealed.keyID)"])
        var response = BrokerCompleteAlpacaOAuthResponse()
        response.status = "connected"
        response.scope = scope
        return response
    }

    public func disconnectAlpaca(_ request: BrokerDisconnectAlpacaRequest, _ context: ServerContext) async throws -> BrokerDisconnectAlpacaResponse {
        let userID = try Self.actingUser(request.userID)
        if try await store.deleteAlpacaConnection(userID: userID, logger: context.logger) {
            context.logger.info("alpaca disconnected", metadata: ["event": "alpaca_disconnected", "user_id": "\(userID)"])
        }
        return BrokerDisconnectAlpacaResponse()
    }

    public func getAlpacaConnection(_ request: BrokerGetAlpacaConnectionRequest, _ context: ServerContext) async throws -> BrokerGetAlpacaConnectionResponse {
        let userID = try Self.actingUser(request.userID)
        var response = BrokerGetAlpacaConnectionResponse()
        guard let connection = try await store.alpacaConnection(userID: userID, logger: context.logger) else {
            response.status = "not_connected"
            return response
        }
        response.status = connection.status.rawValue
        response.scope = connection.scope
        response.connectedAt = Int64(connection.connectedAt.timeIntervalSince1970)
        return response
    }

    public func getAlpacaAccount(_ request: BrokerGetAlpacaAccountRequest, _ context: ServerContext) async throws -> BrokerGetAlpacaAccountResponse {
        let account = try await withAlpacaToken(of: request.userID, context) { token in
            try await alpaca.account(token: token, logger: context.logger)
        }
        var response = BrokerGetAlpacaAccountResponse()
        response.account = account
        return response
    }

    public func listAlpacaPositions(_ request: BrokerListAlpacaPositionsRequest, _ context: ServerContext) async throws -> BrokerListAlpacaPositionsResponse {
        let positions = try await withAlpacaToken(of: request.userID, context) { token in
            try await alpaca.positions(token: token, logger: context.logger)
        }
        var response = BrokerListAlpacaPositionsResponse()
        response.positions = positions
        return response
    }

    public func listAlpacaOrders(_ request: BrokerListAlpacaOrdersRequest, _ context: ServerContext) async throws -> BrokerListAlpacaOrdersResponse {
        let query = try AlpacaOrderListQuery(status: request.status, limit: request.limit)
        let orders = try await withAlpacaToken(of: request.userID, context) { token in
            try await alpaca.orders(token: token, query: query, logger: context.logger)
        }
        var response = BrokerListAlpacaOrdersResponse()
        response.orders = orders
        return response
    }

    public func placeAlpacaOrder(_ request: BrokerPlaceAlpacaOrderRequest, _ context: ServerContext) async throws -> BrokerPlaceAlpacaOrderResponse {
        // Validated before the token is even opened: a bad order costs no vault call.
        _ = try Self.actingUser(request.userID)
        let order = try OrderRequestValidation.validate(AlpacaOrderDraft(
            symbol: request.symbol, side: request.side, type: request.type, timeInForce: request.timeInForce,
            qty: request.qty, notional: request.notional, limitPrice: request.limitPrice
        ))
        let placed = try await withAlpacaToken(of: request.userID, context) { token in
            try await alpaca.placeOrder(token: token, order: order, logger: context.logger)
        }
        context.logger.info("alpaca order placed", metadata: ["event": "alpaca_order_placed", "client_order_id": "\(order.clientOrderID)", "status": "\(placed.status)"])
        var response = BrokerPlaceAlpacaOrderResponse()
        response.order = placed
        return response
    }

    public func cancelAlpacaOrder(_ request: BrokerCancelAlpacaOrderRequest, _ context: ServerContext) async throws -> BrokerCancelAlpacaOrderResponse {
        _ = try Self.actingUser(request.userID)
        let orderID = try ProviderIdentifiers.alpacaOrderID(request.orderID)
        // Each token reaches only its own account at Alpaca, so another user's order id is a 404
        // from Alpaca itself (C-7).
        do {
            try await withAlpacaToken(of: request.userID, context) { token in
                try await alpaca.cancelOrder(token: token, orderID: orderID, logger: context.logger)
            }
        } catch let error as RPCError where error.code == .invalidArgument {
            // Alpaca's only 422 on a cancel is "not cancelable" (filled, canceled, expired): the
            // order's state, not the request, so FAILED_PRECONDITION (409 at the edge), which is
            // what an identical retry of a cancel that already succeeded gets too.
            context.logger.info("alpaca order not cancelable", metadata: ["event": "alpaca_order_not_cancelable", "reason": "\(error.message)"])
            throw RPCError(code: .failedPrecondition, message: Self.orderNotCancelable)
        }
        return BrokerCancelAlpacaOrderResponse()
    }

    /// Opens the user's stored token for one call to Alpaca. No connection → CONFLICT
    /// `alpaca_not_connected`; a connection Alpaca refused before, or a ciphertext the vault will
    /// not open for this user → CONFLICT `alpaca_connection_lost`, and a 401 during the
    /// call marks it so.
    func withAlpacaToken<Result: Sendable>(of userText: String, _ context: ServerContext, _ call: (String) async throws -> Result) async throws -> Result {
        let userID = try Self.actingUser(userText)
        guard let connection = try await store.alpacaConnection(userID: userID, logger: context.logger) else {
            throw RPCError(code: .conflict, message: AlpacaErrorMapping.notConnected)
        }
        guard connection.status == .connected else {
            throw RPCError(code: .conflict, message: AlpacaErrorMapping.connectionLost)
        }
        let token: String
        do {
            token = try await vault.open(connection.token, for: CredentialContext(provider: .alpaca, userID: userID), options: context.downstreamOptions())
        } catch is CredentialVault.UnopenableCredential {
            context.logger.error("stored alpaca token does not open for its owner", metadata: ["event": "credential_unopenable", "user_id": "\(userID)", "key_id": "\(connection.token.keyID)"])
            try await store.markAlpacaConnectionLost(userID: userID, ciphertext: connection.token.ciphertext, now: now(), logger: context.logger)
            throw RPCError(code: .conflict, message: AlpacaErrorMapping.connectionLost)
        }
        do {
            return try await call(token)
        } catch let error as RPCError where error.code == .conflict && error.message == AlpacaErrorMapping.connectionLost {
            context.logger.notice("alpaca refused the stored token", metadata: ["event": "alpaca_connection_lost", "user_id": "\(userID)"])
            try await store.markAlpacaConnectionLost(userID: userID, ciphertext: connection.token.ciphertext, now: now(), logger: context.logger)
            throw error
        }
    }
}
