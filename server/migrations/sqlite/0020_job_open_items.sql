-- A job's open items (sqlite; kept in step with ../postgres/0020_job_open_items.sql).
-- Every item that reaches a final state asks whether its job has any open item left
-- (store::resets::finish_job_if_done, whose statement repeats this condition word for word so
-- both engines use it). Through reset_items_job that question read past every finished item
-- of the job first, since items finish in about the order they were written: a 10,000-item
-- job spent O(n^2) row reads on it (12.7 s of CPU in SQLite alone), and grew slower per item
-- the larger it was (docs/performance.md, "Inventory at scale").
CREATE INDEX reset_items_open_job ON reset_items(job_id)
    WHERE state NOT IN ('done', 'vetoed', 'failed', 'out-of-sync', 'parked');
