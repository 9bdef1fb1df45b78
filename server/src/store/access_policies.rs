//! Access-control policies: one per account, resource or resource type (`access::policy`).

use sqlx::{Any, AnyConnection, AnyPool, Executor, FromRow};

use crate::error::Result;

#[derive(Debug, Clone, FromRow)]
pub struct AccessPolicyRow {
    /// `account`, `resource` or `resource-type` (`access::policy::Scope`).
    pub scope_kind: String,
    pub scope_id: String,
    pub enabled: i64,
    /// JSON array of user names.
    pub requesters: String,
    /// JSON array of user names.
    pub approvers: String,
    pub approvals_needed: i64,
    pub max_minutes: i64,
    pub answer_minutes: i64,
    pub exclusive: i64,
    pub rotate_on_checkin: i64,
    /// JSON array of auto-approval windows.
    pub auto_approve: String,
    pub updated_by: String,
    pub updated_at: String,
    /// `Vault::attest` over the policy (`access::policy`), pinned in the registry ledger.
    pub seal: String,
}

macro_rules! columns {
    () => {
        "scope_kind, scope_id, enabled, requesters, approvers, approvals_needed, max_minutes, \
         answer_minutes, exclusive, rotate_on_checkin, auto_approve, updated_by, updated_at, \
         seal"
    };
}

/// Every policy (for the registry ledger's bootstrap and reseal).
pub async fn all<'c>(db: impl Executor<'c, Database = Any>) -> Result<Vec<AccessPolicyRow>> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM access_policies ORDER BY scope_kind, scope_id"
    ))
    .fetch_all(db)
    .await?)
}

pub async fn get(pool: &AnyPool, kind: &str, id: &str) -> Result<Option<AccessPolicyRow>> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM access_policies WHERE scope_kind = $1 AND scope_id = $2"
    ))
    .bind(kind)
    .bind(id)
    .fetch_optional(pool)
    .await?)
}

/// Writes the policy of its scope, replacing the one there (one statement: two nodes setting
/// a new scope's policy at once both succeed, the later one stands).
pub async fn put(conn: &mut AnyConnection, r: &AccessPolicyRow) -> Result<(), super::Error> {
    sqlx::query(concat!(
        "INSERT INTO access_policies (",
        columns!(),
        ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
         ON CONFLICT (scope_kind, scope_id) DO UPDATE SET enabled = excluded.enabled, \
         requesters = excluded.requesters, approvers = excluded.approvers, \
         approvals_needed = excluded.approvals_needed, max_minutes = excluded.max_minutes, \
         answer_minutes = excluded.answer_minutes, exclusive = excluded.exclusive, \
         rotate_on_checkin = excluded.rotate_on_checkin, auto_approve = excluded.auto_approve, \
         updated_by = excluded.updated_by, \
         updated_at = excluded.updated_at, seal = excluded.seal"
    ))
    .bind(&r.scope_kind)
    .bind(&r.scope_id)
    .bind(r.enabled)
    .bind(&r.requesters)
    .bind(&r.approvers)
    .bind(r.approvals_needed)
    .bind(r.max_minutes)
    .bind(r.answer_minutes)
    .bind(r.exclusive)
    .bind(r.rotate_on_checkin)
    .bind(&r.auto_approve)
    .bind(&r.updated_by)
    .bind(&r.updated_at)
    .bind(&r.seal)
    .execute(conn)
    .await?;
    Ok(())
}

/// Removes a scope's policy (its accounts inherit again); true when there was one.
pub async fn delete(conn: &mut AnyConnection, kind: &str, id: &str) -> Result<bool, super::Error> {
    let done = sqlx::query("DELETE FROM access_policies WHERE scope_kind = $1 AND scope_id = $2")
        .bind(kind)
        .bind(id)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() > 0)
}
