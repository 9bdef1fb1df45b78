//! Resources: the systems whose accounts Lockstep manages.

use sqlx::{AnyConnection, AnyPool, FromRow};

use super::{Page, PageRequest};
use crate::error::Result;

#[derive(Debug, Clone, FromRow)]
pub struct ResourceRow {
    pub id: String,
    pub name: String,
    pub resource_type: String,
    pub ip_address: Option<String>,
    pub url: Option<String>,
    pub domain_name: Option<String>,
    pub ssh_port: Option<i64>,
    pub description: Option<String>,
    pub location: Option<String>,
    pub department: Option<String>,
    /// JSON object of custom column name -> value.
    pub custom_fields: String,
    pub created_at: String,
    pub updated_at: String,
}

/// The column list, as a literal so queries stay `&'static str` (sqlx's `SqlSafeStr`).
macro_rules! columns {
    () => {
        "id, name, resource_type, ip_address, url, domain_name, ssh_port, \
     description, location, department, custom_fields, created_at, updated_at"
    };
}

pub async fn insert(conn: &mut AnyConnection, r: &ResourceRow) -> Result<(), super::Error> {
    sqlx::query(concat!(
        "INSERT INTO resources (",
        columns!(),
        ") \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
    ))
    .bind(&r.id)
    .bind(&r.name)
    .bind(&r.resource_type)
    .bind(&r.ip_address)
    .bind(&r.url)
    .bind(&r.domain_name)
    .bind(r.ssh_port)
    .bind(&r.description)
    .bind(&r.location)
    .bind(&r.department)
    .bind(&r.custom_fields)
    .bind(&r.created_at)
    .bind(&r.updated_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Writes every mutable column of `r` (identified by `r.id`).
pub async fn update(conn: &mut AnyConnection, r: &ResourceRow) -> Result<(), super::Error> {
    sqlx::query(
        "UPDATE resources SET name = $2, resource_type = $3, ip_address = $4, url = $5, \
         domain_name = $6, ssh_port = $7, description = $8, location = $9, department = $10, \
         custom_fields = $11, updated_at = $12 WHERE id = $1",
    )
    .bind(&r.id)
    .bind(&r.name)
    .bind(&r.resource_type)
    .bind(&r.ip_address)
    .bind(&r.url)
    .bind(&r.domain_name)
    .bind(r.ssh_port)
    .bind(&r.description)
    .bind(&r.location)
    .bind(&r.department)
    .bind(&r.custom_fields)
    .bind(&r.updated_at)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn get(pool: &AnyPool, id: &str) -> Result<Option<ResourceRow>> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM resources WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await?)
}

pub async fn get_by_name(pool: &AnyPool, name: &str) -> Result<Option<ResourceRow>> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM resources WHERE name = $1"
    ))
    .bind(name)
    .fetch_optional(pool)
    .await?)
}

/// Lists resources in creation order, optionally of one type.
pub async fn list(
    pool: &AnyPool,
    resource_type: Option<&str>,
    page: &PageRequest,
) -> Result<Page<ResourceRow>> {
    let after = page.after.as_deref().unwrap_or("");
    // Two statements, not `($2 = '' OR resource_type = $2)`: a planner cannot use the index
    // `resources_type` (migration 0019) for a condition that may be switched off.
    let rows = match resource_type {
        Some(t) => {
            sqlx::query_as(concat!(
                "SELECT ",
                columns!(),
                " FROM resources WHERE resource_type = $1 AND id > $2 ORDER BY id LIMIT $3"
            ))
            .bind(t)
            .bind(after)
            .bind(page.limit + 1)
            .fetch_all(pool)
            .await?
        }
        None => {
            sqlx::query_as(concat!(
                "SELECT ",
                columns!(),
                " FROM resources WHERE id > $1 ORDER BY id LIMIT $2"
            ))
            .bind(after)
            .bind(page.limit + 1)
            .fetch_all(pool)
            .await?
        }
    };
    Ok(Page::from_rows(rows, page.limit, |r: &ResourceRow| {
        r.id.clone()
    }))
}

pub async fn delete(conn: &mut AnyConnection, id: &str) -> Result<bool, super::Error> {
    let done = sqlx::query("DELETE FROM resources WHERE id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() > 0)
}

pub async fn count_accounts(pool: &AnyPool, id: &str) -> Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT COUNT(*) FROM accounts WHERE resource_id = $1")
            .bind(id)
            .fetch_one(pool)
            .await?,
    )
}

/// Resources whose type is in `listener_id`'s approved association, in creation order.
pub async fn list_for_listener(
    pool: &AnyPool,
    listener_id: &str,
    page: &PageRequest,
) -> Result<Page<ResourceRow>> {
    let rows = sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM resources WHERE id > $1 AND resource_type IN \
         (SELECT resource_type FROM listener_resource_types WHERE listener_id = $2) \
         ORDER BY id LIMIT $3"
    ))
    .bind(page.after.as_deref().unwrap_or(""))
    .bind(listener_id)
    .bind(page.limit + 1)
    .fetch_all(pool)
    .await?;
    Ok(Page::from_rows(rows, page.limit, |r: &ResourceRow| {
        r.id.clone()
    }))
}
