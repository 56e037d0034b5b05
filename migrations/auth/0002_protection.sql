-- Account protection (C-4, C-5, R-2, R-3, R-4, X-5), profile data and the admin IP blocklist.
-- Secrets are stored only in forms a dump cannot use: reset codes and API keys as HMACs keyed by
-- a secret of the auth process, TOTP secrets encrypted (AES-GCM) with a key derived from it,
-- client IPs as keyed hashes (R-4).

-- Per-account lockout state (C-4) and TOTP (X-5).
ALTER TABLE auth.users
    ADD COLUMN failed_login_count   integer NOT NULL DEFAULT 0 CHECK (failed_login_count >= 0),
    ADD COLUMN last_failed_login_at timestamptz,
    ADD COLUMN locked_until         timestamptz,
    -- AES-GCM(nonce || ciphertext || tag) of the RFC 6238 secret; NULL until enrolment is confirmed.
    ADD COLUMN totp_secret_enc      bytea,
    -- A pending enrolment, not yet confirmed with a code.
    ADD COLUMN totp_pending_enc     bytea,
    -- The last accepted time step: a code is accepted once (replay protection).
    ADD COLUMN totp_last_step       bigint,
    ADD COLUMN points               bigint NOT NULL DEFAULT 0 CHECK (points >= 0);

-- Time of the login at which TOTP was checked; copied into `auth_time` of the family's tokens.
ALTER TABLE auth.refresh_families ADD COLUMN mfa_at timestamptz;

-- Failed logins per client IP over a sliding 24 h window (R-4). Only the keyed hash is kept.
CREATE TABLE auth.ip_login_failures (
    ip_hash   text NOT NULL,
    failed_at timestamptz NOT NULL
);
CREATE INDEX ip_login_failures_ip ON auth.ip_login_failures (ip_hash, failed_at);

-- Reset codes (C-5): an HMAC of the code, never the code.
CREATE TABLE auth.reset_codes (
    id           uuid PRIMARY KEY,
    user_id      uuid NOT NULL REFERENCES auth.users (id) ON DELETE CASCADE,
    code_hmac    text NOT NULL,
    created_at   timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL,
    attempts     integer NOT NULL DEFAULT 0,
    used_at      timestamptz,
    cancelled_at timestamptz
);
CREATE INDEX reset_codes_user ON auth.reset_codes (user_id, created_at);

-- API keys (R-3): an HMAC of the key; the 8-character prefix finds the row.
CREATE TABLE auth.api_keys (
    id           uuid PRIMARY KEY,
    user_id      uuid NOT NULL REFERENCES auth.users (id) ON DELETE CASCADE,
    name         text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 100),
    prefix       text NOT NULL CHECK (prefix ~ '^[0-9a-f]{8}$'),
    key_hmac     text NOT NULL UNIQUE,
    created_at   timestamptz NOT NULL,
    expires_at   timestamptz,
    last_used_at timestamptz,
    revoked_at   timestamptz
);
CREATE INDEX api_keys_prefix ON auth.api_keys (prefix);
CREATE INDEX api_keys_user ON auth.api_keys (user_id);

-- Profile data (internal tier), owned by the user.
CREATE TABLE auth.notification_preferences (
    user_id          uuid PRIMARY KEY REFERENCES auth.users (id) ON DELETE CASCADE,
    security_email   boolean NOT NULL DEFAULT true,
    order_push       boolean NOT NULL DEFAULT true,
    price_alert_push boolean NOT NULL DEFAULT false,
    marketing_email  boolean NOT NULL DEFAULT false,
    updated_at       timestamptz NOT NULL
);

CREATE TABLE auth.devices (
    id         uuid PRIMARY KEY,
    user_id    uuid NOT NULL REFERENCES auth.users (id) ON DELETE CASCADE,
    fcm_token  text NOT NULL CHECK (char_length(fcm_token) BETWEEN 1 AND 4096),
    platform   text NOT NULL CHECK (platform IN ('ios', 'android')),
    created_at timestamptz NOT NULL,
    UNIQUE (user_id, fcm_token)
);

-- Admin-managed IP blocklist, polled by every edge. Stored in the clear: the edge must match
-- addresses, and an address an operator chose to block is an incident record.
CREATE TABLE auth.ip_blocks (
    ip            text PRIMARY KEY,
    blocked_until timestamptz NOT NULL,
    reason        text NOT NULL,
    created_at    timestamptz NOT NULL
);
