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
def r(method, path, auth, req, status, out, summary, errors=()):
    R.append((method, path, auth, req, status, out, summary, list(errors)))

r("get", "/healthz", "public", None, "200", "Status", "Process is up")
r("get", "/readyz", "public", None, "200", "Ready", "Auth is reachable", ["503"])
r("get", "/openapi.json", "public", None, "200", "Object", "This document", ["503"])
r("get", "/.well-known/jwks.json", "public", None, "200", "JWKS", "Public keys that verify access tokens", ["503"])
r("post", "/v1/auth/register", "public", "RegisterRequest", "202", "Accepted", "Create an account (same answer for existing e-mails)", ["400", "413", "415", "422", "429", "503"])
r("post", "/v1/auth/login", "public", "LoginRequest", "200", "TokenPair", "Log in", ["400", "401", "413", "415", "422", "429", "503"])
r("post", "/v1/auth/refresh", "public", "RefreshRequest", "200", "TokenPair", "Rotate a refresh token", ["400", "401", "415", "422", "429", "503"])
r("post", "/v1/auth/password/forgot", "public", "ForgotPasswordRequest", "202", "Accepted", "E-mail a reset code", ["400", "415", "422", "429", "503"])
r("post", "/v1/auth/password/reset", "public", "ResetPasswordRequest", "204", None, "Reset the password with a code", ["400", "401", "403", "415", "422", "429", "503"])
r("post", "/v1/stripe/webhook", "public", "Object", "204", None, "Stripe webhook (Stripe-Signature checked)", ["400", "401", "503"])
r("post", "/v1/auth/logout", "user", None, "204", None, "Revoke this session (access token only)", ["401", "403", "503"])
r("get", "/v1/me", "user", None, "200", "User", "The caller's account", ["401", "404", "503"])
r("patch", "/v1/me", "user", "UpdateMeRequest", "200", "User", "Update the caller's profile (phone null removes it)", ["400", "401", "415", "422", "503"])
r("delete", "/v1/me", "user", "PasswordConfirmation", "204", None, "Delete the caller's account (access token only)", ["400", "401", "403", "415", "422", "503"])
r("post", "/v1/me/password", "user", "ChangePasswordRequest", "204", None, "Change password (other sessions revoked; access token only)", ["400", "401", "403", "415", "422", "429", "503"])
r("get", "/v1/me/sessions", "user", None, "200", "Sessions", "The caller's live sessions", ["401", "403", "503"])
r("post", "/v1/me/mfa/totp", "user", None, "201", "TOTPEnrollment", "Start TOTP enrollment (secret shown once)", ["401", "403", "409", "503"])
r("post", "/v1/me/mfa/totp/confirm", "user", "TOTPCode", "204", None, "Confirm TOTP enrollment", ["400", "401", "403", "415", "422", "503"])
r("get", "/v1/me/api-keys", "user", None, "200", "APIKeys", "List API keys", ["401", "503"])
r("post", "/v1/me/api-keys", "user", "CreateAPIKeyRequest", "201", "CreatedAPIKey", "Create an API key (secret shown once; access token only)", ["400", "401", "403", "415", "422", "503"])
r("delete", "/v1/me/api-keys", "user", "IDRequest", "204", None, "Revoke an API key", ["400", "401", "404", "415", "422", "503"])
r("get", "/v1/me/notification-preferences", "user", None, "200", "NotificationPreferences", "Notification preferences", ["401", "503"])
r("put", "/v1/me/notification-preferences", "user", "NotificationPreferences", "200", "NotificationPreferences", "Replace notification preferences", ["400", "401", "415", "422", "503"])
r("post", "/v1/me/devices", "user", "DeviceRequest", "201", "Device", "Register an FCM token", ["400", "401", "415", "422", "503"])
r("delete", "/v1/me/devices", "user", "DeviceRemovalRequest", "204", None, "Remove an FCM token", ["400", "401", "404", "415", "422", "503"])
r("get", "/v1/users/{userId}/subscription", "user", None, "200", "Object", "The user's subscription (owner only)", ["401", "404", "503"])
r("get", "/v1/alpaca/oauth/authorize-url", "user", None, "200", "Object", "Alpaca OAuth URL", ["401", "503"])
r("post", "/v1/alpaca/oauth/callback", "user", "Object", "204", None, "Complete Alpaca OAuth", ["400", "401", "415", "422", "503"])
r("delete", "/v1/alpaca/connection", "user", None, "204", None, "Disconnect Alpaca", ["401", "503"])
r("get", "/v1/alpaca/account", "user", None, "200", "Object", "Alpaca account", ["401", "503"])
r("get", "/v1/alpaca/positions", "user", None, "200", "Object", "Alpaca positions", ["401", "503"])
r("get", "/v1/alpaca/orders", "user", None, "200", "Object", "Alpaca orders", ["401", "503"])
r("post", "/v1/alpaca/orders", "user", "Object", "201", "Object", "Place an order", ["400", "401", "415", "422", "503"])
r("delete", "/v1/alpaca/orders/{orderId}", "user", None, "204", None, "Cancel an order", ["401", "404", "503"])
r("post", "/v1/stripe/financial-connections/sessions", "user", "Object", "201", "Object", "Start Financial Connections", ["400", "401", "503"])
r("post", "/v1/stripe/financial-connections/accounts", "user", "Object", "201", "Object", "Link accounts", ["400", "401", "503"])
r("get", "/v1/stripe/balances", "user", None, "200", "Object", "Bank balances", ["401", "503"])
r("post", "/v1/stripe/subscription/checkout", "user", "Object", "201", "Object", "Subscription checkout", ["400", "401", "503"])
r("post", "/v1/admin/users/{userId}/sessions/revoke", "admin", "RevokeSessionsRequest", "200", "RevokedSessions", "Revoke every session of a user", ["400", "401", "403", "404", "415", "422", "503"])
r("post", "/v1/admin/users/{userId}/unlock", "admin", None, "200", "Unlocked", "Unlock a user", ["401", "403", "404", "503"])
r("post", "/v1/admin/ip-blocks", "admin", "BlockIPRequest", "204", None, "Block an IP (every edge refuses it)", ["400", "401", "403", "415", "422", "503"])
r("delete", "/v1/admin/ip-blocks/{ip}", "admin", None, "204", None, "Unblock an IP", ["401", "403", "404", "503"])
r("post", "/v1/admin/keys/fernet/rotate", "admin", None, "204", None, "Rotate the Fernet key and re-wrap tokens", ["401", "403", "503"])
r("post", "/v1/admin/keys/jwt/rotate", "admin", None, "200", "RotatedKey", "Rotate JWT signing keys", ["401", "403", "503"])
r("get", "/v1/admin/audit-log", "admin", None, "200", "AuditEvents", "Read the audit log (?after_id, ?limit 1-500)", ["401", "403", "503"])

DESCRIPTIONS = {"400": "Malformed request (bad JSON)", "401": "Missing, invalid, expired or revoked credentials", "403": "Not allowed",
                "404": "No such resource (also another user's)", "405": "Method not allowed", "409": "Conflict", "408": "Body too slow", "413": "Body too large",
                "415": "Content-Type must be application/json", "422": "Validation failed (fields named)", "429": "Rate limited",
                "431": "Headers too large", "500": "Internal error (no details)", "503": "Unavailable or overloaded (Retry-After)", "504": "Upstream timeout"}

s = lambda **kw: {"type": "string", **kw}
# bcrypt reads 72 bytes: auth refuses longer new passwords rather than ignore the rest.
NEW_PASSWORD = s(minLength=1, maxLength=72, description="At most 72 bytes of UTF-8")
schemas = {
    "Error": {"type": "object", "required": ["error"], "additionalProperties": False, "properties": {"error": {
        "type": "object", "required": ["code", "message", "request_id"], "additionalProperties": False, "properties": {
            "code": s(pattern="^[a-z0-9_]+$"), "message": s(), "request_id": s(maxLength=64),
            "fields": {"type": "array", "items": {"type": "object", "required": ["name", "problem"], "properties": {"name": s(), "problem": s()}}}}}}},
    "Object": {"type": "object"},
    "Status": {"type": "object", "required": ["status"], "properties": {"status": s()}},
    "Accepted": {"type": "object", "required": ["status"], "properties": {"status": {"const": "accepted"}}},
    "Ready": {"type": "object", "required": ["status"], "properties": {"status": s(), "checks": {"type": "object", "additionalProperties": s()}}},
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
    "CreateAPIKeyRequest": {"type": "object", "required": ["name"], "additionalProperties": False, "properties": {"name": s(minLength=1, maxLength=100), "expires_at": {"type": ["integer", "null"], "description": "Unix seconds; null or absent: no expiry"}}},
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

paths = {}
for method, path, auth, req, status, out, summary, errors in R:
    op = {"summary": summary, "operationId": (method + path).replace("/", "_").replace("{", "").replace("}", "").replace(".", "_").replace("-", "_"),
          "tags": [auth]}
    params = [p[1:-1] for p in path.split("/") if p.startswith("{")]
    if params:
        op["parameters"] = [{"name": p, "in": "path", "required": True, "schema": s(maxLength=64)} for p in params]
    if auth == "public":
        op["security"] = []
    elif auth == "user":
        op["security"] = [{"bearer": []}, {"apiKey": []}]
    else:
        op["security"] = [{"bearer": [], "adminKey": []}]
    if req:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": ref(req)}}}
    responses = {status: resp(out, "Success") if out else {"description": "Success"}}
    codes = set(errors) | {"500"}
    if path not in ("/healthz", "/readyz"):
        codes |= {"405", "431", "503"}
    if auth != "public":
        codes |= {"401", "429"}
    if auth == "admin":
        codes |= {"403"}
    for code in sorted(codes):
        responses[code] = ERR(DESCRIPTIONS[code])
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
