//! How each resource's passwords are reset: admin account, admin kind, pinned host key
//! and TLS certificate, policy.

use sqlx::{AnyConnection, AnyPool, FromRow};

use crate::error::Result;

#[derive(Debug, Clone, FromRow)]
pub struct ResetSettingsRow {
    pub resource_id: String,
    pub admin_account_id: Option<String>,
    /// `root` or `sudo`.
    pub admin_kind: String,
    /// `SHA256:…`, recorded at first use.
    pub ssh_host_key: Option<String>,
    /// `SHA256:…` of a TLS target's certificate, recorded at first use.
    pub tls_certificate: Option<String>,
    pub password_policy: String,
    pub updated_at: String,
}

macro_rules! columns {
    () => {
        "resource_id, admin_account_id, admin_kind, ssh_host_key, password_policy, updated_at, \
         tls_certificate"
    };
}

pub async fn upsert(conn: &mut AnyConnection, s: &ResetSettingsRow) -> Result<(), super::Error> {
    sqlx::query(concat!(
        "INSERT INTO resource_reset_settings (",
        columns!(),
        ") VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (resource_id) DO UPDATE SET \
         admin_account_id = $2, admin_kind = $3, ssh_host_key = $4, password_policy = $5, \
         updated_at = $6, tls_certificate = $7"
    ))
    .bind(&s.resource_id)
    .bind(&s.admin_account_id)
    .bind(&s.admin_kind)
    .bind(&s.ssh_host_key)
    .bind(&s.password_policy)
    .bind(&s.updated_at)
    .bind(&s.tls_certificate)
    .execute(conn)
    .await?;
    Ok(())
}

/// Records the host key seen at first use, unless one was recorded meanwhile.
pub async fn pin_host_key(
    conn: &mut AnyConnection,
    resource_id: &str,
    fingerprint: &str,
) -> Result<(), super::Error> {
    sqlx::query(
        "UPDATE resource_reset_settings SET ssh_host_key = $2 \
         WHERE resource_id = $1 AND ssh_host_key IS NULL",
    )
    .bind(resource_id)
    .bind(fingerprint)
    .execute(conn)
    .await?;
    Ok(())
}

/// Records the TLS certificate seen at first use, unless one was recorded meanwhile.
pub async fn pin_tls_certificate(
    conn: &mut AnyConnection,
    resource_id: &str,
    fingerprint: &str,
) -> Result<(), super::Error> {
    sqlx::query(
        "UPDATE resource_reset_settings SET tls_certificate = $2 \
         WHERE resource_id = $1 AND tls_certificate IS NULL",
    )
    .bind(resource_id)
    .bind(fingerprint)
    .execute(conn)
    .await?;
    Ok(())
}

/// The pinned TLS certificate, read inside a write transaction (as [`pinned_host_key`]).
pub async fn pinned_tls_certificate(
    conn: &mut AnyConnection,
    resource_id: &str,
) -> Result<Option<String>, super::Error> {
    let key: Option<Option<String>> = sqlx::query_scalar(
        "SELECT tls_certificate FROM resource_reset_settings WHERE resource_id = $1",
    )
    .bind(resource_id)
    .fetch_optional(conn)
    .await?;
    Ok(key.flatten())
}

/// The pinned host key, read inside a write transaction (so a pin made at first use in
/// between is not lost by an update that leaves the key out).
pub async fn pinned_host_key(
    conn: &mut AnyConnection,
    resource_id: &str,
) -> Result<Option<String>, super::Error> {
    let key: Option<Option<String>> = sqlx::query_scalar(
        "SELECT ssh_host_key FROM resource_reset_settings WHERE resource_id = $1",
    )
    .bind(resource_id)
    .fetch_optional(conn)
    .await?;
    Ok(key.flatten())
}

pub async fn get(pool: &AnyPool, resource_id: &str) -> Result<Option<ResetSettingsRow>> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM resource_reset_settings WHERE resource_id = $1"
    ))
    .bind(resource_id)
    .fetch_optional(pool)
    .await?)
}

/// The resource whose admin account this is, if any.
pub async fn resource_administered_by(pool: &AnyPool, account_id: &str) -> Result<Option<String>> {
    Ok(sqlx::query_scalar(
        "SELECT resource_id FROM resource_reset_settings WHERE admin_account_id = $1",
    )
    .bind(account_id)
    .fetch_optional(pool)
    .await?)
}

pub async fn delete(conn: &mut AnyConnection, resource_id: &str) -> Result<(), super::Error> {
    sqlx::query("DELETE FROM resource_reset_settings WHERE resource_id = $1")
        .bind(resource_id)
        .execute(conn)
        .await?;
    Ok(())
}
