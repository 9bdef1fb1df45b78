//! Change requests: every add, edit and delete of a listener, and every change of publisher-key
//! trust, waiting for (or decided by) a second administrator.

use sqlx::{Any, AnyConnection, AnyPool, Executor, FromRow};

use super::{Page, PageRequest};
use crate::error::Result;

#[derive(Debug, Clone, FromRow)]
pub struct ChangeRequestRow {
    pub id: String,
    pub kind: String,
    pub status: String,
    /// The listener name or key id; at most one pending request per subject.
    pub subject: String,
    pub listener_id: Option<String>,
    pub version_id: Option<String>,
    pub version: Option<String>,
    pub key_id: Option<String>,
    pub component_sha256: Option<String>,
    pub manifest_sha256: Option<String>,
    pub association: Option<String>,
    pub requested_by: String,
    pub approver: String,
    pub request_comment: Option<String>,
    pub decided_by: Option<String>,
    pub decision_comment: Option<String>,
    pub decided_at: Option<String>,
    pub created_at: String,
    /// For `reset-command` changes: the proposed template as JSON (`null`: the default).
    pub reset_command: Option<String>,
    /// The master key's attestation of the request's content (`registry::request_seal`);
    /// `None` for requests made before requests were sealed.
    pub request_seal: Option<String>,
    /// For `key-add` changes: the ed25519 public key (hex) to trust; `None` for requests made
    /// before requests named it.
    pub public_key: Option<String>,
}

macro_rules! columns {
    () => {
        "id, kind, status, subject, listener_id, version_id, version, key_id, component_sha256, \
         manifest_sha256, association, requested_by, approver, request_comment, decided_by, \
         decision_comment, decided_at, created_at, reset_command, request_seal, public_key"
    };
}

pub async fn insert(conn: &mut AnyConnection, c: &ChangeRequestRow) -> Result<(), super::Error> {
    sqlx::query(concat!(
        "INSERT INTO change_requests (",
        columns!(),
        ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21)"
    ))
    .bind(&c.id)
    .bind(&c.kind)
    .bind(&c.status)
    .bind(&c.subject)
    .bind(&c.listener_id)
    .bind(&c.version_id)
    .bind(&c.version)
    .bind(&c.key_id)
    .bind(&c.component_sha256)
    .bind(&c.manifest_sha256)
    .bind(&c.association)
    .bind(&c.requested_by)
    .bind(&c.approver)
    .bind(&c.request_comment)
    .bind(&c.decided_by)
    .bind(&c.decision_comment)
    .bind(&c.decided_at)
    .bind(&c.created_at)
    .bind(&c.reset_command)
    .bind(&c.request_seal)
    .bind(&c.public_key)
    .execute(conn)
    .await?;
    Ok(())
}

/// Records a decision on a pending request; false when it was no longer pending.
pub async fn decide(
    conn: &mut AnyConnection,
    id: &str,
    status: &str,
    decided_by: &str,
    comment: Option<&str>,
    at: &str,
) -> Result<bool, super::Error> {
    let done = sqlx::query(
        "UPDATE change_requests SET status = $2, decided_by = $3, decision_comment = $4, \
         decided_at = $5 WHERE id = $1 AND status = 'pending'",
    )
    .bind(id)
    .bind(status)
    .bind(decided_by)
    .bind(comment)
    .bind(at)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

pub async fn get<'c>(
    db: impl Executor<'c, Database = Any>,
    id: &str,
) -> Result<Option<ChangeRequestRow>> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM change_requests WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(db)
    .await?)
}

/// The pending request for `subject`, if any.
pub async fn pending_for<'c>(
    db: impl Executor<'c, Database = Any>,
    subject: &str,
) -> Result<Option<ChangeRequestRow>> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM change_requests WHERE subject = $1 AND status = 'pending'"
    ))
    .bind(subject)
    .fetch_optional(db)
    .await?)
}

/// Requests in creation order, optionally of one status and/or one listener.
pub async fn list(
    pool: &AnyPool,
    status: Option<&str>,
    listener_id: Option<&str>,
    page: &PageRequest,
) -> Result<Page<ChangeRequestRow>> {
    let rows = sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM change_requests WHERE id > $1 AND ($2 = '' OR status = $2) \
         AND ($3 = '' OR listener_id = $3) ORDER BY id LIMIT $4"
    ))
    .bind(page.after.as_deref().unwrap_or(""))
    .bind(status.unwrap_or(""))
    .bind(listener_id.unwrap_or(""))
    .bind(page.limit + 1)
    .fetch_all(pool)
    .await?;
    Ok(Page::from_rows(rows, page.limit, |c: &ChangeRequestRow| {
        c.id.clone()
    }))
}
