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
    /// 1: `hash` is SHA-256 (written before the chain was keyed); 2: HMAC-SHA-256 under a key
    /// derived from master key `key_id` (`audit::chain`).
    pub chain_version: i64,
    pub key_id: Option<String>,
}

/// The column list, as a literal so queries stay `&'static str` (sqlx's `SqlSafeStr`).
macro_rules! columns {
    () => {
        "seq, id, at, actor, action, target, outcome, source_ip, detail, prev_hash, hash, \
         chain_version, key_id"
    };
}

/// The columns of a database whose schema predates the keyed chain (migration 0013): every
/// event there is version 1.
macro_rules! unkeyed_columns {
    () => {
        "seq, id, at, actor, action, target, outcome, source_ip, detail, prev_hash, hash, \
         CAST(1 AS BIGINT) AS chain_version, CAST(NULL AS TEXT) AS key_id"
    };
}

/// The newest event as appends see it.
#[derive(Debug, Clone, FromRow)]
pub struct Head {
    pub seq: i64,
    pub hash: String,
    pub chain_version: i64,
    pub key_id: Option<String>,
}

/// The events with `action`, oldest first, at most `limit` (the `audit_events_action` index).
pub async fn with_action(pool: &AnyPool, action: &str, limit: i64) -> Result<Vec<AuditRow>> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM audit_events WHERE action = $1 ORDER BY seq LIMIT $2"
    ))
    .bind(action)
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

/// The newest event, under a lock that keeps other appenders (other servers on the same
/// PostgreSQL) out until this transaction ends.
pub async fn lock_head(conn: &mut AnyConnection, backend: Backend) -> Result<Option<Head>> {
    lock_chain(conn, backend).await?;
    Ok(sqlx::query_as(
        "SELECT seq, hash, chain_version, key_id FROM audit_events ORDER BY seq DESC LIMIT 1",
    )
    .fetch_optional(conn)
    .await?)
}

/// Keeps other appenders (other servers on the same PostgreSQL) out until this transaction
/// ends; within one process the store's write lock already does (SQLite has one writer).
/// Taken again by the same transaction, it is already held.
pub async fn lock_chain(conn: &mut AnyConnection, backend: Backend) -> Result<()> {
    if backend == Backend::Postgres {
        // Key 0x10c5_7e9 is Lockstep's audit-chain lock; held to the end of the transaction.
        sqlx::query("SELECT pg_advisory_xact_lock(281497577)")
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// The newest event's sequence number and hash, without a lock (for checkpoints).
pub async fn head(pool: &AnyPool) -> Result<Option<(i64, String)>> {
    Ok(
        sqlx::query_as("SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1")
            .fetch_optional(pool)
            .await?,
    )
}

/// How many events were written with a key (chain version 2 or later).
pub async fn count_keyed(conn: &mut AnyConnection) -> Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT COUNT(*) FROM audit_events WHERE chain_version >= 2")
            .fetch_one(conn)
            .await?,
    )
}

/// Whether the schema has the keyed chain's columns (migration 0013 ran). A read-only check
/// for `lockstep audit verify`, which never migrates.
pub async fn has_chain_columns(pool: &AnyPool) -> Result<bool> {
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM _sqlx_migrations WHERE version = 13 AND success = TRUE",
    )
    .fetch_one(pool)
    .await?;
    Ok(n > 0)
}

pub async fn insert(conn: &mut AnyConnection, r: &AuditRow) -> Result<()> {
    sqlx::query(concat!(
        "INSERT INTO audit_events (",
        columns!(),
        ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
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
    .bind(r.chain_version)
    .bind(&r.key_id)
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

/// Every event in stored order (by `seq`), in batches, for verification. `chain_columns`:
/// the schema has the keyed chain's columns ([`has_chain_columns`]).
pub async fn scan(
    pool: &AnyPool,
    after_seq: i64,
    batch: i64,
    chain_columns: bool,
) -> Result<Vec<AuditRow>> {
    let query = if chain_columns {
        sqlx::query_as(concat!(
            "SELECT ",
            columns!(),
            " FROM audit_events WHERE seq > $1 ORDER BY seq LIMIT $2"
        ))
    } else {
        sqlx::query_as(concat!(
            "SELECT ",
            unkeyed_columns!(),
            " FROM audit_events WHERE seq > $1 ORDER BY seq LIMIT $2"
        ))
    };
    Ok(query.bind(after_seq).bind(batch).fetch_all(pool).await?)
}
