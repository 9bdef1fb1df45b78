//! The registry ledger: one row holding the registry's generation and the sealed list of
//! everything approved now (`registry::ledger` gives it meaning), read together with the newest
//! `registry.generation` audit event that witnesses it.

use sqlx::{Any, AnyConnection, Executor, FromRow};

use super::audit::AuditRow;
use crate::error::Result;

/// The audit action every change of the ledger appends (its witness in the keyed chain).
pub const GENERATION_ACTION: &str = "registry.generation";

#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct LedgerRow {
    pub generation: i64,
    /// JSON, as sealed.
    pub entries: String,
    pub seal: String,
    pub updated_at: String,
}

/// The ledger row and the newest `registry.generation` event, as one statement saw them (one
/// snapshot: a change committed between two reads cannot make them disagree).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LedgerRead {
    pub row: Option<LedgerRow>,
    pub newest_event: Option<AuditRow>,
}

/// Both sides of [`read`]'s outer joins; every column may be NULL.
#[derive(FromRow)]
struct Joined {
    generation: Option<i64>,
    entries: Option<String>,
    seal: Option<String>,
    updated_at: Option<String>,
    e_seq: Option<i64>,
    e_id: Option<String>,
    e_at: Option<String>,
    e_actor: Option<String>,
    e_action: Option<String>,
    e_target: Option<String>,
    e_outcome: Option<String>,
    e_source_ip: Option<String>,
    e_detail: Option<String>,
    e_prev_hash: Option<String>,
    e_hash: Option<String>,
    e_chain_version: Option<i64>,
    e_key_id: Option<String>,
}

/// Reads the ledger row and the newest `registry.generation` event in one statement (one
/// indexed look-up each: `audit_events_action`).
pub async fn read<'c>(db: impl Executor<'c, Database = Any>) -> Result<LedgerRead> {
    let j: Joined = sqlx::query_as(
        "SELECT l.generation AS generation, l.entries AS entries, l.seal AS seal, \
         l.updated_at AS updated_at, e.seq AS e_seq, e.id AS e_id, e.at AS e_at, \
         e.actor AS e_actor, e.action AS e_action, e.target AS e_target, \
         e.outcome AS e_outcome, e.source_ip AS e_source_ip, e.detail AS e_detail, \
         e.prev_hash AS e_prev_hash, e.hash AS e_hash, e.chain_version AS e_chain_version, \
         e.key_id AS e_key_id \
         FROM (SELECT 1 AS one) AS x \
         LEFT JOIN registry_ledger AS l ON l.id = 1 \
         LEFT JOIN (SELECT * FROM audit_events WHERE action = $1 \
                    ORDER BY seq DESC LIMIT 1) AS e ON 1 = 1",
    )
    .bind(GENERATION_ACTION)
    .fetch_one(db)
    .await?;
    let row = match (j.generation, j.entries, j.seal, j.updated_at) {
        (Some(generation), Some(entries), Some(seal), Some(updated_at)) => Some(LedgerRow {
            generation,
            entries,
            seal,
            updated_at,
        }),
        _ => None,
    };
    let newest_event = match j.e_seq {
        Some(seq) => Some(AuditRow {
            seq,
            id: j.e_id.unwrap_or_default(),
            at: j.e_at.unwrap_or_default(),
            actor: j.e_actor.unwrap_or_default(),
            action: j.e_action.unwrap_or_default(),
            target: j.e_target.unwrap_or_default(),
            outcome: j.e_outcome.unwrap_or_default(),
            source_ip: j.e_source_ip,
            detail: j.e_detail.unwrap_or_default(),
            prev_hash: j.e_prev_hash.unwrap_or_default(),
            hash: j.e_hash.unwrap_or_default(),
            chain_version: j.e_chain_version.unwrap_or_default(),
            key_id: j.e_key_id,
        }),
        None => None,
    };
    Ok(LedgerRead { row, newest_event })
}

/// Writes the one row (inserted the first time).
pub async fn put(conn: &mut AnyConnection, row: &LedgerRow) -> Result<()> {
    sqlx::query(
        "INSERT INTO registry_ledger (id, generation, entries, seal, updated_at) \
         VALUES (1, $1, $2, $3, $4) ON CONFLICT (id) DO UPDATE SET generation = $1, \
         entries = $2, seal = $3, updated_at = $4",
    )
    .bind(row.generation)
    .bind(&row.entries)
    .bind(&row.seal)
    .bind(&row.updated_at)
    .execute(conn)
    .await?;
    Ok(())
}
