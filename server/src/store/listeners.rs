//! Listeners, their uploaded versions (component, manifest, signature) and the resource types
//! of their approved association.

use sqlx::{Any, AnyConnection, AnyPool, Executor, FromRow};

use super::{Page, PageRequest};
use crate::error::Result;

#[derive(Debug, Clone, FromRow)]
pub struct ListenerRow {
    pub id: String,
    pub name: String,
    /// `pending` (never approved), `active`, `deleted` or `rejected`.
    pub status: String,
    pub current_version_id: Option<String>,
    /// The approved association, canonical JSON.
    pub association: Option<String>,
    pub position: Option<i64>,
    pub approval_seal: Option<String>,
    pub approved_by: Option<String>,
    pub approved_at: Option<String>,
    pub alert: Option<String>,
    pub alert_at: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

macro_rules! columns {
    () => {
        "id, name, status, current_version_id, association, position, approval_seal, \
         approved_by, approved_at, alert, alert_at, created_at, updated_at"
    };
}

/// A version's metadata, without the component bytes.
#[derive(Debug, Clone, FromRow)]
pub struct VersionRow {
    pub id: String,
    pub listener_id: String,
    pub version: String,
    pub component_sha256: String,
    pub manifest: String,
    pub manifest_sha256: String,
    pub signature: String,
    pub key_id: String,
    pub uploaded_by: String,
    pub created_at: String,
}

macro_rules! version_columns {
    () => {
        "id, listener_id, version, component_sha256, manifest, manifest_sha256, signature, \
         key_id, uploaded_by, created_at"
    };
}

pub async fn insert(conn: &mut AnyConnection, l: &ListenerRow) -> Result<(), super::Error> {
    sqlx::query(concat!(
        "INSERT INTO listeners (",
        columns!(),
        ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
    ))
    .bind(&l.id)
    .bind(&l.name)
    .bind(&l.status)
    .bind(&l.current_version_id)
    .bind(&l.association)
    .bind(l.position)
    .bind(&l.approval_seal)
    .bind(&l.approved_by)
    .bind(&l.approved_at)
    .bind(&l.alert)
    .bind(&l.alert_at)
    .bind(&l.created_at)
    .bind(&l.updated_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Writes the approved state of `l` (identified by `l.id`) and replaces its resource types.
pub async fn update_approved(
    conn: &mut AnyConnection,
    l: &ListenerRow,
    resource_types: &[String],
) -> Result<(), super::Error> {
    sqlx::query(
        "UPDATE listeners SET status = $2, current_version_id = $3, association = $4, \
         position = $5, approval_seal = $6, approved_by = $7, approved_at = $8, alert = $9, \
         alert_at = $10, updated_at = $11 WHERE id = $1",
    )
    .bind(&l.id)
    .bind(&l.status)
    .bind(&l.current_version_id)
    .bind(&l.association)
    .bind(l.position)
    .bind(&l.approval_seal)
    .bind(&l.approved_by)
    .bind(&l.approved_at)
    .bind(&l.alert)
    .bind(&l.alert_at)
    .bind(&l.updated_at)
    .execute(&mut *conn)
    .await?;
    sqlx::query("DELETE FROM listener_resource_types WHERE listener_id = $1")
        .bind(&l.id)
        .execute(&mut *conn)
        .await?;
    for t in resource_types {
        sqlx::query(
            "INSERT INTO listener_resource_types (listener_id, resource_type) VALUES ($1, $2)",
        )
        .bind(&l.id)
        .bind(t)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

pub async fn set_status(
    conn: &mut AnyConnection,
    id: &str,
    status: &str,
    at: &str,
) -> Result<(), super::Error> {
    sqlx::query("UPDATE listeners SET status = $2, updated_at = $3 WHERE id = $1")
        .bind(id)
        .bind(status)
        .bind(at)
        .execute(conn)
        .await?;
    Ok(())
}

/// Records why an integrity check refused the listener.
pub async fn set_alert(
    conn: &mut AnyConnection,
    id: &str,
    alert: &str,
    at: &str,
) -> Result<(), super::Error> {
    sqlx::query("UPDATE listeners SET alert = $2, alert_at = $3 WHERE id = $1")
        .bind(id)
        .bind(alert)
        .bind(at)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn get_by_name<'c>(
    db: impl Executor<'c, Database = Any>,
    name: &str,
) -> Result<Option<ListenerRow>> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM listeners WHERE name = $1"
    ))
    .bind(name)
    .fetch_optional(db)
    .await?)
}

pub async fn get<'c>(
    db: impl Executor<'c, Database = Any>,
    id: &str,
) -> Result<Option<ListenerRow>> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM listeners WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(db)
    .await?)
}

pub async fn list(pool: &AnyPool, page: &PageRequest) -> Result<Page<ListenerRow>> {
    let rows = sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM listeners WHERE id > $1 ORDER BY id LIMIT $2"
    ))
    .bind(page.after.as_deref().unwrap_or(""))
    .bind(page.limit + 1)
    .fetch_all(pool)
    .await?;
    Ok(Page::from_rows(rows, page.limit, |l: &ListenerRow| {
        l.id.clone()
    }))
}

/// Every listener that is active or carries an approval seal, by name (a sealed listener is
/// active unless its row was edited: the reset engine refuses those). Where each applies is
/// read from its sealed association.
pub async fn active<'c>(db: impl Executor<'c, Database = Any>) -> Result<Vec<ListenerRow>> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM listeners WHERE status = 'active' OR approval_seal IS NOT NULL ORDER BY name"
    ))
    .fetch_all(db)
    .await?)
}

/// The resource types of a listener's approved association.
pub async fn resource_types(pool: &AnyPool, listener_id: &str) -> Result<Vec<String>> {
    Ok(sqlx::query_scalar(
        "SELECT resource_type FROM listener_resource_types WHERE listener_id = $1 \
         ORDER BY resource_type",
    )
    .bind(listener_id)
    .fetch_all(pool)
    .await?)
}

pub async fn insert_version(
    conn: &mut AnyConnection,
    v: &VersionRow,
    component: &[u8],
) -> Result<(), super::Error> {
    sqlx::query(concat!(
        "INSERT INTO listener_versions (",
        version_columns!(),
        ", component) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
    ))
    .bind(&v.id)
    .bind(&v.listener_id)
    .bind(&v.version)
    .bind(&v.component_sha256)
    .bind(&v.manifest)
    .bind(&v.manifest_sha256)
    .bind(&v.signature)
    .bind(&v.key_id)
    .bind(&v.uploaded_by)
    .bind(&v.created_at)
    .bind(component)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn get_version<'c>(
    db: impl Executor<'c, Database = Any>,
    id: &str,
) -> Result<Option<VersionRow>> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        version_columns!(),
        " FROM listener_versions WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(db)
    .await?)
}

pub async fn version_exists(
    conn: &mut AnyConnection,
    listener_id: &str,
    version: &str,
) -> Result<bool> {
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM listener_versions WHERE listener_id = $1 AND version = $2",
    )
    .bind(listener_id)
    .bind(version)
    .fetch_one(conn)
    .await?;
    Ok(n > 0)
}

/// A version's component bytes.
pub async fn component<'c>(
    db: impl Executor<'c, Database = Any>,
    version_id: &str,
) -> Result<Option<Vec<u8>>> {
    Ok(
        sqlx::query_scalar("SELECT component FROM listener_versions WHERE id = $1")
            .bind(version_id)
            .fetch_optional(db)
            .await?,
    )
}

/// A stored listener component by its SHA-256 (any version that has it).
pub async fn component_by_digest(pool: &AnyPool, sha256: &str) -> Result<Option<Vec<u8>>> {
    Ok(sqlx::query_scalar(
        "SELECT component FROM listener_versions WHERE component_sha256 = $1 LIMIT 1",
    )
    .bind(sha256)
    .fetch_optional(pool)
    .await?)
}
