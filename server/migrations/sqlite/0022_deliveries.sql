-- Post-reset deliveries (sqlite; kept in step with ../postgres/0022_deliveries.sql).
-- Every post-reset listener run of a committed reset is a row, worked under a lease by the
-- reset workers of any node: a run the listener answers `retry` (or that the host stopped, or
-- whose server died) is tried again after a growing, jittered pause, within the manifest's
-- [delivery] limits, then it is a dead letter for a person. The id is the delivery id the
-- listener sees on every attempt.
CREATE TABLE reset_deliveries (
    id              TEXT PRIMARY KEY,
    item_id         TEXT NOT NULL REFERENCES reset_items(id),
    job_id          TEXT NOT NULL REFERENCES reset_jobs(id),
    account_id      TEXT NOT NULL,
    listener        TEXT NOT NULL,          -- the listener's name
    version         TEXT NOT NULL,          -- the version the latest attempt ran
    position        BIGINT NOT NULL,        -- its place among the item's post-reset listeners
    state           TEXT NOT NULL,          -- pending | delivered | dead-letter | superseded
    attempts        BIGINT NOT NULL,        -- attempts started, a claim counting as one
    max_attempts    BIGINT NOT NULL,        -- no attempt starts past this count ...
    expires_at      TEXT NOT NULL,          -- ... or this time
    round_attempts  BIGINT NOT NULL,        -- the manifest's limits when it was written: what
    round_age_secs  BIGINT NOT NULL,        -- a person's re-run grants again
    next_attempt_at TEXT NOT NULL,
    outcome         TEXT,                   -- the latest attempt's answer
    message         TEXT,                   -- its message (redacted by the host); never a secret
    history         TEXT NOT NULL,          -- JSON: one record per attempt, bounded
    -- Keyed fingerprint (vault::mac) of the password the delivery is about: an attempt runs
    -- only while it is still the account's password, so a stale one is never delivered.
    fingerprint     TEXT NOT NULL,
    -- The passwords the listener is granted, sealed (AAD: delivery id and which); cleared once
    -- the delivery is delivered or superseded.
    old_key_id      TEXT,
    old_nonce       BLOB,
    old_ciphertext  BLOB,
    new_key_id      TEXT,
    new_nonce       BLOB,
    new_ciphertext  BLOB,
    lease_owner     TEXT,
    lease_until     TEXT,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL
);
CREATE UNIQUE INDEX reset_deliveries_item ON reset_deliveries(item_id, listener);
-- What a worker claims: due pending deliveries (store::deliveries::claim_due repeats the
-- condition word for word, so both engines use this partial index).
CREATE INDEX reset_deliveries_due ON reset_deliveries(next_attempt_at)
    WHERE state = 'pending';
-- Lists page by id within their filter (GET /v1/deliveries?state=|job_id=|account_id=); a
-- later reset supersedes an account's open deliveries through the account's.
CREATE INDEX reset_deliveries_state ON reset_deliveries(state, id);
CREATE INDEX reset_deliveries_job ON reset_deliveries(job_id, id);
CREATE INDEX reset_deliveries_account ON reset_deliveries(account_id, id);
