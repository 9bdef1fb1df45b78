-- Sealed identities (postgres; kept in step with ../sqlite/0017_identity_seal.sql).
-- A user's identity seal covers everything the authorization decision and dual control read
-- about the user: name, role (and a custom role's privileges), custodians, live API tokens and
-- the pending activation code. The registry ledger pins each user's seal, so a row inserted,
-- edited or restored by a database writer without the master key is refused
-- (identity::seal). The process that applies this migration seals the users that exist.
ALTER TABLE users ADD COLUMN identity_seal TEXT;

-- Events by what they name: a change request's decision is looked up by its id before it is
-- decided again (registry::decision).
CREATE INDEX audit_events_target ON audit_events(target, seq);

-- A key-add request names the whole public key it asks to trust (sealed with the request),
-- not only its 64-bit id: approval trusts exactly that key (registry::decision).
ALTER TABLE change_requests ADD COLUMN public_key TEXT;
