-- Nonces of signed agent requests (sqlite). Kept identical to ../postgres/0009_agent_nonces.sql.
-- A signed request is accepted once: its nonce is kept until the request's time window has
-- passed (then its signature no longer verifies anyway), and a repeat is refused as a replay.
CREATE TABLE agent_nonces (
    agent_id   TEXT NOT NULL,
    nonce      TEXT NOT NULL,
    keep_until BIGINT NOT NULL,            -- unix seconds
    PRIMARY KEY (agent_id, nonce)
);
CREATE INDEX agent_nonces_keep_until ON agent_nonces (keep_until);
