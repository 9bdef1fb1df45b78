-- Foundation schema (PostgreSQL). Kept column-for-column identical to ../sqlite/0001_foundation.sql:
-- the store code is shared, only type spellings differ. Timestamps are RFC 3339 UTC text with a
-- fixed width, so they sort lexically; booleans are 0/1 integers.

CREATE TABLE roles (
    name        TEXT PRIMARY KEY,
    description TEXT NOT NULL,
    privileges  TEXT NOT NULL,          -- comma-separated kebab-case privilege names
    builtin     BIGINT NOT NULL,
    created_at  TEXT NOT NULL
);

CREATE TABLE users (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    role       TEXT NOT NULL REFERENCES roles(name),
    created_at TEXT NOT NULL
);

CREATE TABLE api_tokens (
    id           TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users(id),
    name         TEXT NOT NULL,
    token_sha256 TEXT NOT NULL UNIQUE,  -- the token itself is never stored
    created_at   TEXT NOT NULL,
    expires_at   TEXT NOT NULL,
    revoked_at   TEXT
);
CREATE INDEX api_tokens_user ON api_tokens(user_id);

CREATE TABLE resource_types (
    name         TEXT PRIMARY KEY,
    builtin      BIGINT NOT NULL,
    reset_method TEXT NOT NULL,         -- ssh | agent | local
    description  TEXT NOT NULL,
    created_at   TEXT NOT NULL
);

CREATE TABLE resources (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    resource_type TEXT NOT NULL REFERENCES resource_types(name),
    ip_address    TEXT,
    url           TEXT,
    domain_name   TEXT,
    ssh_port      BIGINT,
    description   TEXT,
    location      TEXT,
    department    TEXT,
    custom_fields TEXT NOT NULL,        -- JSON object of string -> string
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL
);

CREATE TABLE accounts (
    id                   TEXT PRIMARY KEY,
    resource_id          TEXT NOT NULL REFERENCES resources(id),
    login_name           TEXT NOT NULL,
    description          TEXT,
    domain_name          TEXT,
    compliant_status     TEXT NOT NULL,
    compliant_reason     TEXT,
    expiry_status        TEXT NOT NULL,
    password_sync_status TEXT NOT NULL,
    custom_fields        TEXT NOT NULL,
    -- The password, sealed by the vault (AES-256-GCM); key_id names the master key used.
    password_key_id      TEXT NOT NULL,
    password_nonce       BYTEA NOT NULL,
    password_ciphertext  BYTEA NOT NULL,
    password_changed_at  TEXT NOT NULL,
    created_at           TEXT NOT NULL,
    updated_at           TEXT NOT NULL,
    UNIQUE (resource_id, login_name)
);

-- Append-only and hash-chained: hash = SHA-256(prev_hash || canonical JSON of the event).
CREATE TABLE audit_events (
    seq       BIGINT PRIMARY KEY,
    id        TEXT NOT NULL UNIQUE,
    at        TEXT NOT NULL,
    actor     TEXT NOT NULL,
    action    TEXT NOT NULL,
    target    TEXT NOT NULL,
    outcome   TEXT NOT NULL,
    source_ip TEXT,
    detail    TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL
);
CREATE INDEX audit_events_at ON audit_events(at);
