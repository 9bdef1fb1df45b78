-- Several nodes on one database (postgres; kept in step with ../sqlite/0018_cluster.sql).
-- Each `lockstep serve` registers as a node and beats (cluster::node).
CREATE TABLE cluster_nodes (
    id TEXT PRIMARY KEY,
    address TEXT NOT NULL,
    version TEXT NOT NULL,
    started_at TEXT NOT NULL,
    heartbeat_at TEXT NOT NULL,
    stopped_at TEXT,
    -- How far the database's clock was ahead of the node's at its last beat (cluster::clock).
    clock_offset_ms BIGINT NOT NULL DEFAULT 0
);

-- Work that runs on one node at a time, by lease; every take-over raises the fence
-- (cluster::duty).
CREATE TABLE cluster_duties (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    lease_until TEXT NOT NULL,
    fence BIGINT NOT NULL
);

-- How often an item was claimed (a second claim is a take-over after a lease ran out), and
-- which node wrote each of its steps: lines of "time node state" (reset::pipeline).
ALTER TABLE reset_items ADD COLUMN claims BIGINT NOT NULL DEFAULT 0;
ALTER TABLE reset_items ADD COLUMN steps TEXT NOT NULL DEFAULT '';
