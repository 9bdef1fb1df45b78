//! Post-reset deliveries (`reset::delivery`): one row per post-reset listener run of a
//! committed reset, its attempts, its lease and the passwords its listener is granted, sealed.

use sqlx::{AnyConnection, AnyPool, FromRow};

use super::SealedColumns;
use crate::error::Result;
use crate::vault::Sealed;

/// A delivery without its sealed passwords.
#[derive(Debug, Clone, FromRow)]
pub struct DeliveryRow {
    pub id: String,
    pub item_id: String,
    pub job_id: String,
    pub account_id: String,
    pub listener: String,
    pub version: String,
    pub position: i64,
    pub state: String,
    pub attempts: i64,
    pub max_attempts: i64,
    pub expires_at: String,
    /// The manifest's `max_attempts` and `max_age_secs` when it was written: a re-run by a
    /// person grants them again.
    pub round_attempts: i64,
    pub round_age_secs: i64,
    pub next_attempt_at: String,
    pub outcome: Option<String>,
    pub message: Option<String>,
    /// JSON array: one record per attempt.
    pub history: String,
    /// Keyed fingerprint of the password this delivery is about.
    pub fingerprint: String,
    pub lease_owner: Option<String>,
    pub lease_until: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    /// Where its attempts run: `inventory::resource_types::ExecutionMode` (`agentless` on a
    /// server, `agent` on the resource's agent).
    pub mode: String,
}

macro_rules! columns {
    () => {
        "id, item_id, job_id, account_id, listener, version, position, state, attempts, \
         max_attempts, expires_at, round_attempts, round_age_secs, next_attempt_at, outcome, \
         message, history, fingerprint, lease_owner, lease_until, created_at, updated_at, mode"
    };
}

/// A new delivery and the passwords its listener is granted, sealed.
pub struct NewDelivery<'a> {
    pub row: &'a DeliveryRow,
    pub old: Option<Sealed>,
    pub new: Option<Sealed>,
}

/// Writes the deliveries of an item's post-reset listeners. A delivery already written for the
/// same item, listener and mode (an item whose post phase is run again after a crash) is kept as it
/// is: its attempts so far count.
pub async fn insert(conn: &mut AnyConnection, d: NewDelivery<'_>) -> Result<(), super::Error> {
    let r = d.row;
    let part = |s: &Option<Sealed>| {
        s.as_ref()
            .map(|s| (s.key_id.clone(), s.nonce.clone(), s.ciphertext.clone()))
    };
    let (ok, on, oc) =
        part(&d.old).map_or((None, None, None), |(k, n, c)| (Some(k), Some(n), Some(c)));
    let (nk, nn, nc) =
        part(&d.new).map_or((None, None, None), |(k, n, c)| (Some(k), Some(n), Some(c)));
    sqlx::query(concat!(
        "INSERT INTO reset_deliveries (",
        columns!(),
        ", old_key_id, old_nonce, old_ciphertext, new_key_id, new_nonce, new_ciphertext) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, \
         $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28, $29) \
         ON CONFLICT (item_id, listener, mode) DO NOTHING"
    ))
    .bind(&r.id)
    .bind(&r.item_id)
    .bind(&r.job_id)
    .bind(&r.account_id)
    .bind(&r.listener)
    .bind(&r.version)
    .bind(r.position)
    .bind(&r.state)
    .bind(r.attempts)
    .bind(r.max_attempts)
    .bind(&r.expires_at)
    .bind(r.round_attempts)
    .bind(r.round_age_secs)
    .bind(&r.next_attempt_at)
    .bind(&r.outcome)
    .bind(&r.message)
    .bind(&r.history)
    .bind(&r.fingerprint)
    .bind(&r.lease_owner)
    .bind(&r.lease_until)
    .bind(&r.created_at)
    .bind(&r.updated_at)
    .bind(&r.mode)
    .bind(ok)
    .bind(on)
    .bind(oc)
    .bind(nk)
    .bind(nn)
    .bind(nc)
    .execute(conn)
    .await?;
    Ok(())
}

/// Marks the open deliveries (pending or dead letters, no attempt running) of `account_id`'s
/// listener `listener` that are about another password than `fingerprint` superseded, and
/// forgets their passwords: the account's password changed since, and the delivery about
/// the current one carries the news. (An attempt running now is left to end; the next one
/// finds it stale, `Engine::attempt`.) Returns the ids it superseded.
pub async fn supersede(
    conn: &mut AnyConnection,
    account_id: &str,
    listener: &str,
    fingerprint: &str,
    at: &str,
) -> Result<Vec<String>, super::Error> {
    Ok(sqlx::query_scalar(
        "UPDATE reset_deliveries SET state = 'superseded', message = $4, updated_at = $5, \
         old_key_id = NULL, old_nonce = NULL, old_ciphertext = NULL, \
         new_key_id = NULL, new_nonce = NULL, new_ciphertext = NULL \
         WHERE account_id = $1 AND listener = $2 AND fingerprint <> $3 \
         AND state IN ('pending', 'dead-letter') AND (lease_until IS NULL OR lease_until < $5) \
         RETURNING id",
    )
    .bind(account_id)
    .bind(listener)
    .bind(fingerprint)
    .bind(SUPERSEDED)
    .bind(at)
    .fetch_all(conn)
    .await?)
}

/// What a superseded delivery says.
pub const SUPERSEDED: &str = "superseded: the account's password changed since; the delivery about the current one \
     carries the news";

/// One due pending delivery's id (its next attempt's time has come and no live lease holds
/// it), earliest first.
pub async fn due(pool: &AnyPool, now: &str) -> Result<Option<String>, super::Error> {
    // The first condition repeats the partial index `reset_deliveries_due` (migration 0022)
    // word for word, so both engines walk only the pending deliveries.
    Ok(sqlx::query_scalar(
        "SELECT id FROM reset_deliveries WHERE state = 'pending' AND next_attempt_at <= $1 \
         AND (lease_until IS NULL OR lease_until < $1) ORDER BY next_attempt_at, id LIMIT 1",
    )
    .bind(now)
    .fetch_optional(pool)
    .await?)
}

/// Claims pending delivery `id` for one attempt, counting it: `None` when it is not pending,
/// a live lease holds it (another worker took it first), its next attempt is not due yet (a
/// worker that found it due before another ran that attempt and scheduled the next), or its
/// limits are used up (attempts that were never recorded: [`give_up`] ends it). A first
/// attempt (none counted yet) is the post phase's to run in order, due or not.
pub async fn claim(
    pool: &AnyPool,
    id: &str,
    owner: &str,
    now: &str,
    until: &str,
) -> Result<Option<DeliveryRow>, super::Error> {
    let done = sqlx::query(
        "UPDATE reset_deliveries SET lease_owner = $2, lease_until = $4, \
         attempts = attempts + 1, updated_at = $3 \
         WHERE id = $1 AND state = 'pending' AND (lease_until IS NULL OR lease_until < $3) \
         AND (attempts = 0 OR next_attempt_at <= $3) \
         AND attempts < max_attempts AND expires_at > $3",
    )
    .bind(id)
    .bind(owner)
    .bind(now)
    .bind(until)
    .execute(pool)
    .await?;
    if done.rows_affected() != 1 {
        return Ok(None);
    }
    let row = get(pool, id).await?;
    Ok(row.filter(|r| r.lease_owner.as_deref() == Some(owner)))
}

/// A pending delivery with no live claim whose limits are used up (its last attempts were
/// never recorded: a server died, a claim ran out) becomes a dead letter, with `message`.
/// True when this call ended it.
pub async fn give_up(
    conn: &mut AnyConnection,
    id: &str,
    message: &str,
    now: &str,
) -> Result<bool, super::Error> {
    let done = sqlx::query(
        "UPDATE reset_deliveries SET state = 'dead-letter', outcome = 'interrupted', \
         message = $2, updated_at = $3 WHERE id = $1 AND state = 'pending' \
         AND (lease_until IS NULL OR lease_until < $3) \
         AND (attempts >= max_attempts OR expires_at <= $3)",
    )
    .bind(id)
    .bind(message)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Extends the claim `owner` holds on delivery `id` to `until`: false when it holds it no more.
pub async fn renew(
    pool: &AnyPool,
    id: &str,
    owner: &str,
    until: &str,
) -> Result<bool, super::Error> {
    let done = sqlx::query(
        "UPDATE reset_deliveries SET lease_until = $3 WHERE id = $1 AND lease_owner = $2",
    )
    .bind(id)
    .bind(owner)
    .bind(until)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn get(pool: &AnyPool, id: &str) -> Result<Option<DeliveryRow>, super::Error> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM reset_deliveries WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await?)
}

/// An item's deliveries, in their listeners' order.
pub async fn of_item(pool: &AnyPool, item_id: &str) -> Result<Vec<DeliveryRow>, super::Error> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM reset_deliveries WHERE item_id = $1 ORDER BY position"
    ))
    .bind(item_id)
    .fetch_all(pool)
    .await?)
}

/// The sealed (old, new) passwords of delivery `id`, where it keeps them.
pub async fn sealed(
    pool: &AnyPool,
    id: &str,
) -> Result<(Option<Sealed>, Option<Sealed>), super::Error> {
    #[derive(FromRow)]
    struct Row {
        old_key_id: Option<String>,
        old_nonce: Option<Vec<u8>>,
        old_ciphertext: Option<Vec<u8>>,
        new_key_id: Option<String>,
        new_nonce: Option<Vec<u8>>,
        new_ciphertext: Option<Vec<u8>>,
    }
    let row: Option<Row> = sqlx::query_as(
        "SELECT old_key_id, old_nonce, old_ciphertext, new_key_id, new_nonce, new_ciphertext \
         FROM reset_deliveries WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?;
    Ok(row.map_or((None, None), |r| {
        let old = SealedColumns {
            key_id: r.old_key_id,
            nonce: r.old_nonce,
            ciphertext: r.old_ciphertext,
        };
        let new = SealedColumns {
            key_id: r.new_key_id,
            nonce: r.new_nonce,
            ciphertext: r.new_ciphertext,
        };
        (old.sealed(), new.sealed())
    }))
}

/// The end of one attempt, fenced by the claim that ran it: false (and nothing written) when
/// `lease` no longer holds the delivery. `forget` clears the sealed passwords (a delivery that
/// is over for good).
pub struct AttemptEnd<'a> {
    pub state: &'a str,
    pub version: &'a str,
    pub outcome: &'a str,
    pub message: &'a str,
    pub history: &'a str,
    pub next_attempt_at: &'a str,
    pub forget: bool,
    pub at: &'a str,
}

pub async fn end_attempt(
    conn: &mut AnyConnection,
    id: &str,
    lease: &str,
    e: &AttemptEnd<'_>,
) -> Result<bool, super::Error> {
    let done = sqlx::query(
        "UPDATE reset_deliveries SET state = $3, version = $4, outcome = $5, message = $6, \
         history = $7, next_attempt_at = $8, updated_at = $9, lease_owner = NULL, \
         lease_until = NULL, \
         old_key_id = CASE WHEN $10 THEN NULL ELSE old_key_id END, \
         old_nonce = CASE WHEN $10 THEN NULL ELSE old_nonce END, \
         old_ciphertext = CASE WHEN $10 THEN NULL ELSE old_ciphertext END, \
         new_key_id = CASE WHEN $10 THEN NULL ELSE new_key_id END, \
         new_nonce = CASE WHEN $10 THEN NULL ELSE new_nonce END, \
         new_ciphertext = CASE WHEN $10 THEN NULL ELSE new_ciphertext END \
         WHERE id = $1 AND lease_owner = $2",
    )
    .bind(id)
    .bind(lease)
    .bind(e.state)
    .bind(e.version)
    .bind(e.outcome)
    .bind(e.message)
    .bind(e.history)
    .bind(e.next_attempt_at)
    .bind(e.at)
    .bind(e.forget)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// A dead letter given a new round of attempts by a person: pending again at once, with
/// `max_attempts` and `expires_at` as the new limits. False when it is not a dead letter
/// (already re-run, superseded, delivered).
pub async fn rerun(
    conn: &mut AnyConnection,
    id: &str,
    max_attempts: i64,
    expires_at: &str,
    now: &str,
) -> Result<bool, super::Error> {
    let done = sqlx::query(
        "UPDATE reset_deliveries SET state = 'pending', max_attempts = $2, expires_at = $3, \
         next_attempt_at = $4, updated_at = $4 WHERE id = $1 AND state = 'dead-letter'",
    )
    .bind(id)
    .bind(max_attempts)
    .bind(expires_at)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// What a list may be narrowed to.
#[derive(Debug, Default)]
pub struct Filter<'a> {
    pub state: Option<&'a str>,
    pub job_id: Option<&'a str>,
    pub account_id: Option<&'a str>,
}

/// Deliveries newest first, one page.
pub async fn list(
    pool: &AnyPool,
    f: &Filter<'_>,
    page: &super::PageRequest,
) -> Result<super::Page<DeliveryRow>, super::Error> {
    let rows: Vec<DeliveryRow> = sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM reset_deliveries WHERE ($1 IS NULL OR state = $1) \
         AND ($2 IS NULL OR job_id = $2) AND ($3 IS NULL OR account_id = $3) \
         AND ($4 IS NULL OR id < $4) ORDER BY id DESC LIMIT $5"
    ))
    .bind(f.state)
    .bind(f.job_id)
    .bind(f.account_id)
    .bind(page.after.as_deref())
    .bind(page.limit + 1)
    .fetch_all(pool)
    .await?;
    Ok(super::Page::from_rows(rows, page.limit, |r| r.id.clone()))
}

/// How many deliveries are pending, and how many are dead letters (for `/metrics`): each
/// count walks one index, never the delivered history.
pub async fn open_counts(pool: &AnyPool) -> Result<(i64, i64), super::Error> {
    let pending: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM reset_deliveries WHERE state = 'pending'")
            .fetch_one(pool)
            .await?;
    let dead: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM reset_deliveries WHERE state = 'dead-letter'")
            .fetch_one(pool)
            .await?;
    Ok((pending, dead))
}
