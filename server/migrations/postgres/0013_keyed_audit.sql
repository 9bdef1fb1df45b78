-- The keyed audit chain (postgres). Kept identical to ../sqlite/0013_keyed_audit.sql.
-- chain_version 1: hash = SHA-256 (events written before the chain was
-- keyed); 2: hash = HMAC-SHA-256 under a key derived from master key key_id. Rows written before
-- this migration are version 1; the first process that opens the store with a master key seals
-- them with a keyed event (`audit.chain.keyed`), and every later event is version 2.
ALTER TABLE audit_events ADD COLUMN chain_version BIGINT NOT NULL DEFAULT 1;
ALTER TABLE audit_events ADD COLUMN key_id TEXT;
