-- The registry ledger (postgres; kept in step with ../sqlite/0016_registry_ledger.sql).
-- One row: the generation of the registry and the list of every sealed thing approved now
-- (each listener's approval seal and reach, each trusted publisher key's trust seal, each
-- resource type's reset-command seal), sealed with the master key over both. Every approved
-- change replaces its one entry and raises the generation in the same transaction, and appends
-- a 'registry.generation' audit event naming it; each use compares the stored row with its
-- entry and the ledger with the audit trail. So a row restored from a backup with its old,
-- valid seal, a deleted guard, or the ledger itself rolled back is refused. Existing
-- deployments are pinned at the first start after this migration (generation 1, from the
-- rows whose seals verify); an empty registry needs no row (generation 0).
CREATE TABLE registry_ledger (
    id          BIGINT PRIMARY KEY CHECK (id = 1),
    generation  BIGINT NOT NULL,
    entries     TEXT NOT NULL,      -- JSON, sorted by kind and subject
    seal        TEXT NOT NULL,      -- Vault::attest over the generation and the entries
    updated_at  TEXT NOT NULL
);
-- The newest 'registry.generation' event is read before every use of the registry.
CREATE INDEX audit_events_action ON audit_events(action, seq);
