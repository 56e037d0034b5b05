-- Broker schema, owned by role clau_broker (C-16). Third-party credentials are stored only as the
-- vault's Fernet ciphertext, bound to owner and purpose (`alpaca:user:<id>`, `stripe:user:<id>`:
-- X-4), with the id of the key that sealed them so re-wrapping can find the stale ones (R-11).
-- OAuth states are stored as SHA-256 only. A dump of this schema holds no usable token.

-- One Alpaca OAuth connection per user.
CREATE TABLE broker.alpaca_connections (
    user_id          uuid PRIMARY KEY,
    token_ciphertext text NOT NULL CHECK (token_ciphertext ~ '^[A-Za-z0-9_=-]+$' AND char_length(token_ciphertext) BETWEEN 60 AND 8192),
    key_id           text NOT NULL CHECK (char_length(key_id) BETWEEN 1 AND 64),
    -- Set when the vault could not open the ciphertext during a re-wrap (no key decrypts it).
    undecryptable    boolean NOT NULL DEFAULT false,
    scope            text NOT NULL CHECK (char_length(scope) <= 200),
    -- 'connection_lost': Alpaca answered 401 with the stored token; the user must reconnect.
    status           text NOT NULL CHECK (status IN ('connected', 'connection_lost')),
    connected_at     timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL
);
CREATE INDEX alpaca_connections_key ON broker.alpaca_connections (key_id);

-- OAuth `state` values: hash only, bound to the user, single use, 10-minute lifetime.
CREATE TABLE broker.alpaca_oauth_states (
    state_hash bytea PRIMARY KEY CHECK (octet_length(state_hash) = 32),
    user_id    uuid NOT NULL,
    issued_at  timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    used_at    timestamptz
);
CREATE INDEX alpaca_oauth_states_user ON broker.alpaca_oauth_states (user_id, issued_at);
CREATE INDEX alpaca_oauth_states_expiry ON broker.alpaca_oauth_states (expires_at);

-- One Stripe customer per user. The customer id is the handle to the user's billing and bank
-- links, so it is stored sealed; `customer_hash` (SHA-256 of the id) maps a webhook's customer
-- back to the user without decrypting every row.
CREATE TABLE broker.stripe_customers (
    user_id             uuid PRIMARY KEY,
    customer_ciphertext text NOT NULL CHECK (customer_ciphertext ~ '^[A-Za-z0-9_=-]+$' AND char_length(customer_ciphertext) BETWEEN 60 AND 8192),
    key_id              text NOT NULL CHECK (char_length(key_id) BETWEEN 1 AND 64),
    undecryptable       boolean NOT NULL DEFAULT false,
    customer_hash       bytea NOT NULL UNIQUE CHECK (octet_length(customer_hash) = 32),
    created_at          timestamptz NOT NULL
);
CREATE INDEX stripe_customers_key ON broker.stripe_customers (key_id);

-- Financial Connections sessions this broker created, so a session id is only ever linked by the
-- user it was created for (C-7).
CREATE TABLE broker.financial_connections_sessions (
    id         text PRIMARY KEY CHECK (id ~ '^fcsess_[A-Za-z0-9_]{1,248}$'),
    user_id    uuid NOT NULL,
    created_at timestamptz NOT NULL
);
CREATE INDEX financial_connections_sessions_user ON broker.financial_connections_sessions (user_id);

-- Linked bank accounts and their last balances (amounts in minor units per currency).
CREATE TABLE broker.bank_accounts (
    id               text PRIMARY KEY CHECK (id ~ '^fca_[A-Za-z0-9_]{1,251}$'),
    user_id          uuid NOT NULL,
    institution_name text NOT NULL CHECK (char_length(institution_name) <= 200),
    last4            text NOT NULL CHECK (last4 ~ '^[0-9]{0,4}$'),
    category         text NOT NULL CHECK (char_length(category) <= 32),
    balance_current  jsonb,
    balance_as_of    timestamptz,
    balance_type     text CHECK (char_length(balance_type) <= 32),
    refresh_status   text NOT NULL DEFAULT '' CHECK (refresh_status IN ('', 'pending', 'succeeded', 'failed')),
    linked_at        timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL
);
CREATE INDEX bank_accounts_user ON broker.bank_accounts (user_id);

-- Subscription status per user, kept current by webhooks.
CREATE TABLE broker.subscriptions (
    user_id            uuid PRIMARY KEY,
    subscription_id    text NOT NULL CHECK (subscription_id ~ '^sub_[A-Za-z0-9_]{1,251}$'),
    status             text NOT NULL CHECK (status IN ('incomplete', 'incomplete_expired', 'trialing', 'active', 'past_due', 'canceled', 'unpaid', 'paused')),
    current_period_end timestamptz,
    -- `created` of the event that set this row: an older event delivered late changes nothing.
    event_created      timestamptz NOT NULL,
    updated_at         timestamptz NOT NULL
);

-- Checkout sessions this broker created, bound to their user.
CREATE TABLE broker.checkout_sessions (
    id         text PRIMARY KEY CHECK (id ~ '^cs_[A-Za-z0-9_]{1,252}$'),
    user_id    uuid NOT NULL,
    created_at timestamptz NOT NULL
);

-- Every Stripe event applied, by id: a redelivered or replayed event is acknowledged without a
-- second effect. The row is inserted in the same transaction as the effect.
CREATE TABLE broker.stripe_events (
    id           text PRIMARY KEY CHECK (id ~ '^evt_[A-Za-z0-9_]{1,251}$'),
    type         text NOT NULL CHECK (char_length(type) <= 100),
    processed_at timestamptz NOT NULL
);
