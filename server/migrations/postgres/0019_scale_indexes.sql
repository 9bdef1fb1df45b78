-- Indexes for 100,000 accounts and their reset history (postgres; kept in step with ../sqlite/0019_scale_indexes.sql).
-- Each filter of GET /v1/accounts and GET /v1/resources has an index that leads with its
-- column and ends with the id the pages are ordered by, so a page is a range scan at 100,000
-- accounts (docs/performance.md, "Inventory at scale").
CREATE INDEX accounts_login ON accounts(login_name, id);
CREATE INDEX accounts_sync ON accounts(password_sync_status, id);
CREATE INDEX accounts_resource ON accounts(resource_id, id);
CREATE INDEX resources_type ON resources(resource_type, id);
-- A reset gathers the passwords its target may hold from the account's earlier items
-- (store::resets::kept_passwords), and a deletion asks whether a job holds the account:
-- without this both read every reset item ever written.
CREATE INDEX reset_items_account ON reset_items(account_id, state);
-- The open reset items, in id order: what every claim reads (store::resets::claim, whose
-- statements repeat this condition word for word so both engines use it). Without it each
-- claim read past every finished item ever written: a 10,000-account job slowed as it went.
CREATE INDEX reset_items_open ON reset_items(id)
    WHERE state NOT IN ('done', 'vetoed', 'failed', 'out-of-sync', 'parked');
