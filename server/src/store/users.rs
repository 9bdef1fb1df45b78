//! Users: people (and automation) who hold API tokens. A user has exactly one role.

use sqlx::{AnyConnection, AnyPool, FromRow};

use super::{Page, PageRequest};
use crate::error::Result;

#[derive(Debug, Clone, FromRow)]
pub struct UserRow {
    pub id: String,
    pub name: String,
    pub role: String,
    pub created_at: String,
    /// Where notifications are mailed, if anywhere.
    pub email: Option<String>,
}

/// The column list, as a literal so queries stay `&'static str` (sqlx's `SqlSafeStr`).
macro_rules! columns {
    () => {
        "id, name, role, created_at, email"
    };
}

pub async fn insert(conn: &mut AnyConnection, row: &UserRow) -> Result<(), super::Error> {
    sqlx::query(concat!(
        "INSERT INTO users (",
        columns!(),
        ") VALUES ($1, $2, $3, $4, $5)"
    ))
    .bind(&row.id)
    .bind(&row.name)
    .bind(&row.role)
    .bind(&row.created_at)
    .bind(&row.email)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn get(pool: &AnyPool, id: &str) -> Result<Option<UserRow>> {
    Ok(
        sqlx::query_as(concat!("SELECT ", columns!(), " FROM users WHERE id = $1"))
            .bind(id)
            .fetch_optional(pool)
            .await?,
    )
}

pub async fn get_by_name(pool: &AnyPool, name: &str) -> Result<Option<UserRow>> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM users WHERE name = $1"
    ))
    .bind(name)
    .fetch_optional(pool)
    .await?)
}

pub async fn list(pool: &AnyPool, page: &PageRequest) -> Result<Page<UserRow>> {
    let rows = sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM users WHERE id > $1 ORDER BY id LIMIT $2"
    ))
    .bind(page.after.as_deref().unwrap_or(""))
    .bind(page.limit + 1)
    .fetch_all(pool)
    .await?;
    Ok(Page::from_rows(rows, page.limit, |r: &UserRow| {
        r.id.clone()
    }))
}

/// The names of the users holding one of `roles`, by name.
pub async fn names_with_roles(pool: &AnyPool, roles: &[String]) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for role in roles {
        let some: Vec<String> =
            sqlx::query_scalar("SELECT name FROM users WHERE role = $1 ORDER BY name")
                .bind(role)
                .fetch_all(pool)
                .await?;
        names.extend(some);
    }
    names.sort();
    names.dedup();
    Ok(names)
}

pub async fn count_with_role(pool: &AnyPool, role: &str) -> Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE role = $1")
            .bind(role)
            .fetch_one(pool)
            .await?,
    )
}
