-- Agent-mode post-reset deliveries (postgres; kept in step with ../sqlite/0023_agent_deliveries.sql).
-- A post-reset listener associated in agent mode is a delivery too, each attempt a task for
-- the resource's agent. `mode` says where its attempts run (the association's mode:
-- `agentless` on a server, `agent` on the resource's agent); one listener associated in both
-- modes gets one delivery in each.
ALTER TABLE reset_deliveries ADD COLUMN mode TEXT NOT NULL DEFAULT 'agentless';
DROP INDEX reset_deliveries_item;
CREATE UNIQUE INDEX reset_deliveries_item ON reset_deliveries(item_id, listener, mode);
