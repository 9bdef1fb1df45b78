-- Who controls which user account (sqlite). Kept in step with ../postgres/0011_user_custody.sql.
-- A user's custodians are the users who could have held its credential: whoever created it,
-- issued it an activation code, or gave it its role, and transitively their custodians
-- (server/src/identity/custody.rs). An approval counts only when the approver's and the
-- requester's custodians are disjoint.
CREATE TABLE user_custody (
    user_name TEXT NOT NULL,
    custodian TEXT NOT NULL,
    PRIMARY KEY (user_name, custodian)
);
-- Every user is its own custodian; users created or given tokens through the API before this
-- migration also have the user who did it (one level: what the audit trail shows).
INSERT INTO user_custody (user_name, custodian) SELECT name, name FROM users;
INSERT INTO user_custody (user_name, custodian)
    SELECT DISTINCT u.name, substr(a.actor, 6) FROM audit_events a JOIN users u ON a.target = u.id
    WHERE a.action = 'user.create' AND a.actor LIKE 'user:%' AND substr(a.actor, 6) <> u.name
    ON CONFLICT DO NOTHING;
INSERT INTO user_custody (user_name, custodian)
    SELECT DISTINCT u.name, substr(a.actor, 6) FROM audit_events a JOIN users u ON json_extract(a.detail, '$.user_id') = u.id
    WHERE a.action = 'token.issue' AND a.actor LIKE 'user:%' AND substr(a.actor, 6) <> u.name
    ON CONFLICT DO NOTHING;
-- Custody is transitive (who controls a custodian controls its accounts): close the pairs,
-- each pass doubling the depth covered (five passes: chains of up to 32 accounts).
INSERT INTO user_custody (user_name, custodian)
    SELECT DISTINCT a.user_name, b.custodian FROM user_custody a
    JOIN user_custody b ON b.user_name = a.custodian WHERE b.custodian <> a.user_name
    ON CONFLICT DO NOTHING;
INSERT INTO user_custody (user_name, custodian)
    SELECT DISTINCT a.user_name, b.custodian FROM user_custody a
    JOIN user_custody b ON b.user_name = a.custodian WHERE b.custodian <> a.user_name
    ON CONFLICT DO NOTHING;
INSERT INTO user_custody (user_name, custodian)
    SELECT DISTINCT a.user_name, b.custodian FROM user_custody a
    JOIN user_custody b ON b.user_name = a.custodian WHERE b.custodian <> a.user_name
    ON CONFLICT DO NOTHING;
INSERT INTO user_custody (user_name, custodian)
    SELECT DISTINCT a.user_name, b.custodian FROM user_custody a
    JOIN user_custody b ON b.user_name = a.custodian WHERE b.custodian <> a.user_name
    ON CONFLICT DO NOTHING;
INSERT INTO user_custody (user_name, custodian)
    SELECT DISTINCT a.user_name, b.custodian FROM user_custody a
    JOIN user_custody b ON b.user_name = a.custodian WHERE b.custodian <> a.user_name
    ON CONFLICT DO NOTHING;
-- When the account's custody last changed (created, activation issued, role given): an
-- approval of a change requested before that does not count.
ALTER TABLE users ADD COLUMN custody_changed_at TEXT;
UPDATE users SET custody_changed_at = created_at;
-- One-time activation codes: a user's first credential (or a new one after a reset), as
-- SHA-256 of a 256-bit random code; spent by POST /v1/activate.
CREATE TABLE user_activations (
    user_id     TEXT PRIMARY KEY REFERENCES users(id),
    code_sha256 TEXT NOT NULL UNIQUE,
    issued_by   TEXT NOT NULL,
    expires_at  TEXT NOT NULL
);
