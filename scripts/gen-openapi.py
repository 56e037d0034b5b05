#!/usr/bin/env python3
"""Writes Sources/EdgeProxy/Resources/openapi.json (OpenAPI 3.1), the contract of SPEC §3.
The route list mirrors Sources/EdgeProxy/Routes.swift; EdgeProxyTests checks both ways."""
import json, os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

def ref(name): return {"$ref": f"#/components/schemas/{name}"}
def resp(ref_name, desc): return {"description": desc, "content": {"application/json": {"schema": ref(ref_name)}}}
ERR = lambda d: resp("Error", d)

# (method, path, auth, request schema or None, success status, success schema or None, summary, extra error statuses)
R = []
# errors: a status code (generic description) or (status, description).
def r(method, path, auth, req, status, out, summary, errors=(), description=None, query=(), headers=(), extra_success=None):
    R.append((method, path, auth, req, status, out, summary, list(errors), dict(description=description, query=list(query), headers=list(headers), extra_success=extra_success or {})))

BROKER_PATHS = ("/v1/alpaca/", "/v1/stripe/", "/v1/admin/keys/fernet/")
BROKER_ERRORS = {"403": "The broker refused the call", "503": "No broker configured, the broker or Alpaca/Stripe unreachable (Retry-After)", "504": "The broker did not answer in time"}

r("get", "/healthz", "public", None, "200", "Status", "Process is up")
r("get", "/readyz", "public", None, "200", "Ready", "Auth is reachable and the broker (when configured) is connected", [("503", "Auth unreachable or a configured broker not connected (the message names which)")])
r("get", "/openapi.json", "public", None, "200", "Object", "This document", ["503"])
r("get", "/.well-known/jwks.json", "public", None, "200", "JWKS", "Public keys that verify access tokens", ["503"])
r("post", "/v1/auth/register", "public", "RegisterRequest", "202", "Accepted", "Create an account (same answer for existing e-mails)", ["400", "413", "415", "422", "429", "503"])
r("post", "/v1/auth/login", "public", "LoginRequest", "200", "TokenPair", "Log in", ["400", "401", "413", "415", "422", "429", "503"])
r("post", "/v1/auth/refresh", "public", "RefreshRequest", "200", "TokenPair", "Rotate a refresh token", ["400", "401", "415", "422", "429", "503"])
r("post", "/v1/auth/password/forgot", "public", "ForgotPasswordRequest", "202", "Accepted", "E-mail a reset code", ["400", "415", "422", "429", "503"])
r("post", "/v1/auth/password/reset", "public", "ResetPasswordRequest", "204", None, "Reset the password with a code", ["400", "401", "403", "415", "422", "429", "503"])
r("post", "/v1/stripe/webhook", "public", "StripeEvent", "200", "WebhookReceived", "Stripe webhook (raw body + Stripe-Signature, checked by the broker)",
  [("400", "invalid_signature: the Stripe-Signature header is missing, invalid or stale"), ("413", "Body over 64 KiB"), "429", "503"],
  description="The body is passed to the broker byte for byte with the Stripe-Signature header, never parsed at the edge. An event id already processed answers 200 again with no second effect.",
  headers=[{"name": "Stripe-Signature", "in": "header", "required": True, "schema": {"type": "string"}}])
r("post", "/v1/auth/logout", "user", None, "204", None, "Revoke this session (access token only)", ["401", "403", "503"])
r("get", "/v1/me", "user", None, "200", "User", "The caller's account", ["401", "404", "503"])
r("patch", "/v1/me", "user", "UpdateMeRequest", "200", "User", "Update the caller's profile (phone null removes it)", ["400", "401", "415", "422", "503"])
r("delete", "/v1/me", "user", "PasswordConfirmation", "204", None, "Delete the caller's account (access token only)", ["400", "401", "403", "415", "422", "503"])
r("post", "/v1/me/password", "user", "ChangePasswordRequest", "204", None, "Change password (other sessions revoked; access token only)", ["400", "401", "403", "415", "422", "429", "503"])
r("get", "/v1/me/sessions", "user", None, "200", "Sessions", "The caller's live sessions", ["401", "403", "503"])
r("post", "/v1/me/mfa/totp", "user", None, "201", "TOTPEnrollment", "Start TOTP enrollment (secret shown once)", ["401", "403", "409", "503"])
r("post", "/v1/me/mfa/totp/confirm", "user", "TOTPCode", "204", None, "Confirm TOTP enrollment", ["400", "401", "403", "415", "422", "503"])
r("get", "/v1/me/api-keys", "user", None, "200", "APIKeys", "List API keys", ["401", "503"])
r("post", "/v1/me/api-keys", "user", "CreateAPIKeyRequest", "201", "CreatedAPIKey", "Create an API key (secret shown once; access token only)", ["400", "401", "403", ("409", "At most 50 API keys per user: revoke one first"), "415", "422", "503"])
r("delete", "/v1/me/api-keys", "user", "IDRequest", "204", None, "Revoke an API key", ["400", "401", "404", "415", "422", "503"])
r("get", "/v1/me/notification-preferences", "user", None, "200", "NotificationPreferences", "Notification preferences", ["401", "503"])
r("put", "/v1/me/notification-preferences", "user", "NotificationPreferences", "200", "NotificationPreferences", "Replace notification preferences", ["400", "401", "415", "422", "503"])
r("post", "/v1/me/devices", "user", "DeviceRequest", "201", "Device", "Register an FCM token", ["400", "401", "415", "422", "503"])
r("delete", "/v1/me/devices", "user", "DeviceRemovalRequest", "204", None, "Remove an FCM token", ["400", "401", "404", "415", "422", "503"])
# Broker routes (clau-broker over broker.sock). Every one may also answer 403 (the broker refused),
# 503 (no broker configured, broker or Alpaca/Stripe unreachable; Retry-After) and 504 (the broker
# did not answer in time): see BROKER_ERRORS below.
ALPACA_OAUTH_NOTE = (" Alpaca documents no revoke endpoint and no token expiry: disconnecting deletes the stored token only"
                     " (revoke the app at Alpaca to end its access there), and a 401 from Alpaca marks the connection lost"
                     " (409 alpaca_connection_lost; reconnect through the OAuth routes).")
NOT_CONNECTED = ("409", "No Alpaca connection (alpaca_not_connected), or Alpaca refused the stored token (alpaca_connection_lost: reconnect)")
r("get", "/v1/users/{userId}/subscription", "user", None, "200", "Subscription", "The user's subscription (owner only: another user's id is 404, C-7)", ["404"])
r("get", "/v1/alpaca/oauth/authorize-url", "user", None, "200", "AlpacaAuthorizeURL", "Alpaca OAuth authorize URL (single-use state, 10 min)", [],
  description="Send the user to `url`; Alpaca redirects back with `code` and `state` for the callback route." + ALPACA_OAUTH_NOTE)
r("post", "/v1/alpaca/oauth/callback", "user", "AlpacaCallbackRequest", "200", "AlpacaConnected", "Complete Alpaca OAuth",
  [("400", "invalid_state (the state is unknown, expired, used or another user's), invalid_grant (Alpaca refused the code) or malformed JSON"), "413", "415", "422"],
  description="Exchanges the code once the state checks out, and stores the token encrypted." + ALPACA_OAUTH_NOTE)
r("delete", "/v1/alpaca/connection", "user", None, "204", None, "Disconnect Alpaca (deletes the stored token)", [],
  description="Deletes the stored token; nothing is revoked at Alpaca." + ALPACA_OAUTH_NOTE)
r("get", "/v1/alpaca/account", "user", None, "200", "AlpacaAccount", "Alpaca account", [NOT_CONNECTED])
r("get", "/v1/alpaca/positions", "user", None, "200", "AlpacaPositions", "Alpaca positions", [NOT_CONNECTED])
r("get", "/v1/alpaca/orders", "user", None, "200", "AlpacaOrders", "Alpaca orders (?status=open|closed|all, ?limit=1-500)", [NOT_CONNECTED, ("422", "Invalid query parameter (fields named)")],
  query=[{"name": "status", "in": "query", "required": False, "schema": {"enum": ["open", "closed", "all"], "default": "open"}},
         {"name": "limit", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 1, "maximum": 500}}])
r("post", "/v1/alpaca/orders", "user", "PlaceOrderRequest", "201", "AlpacaOrder", "Place an order", ["400", NOT_CONNECTED, "413", "415", ("422", "Validation failed: fields named (e.g. qty and notional both given, limit_price on a market order)")])
r("delete", "/v1/alpaca/orders/{orderId}", "user", None, "204", None, "Cancel an order",
  [("404", "No such order in the caller's account"), ("409", NOT_CONNECTED[1] + "; or the order can no longer be canceled (order_not_cancelable: filled, canceled or expired)"),
   ("422", "orderId is not a UUID (fields named)")])
r("post", "/v1/stripe/financial-connections/sessions", "user", "EmptyRequest", "201", "FinancialConnectionsSession", "Start Financial Connections (balances); body optional", ["400", "413", "415", "422"])
r("post", "/v1/stripe/financial-connections/accounts", "user", "LinkAccountsRequest", "200", "LinkedAccounts", "Link the accounts of a finished session", ["400", ("404", "No such session of the caller's"), "413", "415", "422"])
r("get", "/v1/stripe/balances", "user", None, "200", "BankBalances", "Bank balances of the linked accounts")
r("post", "/v1/stripe/subscription/checkout", "user", "CheckoutRequest", "201", "Checkout", "Subscription checkout (body optional)",
  ["400", "413", "415", ("422", "Validation failed (fields named): price_id malformed, or not a price this deployment offers (unsupported_value)")])
r("post", "/v1/admin/users/{userId}/sessions/revoke", "admin", "RevokeSessionsRequest", "200", "RevokedSessions", "Revoke every session of a user", ["400", "401", "403", "404", "415", "422", "503"])
r("post", "/v1/admin/users/{userId}/unlock", "admin", None, "200", "Unlocked", "Unlock a user", ["401", "403", "404", "503"])
r("post", "/v1/admin/ip-blocks", "admin", "BlockIPRequest", "204", None, "Block an IP (every edge refuses it)", ["400", "401", "403", "415", "422", "503"])
r("delete", "/v1/admin/ip-blocks/{ip}", "admin", None, "204", None, "Unblock an IP", ["401", "403", "404", "503"])
r("post", "/v1/admin/keys/fernet/rotate", "admin", None, "200", "FernetRewrap", "Rotate the Fernet key: the vault adds a key, stored tokens are re-wrapped under it (R-11)",
  [("409", "key_source_read_only: the vault's key file is a read-only credential (rotate with clauctl vault rotate and restart the vault); too_many_keys: retire an old key first")],
  description="The vault generates and persists a new current key, unless an earlier re-wrap is unfinished: then no key is added (key_added false) and this call goes on with it. Calls the broker's RewrapAll batch after batch for about 20 s: 200 when done, 202 with what remains (call again; resumable). The old key leaves the vault with clauctl broker retire-key once nothing is under it.",
  extra_success={"202": ("FernetRewrap", "Not done within the time budget: call again")})
r("post", "/v1/admin/keys/jwt/rotate", "admin", None, "200", "RotatedKey", "Rotate JWT signing keys", ["401", "403", "503"])
r("get", "/v1/admin/audit-log", "admin", None, "200", "AuditEvents", "Read the audit log (?after_id, ?limit 1-500)", ["401", "403", "503"])

DESCRIPTIONS = {"400": "Malformed request (bad JSON)", "401": "Missing, invalid, expired or revoked credentials", "403": "Not allowed",
                "404": "No such resource (also another user's)", "405": "Method not allowed", "409": "Conflict", "408": "Body too slow", "413": "Body too large",
                "415": "Content-Type must be application/json", "422": "Validation failed (fields named)", "429": "Rate limited",
                "431": "Headers too large", "500": "Internal error (no details)", "503": "Unavailable or overloaded (Retry-After)", "504": "Upstream timeout"}

s = lambda **kw: {"type": "string", **kw}
# bcrypt reads 72 bytes: auth refuses longer new passwords rather than ignore the rest (R-6).
NEW_PASSWORD = s(minLength=1, maxLength=72, description="At most 72 bytes of UTF-8")
schemas = {
    "Error": {"type": "object", "required": ["error"], "additionalProperties": False, "properties": {"error": {
        "type": "object", "required": ["code", "message", "request_id"], "additionalProperties": False, "properties": {
            "code": s(pattern="^[a-z0-9_]+$"), "message": s(), "request_id": s(maxLength=64),
            "fields": {"type": "array", "items": {"type": "object", "required": ["name", "problem"], "properties": {"name": s(), "problem": s()}}}}}}},
    "Object": {"type": "object"},
    "Status": {"type": "object", "required": ["status"], "properties": {"status": s()}},
    "Accepted": {"type": "object", "required": ["status"], "properties": {"status": {"const": "accepted"}}},
    "Ready": {"type": "object", "required": ["status", "checks"], "properties": {"status": {"const": "ready"}, "checks": {"type": "object", "required": ["auth", "broker"], "properties": {
        "auth": {"const": "ok"}, "broker": {"enum": ["ok", "not_configured"], "description": "not_configured: started without a broker socket (its routes answer 503)"}}}}},
    "JWKS": {"type": "object", "required": ["keys"], "properties": {"keys": {"type": "array", "items": {"type": "object"}}}},
    "RegisterRequest": {"type": "object", "required": ["email", "password", "full_name"], "additionalProperties": False, "properties": {
        "email": s(format="email", maxLength=254), "password": NEW_PASSWORD, "full_name": s(minLength=1, maxLength=200),
        "phone": s(pattern="^\\+[1-9][0-9]{6,14}$")}},
    "LoginRequest": {"type": "object", "required": ["email", "password"], "additionalProperties": False, "properties": {
        "email": s(minLength=1, maxLength=254), "password": s(minLength=1, maxLength=256), "totp": s(pattern="^[0-9]{6,8}$")}},
    "RefreshRequest": {"type": "object", "required": ["refresh_token"], "additionalProperties": False, "properties": {"refresh_token": s(minLength=1, maxLength=128)}},
    "ForgotPasswordRequest": {"type": "object", "required": ["email"], "additionalProperties": False, "properties": {"email": s(format="email", maxLength=254)}},
    "ResetPasswordRequest": {"type": "object", "required": ["email", "code", "new_password"], "additionalProperties": False, "properties": {
        "email": s(format="email", maxLength=254), "code": s(pattern="^[0-9]{6,10}$"), "new_password": NEW_PASSWORD}},
    "ChangePasswordRequest": {"type": "object", "required": ["current_password", "new_password"], "additionalProperties": False, "properties": {
        "current_password": s(minLength=1, maxLength=256), "new_password": NEW_PASSWORD}},
    "UpdateMeRequest": {"type": "object", "additionalProperties": False, "minProperties": 1, "properties": {"full_name": s(minLength=1, maxLength=200),
        "phone": {"type": ["string", "null"], "pattern": "^\\+[1-9][0-9]{6,14}$", "description": "null removes the phone"}}},
    "RevokeSessionsRequest": {"type": "object", "additionalProperties": False, "properties": {"reason": s(maxLength=32)}},
    "PasswordConfirmation": {"type": "object", "required": ["password"], "additionalProperties": False, "properties": {"password": s(minLength=1, maxLength=256)}},
    "Sessions": {"type": "object", "required": ["sessions"], "properties": {"sessions": {"type": "array", "items": {"type": "object", "properties": {
        "id": s(), "created_at": s(format="date-time"), "last_used_at": {"type": ["string", "null"]}, "idle_expires_at": {"type": ["string", "null"]},
        "absolute_expires_at": {"type": ["string", "null"]}, "current": {"type": "boolean"}, "mfa_verified": {"type": "boolean"}}}}}},
    "TOTPEnrollment": {"type": "object", "required": ["secret_base32", "otpauth_uri"], "properties": {"secret_base32": s(), "otpauth_uri": s()}},
    "TOTPCode": {"type": "object", "required": ["code"], "additionalProperties": False, "properties": {"code": s(pattern="^[0-9]{6,8}$")}},
    "APIKey": {"type": "object", "required": ["id", "prefix", "name", "created_at"], "properties": {"id": s(), "prefix": s(), "name": s(),
        "created_at": s(format="date-time"), "expires_at": {"type": ["string", "null"]}, "last_used_at": {"type": ["string", "null"]}}},
    "APIKeys": {"type": "object", "required": ["api_keys"], "properties": {"api_keys": {"type": "array", "items": ref("APIKey")}}},
    "CreateAPIKeyRequest": {"type": "object", "required": ["name"], "additionalProperties": False, "properties": {"name": s(minLength=1, maxLength=100), "expires_at": {"type": ["integer", "null"], "maximum": 253402300799, "description": "Unix seconds, in the future and at most 9999-12-31T23:59:59Z; null or absent: no expiry"}}},
    "CreatedAPIKey": {"type": "object", "required": ["api_key", "secret"], "properties": {"api_key": ref("APIKey"), "secret": s(pattern="^clau_[0-9a-f]{64}$")}},
    "IDRequest": {"type": "object", "required": ["id"], "additionalProperties": False, "properties": {"id": s(minLength=1, maxLength=64)}},
    "NotificationPreferences": {"type": "object", "required": ["security_email", "order_push", "price_alert_push", "marketing_email"], "additionalProperties": False,
        "properties": {k: {"type": "boolean"} for k in ["security_email", "order_push", "price_alert_push", "marketing_email"]}},
    "DeviceRequest": {"type": "object", "required": ["fcm_token", "platform"], "additionalProperties": False, "properties": {"fcm_token": s(minLength=1, maxLength=4096, pattern="^[!-~]+$", description="Printable ASCII without spaces"), "platform": {"enum": ["ios", "android"]}}},
    "DeviceRemovalRequest": {"type": "object", "required": ["fcm_token"], "additionalProperties": False, "properties": {"fcm_token": s(minLength=1, maxLength=4096, pattern="^[!-~]+$", description="Printable ASCII without spaces"), "platform": {"enum": ["ios", "android"]}}},
    "Device": {"type": "object", "required": ["device_id"], "properties": {"device_id": s()}},
    "Unlocked": {"type": "object", "required": ["was_locked"], "properties": {"was_locked": {"type": "boolean"}}},
    "BlockIPRequest": {"type": "object", "required": ["ip", "duration_seconds"], "additionalProperties": False, "properties": {
        "ip": s(maxLength=45), "duration_seconds": {"type": "integer", "minimum": 1, "maximum": 31536000}, "reason": s(maxLength=200)}},
    "RotatedKey": {"type": "object", "required": ["kid", "algorithm"], "properties": {"kid": s(), "algorithm": s(), "verifying_kids": {"type": "array", "items": s()}}},
    "AuditEvents": {"type": "object", "required": ["events"], "properties": {"events": {"type": "array", "items": {"type": "object"}}}},
    "RevokedSessions": {"type": "object", "required": ["revoked_sessions"], "properties": {"revoked_sessions": {"type": "integer"}}},
    "TokenPair": {"type": "object", "required": ["access_token", "refresh_token", "token_type", "expires_in"], "properties": {
        "access_token": s(), "refresh_token": s(), "token_type": {"const": "Bearer"}, "expires_in": {"type": "integer"}}},
    "User": {"type": "object", "required": ["id", "email", "full_name", "phone", "role", "created_at"], "properties": {
        "id": s(format="uuid"), "email": s(), "full_name": s(), "phone": {"type": ["string", "null"]}, "role": {"enum": ["user", "admin"]},
        "created_at": s(format="date-time")}},
}

TIME = {"type": ["string", "null"], "format": "date-time"}
# A positive decimal in plain notation, as the broker accepts it (OrderRequestValidation): at most 9
# integer digits without a leading zero, at most 9 fraction digits, not zero.
DECIMAL = {"anyOf": [s(pattern="^[1-9][0-9]{0,8}(\\.[0-9]{1,9})?$"), s(pattern="^0\\.[0-9]*[1-9][0-9]*$", maxLength=11)],
           "description": "A positive decimal string (at most 9 digits before and 9 after the point), as Alpaca writes them"}
FRACTIONAL = "\\.[0-9]*[1-9]"
NULLABLE_DECIMAL = {"type": ["string", "null"], "description": "A decimal string; null when unset"}
schemas.update({
    "AlpacaAuthorizeURL": {"type": "object", "required": ["url", "expires_at"], "properties": {"url": s(format="uri"), "expires_at": TIME}},
    "AlpacaCallbackRequest": {"type": "object", "required": ["code", "state"], "additionalProperties": False, "properties": {
        "code": s(minLength=1, maxLength=512, pattern="^[!-~]+$", description="Printable ASCII without spaces"),
        "state": s(minLength=1, maxLength=128, description="As issued in the authorize URL (43 characters of base64url)")}},
    "AlpacaConnected": {"type": "object", "required": ["status", "scope"], "properties": {"status": {"const": "connected"}, "scope": s(description="Space-separated, as Alpaca granted")}},
    "AlpacaAccount": {"type": "object", "required": ["id", "status", "currency", "cash", "buying_power", "equity", "portfolio_value"],
        "properties": {"id": s(), "status": s(), "currency": s(), "cash": s(), "buying_power": s(), "equity": s(), "portfolio_value": s()}},
    "AlpacaPositions": {"type": "object", "required": ["positions"], "properties": {"positions": {"type": "array", "items": {"type": "object",
        "required": ["symbol", "qty", "side", "market_value", "avg_entry_price", "unrealized_pl"], "properties": {
            "symbol": s(), "qty": s(), "side": {"enum": ["long", "short"]}, "market_value": s(), "avg_entry_price": s(), "unrealized_pl": s()}}}}},
    "AlpacaOrder": {"type": "object", "required": ["id", "client_order_id", "symbol", "side", "type", "time_in_force", "qty", "notional", "limit_price",
        "status", "filled_qty", "submitted_at"], "properties": {"id": s(), "client_order_id": s(), "symbol": s(), "side": s(), "type": s(),
        "time_in_force": s(), "qty": NULLABLE_DECIMAL, "notional": NULLABLE_DECIMAL, "limit_price": NULLABLE_DECIMAL, "status": s(),
        "filled_qty": NULLABLE_DECIMAL, "submitted_at": {"type": ["string", "null"], "description": "RFC 3339, as Alpaca sends it"}}},
    "AlpacaOrders": {"type": "object", "required": ["orders"], "properties": {"orders": {"type": "array", "items": ref("AlpacaOrder")}}},
    "PlaceOrderRequest": {"type": "object", "required": ["symbol", "side", "type", "time_in_force"], "additionalProperties": False,
        "description": "Exactly one of qty and notional; limit_price for limit orders only; notional and fractional orders must be market + day.",
        "properties": {"symbol": s(minLength=1, maxLength=10, pattern="^[A-Z]+(\\.[A-Z]+)*$", description="A US equity ticker (BRK.B)"),
        "side": {"enum": ["buy", "sell"]}, "type": {"enum": ["market", "limit"]},
        "time_in_force": {"enum": ["day", "gtc", "opg", "cls", "ioc", "fok"]}, "qty": DECIMAL, "notional": DECIMAL, "limit_price": DECIMAL},
        "allOf": [
            {"oneOf": [{"required": ["qty"], "not": {"required": ["notional"]}}, {"required": ["notional"], "not": {"required": ["qty"]}}]},
            {"if": {"properties": {"type": {"const": "limit"}}}, "then": {"required": ["limit_price"]}, "else": {"not": {"required": ["limit_price"]}}},
            {"if": {"anyOf": [{"required": ["notional"]}, {"required": ["qty"], "properties": {"qty": {"pattern": FRACTIONAL}}}]},
             "then": {"properties": {"type": {"const": "market"}, "time_in_force": {"const": "day"}}}}]},
    "EmptyRequest": {"type": "object", "additionalProperties": False, "properties": {}},
    "FinancialConnectionsSession": {"type": "object", "required": ["session_id", "client_secret"], "properties": {
        "session_id": s(), "client_secret": s(description="For the mobile SDK only")}},
    "LinkAccountsRequest": {"type": "object", "required": ["session_id"], "additionalProperties": False, "properties": {
        "session_id": s(minLength=8, maxLength=128, pattern="^fcsess_[A-Za-z0-9_]+$", description="A session from POST /v1/stripe/financial-connections/sessions")}},
    "LinkedAccounts": {"type": "object", "required": ["accounts"], "properties": {"accounts": {"type": "array", "items": {"type": "object",
        "required": ["id", "institution_name", "last4", "category"], "properties": {"id": s(), "institution_name": s(), "last4": s(), "category": s()}}}}},
    "BankBalances": {"type": "object", "required": ["accounts"], "properties": {"accounts": {"type": "array", "items": {"type": "object",
        "required": ["id", "institution_name", "last4", "balance", "refresh_status"], "properties": {"id": s(), "institution_name": s(), "last4": s(),
        "balance": {"oneOf": [{"type": "null"}, {"type": "object", "required": ["current", "as_of"], "properties": {
            "current": {"type": "object", "additionalProperties": {"type": "integer"}, "description": "Currency code to amount in minor units"}, "as_of": TIME}}]},
        "refresh_status": {"enum": [None, "pending", "succeeded", "failed"]}}}}}},
    "CheckoutRequest": {"type": "object", "additionalProperties": False, "properties": {
        "price_id": s(minLength=7, maxLength=128, pattern="^price_[A-Za-z0-9_]+$", description="One of the prices this deployment offers (others: 422 unsupported_value); absent: the default price")}},
    "Checkout": {"type": "object", "required": ["checkout_url", "session_id"], "properties": {"checkout_url": s(format="uri"), "session_id": s()}},
    "Subscription": {"type": "object", "required": ["status"], "properties": {
        "status": {"enum": ["none", "incomplete", "incomplete_expired", "trialing", "active", "past_due", "canceled", "unpaid", "paused"],
            "description": "none, or Stripe's subscription status as its last webhook left it"}, "current_period_end": s(format="date-time")}},
    "StripeEvent": {"type": "object", "description": "A Stripe event, exactly as Stripe sent it (the signature covers the raw bytes)"},
    "WebhookReceived": {"type": "object", "required": ["received"], "properties": {"received": {"const": True}}},
    "FernetRewrap": {"type": "object", "required": ["key_added", "rewrapped", "failed", "remaining", "done", "current_key_id"], "properties": {
        "key_added": {"type": "boolean", "description": "False when this call only went on with an unfinished re-wrap"},
        "rewrapped": {"type": "integer", "minimum": 0}, "failed": {"type": "integer", "minimum": 0, "description": "Ciphertexts no vault key opens"},
        "remaining": {"type": "integer", "minimum": 0}, "done": {"type": "boolean"}, "current_key_id": s()}},
})
# Path parameters with a shape of their own (any other is a string of at most 64 characters).
PATH_PARAMETERS = {"orderId": s(format="uuid", description="An Alpaca order id")}
# Bodies a client may leave out altogether.
OPTIONAL_BODIES = {"EmptyRequest", "CheckoutRequest"}

paths = {}
for method, path, auth, req, status, out, summary, errors, extra in R:
    op = {"summary": summary, "operationId": (method + path).replace("/", "_").replace("{", "").replace("}", "").replace(".", "_").replace("-", "_"),
          "tags": [auth]}
    params = [p[1:-1] for p in path.split("/") if p.startswith("{")]
    parameters = [{"name": p, "in": "path", "required": True, "schema": PATH_PARAMETERS.get(p, s(maxLength=64))} for p in params] + extra["query"] + extra["headers"]
    if parameters:
        op["parameters"] = parameters
    if extra["description"]:
        op["description"] = extra["description"]
    if auth == "public":
        op["security"] = []
    elif auth == "user":
        op["security"] = [{"bearer": []}, {"apiKey": []}]
    else:
        op["security"] = [{"bearer": [], "adminKey": []}]
    if req:
        op["requestBody"] = {"required": req not in OPTIONAL_BODIES, "content": {"application/json": {"schema": ref(req)}}}
    responses = {status: resp(out, "Success") if out else {"description": "Success"}}
    for extra_status, (extra_out, extra_desc) in extra["extra_success"].items():
        responses[extra_status] = resp(extra_out, extra_desc)
    described = {e[0]: e[1] for e in errors if isinstance(e, tuple)}
    codes = {e[0] if isinstance(e, tuple) else e for e in errors} | {"500"}
    if path.startswith(BROKER_PATHS) or path.endswith("/subscription"):
        codes |= set(BROKER_ERRORS)
        described = {**{c: d for c, d in BROKER_ERRORS.items() if c not in described}, **described}
    if path not in ("/healthz", "/readyz"):
        codes |= {"405", "431", "503"}
    if auth != "public":
        codes |= {"401", "429"}
    if auth == "admin":
        codes |= {"403"}
    for code in sorted(codes):
        responses[code] = ERR(described.get(code, DESCRIPTIONS[code]))
    op["responses"] = responses
    paths.setdefault(path, {})[method] = op

# C-15: the edge refuses NUL and other control characters (C0, DEL, C1) in every string of a
# request body with 422 control_character; passwords are opaque and refuse only NUL. Say so in
# each request schema, so a schema-valid request is one the server accepts.
NO_CONTROLS = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$"
NO_NUL = "^[^\\u0000]*$"
request_bodies = {
    op["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    for ops in paths.values() for op in ops.values()
    if "$ref" in op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {})
}
for name in sorted(request_bodies):
    for field, prop in schemas[name].get("properties", {}).items():
        if prop.get("type") in ("string", ["string", "null"]) and "pattern" not in prop:
            prop["pattern"] = NO_NUL if field.endswith("password") else NO_CONTROLS

# RFC 7517 §8.5: the key set is served as application/jwk-set+json.
jwks_ok = paths["/.well-known/jwks.json"]["get"]["responses"]["200"]
jwks_ok["content"] = {"application/jwk-set+json": jwks_ok["content"]["application/json"]}

doc = {
    "openapi": "3.1.0",
    "info": {"title": "Clau API", "version": "1.0.0", "description": "The HTTPS API of the Clau backend (clau-edge). Errors are always {\"error\": {\"code\", \"message\", \"request_id\"}}."},
    "servers": [{"url": "https://localhost:8443"}],
    "paths": paths,
    "components": {"schemas": schemas, "securitySchemes": {
        "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
        "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
        "adminKey": {"type": "apiKey", "in": "header", "name": "X-Admin-Key"}}},
}
text = json.dumps(doc, indent=1, sort_keys=True) + "\n"
with open(os.path.join(ROOT, "Sources/EdgeProxy/Resources/openapi.json"), "w") as f:
    f.write(text)
# The served copy is compiled into the binary: an installed clau-edge has no resource bundle
# beside it, and SwiftPM's Bundle.module accessor calls fatalError when the bundle is missing.
assert '"""##' not in text
with open(os.path.join(ROOT, "Sources/EdgeProxy/Generated/OpenAPIDocumentText.swift"), "w") as f:
    f.write("// Generated by scripts/gen-openapi.py from Resources/openapi.json. Do not edit.\n")
    f.write("// Compiled in so that the document cannot go missing at run time.\n")
    f.write("let openAPIDocumentText = ##\"\"\"\n" + text + "\n\"\"\"##\n")
