//! API tokens, stored only as the SHA-256 of the token text.

use sqlx::{AnyConnection, AnyPool, FromRow};

use crate::error::Result;

#[derive(Debug, Clone, FromRow)]
pub struct TokenRow {
    pub id: String,
    pub user_id: String,
    pub name: String,
    pub token_sha256: String,
    pub created_at: String,
    pub expires_at: String,
    pub revoked_at: Option<String>,
}

/// The column list, as a literal so queries stay `&'static str` (sqlx's `SqlSafeStr`).
macro_rules! columns {
    () => {
        "id, user_id, name, token_sha256, created_at, expires_at, revoked_at"
    };
}

pub async fn insert(conn: &mut AnyConnection, row: &TokenRow) -> Result<(), super::Error> {
    sqlx::query(concat!(
        "INSERT INTO api_tokens (",
        columns!(),
        ") VALUES ($1, $2, $3, $4, $5, $6, $7)"
    ))
    .bind(&row.id)
    .bind(&row.user_id)
    .bind(&row.name)
    .bind(&row.token_sha256)
    .bind(&row.created_at)
    .bind(&row.expires_at)
    .bind(&row.revoked_at)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn get_by_hash(pool: &AnyPool, token_sha256: &str) -> Result<Option<TokenRow>> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM api_tokens WHERE token_sha256 = $1"
    ))
    .bind(token_sha256)
    .fetch_optional(pool)
    .await?)
}

pub async fn get(pool: &AnyPool, id: &str) -> Result<Option<TokenRow>> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM api_tokens WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await?)
}

pub async fn list_for_user(pool: &AnyPool, user_id: &str) -> Result<Vec<TokenRow>> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM api_tokens WHERE user_id = $1 ORDER BY id"
    ))
    .bind(user_id)
    .fetch_all(pool)
    .await?)
}

/// Marks a token revoked. Returns false if it was already revoked.
pub async fn revoke(conn: &mut AnyConnection, id: &str, at: &str) -> Result<bool> {
    let done =
        sqlx::query("UPDATE api_tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL")
            .bind(id)
            .bind(at)
            .execute(conn)
            .await?;
    Ok(done.rows_affected() > 0)
}

/// Revokes every live token of a user; returns how many.
pub async fn revoke_all_of(conn: &mut AnyConnection, user_id: &str, at: &str) -> Result<u64> {
    let done = sqlx::query(
        "UPDATE api_tokens SET revoked_at = $2 WHERE user_id = $1 AND revoked_at IS NULL",
    )
    .bind(user_id)
    .bind(at)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}
