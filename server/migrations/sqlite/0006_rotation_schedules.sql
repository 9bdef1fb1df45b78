-- Rotation schedules: a group of accounts (a resource type, or some resources) rotated every N
-- hours by a bulk job the server starts itself.
CREATE TABLE rotation_schedules (
    name          TEXT PRIMARY KEY,
    resource_type TEXT,
    resource_ids  TEXT,                 -- JSON array; exactly one of the two selectors is set
    every_hours   BIGINT NOT NULL,
    next_run_at   TEXT NOT NULL,
    notify        TEXT,                 -- JSON array of user names
    created_by    TEXT NOT NULL,
    created_at    TEXT NOT NULL
);
