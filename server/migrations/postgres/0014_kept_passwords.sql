-- Passwords a target might still take (postgres; kept in step with ../sqlite/0014_kept_passwords.sql).
-- When an item's pending password is replaced or its item restarted while a command that
-- carried it may still be running on the target (cut off, timed out, a server that died), the
-- password is sealed here (AAD: the item's pending AAD) instead of being discarded. When a
-- target accepts neither the stored nor the new password, these are tried; one that logs in
-- becomes the stored password and its row goes.
CREATE TABLE reset_kept_passwords (
    id          TEXT PRIMARY KEY,
    item_id     TEXT NOT NULL REFERENCES reset_items(id) ON DELETE CASCADE,
    account_id  TEXT NOT NULL,
    key_id      TEXT NOT NULL,
    nonce       BYTEA NOT NULL,
    ciphertext  BYTEA NOT NULL,
    kept_at     TEXT NOT NULL
);
CREATE INDEX reset_kept_passwords_account ON reset_kept_passwords(account_id, kept_at);
