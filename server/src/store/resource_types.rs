//! Resource types: the built-in list and custom types.

use sqlx::{Any, AnyConnection, AnyPool, Executor, FromRow};

use crate::error::Result;

#[derive(Debug, Clone, FromRow)]
pub struct ResourceTypeRow {
    pub name: String,
    pub builtin: i64,
    pub reset_method: String,
    pub description: String,
    pub created_at: String,
    /// The command template as JSON; `None`: the default (chpasswd).
    pub reset_command: Option<String>,
    /// The master key's seal over the approved template (`Vault::attest`).
    pub reset_command_seal: Option<String>,
}

/// The column list, as a literal so queries stay `&'static str` (sqlx's `SqlSafeStr`).
macro_rules! columns {
    () => {
        "name, builtin, reset_method, description, created_at, reset_command, reset_command_seal"
    };
}

pub async fn insert_builtin_if_absent(
    conn: &mut AnyConnection,
    row: &ResourceTypeRow,
) -> Result<()> {
    sqlx::query(concat!(
        "INSERT INTO resource_types (",
        columns!(),
        ") VALUES ($1, 1, $2, $3, $4, $5, $6) \
         ON CONFLICT (name) DO NOTHING"
    ))
    .bind(&row.name)
    .bind(&row.reset_method)
    .bind(&row.description)
    .bind(&row.created_at)
    .bind(&row.reset_command)
    .bind(&row.reset_command_seal)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn insert(conn: &mut AnyConnection, row: &ResourceTypeRow) -> Result<(), super::Error> {
    sqlx::query(concat!(
        "INSERT INTO resource_types (",
        columns!(),
        ") VALUES ($1, $2, $3, $4, $5, $6, $7)"
    ))
    .bind(&row.name)
    .bind(row.builtin)
    .bind(&row.reset_method)
    .bind(&row.description)
    .bind(&row.created_at)
    .bind(&row.reset_command)
    .bind(&row.reset_command_seal)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn get(pool: &AnyPool, name: &str) -> Result<Option<ResourceTypeRow>> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM resource_types WHERE name = $1"
    ))
    .bind(name)
    .fetch_optional(pool)
    .await?)
}

pub async fn list<'c>(db: impl Executor<'c, Database = Any>) -> Result<Vec<ResourceTypeRow>> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM resource_types ORDER BY builtin DESC, name"
    ))
    .fetch_all(db)
    .await?)
}

/// Sets (or, with `None`, clears) a type's command template and its seal; false when there is
/// no such type.
pub async fn set_reset_command(
    conn: &mut AnyConnection,
    name: &str,
    command: Option<&str>,
    seal: Option<&str>,
) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE resource_types SET reset_command = $1, reset_command_seal = $3 WHERE name = $2",
    )
    .bind(command)
    .bind(name)
    .bind(seal)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Deletes a custom type. Fails with a foreign-key violation while resources use it.
pub async fn delete_custom(conn: &mut AnyConnection, name: &str) -> Result<bool, super::Error> {
    let done = sqlx::query("DELETE FROM resource_types WHERE name = $1 AND builtin = 0")
        .bind(name)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() > 0)
}

pub async fn count_resources(pool: &AnyPool, name: &str) -> Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT COUNT(*) FROM resources WHERE resource_type = $1")
            .bind(name)
            .fetch_one(pool)
            .await?,
    )
}

/// Active listeners whose approved association names this type.
pub async fn count_listeners(pool: &AnyPool, name: &str) -> Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT COUNT(*) FROM listener_resource_types lrt JOIN listeners l \
         ON l.id = lrt.listener_id WHERE lrt.resource_type = $1 AND l.status = 'active'",
    )
    .bind(name)
    .fetch_one(pool)
    .await?)
}
