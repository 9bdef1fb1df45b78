//! The audit table: appended to, read, never updated or deleted by Lockstep.

use sqlx::{AnyConnection, AnyPool, FromRow};

use super::Backend;
use crate::error::Result;

#[derive(Debug, Clone, FromRow, PartialEq, Eq)]
pub struct AuditRow {
    pub seq: i64,
    pub id: String,
    pub at: String,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub outcome: String,
    pub source_ip: Option<String>,
    /// Canonical JSON object.
    pub detail: String,
    pub prev_hash: String,
    pub hash: String,
}

/// The column list, as a literal so queries stay `&'static str` (sqlx's `SqlSafeStr`).
macro_rules! columns {
    () => {
        "seq, id, at, actor, action, target, outcome, source_ip, detail, prev_hash, hash"
    };
}

/// The sequence number and hash of the newest event, under a lock that keeps other appenders
/// (other servers on the same PostgreSQL) out until this transaction ends.
pub async fn lock_head(
    conn: &mut AnyConnection,
    backend: Backend,
) -> Result<Option<(i64, String)>> {
    if backend == Backend::Postgres {
        // Key 0x10c5_7e9 is Lockstep's audit-chain lock; held to the end of the transaction.
        sqlx::query("SELECT pg_advisory_xact_lock(281497577)")
            .execute(&mut *conn)
            .await?;
    }
    let head: Option<(i64, String)> =
        sqlx::query_as("SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1")
            .fetch_optional(conn)
            .await?;
    Ok(head)
}

pub async fn insert(conn: &mut AnyConnection, r: &AuditRow) -> Result<()> {
    sqlx::query(concat!(
        "INSERT INTO audit_events (",
        columns!(),
        ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
    ))
    .bind(r.seq)
    .bind(&r.id)
    .bind(&r.at)
    .bind(&r.actor)
    .bind(&r.action)
    .bind(&r.target)
    .bind(&r.outcome)
    .bind(&r.source_ip)
    .bind(&r.detail)
    .bind(&r.prev_hash)
    .bind(&r.hash)
    .execute(conn)
    .await?;
    Ok(())
}

/// Filters for reading the trail; empty strings mean "any".
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub actor: Option<String>,
    pub action: Option<String>,
    pub target: Option<String>,
    pub outcome: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
}

/// Events after `after_seq` in chain order, filtered, at most `limit + 1` (the extra one tells
/// the caller there is a next page).
pub async fn list(
    pool: &AnyPool,
    f: &AuditFilter,
    after_seq: i64,
    limit: i64,
) -> Result<Vec<AuditRow>> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM audit_events WHERE seq > $1 \
         AND ($2 = '' OR actor = $2) AND ($3 = '' OR action = $3) \
         AND ($4 = '' OR target = $4) AND ($5 = '' OR outcome = $5) \
         AND ($6 = '' OR at >= $6) AND ($7 = '' OR at < $7) \
         ORDER BY seq LIMIT $8"
    ))
    .bind(after_seq)
    .bind(f.actor.as_deref().unwrap_or(""))
    .bind(f.action.as_deref().unwrap_or(""))
    .bind(f.target.as_deref().unwrap_or(""))
    .bind(f.outcome.as_deref().unwrap_or(""))
    .bind(f.since.as_deref().unwrap_or(""))
    .bind(f.until.as_deref().unwrap_or(""))
    .bind(limit + 1)
    .fetch_all(pool)
    .await?)
}

/// Every event in stored order (by `seq`), in batches, for verification.
pub async fn scan(pool: &AnyPool, after_seq: i64, batch: i64) -> Result<Vec<AuditRow>> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM audit_events WHERE seq > $1 ORDER BY seq LIMIT $2"
    ))
    .bind(after_seq)
    .bind(batch)
    .fetch_all(pool)
    .await?)
}
