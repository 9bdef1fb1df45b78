-- Access control (postgres; kept in step with ../sqlite/0021_checkouts.sql): who may check out an
-- account's password, for how long, with whose approval (docs/access-control.md).

-- One policy per scope: an account, a resource (all of its accounts), or a resource type (all
-- of its resources). The narrowest scope that has one decides; none: no access control.
CREATE TABLE access_policies (
    scope_kind        TEXT NOT NULL,        -- account | resource | resource-type
    scope_id          TEXT NOT NULL,
    enabled           BIGINT NOT NULL,      -- 0: retrieval as without a policy (an override)
    requesters        TEXT NOT NULL,        -- JSON array of user names; empty: anyone allowed to retrieve
    approvers         TEXT NOT NULL,        -- JSON array of user names
    approvals_needed  BIGINT NOT NULL,      -- 0: granted on request
    max_minutes       BIGINT NOT NULL,
    answer_minutes    BIGINT NOT NULL,      -- a request unanswered this long lapses
    exclusive         BIGINT NOT NULL,
    rotate_on_checkin BIGINT NOT NULL,
    auto_approve      TEXT NOT NULL,        -- JSON array of {days, from, to} (UTC): granted without approval
    updated_by        TEXT NOT NULL,
    updated_at        TEXT NOT NULL,
    seal              TEXT NOT NULL,        -- Vault::attest over the policy, pinned in the registry ledger
    PRIMARY KEY (scope_kind, scope_id)
);

-- A checkout: requested, answered, held for a window, returned; what it was granted under is
-- copied from the policy at request time, so a later policy change does not move it.
CREATE TABLE checkouts (
    id                TEXT PRIMARY KEY,
    account_id        TEXT NOT NULL,
    requester         TEXT NOT NULL,
    reason            TEXT NOT NULL,
    minutes           BIGINT NOT NULL,      -- the window asked for, within the policy's maximum
    state             TEXT NOT NULL,        -- states::CheckoutState
    approvers         TEXT NOT NULL,        -- JSON array, from the policy
    approvals_needed  BIGINT NOT NULL,
    approvals         TEXT NOT NULL,        -- JSON array of {user, at}
    request_seal      TEXT NOT NULL,        -- Vault::attest over what was asked, under which terms
    approvals_seal    TEXT NOT NULL,        -- Vault::attest over the approvals counted so far
    exclusive         BIGINT NOT NULL,
    rotate_on_checkin BIGINT NOT NULL,
    requested_at      TEXT NOT NULL,
    answer_by         TEXT NOT NULL,
    answered_by       TEXT,                 -- who rejected it, or gave the last approval
    starts_at         TEXT,
    ends_at           TEXT,
    grant_seal        TEXT,                 -- Vault::attest over what the window grants
    ended_at          TEXT,
    ended_by          TEXT,
    end_kind          TEXT,                 -- states::CheckinKind
    reset_job_id      TEXT,                 -- the rotation the return started
    updated_at        TEXT NOT NULL
);
CREATE INDEX checkouts_account ON checkouts(account_id, id);
CREATE INDEX checkouts_returned ON checkouts(account_id, ended_at)
    WHERE state = 'checked-in' AND rotate_on_checkin = 1;
CREATE INDEX checkouts_requester ON checkouts(requester, id);
-- At most one exclusive holder per account, whatever two nodes decide at once.
CREATE UNIQUE INDEX checkouts_one_holder ON checkouts(account_id)
    WHERE state = 'checked-out' AND exclusive = 1;
-- What the expiry sweep reads: open requests and open windows, by deadline; and returns whose
-- rotation has not been started yet.
CREATE INDEX checkouts_open ON checkouts(state, answer_by, ends_at)
    WHERE state IN ('requested', 'checked-out');
CREATE INDEX checkouts_unrotated ON checkouts(id)
    WHERE state = 'checked-in' AND rotate_on_checkin = 1 AND reset_job_id IS NULL;
