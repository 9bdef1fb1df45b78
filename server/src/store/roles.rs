//! Roles: named sets of privileges. Built-in roles are written at every start so their
//! privilege lists always match the code; custom roles are created through the API.

use sqlx::{AnyConnection, AnyPool, FromRow};

use crate::error::Result;

#[derive(Debug, Clone, FromRow)]
pub struct RoleRow {
    pub name: String,
    pub description: String,
    /// Comma-separated kebab-case privilege names.
    pub privileges: String,
    pub builtin: i64,
    pub created_at: String,
}

/// The column list, as a literal so queries stay `&'static str` (sqlx's `SqlSafeStr`).
macro_rules! columns {
    () => {
        "name, description, privileges, builtin, created_at"
    };
}

/// Inserts a built-in role, or refreshes its description and privileges.
pub async fn upsert_builtin(conn: &mut AnyConnection, row: &RoleRow) -> Result<()> {
    sqlx::query(
        "INSERT INTO roles (name, description, privileges, builtin, created_at) \
         VALUES ($1, $2, $3, 1, $4) \
         ON CONFLICT (name) DO UPDATE SET description = $2, privileges = $3, builtin = 1",
    )
    .bind(&row.name)
    .bind(&row.description)
    .bind(&row.privileges)
    .bind(&row.created_at)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn insert(conn: &mut AnyConnection, row: &RoleRow) -> Result<(), super::Error> {
    sqlx::query(concat!(
        "INSERT INTO roles (",
        columns!(),
        ") VALUES ($1, $2, $3, $4, $5)"
    ))
    .bind(&row.name)
    .bind(&row.description)
    .bind(&row.privileges)
    .bind(row.builtin)
    .bind(&row.created_at)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn get(pool: &AnyPool, name: &str) -> Result<Option<RoleRow>> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM roles WHERE name = $1"
    ))
    .bind(name)
    .fetch_optional(pool)
    .await?)
}

pub async fn list(pool: &AnyPool) -> Result<Vec<RoleRow>> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM roles ORDER BY builtin DESC, name"
    ))
    .fetch_all(pool)
    .await?)
}

/// Deletes a custom role. Returns false when no custom role had that name.
pub async fn delete_custom(conn: &mut AnyConnection, name: &str) -> Result<bool, super::Error> {
    let done = sqlx::query("DELETE FROM roles WHERE name = $1 AND builtin = 0")
        .bind(name)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() > 0)
}
