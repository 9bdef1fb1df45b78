//! The attention queue's reads (`attention`): each kind of thing that waits for a person is one
//! query over rows the rest of the server already keeps, so the queue holds no state of its own
//! and cannot drift from what it reports. Each list is keyed and ordered by one column for
//! paging; each count repeats its list's conditions.

use sqlx::{AnyPool, FromRow};

use super::resets::count_kept_sql;
use crate::error::Result;

/// One entry of any kind; the columns a kind has no use for are NULL.
#[derive(Debug, Clone, FromRow)]
pub struct AttentionRow {
    /// The paging key within its kind (an account, checkout or delivery id).
    pub key: String,
    pub account_id: String,
    pub login_name: String,
    pub resource_id: String,
    /// Since when it has waited.
    pub since: String,
    pub detail: Option<String>,
    pub job_id: Option<String>,
    pub item_id: Option<String>,
    /// The checkout or delivery the entry is about.
    pub subject_id: Option<String>,
    /// The listener of a delivery, the holder of a checkout.
    pub party: Option<String>,
    /// Kept passwords (out-of-sync), ended resets (parked, vetoed), attempts (dead letter).
    pub count: i64,
    /// Out-of-sync: 1 when the server can log in as the account to resolve it (its type is
    /// reset over SSH and no agent manages its resource).
    pub resolvable: i64,
}

/// Accounts marked out-of-sync, with their latest out-of-sync reset since the password last
/// changed (none when an agent's verification marked them), how many passwords are kept for
/// them besides the stored one (those `store::resets::kept_passwords` offers), and whether
/// the server can resolve them.
pub async fn out_of_sync(pool: &AnyPool, after: &str, limit: i64) -> Result<Vec<AttentionRow>> {
    Ok(sqlx::query_as(concat!(
        "SELECT a.id AS key, a.id AS account_id, a.login_name, a.resource_id, \
         COALESCE(r.updated_at, a.updated_at) AS since, r.detail, r.job_id, r.id AS item_id, \
         NULL AS subject_id, NULL AS party, ",
        count_kept_sql!("a.id"),
        " AS count, CASE WHEN t.reset_method IN ('ssh', 'postgres', 'mysql', 'active-directory') AND NOT EXISTS (SELECT 1 FROM agents g \
         WHERE g.resource_id = a.resource_id) THEN 1 ELSE 0 END AS resolvable \
         FROM accounts a JOIN resources s ON s.id = a.resource_id \
         JOIN resource_types t ON t.name = s.resource_type \
         LEFT JOIN reset_items r ON r.id = (SELECT o.id FROM reset_items o \
         WHERE o.account_id = a.id AND o.state = 'out-of-sync' \
         AND o.updated_at >= a.password_changed_at \
         ORDER BY o.updated_at DESC, o.id DESC LIMIT 1) \
         WHERE a.password_sync_status = 'out-of-sync' AND a.id > $1 ORDER BY a.id LIMIT $2"
    ))
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

pub async fn count_out_of_sync(pool: &AnyPool) -> Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT COUNT(*) FROM accounts WHERE password_sync_status = 'out-of-sync'",
    )
    .fetch_one(pool)
    .await?)
}

/// The resets of each account that ended in `state` since its password last changed: `$1`
/// the state, `$2` how many an account must have more than.
macro_rules! ended_since_change {
    () => {
        "FROM reset_items i JOIN accounts b ON b.id = i.account_id \
         WHERE i.state = $1 AND i.updated_at > b.password_changed_at"
    };
}

/// Accounts with more than `more_than` resets that ended in `state` (parked, vetoed) since
/// their password last changed, with the latest such reset.
pub async fn ended_since_change(
    pool: &AnyPool,
    state: &str,
    more_than: i64,
    after: &str,
    limit: i64,
) -> Result<Vec<AttentionRow>> {
    Ok(sqlx::query_as(concat!(
        "SELECT g.account_id AS key, g.account_id, a.login_name, a.resource_id, g.since, \
         r.detail, r.job_id, r.id AS item_id, NULL AS subject_id, NULL AS party, g.n AS count, \
         CAST(0 AS BIGINT) AS resolvable \
         FROM (SELECT i.account_id, COUNT(*) AS n, MIN(i.updated_at) AS since, \
         (SELECT l.id FROM reset_items l WHERE l.account_id = i.account_id AND l.state = $1 \
         ORDER BY l.updated_at DESC, l.id DESC LIMIT 1) AS last_id ",
        ended_since_change!(),
        " AND i.account_id > $3 GROUP BY i.account_id HAVING COUNT(*) > $2 \
         ORDER BY i.account_id LIMIT $4) g \
         JOIN accounts a ON a.id = g.account_id JOIN reset_items r ON r.id = g.last_id \
         ORDER BY g.account_id"
    ))
    .bind(state)
    .bind(more_than)
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

pub async fn count_ended_since_change(pool: &AnyPool, state: &str, more_than: i64) -> Result<i64> {
    Ok(sqlx::query_scalar(concat!(
        "SELECT COUNT(*) FROM (SELECT i.account_id ",
        ended_since_change!(),
        " GROUP BY i.account_id HAVING COUNT(*) > $2) g"
    ))
    .bind(state)
    .bind(more_than)
    .fetch_one(pool)
    .await?)
}

/// Checkouts still held although their window ended before `$1` (the sweep ends windows
/// within seconds; one listed here is one it cannot end).
macro_rules! overdue {
    () => {
        "FROM checkouts c JOIN accounts a ON a.id = c.account_id \
         WHERE c.state = 'checked-out' AND c.ends_at < $1"
    };
}

pub async fn checkouts_overdue(
    pool: &AnyPool,
    ended_before: &str,
    after: &str,
    limit: i64,
) -> Result<Vec<AttentionRow>> {
    Ok(sqlx::query_as(concat!(
        "SELECT c.id AS key, c.account_id, a.login_name, a.resource_id, c.ends_at AS since, \
         c.reason AS detail, NULL AS job_id, NULL AS item_id, c.id AS subject_id, \
         c.requester AS party, CAST(0 AS BIGINT) AS count, CAST(0 AS BIGINT) AS resolvable ",
        overdue!(),
        " AND c.id > $2 ORDER BY c.id LIMIT $3"
    ))
    .bind(ended_before)
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

pub async fn count_checkouts_overdue(pool: &AnyPool, ended_before: &str) -> Result<i64> {
    Ok(sqlx::query_scalar(concat!("SELECT COUNT(*) ", overdue!()))
        .bind(ended_before)
        .fetch_one(pool)
        .await?)
}

/// Returned checkouts whose rotation job finished without its item done, and no reset since
/// the return changed the password on the target (the conditions `access::checkout`'s gate
/// keeps the account shut by: `store::resets::done_since`): the password the holder saw
/// still logs in.
macro_rules! unrotated {
    () => {
        "FROM checkouts c JOIN accounts a ON a.id = c.account_id \
         JOIN reset_jobs j ON j.id = c.reset_job_id \
         WHERE c.state = 'checked-in' AND c.rotate_on_checkin = 1 AND j.status = 'finished' \
         AND NOT EXISTS (SELECT 1 FROM reset_items r0 WHERE r0.job_id = c.reset_job_id \
         AND r0.account_id = c.account_id AND r0.state = 'done') \
         AND NOT EXISTS (SELECT 1 FROM reset_items d JOIN reset_jobs dj ON dj.id = d.job_id \
         WHERE d.account_id = c.account_id AND d.state = 'done' AND d.created_at >= c.ended_at \
         AND dj.apply_remote = 1)"
    };
}

pub async fn checkouts_unrotated(
    pool: &AnyPool,
    after: &str,
    limit: i64,
) -> Result<Vec<AttentionRow>> {
    Ok(sqlx::query_as(concat!(
        "SELECT c.id AS key, c.account_id, a.login_name, a.resource_id, c.ended_at AS since, \
         (SELECT r.detail FROM reset_items r WHERE r.job_id = c.reset_job_id \
         AND r.account_id = c.account_id ORDER BY r.id LIMIT 1) AS detail, \
         c.reset_job_id AS job_id, (SELECT r.id FROM reset_items r WHERE r.job_id = \
         c.reset_job_id AND r.account_id = c.account_id ORDER BY r.id LIMIT 1) AS item_id, \
         c.id AS subject_id, c.requester AS party, CAST(0 AS BIGINT) AS count, \
         CAST(0 AS BIGINT) AS resolvable ",
        unrotated!(),
        " AND c.id > $1 ORDER BY c.id LIMIT $2"
    ))
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

pub async fn count_checkouts_unrotated(pool: &AnyPool) -> Result<i64> {
    Ok(
        sqlx::query_scalar(concat!("SELECT COUNT(*) ", unrotated!()))
            .fetch_one(pool)
            .await?,
    )
}

/// Dead-lettered deliveries (the `(state, id)` index walks them in order).
pub async fn dead_letters(pool: &AnyPool, after: &str, limit: i64) -> Result<Vec<AttentionRow>> {
    Ok(sqlx::query_as(
        "SELECT d.id AS key, d.account_id, a.login_name, a.resource_id, d.updated_at AS since, \
         d.message AS detail, d.job_id, d.item_id, d.id AS subject_id, d.listener AS party, \
         d.attempts AS count, CAST(0 AS BIGINT) AS resolvable \
         FROM reset_deliveries d JOIN accounts a ON a.id = d.account_id \
         WHERE d.state = 'dead-letter' AND d.id > $1 ORDER BY d.id LIMIT $2",
    )
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await?)
}
