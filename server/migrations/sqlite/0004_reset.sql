-- Reset engine (SQLite). Kept column-for-column identical to ../postgres/0004_reset.sql.

-- Password policies; `default` is written at every start.
CREATE TABLE password_policies (
    name                TEXT PRIMARY KEY,
    min_length          BIGINT NOT NULL,
    generated_length    BIGINT NOT NULL,
    require_lowercase   BIGINT NOT NULL,
    require_uppercase   BIGINT NOT NULL,
    require_digits      BIGINT NOT NULL,
    require_symbols     BIGINT NOT NULL,
    excluded_characters TEXT NOT NULL,
    history             BIGINT NOT NULL,   -- the last N passwords may not be reused
    max_age_days        BIGINT,            -- rotate when older (scheduler)
    builtin             BIGINT NOT NULL,
    created_at          TEXT NOT NULL
);

-- How a resource's passwords are reset: the administrative account that changes them, how it
-- gets root, the SSH host key pinned at first use, and the policy new passwords follow.
CREATE TABLE resource_reset_settings (
    resource_id      TEXT PRIMARY KEY REFERENCES resources(id),
    admin_account_id TEXT REFERENCES accounts(id),
    admin_kind       TEXT NOT NULL,        -- root | sudo
    ssh_host_key     TEXT,                 -- SHA256:… fingerprint, recorded at first use
    password_policy  TEXT NOT NULL REFERENCES password_policies(name),
    updated_at       TEXT NOT NULL
);

-- Keyed fingerprints of earlier passwords (HMAC under a key derived from the master key), so
-- reuse is refused without keeping any old plaintext or a hash that could be guessed offline.
CREATE TABLE password_history (
    account_id  TEXT NOT NULL REFERENCES accounts(id),
    fingerprint TEXT NOT NULL,
    created_at  TEXT NOT NULL
);
CREATE INDEX password_history_account ON password_history(account_id, created_at);

CREATE TABLE reset_jobs (
    id              TEXT PRIMARY KEY,
    kind            TEXT NOT NULL,         -- single | bulk
    trigger         TEXT NOT NULL,         -- manual | bulk | scheduled | api
    status          TEXT NOT NULL,         -- running | finished
    requested_by    TEXT NOT NULL,
    reason          TEXT NOT NULL,
    apply_remote    BIGINT NOT NULL,
    idempotency_key TEXT UNIQUE,           -- requester-scoped: "user\nkey"
    created_at      TEXT NOT NULL,
    finished_at     TEXT
);

-- One account's reset, journaled step by step (planned, pre-listeners, pending-written,
-- applied, verified, committed, post-listeners, done | vetoed | failed | out-of-sync).
CREATE TABLE reset_items (
    id                 TEXT PRIMARY KEY,
    job_id             TEXT NOT NULL REFERENCES reset_jobs(id),
    account_id         TEXT NOT NULL REFERENCES accounts(id),
    state              TEXT NOT NULL,
    attempts           BIGINT NOT NULL,
    detail             TEXT,               -- why it stopped (a veto, an error); never a secret
    -- A password given by the requester, sealed; NULL means "generate one".
    given_key_id       TEXT,
    given_nonce        BLOB,
    given_ciphertext   BLOB,
    -- The new password, sealed, written before the target is touched.
    pending_key_id     TEXT,
    pending_nonce      BLOB,
    pending_ciphertext BLOB,
    listeners          TEXT NOT NULL,      -- JSON: each listener's outcome and denials
    lease_owner        TEXT,
    lease_until        TEXT,
    created_at         TEXT NOT NULL,
    updated_at         TEXT NOT NULL
);
CREATE INDEX reset_items_job ON reset_items(job_id, id);
CREATE INDEX reset_items_state ON reset_items(state, lease_until);
