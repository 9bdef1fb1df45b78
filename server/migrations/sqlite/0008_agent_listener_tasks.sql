-- Agent-mode listener tasks (sqlite). Kept identical to ../postgres/0008_agent_listener_tasks.sql.
-- payload: what a listener task runs (JSON, no secret; its passwords are in the sealed columns).
-- result: the listener's report (outcome, message, denials, time).
ALTER TABLE agent_tasks ADD COLUMN payload TEXT;
ALTER TABLE agent_tasks ADD COLUMN result TEXT;
