-- Auth schema, owned by role clau_auth (C-16). Holds bcrypt hashes and SHA-256 hashes of refresh
-- tokens only: a dump reveals no password and no usable token (SPEC §1).

CREATE TABLE auth.users (
    id                  uuid PRIMARY KEY,
    email               text NOT NULL,
    -- Lower-cased copy for the case-insensitive uniqueness the spec requires.
    email_normalized    text NOT NULL UNIQUE,
    full_name           text NOT NULL CHECK (char_length(full_name) BETWEEN 1 AND 200),
    phone               text CHECK (phone ~ '^\+[1-9][0-9]{6,14}$'),
    password_hash       text NOT NULL CHECK (password_hash LIKE '$2b$%'),
    role                text NOT NULL DEFAULT 'user' CHECK (role IN ('user', 'admin')),
    status              text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled', 'deleted')),
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    password_changed_at timestamptz NOT NULL DEFAULT now()
);

-- A login session: every refresh token rotated from one login belongs to one family (C-2, R-1).
CREATE TABLE auth.refresh_families (
    id                 uuid PRIMARY KEY,
    user_id            uuid NOT NULL REFERENCES auth.users (id) ON DELETE CASCADE,
    created_at         timestamptz NOT NULL DEFAULT now(),
    last_used_at       timestamptz NOT NULL DEFAULT now(),
    revoked_at         timestamptz,
    revoked_reason     text,
    -- R-2: hash of User-Agent and Sec-CH-UA* headers, when device binding is on.
    device_fingerprint text,
    mfa_verified       boolean NOT NULL DEFAULT false
);
CREATE INDEX refresh_families_user ON auth.refresh_families (user_id) WHERE revoked_at IS NULL;

CREATE TABLE auth.refresh_tokens (
    token_hash    bytea PRIMARY KEY CHECK (octet_length(token_hash) = 32),
    family_id     uuid NOT NULL REFERENCES auth.refresh_families (id) ON DELETE CASCADE,
    created_at    timestamptz NOT NULL DEFAULT now(),
    rotated_at    timestamptz,
    successor_hash bytea
);
CREATE INDEX refresh_tokens_family ON auth.refresh_tokens (family_id);

-- Access tokens minted per family, so a family revocation can revoke each jti (R-1).
CREATE TABLE auth.access_tokens (
    jti        uuid PRIMARY KEY,
    family_id  uuid REFERENCES auth.refresh_families (id) ON DELETE CASCADE,
    user_id    uuid NOT NULL,
    expires_at timestamptz NOT NULL
);
CREATE INDEX access_tokens_family ON auth.access_tokens (family_id);
CREATE INDEX access_tokens_expiry ON auth.access_tokens (expires_at);

-- Revoked jti with TTL = remaining lifetime; rows past expires_at are purged.
CREATE TABLE auth.revoked_tokens (
    jti        uuid PRIMARY KEY,
    expires_at timestamptz NOT NULL,
    revoked_at timestamptz NOT NULL DEFAULT now(),
    reason     text NOT NULL
);
CREATE INDEX revoked_tokens_expiry ON auth.revoked_tokens (expires_at);

-- Public halves and metadata of JWT signing keys. Private keys live in the credentials
-- directory, never here.
CREATE TABLE auth.signing_keys (
    kid         text PRIMARY KEY,
    algorithm   text NOT NULL CHECK (algorithm IN ('RS256', 'ES256', 'EdDSA', 'HS256')),
    public_jwk  jsonb,
    created_at  timestamptz NOT NULL DEFAULT now(),
    retired_at  timestamptz
);

-- Security audit trail (R-19), also written as JSON log lines.
CREATE TABLE auth.audit_events (
    id         bigserial PRIMARY KEY,
    occurred_at timestamptz NOT NULL DEFAULT now(),
    event_type text NOT NULL,
    risk       text NOT NULL CHECK (risk IN ('low', 'medium', 'high', 'critical')),
    user_id    uuid,
    ip_hash    text,
    request_id text,
    details    jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_events_time ON auth.audit_events (occurred_at);
