//! The reset journal: jobs, their per-account items (with leases), and password history.

use sqlx::{AnyConnection, AnyPool, FromRow};

use super::Backend;
use super::SealedColumns;
use crate::error::Result;
use crate::vault::Sealed;

#[derive(Debug, Clone, FromRow)]
pub struct JobRow {
    pub id: String,
    pub kind: String,
    pub trigger: String,
    pub status: String,
    pub requested_by: String,
    pub reason: String,
    pub apply_remote: i64,
    pub idempotency_key: Option<String>,
    pub created_at: String,
    pub finished_at: Option<String>,
    /// JSON array of user names told when the job finishes.
    pub notify: Option<String>,
}

macro_rules! job_columns {
    () => {
        "id, kind, trigger, status, requested_by, reason, apply_remote, idempotency_key, \
         created_at, finished_at, notify"
    };
}

/// An item without its sealed passwords.
#[derive(Debug, Clone, FromRow)]
pub struct ItemRow {
    pub id: String,
    pub job_id: String,
    pub account_id: String,
    pub state: String,
    pub attempts: i64,
    pub detail: Option<String>,
    pub listeners: String,
    pub lease_owner: Option<String>,
    pub lease_until: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    /// How often it was claimed: more than once means a take-over after a lease ran out.
    pub claims: i64,
    /// Lines of `time node state`, one per step written (bounded, see [`set_state`]).
    pub steps: String,
}

macro_rules! item_columns {
    () => {
        "id, job_id, account_id, state, attempts, detail, listeners, lease_owner, lease_until, \
         created_at, updated_at, claims, steps"
    };
}

/// The trail of steps stops growing at this length (an item retried for days).
const MAX_STEPS_TEXT: i64 = 4000;

pub async fn insert_job(conn: &mut AnyConnection, j: &JobRow) -> Result<(), super::Error> {
    sqlx::query(concat!(
        "INSERT INTO reset_jobs (",
        job_columns!(),
        ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
    ))
    .bind(&j.id)
    .bind(&j.kind)
    .bind(&j.trigger)
    .bind(&j.status)
    .bind(&j.requested_by)
    .bind(&j.reason)
    .bind(j.apply_remote)
    .bind(&j.idempotency_key)
    .bind(&j.created_at)
    .bind(&j.finished_at)
    .bind(&j.notify)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn get_job(pool: &AnyPool, id: &str) -> Result<Option<JobRow>> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        job_columns!(),
        " FROM reset_jobs WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await?)
}

pub async fn job_by_idempotency_key(pool: &AnyPool, key: &str) -> Result<Option<JobRow>> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        job_columns!(),
        " FROM reset_jobs WHERE idempotency_key = $1"
    ))
    .bind(key)
    .fetch_optional(pool)
    .await?)
}

/// Marks a job finished once none of its items is still in progress; true when this call did.
/// The inner condition repeats the partial index `reset_items_open_job` word for word (migration
/// 0020): every item that ends asks this, and without the index each asking read past the job's
/// finished items.
pub async fn finish_job_if_done(
    conn: &mut AnyConnection,
    job_id: &str,
    at: &str,
) -> Result<bool, super::Error> {
    let done = sqlx::query(
        "UPDATE reset_jobs SET status = 'finished', finished_at = $2 WHERE id = $1 \
         AND status = 'running' AND NOT EXISTS (SELECT 1 FROM reset_items WHERE job_id = $1 \
         AND state NOT IN ('done', 'vetoed', 'failed', 'out-of-sync', 'parked'))",
    )
    .bind(job_id)
    .bind(at)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// How many of a job's items are in each state.
pub async fn state_counts<'c>(
    db: impl sqlx::Executor<'c, Database = sqlx::Any>,
    job_id: &str,
) -> Result<Vec<(String, i64)>, super::Error> {
    sqlx::query_as(
        "SELECT state, COUNT(*) FROM reset_items WHERE job_id = $1 GROUP BY state ORDER BY state",
    )
    .bind(job_id)
    .fetch_all(db)
    .await
    .map_err(super::Error::from)
}

/// Accounts whose password is older than their resource's policy allows and that no job is
/// working on; admin accounts are left to their own resets. Oldest first, at most `limit`.
pub async fn due_for_rotation(pool: &AnyPool, now: &str, limit: i64) -> Result<Vec<String>> {
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT a.id, a.password_changed_at, p.max_age_days FROM accounts a \
         JOIN resource_reset_settings s ON s.resource_id = a.resource_id \
         JOIN password_policies p ON p.name = s.password_policy \
         WHERE p.max_age_days IS NOT NULL \
         AND a.id NOT IN (SELECT admin_account_id FROM resource_reset_settings \
         WHERE admin_account_id IS NOT NULL) \
         AND a.id NOT IN (SELECT account_id FROM reset_items WHERE state NOT IN \
         ('done', 'vetoed', 'failed', 'out-of-sync', 'parked')) \
         ORDER BY a.password_changed_at",
    )
    .fetch_all(pool)
    .await?;
    let now = chrono::DateTime::parse_from_rfc3339(now)
        .map_err(|e| crate::error::Error::Internal(format!("bad timestamp {now}: {e}")))?;
    Ok(rows
        .into_iter()
        .filter(|(_, changed, days)| {
            chrono::DateTime::parse_from_rfc3339(changed)
                .is_ok_and(|c| now - c > chrono::Duration::days(*days))
        })
        .map(|(id, _, _)| id)
        .take(usize::try_from(limit).unwrap_or(0))
        .collect())
}

/// Most rows per `INSERT` of [`insert_items`]: 16 values each stays far below both engines'
/// limits on bound values (SQLite 32,766; PostgreSQL 65,535). In practice
/// `super::STATEMENT_BYTES` makes it about 40.
const ITEMS_PER_INSERT: usize = 200;

/// Bytes one item binds (`super::batches`).
fn item_bytes((i, given): &(ItemRow, Option<Sealed>)) -> usize {
    let text = [
        &i.id,
        &i.job_id,
        &i.account_id,
        &i.state,
        &i.listeners,
        &i.created_at,
        &i.updated_at,
        &i.steps,
    ]
    .iter()
    .map(|s| s.len())
    .sum::<usize>();
    let optional = [&i.detail, &i.lease_owner, &i.lease_until]
        .iter()
        .map(|s| s.as_ref().map_or(0, String::len))
        .sum::<usize>();
    let sealed = given
        .as_ref()
        .map_or(0, |s| s.key_id.len() + s.nonce.len() + s.ciphertext.len());
    text + optional + sealed + 16 + 16 * super::VALUE_OVERHEAD
}

/// Inserts a job's items, each with the password given for it if any, a few dozen rows per
/// statement: a 10,000-account job is a few hundred statements, not 10,000 round trips.
pub async fn insert_items(
    conn: &mut AnyConnection,
    items: &[(ItemRow, Option<Sealed>)],
) -> Result<(), super::Error> {
    const VALUES: usize = 16;
    for chunk in super::batches(items, ITEMS_PER_INSERT, item_bytes) {
        // Fixed text and numbered placeholders only; every value is bound.
        let mut sql = String::from(concat!(
            "INSERT INTO reset_items (",
            item_columns!(),
            ", given_key_id, given_nonce, given_ciphertext) VALUES "
        ));
        for row in 0..chunk.len() {
            let first = row * VALUES + 1;
            let marks: Vec<String> = (first..first + VALUES).map(|n| format!("${n}")).collect();
            if row > 0 {
                sql.push_str(", ");
            }
            sql.push('(');
            sql.push_str(&marks.join(", "));
            sql.push(')');
        }
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (i, given) in chunk {
            query = query
                .bind(&i.id)
                .bind(&i.job_id)
                .bind(&i.account_id)
                .bind(&i.state)
                .bind(i.attempts)
                .bind(&i.detail)
                .bind(&i.listeners)
                .bind(&i.lease_owner)
                .bind(&i.lease_until)
                .bind(&i.created_at)
                .bind(&i.updated_at)
                .bind(i.claims)
                .bind(&i.steps)
                .bind(given.as_ref().map(|s| s.key_id.clone()))
                .bind(given.as_ref().map(|s| s.nonce.clone()))
                .bind(given.as_ref().map(|s| s.ciphertext.clone()));
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

pub async fn item(pool: &AnyPool, id: &str) -> Result<Option<ItemRow>> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        item_columns!(),
        " FROM reset_items WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await?)
}

pub async fn items_of(pool: &AnyPool, job_id: &str) -> Result<Vec<ItemRow>> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        item_columns!(),
        " FROM reset_items WHERE job_id = $1 ORDER BY id"
    ))
    .bind(job_id)
    .fetch_all(pool)
    .await?)
}

/// Claims one item for `owner` until `until`: a planned one, or one left in flight by a server
/// whose lease ran out (it is then reconciled). With `in_flight_only`, only items that may have
/// touched a target (past `pending-written`). PostgreSQL skips rows another server locked.
pub async fn claim(
    conn: &mut AnyConnection,
    backend: Backend,
    owner: &str,
    now: &str,
    until: &str,
    in_flight_only: bool,
) -> Result<Option<ItemRow>, super::Error> {
    // The first two repeat the condition of the partial index `reset_items_open` (migration
    // 0019) word for word, so both engines walk only the open items in id order: without it
    // each claim read past every finished item ever written. The in-flight ones search
    // `reset_items_state`.
    let pick = match (backend, in_flight_only) {
        (Backend::Postgres, false) => {
            "SELECT id FROM reset_items WHERE state NOT IN \
             ('done', 'vetoed', 'failed', 'out-of-sync', 'parked') \
             AND (lease_until IS NULL OR lease_until < $1) ORDER BY id LIMIT 1 \
             FOR UPDATE SKIP LOCKED"
        }
        (Backend::Sqlite, false) => {
            "SELECT id FROM reset_items WHERE state NOT IN \
             ('done', 'vetoed', 'failed', 'out-of-sync', 'parked') \
             AND (lease_until IS NULL OR lease_until < $1) ORDER BY id LIMIT 1"
        }
        (Backend::Postgres, true) => {
            "SELECT id FROM reset_items WHERE state IN ('pending-written', 'applied', \
             'verified', 'committed', 'post-listeners') \
             AND (lease_until IS NULL OR lease_until < $1) ORDER BY id LIMIT 1 \
             FOR UPDATE SKIP LOCKED"
        }
        (Backend::Sqlite, true) => {
            "SELECT id FROM reset_items WHERE state IN ('pending-written', 'applied', \
             'verified', 'committed', 'post-listeners') \
             AND (lease_until IS NULL OR lease_until < $1) ORDER BY id LIMIT 1"
        }
    };
    let id: Option<String> = sqlx::query_scalar(pick)
        .bind(now)
        .fetch_optional(&mut *conn)
        .await?;
    let Some(id) = id else { return Ok(None) };
    sqlx::query(
        "UPDATE reset_items SET lease_owner = $2, lease_until = $3, claims = claims + 1 \
         WHERE id = $1",
    )
    .bind(&id)
    .bind(owner)
    .bind(until)
    .execute(&mut *conn)
    .await?;
    sqlx::query_as(concat!(
        "SELECT ",
        item_columns!(),
        " FROM reset_items WHERE id = $1"
    ))
    .bind(&id)
    .fetch_optional(conn)
    .await
    .map_err(super::Error::from)
}

/// Extends a lease this owner holds; false when it lost it.
pub async fn renew_lease(
    pool: &AnyPool,
    id: &str,
    owner: &str,
    until: &str,
) -> Result<bool, super::Error> {
    let done =
        sqlx::query("UPDATE reset_items SET lease_until = $3 WHERE id = $1 AND lease_owner = $2")
            .bind(id)
            .bind(owner)
            .bind(until)
            .execute(pool)
            .await?;
    Ok(done.rows_affected() > 0)
}

/// The lease owner a claim writes, `NODE/CLAIM`: each claim is its own owner, so two workers
/// of one node are told apart, and the node that holds an item is read back from the prefix
/// ([`node_of_lease`]).
pub fn lease_owner(node: &str, claim: &str) -> String {
    format!("{node}/{claim}")
}

/// The node of a [`lease_owner`].
pub fn node_of_lease(owner: &str) -> &str {
    owner.split_once('/').map_or(owner, |(node, _)| node)
}

/// Moves an item to `state` (keeping its pending password), fenced by the claim that holds
/// it: false (and nothing written) when `lease` is no longer the item's lease owner.
#[allow(clippy::too_many_arguments)]
pub async fn set_state(
    conn: &mut AnyConnection,
    id: &str,
    lease: &str,
    state: &str,
    detail: Option<&str>,
    listeners: &str,
    attempts: i64,
    at: &str,
) -> Result<bool, super::Error> {
    let node = node_of_lease(lease);
    let done = sqlx::query(
        "UPDATE reset_items SET state = $2, detail = $3, listeners = $4, attempts = $5, \
         updated_at = $6, steps = CASE WHEN LENGTH(steps) < $9 THEN steps || $8 ELSE steps END \
         WHERE id = $1 AND lease_owner = $7",
    )
    .bind(id)
    .bind(state)
    .bind(detail)
    .bind(listeners)
    .bind(attempts)
    .bind(at)
    .bind(lease)
    .bind(format!("{at} {node} {state}\n"))
    .bind(MAX_STEPS_TEXT)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Whether `lease` still holds item `id`, locking the row until the transaction ends, so a
/// write that is not a step (the vault taking a recovered password, a kept password) is fenced
/// like one: a claim by another worker waits for this transaction, and this one sees it.
pub async fn holds(conn: &mut AnyConnection, id: &str, lease: &str) -> Result<bool, super::Error> {
    let done = sqlx::query(
        "UPDATE reset_items SET lease_owner = lease_owner WHERE id = $1 AND lease_owner = $2",
    )
    .bind(id)
    .bind(lease)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Releases an item's lease (it is finished, or will be picked up again).
pub async fn release(conn: &mut AnyConnection, id: &str) -> Result<(), super::Error> {
    sqlx::query("UPDATE reset_items SET lease_owner = NULL, lease_until = NULL WHERE id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Writes (or clears) the sealed pending password.
pub async fn set_pending(
    conn: &mut AnyConnection,
    id: &str,
    pending: Option<&Sealed>,
) -> Result<(), super::Error> {
    sqlx::query(
        "UPDATE reset_items SET pending_key_id = $2, pending_nonce = $3, \
         pending_ciphertext = $4 WHERE id = $1",
    )
    .bind(id)
    .bind(pending.map(|s| s.key_id.clone()))
    .bind(pending.map(|s| s.nonce.clone()))
    .bind(pending.map(|s| s.ciphertext.clone()))
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn pending(pool: &AnyPool, id: &str) -> Result<Option<Sealed>> {
    let row: Option<SealedColumns> = sqlx::query_as(
        "SELECT pending_key_id AS key_id, pending_nonce AS nonce, \
         pending_ciphertext AS ciphertext FROM reset_items WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?;
    Ok(row.and_then(SealedColumns::sealed))
}

/// The ended items whose pending password stays kept for their account (out-of-sync, or
/// failed after an interrupted command): what [`kept_passwords`] offers besides
/// `reset_kept_passwords`.
macro_rules! keeps_its_pending {
    () => {
        "state IN ('out-of-sync', 'failed') AND pending_ciphertext IS NOT NULL"
    };
}

/// How many passwords are kept for the account `$account` (a parameter, or a column of an
/// enclosing query), as one SQL expression: [`count_kept`] and the attention queue's count.
macro_rules! count_kept_sql {
    ($account:literal) => {
        concat!(
            "(SELECT COUNT(*) FROM reset_kept_passwords WHERE account_id = ",
            $account,
            ") + (SELECT COUNT(*) FROM reset_items WHERE account_id = ",
            $account,
            " AND ",
            $crate::store::resets::keeps_its_pending!(),
            ")"
        )
    };
}
pub(crate) use {count_kept_sql, keeps_its_pending};

/// A password the target might hold for an account, besides the stored and the new one.
#[derive(Debug, Clone)]
pub struct KeptPassword {
    /// The item whose pending AAD sealed it.
    pub item_id: String,
    /// Where it is kept: `Some(row id)` in `reset_kept_passwords`, `None` as the pending
    /// password of an ended item.
    pub kept_row: Option<String>,
    pub sealed: Sealed,
}

/// Passwords the target may hold for `account_id`, newest first, at most `limit`: those kept
/// for interrupted commands (any item, `except` included), and the pending passwords of ended
/// items other than `except` (out-of-sync, or failed after an interrupted command).
pub async fn kept_passwords(
    pool: &AnyPool,
    account_id: &str,
    except: &str,
    limit: i64,
) -> Result<Vec<KeptPassword>> {
    #[derive(sqlx::FromRow)]
    struct Row {
        item_id: String,
        kept_row: Option<String>,
        at: String,
        #[sqlx(flatten)]
        sealed: SealedColumns,
    }
    let mut rows: Vec<Row> = sqlx::query_as(
        "SELECT item_id, id AS kept_row, kept_at AS at, key_id, nonce, ciphertext \
         FROM reset_kept_passwords WHERE account_id = $1 ORDER BY kept_at DESC LIMIT $2",
    )
    .bind(account_id)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    let pending: Vec<Row> = sqlx::query_as(concat!(
        "SELECT id AS item_id, NULL AS kept_row, updated_at AS at, pending_key_id AS key_id, \
         pending_nonce AS nonce, pending_ciphertext AS ciphertext FROM reset_items \
         WHERE account_id = $1 AND id <> $2 AND ",
        keeps_its_pending!(),
        " ORDER BY updated_at DESC LIMIT $3"
    ))
    .bind(account_id)
    .bind(except)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.extend(pending);
    rows.sort_by(|a, b| b.at.cmp(&a.at));
    Ok(rows
        .into_iter()
        .take(usize::try_from(limit).unwrap_or(0))
        .filter_map(|r| {
            Some(KeptPassword {
                item_id: r.item_id,
                kept_row: r.kept_row,
                sealed: r.sealed.sealed()?,
            })
        })
        .collect())
}

/// Where a sealed password a reset keeps is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemSecretPlace {
    /// The password given with the request (`reset_items.given_*`).
    Given,
    /// The item's pending password (`reset_items.pending_*`).
    Pending,
    /// A row of `reset_kept_passwords`.
    Kept(String),
}

/// A sealed password a reset keeps, with the item and account it belongs to.
#[derive(Debug, Clone)]
pub struct ItemSecret {
    pub place: ItemSecretPlace,
    pub item_id: String,
    pub account_id: String,
    pub sealed: Sealed,
}

/// Every sealed password resets keep (given, pending, kept), for the upgrade that binds them
/// to their account (`reset::sealed_binding`).
pub async fn item_secrets(pool: &AnyPool) -> Result<Vec<ItemSecret>> {
    #[derive(sqlx::FromRow)]
    struct Row {
        kept_row: Option<String>,
        item_id: String,
        account_id: String,
        #[sqlx(flatten)]
        sealed: SealedColumns,
    }
    let given: Vec<Row> = sqlx::query_as(
        "SELECT NULL AS kept_row, id AS item_id, account_id, given_key_id AS key_id, \
         given_nonce AS nonce, given_ciphertext AS ciphertext FROM reset_items \
         WHERE given_ciphertext IS NOT NULL",
    )
    .fetch_all(pool)
    .await?;
    let pending: Vec<Row> = sqlx::query_as(
        "SELECT NULL AS kept_row, id AS item_id, account_id, pending_key_id AS key_id, \
         pending_nonce AS nonce, pending_ciphertext AS ciphertext FROM reset_items \
         WHERE pending_ciphertext IS NOT NULL",
    )
    .fetch_all(pool)
    .await?;
    let kept: Vec<Row> = sqlx::query_as(
        "SELECT id AS kept_row, item_id, account_id, key_id, nonce, ciphertext \
         FROM reset_kept_passwords",
    )
    .fetch_all(pool)
    .await?;
    let placed = given
        .into_iter()
        .map(|r| (ItemSecretPlace::Given, r))
        .chain(pending.into_iter().map(|r| (ItemSecretPlace::Pending, r)))
        .chain(kept.into_iter().map(|r| {
            let row = r.kept_row.clone().unwrap_or_default();
            (ItemSecretPlace::Kept(row), r)
        }));
    Ok(placed
        .filter_map(|(place, r)| {
            Some(ItemSecret {
                place,
                item_id: r.item_id,
                account_id: r.account_id,
                sealed: r.sealed.sealed()?,
            })
        })
        .collect())
}

/// Replaces the sealed value at `s`'s place with `sealed`, if it is still the one read.
pub async fn reseal_item_secret(
    conn: &mut AnyConnection,
    s: &ItemSecret,
    sealed: &Sealed,
) -> Result<bool, super::Error> {
    let sql = match &s.place {
        ItemSecretPlace::Given => {
            "UPDATE reset_items SET given_key_id = $2, given_nonce = $3, given_ciphertext = $4 \
             WHERE id = $1 AND given_nonce = $5"
        }
        ItemSecretPlace::Pending => {
            "UPDATE reset_items SET pending_key_id = $2, pending_nonce = $3, \
             pending_ciphertext = $4 WHERE id = $1 AND pending_nonce = $5"
        }
        ItemSecretPlace::Kept(_) => {
            "UPDATE reset_kept_passwords SET key_id = $2, nonce = $3, ciphertext = $4 \
             WHERE id = $1 AND nonce = $5"
        }
    };
    let id = match &s.place {
        ItemSecretPlace::Kept(row) => row.as_str(),
        _ => s.item_id.as_str(),
    };
    let done = sqlx::query(sql)
        .bind(id)
        .bind(&sealed.key_id)
        .bind(&sealed.nonce)
        .bind(&sealed.ciphertext)
        .bind(&s.sealed.nonce)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Keeps `sealed` (sealed with the item's pending AAD) as a password the target may still
/// take.
pub async fn keep_password(
    conn: &mut AnyConnection,
    item_id: &str,
    account_id: &str,
    sealed: &Sealed,
    at: &str,
) -> Result<(), super::Error> {
    sqlx::query(
        "INSERT INTO reset_kept_passwords (id, item_id, account_id, key_id, nonce, ciphertext, \
         kept_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(crate::time::new_id("kpt"))
    .bind(item_id)
    .bind(account_id)
    .bind(&sealed.key_id)
    .bind(&sealed.nonce)
    .bind(&sealed.ciphertext)
    .bind(at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Lets go of a kept password once the vault took it (or it was proven otherwise).
pub async fn drop_kept(conn: &mut AnyConnection, kept: &KeptPassword) -> Result<(), super::Error> {
    match &kept.kept_row {
        Some(row) => {
            sqlx::query("DELETE FROM reset_kept_passwords WHERE id = $1")
                .bind(row)
                .execute(conn)
                .await?;
        }
        None => set_pending(conn, &kept.item_id, None).await?,
    }
    Ok(())
}

pub async fn given(pool: &AnyPool, id: &str) -> Result<Option<Sealed>> {
    let row: Option<SealedColumns> = sqlx::query_as(
        "SELECT given_key_id AS key_id, given_nonce AS nonce, \
         given_ciphertext AS ciphertext FROM reset_items WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?;
    Ok(row.and_then(SealedColumns::sealed))
}

/// The given password is needed only until the pending one is written.
pub async fn clear_given(conn: &mut AnyConnection, id: &str) -> Result<(), super::Error> {
    sqlx::query(
        "UPDATE reset_items SET given_key_id = NULL, given_nonce = NULL, \
         given_ciphertext = NULL WHERE id = $1",
    )
    .bind(id)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn add_history(
    conn: &mut AnyConnection,
    account_id: &str,
    fingerprint: &str,
    at: &str,
) -> Result<(), super::Error> {
    sqlx::query(
        "INSERT INTO password_history (account_id, fingerprint, created_at) VALUES ($1, $2, $3)",
    )
    .bind(account_id)
    .bind(fingerprint)
    .bind(at)
    .execute(conn)
    .await?;
    Ok(())
}

/// The newest `n` fingerprints of an account's passwords.
pub async fn recent_history(pool: &AnyPool, account_id: &str, n: i64) -> Result<Vec<String>> {
    Ok(sqlx::query_scalar(
        "SELECT fingerprint FROM password_history WHERE account_id = $1 \
         ORDER BY created_at DESC LIMIT $2",
    )
    .bind(account_id)
    .bind(n)
    .fetch_all(pool)
    .await?)
}

/// Accounts a bulk reset selects: of one resource, else of one type (neither: none), never an
/// account that is some resource's admin account (those are reset on their own).
pub async fn bulk_candidates(
    pool: &AnyPool,
    resource_id: Option<&str>,
    resource_type: Option<&str>,
) -> Result<Vec<String>> {
    // One statement per selector, not `($1 = '' OR …)`: each searches its own index
    // (`accounts_resource`, `resources_type`) instead of joining every account.
    let query = match (resource_id, resource_type) {
        (Some(id), _) => sqlx::query_scalar(
            "SELECT a.id FROM accounts a WHERE a.resource_id = $1 \
             AND a.id NOT IN (SELECT admin_account_id FROM resource_reset_settings \
             WHERE admin_account_id IS NOT NULL) ORDER BY a.id",
        )
        .bind(id),
        (None, Some(t)) => sqlx::query_scalar(
            "SELECT a.id FROM accounts a JOIN resources r ON r.id = a.resource_id \
             WHERE r.resource_type = $1 \
             AND a.id NOT IN (SELECT admin_account_id FROM resource_reset_settings \
             WHERE admin_account_id IS NOT NULL) ORDER BY a.id",
        )
        .bind(t),
        (None, None) => return Ok(Vec::new()),
    };
    Ok(query.fetch_all(pool).await?)
}

/// Whether a job is working on the account now.
pub async fn account_busy(pool: &AnyPool, account_id: &str) -> Result<bool> {
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM reset_items WHERE account_id = $1 AND state NOT IN \
         ('done', 'vetoed', 'failed', 'out-of-sync', 'parked')",
    )
    .bind(account_id)
    .fetch_one(pool)
    .await?;
    Ok(n > 0)
}

/// Whether a job is working on the account now, or one of its resets moved at or after
/// `since` (what a person proved before then may be stale).
pub async fn account_moved_since(
    conn: &mut AnyConnection,
    account_id: &str,
    since: &str,
) -> Result<bool> {
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM reset_items WHERE account_id = $1 AND (updated_at >= $2 \
         OR state NOT IN ('done', 'vetoed', 'failed', 'out-of-sync', 'parked'))",
    )
    .bind(account_id)
    .bind(since)
    .fetch_one(conn)
    .await?;
    Ok(n > 0)
}

/// How many passwords are kept for `account_id` (what [`kept_passwords`] would offer with no
/// limit).
pub async fn count_kept(pool: &AnyPool, account_id: &str) -> Result<i64> {
    Ok(
        sqlx::query_scalar(concat!("SELECT ", count_kept_sql!("$1")))
            .bind(account_id)
            .fetch_one(pool)
            .await?,
    )
}

/// Whether a reset of the account that was started at or after `since` ended done on its
/// target (a vault-only `apply_remote: false` job changed nothing a holder could still use).
pub async fn done_since(pool: &AnyPool, account_id: &str, since: &str) -> Result<bool> {
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM reset_items i JOIN reset_jobs j ON j.id = i.job_id \
         WHERE i.account_id = $1 AND i.state = 'done' AND i.created_at >= $2 \
         AND j.apply_remote = 1",
    )
    .bind(account_id)
    .bind(since)
    .fetch_one(pool)
    .await?;
    Ok(n > 0)
}

/// Forgets an account's finished reset items, their post-reset deliveries (and the passwords
/// they keep) and its password history (before the account is deleted; the audit trail keeps
/// what happened).
pub async fn forget_account(
    conn: &mut AnyConnection,
    account_id: &str,
) -> Result<(), super::Error> {
    sqlx::query("DELETE FROM reset_deliveries WHERE account_id = $1")
        .bind(account_id)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM reset_kept_passwords WHERE account_id = $1")
        .bind(account_id)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM reset_items WHERE account_id = $1")
        .bind(account_id)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM password_history WHERE account_id = $1")
        .bind(account_id)
        .execute(conn)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_names_its_node() {
        let owner = lease_owner("srv_0192a", "lease_0192b");
        assert_eq!(owner, "srv_0192a/lease_0192b");
        assert_eq!(node_of_lease(&owner), "srv_0192a");
        assert_eq!(node_of_lease("reconcile_01/lease_02"), "reconcile_01");
        assert_eq!(node_of_lease("no-slash"), "no-slash");
    }
}
