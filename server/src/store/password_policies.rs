//! Password policies.

use sqlx::{AnyConnection, AnyPool, FromRow};

use crate::error::Result;

#[derive(Debug, Clone, FromRow)]
pub struct PolicyRow {
    pub name: String,
    pub min_length: i64,
    pub generated_length: i64,
    pub require_lowercase: i64,
    pub require_uppercase: i64,
    pub require_digits: i64,
    pub require_symbols: i64,
    pub excluded_characters: String,
    pub history: i64,
    pub max_age_days: Option<i64>,
    pub builtin: i64,
    pub created_at: String,
}

macro_rules! columns {
    () => {
        "name, min_length, generated_length, require_lowercase, require_uppercase, \
         require_digits, require_symbols, excluded_characters, history, max_age_days, builtin, \
         created_at"
    };
}

/// Inserts a policy; a built-in one is refreshed if it exists.
pub async fn upsert(conn: &mut AnyConnection, p: &PolicyRow) -> Result<(), super::Error> {
    sqlx::query(concat!(
        "INSERT INTO password_policies (",
        columns!(),
        ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
         ON CONFLICT (name) DO UPDATE SET min_length = $2, generated_length = $3, \
         require_lowercase = $4, require_uppercase = $5, require_digits = $6, \
         require_symbols = $7, excluded_characters = $8, history = $9, max_age_days = $10 \
         WHERE password_policies.builtin = 1"
    ))
    .bind(&p.name)
    .bind(p.min_length)
    .bind(p.generated_length)
    .bind(p.require_lowercase)
    .bind(p.require_uppercase)
    .bind(p.require_digits)
    .bind(p.require_symbols)
    .bind(&p.excluded_characters)
    .bind(p.history)
    .bind(p.max_age_days)
    .bind(p.builtin)
    .bind(&p.created_at)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn get(pool: &AnyPool, name: &str) -> Result<Option<PolicyRow>> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM password_policies WHERE name = $1"
    ))
    .bind(name)
    .fetch_optional(pool)
    .await?)
}

pub async fn list(pool: &AnyPool) -> Result<Vec<PolicyRow>> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM password_policies ORDER BY name"
    ))
    .fetch_all(pool)
    .await?)
}
