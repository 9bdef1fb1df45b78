//! Publisher keys: ed25519 public keys whose signatures the registry accepts once trusted.

use sqlx::{Any, AnyConnection, Executor, FromRow};

use crate::error::Result;

#[derive(Debug, Clone, FromRow)]
pub struct PublisherKeyRow {
    pub key_id: String,
    pub name: String,
    pub public_key: String,
    /// `pending`, `trusted`, `removed` or `rejected`.
    pub status: String,
    /// The vault's attestation of (key id, public key), present while trusted.
    pub trust_seal: Option<String>,
    pub created_by: String,
    pub created_at: String,
    pub updated_at: String,
}

macro_rules! columns {
    () => {
        "key_id, name, public_key, status, trust_seal, created_by, created_at, updated_at"
    };
}

/// Inserts a key, or re-proposes one that was rejected or removed (same key id).
pub async fn upsert(conn: &mut AnyConnection, k: &PublisherKeyRow) -> Result<(), super::Error> {
    sqlx::query(concat!(
        "INSERT INTO publisher_keys (",
        columns!(),
        ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
         ON CONFLICT (key_id) DO UPDATE SET name = $2, public_key = $3, status = $4, trust_seal = $5, \
         created_by = $6, updated_at = $8"
    ))
    .bind(&k.key_id)
    .bind(&k.name)
    .bind(&k.public_key)
    .bind(&k.status)
    .bind(&k.trust_seal)
    .bind(&k.created_by)
    .bind(&k.created_at)
    .bind(&k.updated_at)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn set_status(
    conn: &mut AnyConnection,
    key_id: &str,
    status: &str,
    trust_seal: Option<&str>,
    at: &str,
) -> Result<(), super::Error> {
    sqlx::query(
        "UPDATE publisher_keys SET status = $2, trust_seal = $3, updated_at = $4 WHERE key_id = $1",
    )
    .bind(key_id)
    .bind(status)
    .bind(trust_seal)
    .bind(at)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn get<'c>(
    db: impl Executor<'c, Database = Any>,
    key_id: &str,
) -> Result<Option<PublisherKeyRow>> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM publisher_keys WHERE key_id = $1"
    ))
    .bind(key_id)
    .fetch_optional(db)
    .await?)
}

pub async fn list<'c>(db: impl Executor<'c, Database = Any>) -> Result<Vec<PublisherKeyRow>> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM publisher_keys ORDER BY created_at, key_id"
    ))
    .fetch_all(db)
    .await?)
}
