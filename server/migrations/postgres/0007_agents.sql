-- Agents (postgres). Kept column-for-column identical to ../sqlite/0007_agents.sql.

-- One-time enrollment tokens, stored only as SHA-256; an agent that enrolls uses one up.
CREATE TABLE agent_enrollment_tokens (
    id               TEXT PRIMARY KEY,
    token_sha256     TEXT NOT NULL UNIQUE,
    owner            TEXT NOT NULL,        -- user name that will own the agent's resource
    allowed_networks TEXT NOT NULL,        -- JSON array of CIDRs the agent may call from; [] = any
    created_by       TEXT NOT NULL,
    created_at       TEXT NOT NULL,
    expires_at       TEXT NOT NULL,
    used_at          TEXT,
    agent_id         TEXT
);

-- Enrolled agents. Only the agent's public key is kept: every request it makes is signed.
CREATE TABLE agents (
    id               TEXT PRIMARY KEY,
    hostname         TEXT NOT NULL,
    public_key       TEXT NOT NULL UNIQUE,
    owner            TEXT NOT NULL,
    allowed_networks TEXT NOT NULL,
    resource_id      TEXT REFERENCES resources(id),
    status           TEXT NOT NULL,        -- active | revoked
    version          TEXT NOT NULL,
    session          TEXT,                 -- the agent process that polled last
    last_seen_at     TEXT,
    last_address     TEXT,
    enrolled_at      TEXT NOT NULL,
    revoked_at       TEXT
);
CREATE INDEX agents_resource ON agents(resource_id);

-- Work for agents. A reset's task carries the new password sealed like every other secret.
CREATE TABLE agent_tasks (
    id                TEXT PRIMARY KEY,
    agent_id          TEXT NOT NULL REFERENCES agents(id),
    kind              TEXT NOT NULL,       -- reset | verify
    item_id           TEXT,                -- the reset item it serves
    account_id        TEXT,
    login_name        TEXT NOT NULL,
    requested_by      TEXT NOT NULL,
    secret_key_id     TEXT,
    secret_nonce      BYTEA,
    secret_ciphertext BYTEA,
    state             TEXT NOT NULL,       -- queued | running | succeeded | refused | failed | cancelled | lost
    attempts          BIGINT NOT NULL,
    lease_session     TEXT,
    lease_until       TEXT,
    message           TEXT,
    created_at        TEXT NOT NULL,
    started_at        TEXT,
    finished_at       TEXT
);
CREATE INDEX agent_tasks_agent ON agent_tasks(agent_id, state, id);
CREATE INDEX agent_tasks_item ON agent_tasks(item_id);
CREATE INDEX agent_tasks_requester ON agent_tasks(requested_by, id);
