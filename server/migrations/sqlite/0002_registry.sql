-- Listener registry (SQLite). Kept column-for-column identical to ../postgres/0002_registry.sql.
-- Nothing here is trusted on its own: approvals and key trust carry seals made with the master
-- key (which never enters the database), checked before every listener run.

CREATE TABLE publisher_keys (
    key_id      TEXT PRIMARY KEY,       -- first 8 bytes of SHA-256(public key), hex
    name        TEXT NOT NULL,
    public_key  TEXT NOT NULL,          -- 32 bytes, hex
    status      TEXT NOT NULL,          -- pending | trusted | removed | rejected
    trust_seal  TEXT,                   -- vault attestation of (key_id, public_key) while trusted
    created_by  TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);

CREATE TABLE listeners (
    id                 TEXT PRIMARY KEY,
    name               TEXT NOT NULL UNIQUE,
    status             TEXT NOT NULL,   -- pending (never approved) | active | deleted | rejected
    current_version_id TEXT,            -- the approved version, NULL until the first approval
    association        TEXT,            -- approved association, canonical JSON
    position           BIGINT,          -- approved association's order (for sorting in SQL)
    approval_seal      TEXT,            -- vault attestation of the approved binding
    approved_by        TEXT,
    approved_at        TEXT,
    alert              TEXT,            -- why the last integrity check refused it
    alert_at           TEXT,
    created_at         TEXT NOT NULL,
    updated_at         TEXT NOT NULL
);

-- The approved association's resource types, for the reports and the run plan.
CREATE TABLE listener_resource_types (
    listener_id   TEXT NOT NULL REFERENCES listeners(id),
    resource_type TEXT NOT NULL,
    PRIMARY KEY (listener_id, resource_type)
);
CREATE INDEX listener_resource_types_type ON listener_resource_types(resource_type);

CREATE TABLE listener_versions (
    id               TEXT PRIMARY KEY,
    listener_id      TEXT NOT NULL REFERENCES listeners(id),
    version          TEXT NOT NULL,
    component        BLOB NOT NULL,
    component_sha256 TEXT NOT NULL,
    manifest         TEXT NOT NULL,     -- as uploaded
    manifest_sha256  TEXT NOT NULL,     -- SHA-256 of the canonical manifest
    signature        TEXT NOT NULL,     -- JSON, as made by `lockstep listener sign`
    key_id           TEXT NOT NULL,
    uploaded_by      TEXT NOT NULL,
    created_at       TEXT NOT NULL,
    UNIQUE (listener_id, version)
);

CREATE TABLE change_requests (
    id               TEXT PRIMARY KEY,
    kind             TEXT NOT NULL,     -- listener-add | listener-edit | listener-delete | key-add | key-remove
    status           TEXT NOT NULL,     -- pending | approved | rejected | withdrawn
    subject          TEXT NOT NULL,     -- listener name or key id: one pending change per subject
    listener_id      TEXT,
    version_id       TEXT,
    version          TEXT,              -- the listener version, for display
    key_id           TEXT,
    component_sha256 TEXT,
    manifest_sha256  TEXT,
    association      TEXT,              -- canonical JSON
    requested_by     TEXT NOT NULL,     -- user names
    approver         TEXT NOT NULL,
    request_comment  TEXT,
    decided_by       TEXT,
    decision_comment TEXT,
    decided_at       TEXT,
    created_at       TEXT NOT NULL
);
CREATE INDEX change_requests_subject ON change_requests(subject, status);
CREATE INDEX change_requests_status ON change_requests(status);

CREATE TABLE notifications (
    id                TEXT PRIMARY KEY,
    user_name         TEXT NOT NULL,
    at                TEXT NOT NULL,
    kind              TEXT NOT NULL,
    message           TEXT NOT NULL,
    change_request_id TEXT,
    read_at           TEXT
);
CREATE INDEX notifications_user ON notifications(user_name, id);
