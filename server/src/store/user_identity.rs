//! Everything a user's identity seal covers (`identity::seal`), read together, and the seal's
//! column.

use sqlx::{AnyConnection, AnyPool, FromRow};

use super::Backend;
use super::users::UserRow;
use crate::error::Result;

/// A token that has not been revoked (expired ones included: they are refused by date).
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct LiveToken {
    pub id: String,
    pub token_sha256: String,
    pub expires_at: String,
}

/// The activation code a user has not spent yet.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct PendingActivation {
    pub code_sha256: String,
    pub issued_by: String,
    pub expires_at: String,
}

/// A user's identity as the rows hold it now.
#[derive(Debug, Clone)]
pub struct IdentityRows {
    pub user: UserRow,
    /// `users.identity_seal`.
    pub seal: Option<String>,
    pub custody_changed_at: Option<String>,
    /// The user's custodians, by name (the user itself included).
    pub custodians: Vec<String>,
    /// The privileges of the user's role as stored (`None`: no such role).
    pub role_privileges: Option<String>,
    /// Live tokens, by id.
    pub tokens: Vec<LiveToken>,
    pub activation: Option<PendingActivation>,
}

/// The identity of the user `user_id`, `None` when there is no such user.
pub async fn read(conn: &mut AnyConnection, user_id: &str) -> Result<Option<IdentityRows>> {
    let user: Option<UserRow> =
        sqlx::query_as("SELECT id, name, role, created_at, email FROM users WHERE id = $1")
            .bind(user_id)
            .fetch_optional(&mut *conn)
            .await?;
    let Some(user) = user else {
        return Ok(None);
    };
    let (seal, custody_changed_at): (Option<String>, Option<String>) =
        sqlx::query_as("SELECT identity_seal, custody_changed_at FROM users WHERE id = $1")
            .bind(user_id)
            .fetch_one(&mut *conn)
            .await?;
    let custodians = super::user_custody::custodians(&mut *conn, &user.name).await?;
    let role_privileges = sqlx::query_scalar("SELECT privileges FROM roles WHERE name = $1")
        .bind(&user.role)
        .fetch_optional(&mut *conn)
        .await?;
    let tokens = sqlx::query_as(
        "SELECT id, token_sha256, expires_at FROM api_tokens \
         WHERE user_id = $1 AND revoked_at IS NULL ORDER BY id",
    )
    .bind(user_id)
    .fetch_all(&mut *conn)
    .await?;
    let activation = sqlx::query_as(
        "SELECT code_sha256, issued_by, expires_at FROM user_activations WHERE user_id = $1",
    )
    .bind(user_id)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(Some(IdentityRows {
        user,
        seal,
        custody_changed_at,
        custodians,
        role_privileges,
        tokens,
        activation,
    }))
}

/// [`read`] from the pool, in one read transaction (one snapshot on SQLite).
pub async fn read_from(pool: &AnyPool, user_id: &str) -> Result<Option<IdentityRows>> {
    let mut tx = pool.begin().await?;
    let rows = read(&mut tx, user_id).await?;
    tx.rollback().await?;
    Ok(rows)
}

/// The id of the user called `name`.
pub async fn id_of(pool: &AnyPool, name: &str) -> Result<Option<String>> {
    Ok(sqlx::query_scalar("SELECT id FROM users WHERE name = $1")
        .bind(name)
        .fetch_optional(pool)
        .await?)
}

/// Keeps every other session from writing the tables an identity covers until this
/// transaction ends (PostgreSQL; SQLite's write transaction already excludes other writers),
/// so what a change checks is what it seals. Readers are not blocked.
pub async fn lock_tables(conn: &mut AnyConnection, backend: Backend) -> Result<()> {
    if backend == Backend::Postgres {
        sqlx::query(
            "LOCK TABLE users, api_tokens, user_custody, user_activations, roles \
             IN SHARE ROW EXCLUSIVE MODE",
        )
        .execute(conn)
        .await?;
    }
    Ok(())
}

/// Stores the user's identity seal.
pub async fn set_seal(conn: &mut AnyConnection, user_id: &str, seal: &str) -> Result<()> {
    sqlx::query("UPDATE users SET identity_seal = $2 WHERE id = $1")
        .bind(user_id)
        .bind(seal)
        .execute(conn)
        .await?;
    Ok(())
}

/// Every user's id.
pub async fn user_ids(conn: &mut AnyConnection) -> Result<Vec<String>> {
    Ok(sqlx::query_scalar("SELECT id FROM users ORDER BY id")
        .fetch_all(conn)
        .await?)
}
