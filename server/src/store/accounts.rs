//! Accounts: a login on a resource, with its password sealed by the vault.

use sqlx::{AnyConnection, AnyPool, FromRow};

use super::{Page, PageRequest};
use crate::error::Result;
use crate::vault::Sealed;

/// An account without its sealed password: what listings and most reads need.
#[derive(Debug, Clone, FromRow)]
pub struct AccountRow {
    pub id: String,
    pub resource_id: String,
    pub login_name: String,
    pub description: Option<String>,
    pub domain_name: Option<String>,
    pub compliant_status: String,
    pub compliant_reason: Option<String>,
    pub expiry_status: String,
    pub password_sync_status: String,
    pub custom_fields: String,
    pub password_changed_at: String,
    pub created_at: String,
    pub updated_at: String,
}

/// The column list, as a literal so queries stay `&'static str` (sqlx's `SqlSafeStr`).
macro_rules! columns {
    () => {
        "id, resource_id, login_name, description, domain_name, compliant_status, \
     compliant_reason, expiry_status, password_sync_status, custom_fields, password_changed_at, \
     created_at, updated_at"
    };
}

pub async fn insert(
    conn: &mut AnyConnection,
    a: &AccountRow,
    password: &Sealed,
) -> Result<(), super::Error> {
    sqlx::query(concat!(
        "INSERT INTO accounts (",
        columns!(),
        ", password_key_id, password_nonce, password_ciphertext) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)"
    ))
    .bind(&a.id)
    .bind(&a.resource_id)
    .bind(&a.login_name)
    .bind(&a.description)
    .bind(&a.domain_name)
    .bind(&a.compliant_status)
    .bind(&a.compliant_reason)
    .bind(&a.expiry_status)
    .bind(&a.password_sync_status)
    .bind(&a.custom_fields)
    .bind(&a.password_changed_at)
    .bind(&a.created_at)
    .bind(&a.updated_at)
    .bind(&password.key_id)
    .bind(&password.nonce)
    .bind(&password.ciphertext)
    .execute(conn)
    .await?;
    Ok(())
}

/// Writes the descriptive columns of `a` (not the password, not the status fields).
pub async fn update_details(conn: &mut AnyConnection, a: &AccountRow) -> Result<(), super::Error> {
    sqlx::query(
        "UPDATE accounts SET login_name = $2, description = $3, domain_name = $4, \
         custom_fields = $5, updated_at = $6 WHERE id = $1",
    )
    .bind(&a.id)
    .bind(&a.login_name)
    .bind(&a.description)
    .bind(&a.domain_name)
    .bind(&a.custom_fields)
    .bind(&a.updated_at)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn get(pool: &AnyPool, id: &str) -> Result<Option<AccountRow>> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM accounts WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await?)
}

#[derive(FromRow)]
struct SealedRow {
    password_key_id: String,
    password_nonce: Vec<u8>,
    password_ciphertext: Vec<u8>,
}

pub async fn get_sealed_password(pool: &AnyPool, id: &str) -> Result<Option<Sealed>> {
    let row: Option<SealedRow> = sqlx::query_as(
        "SELECT password_key_id, password_nonce, password_ciphertext FROM accounts WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|r| Sealed {
        key_id: r.password_key_id,
        nonce: r.password_nonce,
        ciphertext: r.password_ciphertext,
    }))
}

pub async fn list_for_resource(
    pool: &AnyPool,
    resource_id: &str,
    page: &PageRequest,
) -> Result<Page<AccountRow>> {
    let rows = sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM accounts WHERE resource_id = $1 AND id > $2 ORDER BY id LIMIT $3"
    ))
    .bind(resource_id)
    .bind(page.after.as_deref().unwrap_or(""))
    .bind(page.limit + 1)
    .fetch_all(pool)
    .await?;
    Ok(Page::from_rows(rows, page.limit, |r: &AccountRow| {
        r.id.clone()
    }))
}

/// Most ids per statement of [`existing`] (fewer when they are long: `super::batches`).
const IDS_PER_SELECT: usize = 500;

/// Which of `ids` name an account: one statement per few hundred ids.
pub async fn existing(pool: &AnyPool, ids: &[String]) -> Result<std::collections::HashSet<String>> {
    let mut found = std::collections::HashSet::with_capacity(ids.len());
    for chunk in super::batches(ids, IDS_PER_SELECT, |id| id.len() + super::VALUE_OVERHEAD) {
        // Fixed text and numbered placeholders only; every id is bound.
        let marks: Vec<String> = (1..=chunk.len()).map(|n| format!("${n}")).collect();
        let sql = format!("SELECT id FROM accounts WHERE id IN ({})", marks.join(", "));
        let mut query = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql));
        for id in chunk {
            query = query.bind(id);
        }
        found.extend(query.fetch_all(pool).await?);
    }
    Ok(found)
}

/// What `GET /v1/accounts` narrows by; every given filter must hold.
#[derive(Debug, Default)]
pub struct AccountFilter<'a> {
    pub login_name: Option<&'a str>,
    pub sync_status: Option<&'a str>,
    pub resource_type: Option<&'a str>,
}

/// Accounts across resources in id order, narrowed by `filter`. Each filter has an index that
/// leads with its column and ends with `id` (migration 0019), so a page costs a range scan,
/// not a scan of every account (`docs/performance.md`, "Inventory at scale").
pub async fn list(
    pool: &AnyPool,
    filter: &AccountFilter<'_>,
    page: &PageRequest,
) -> Result<Page<AccountRow>> {
    // The statement is put together from the fixed fragments below and numbered placeholders
    // only; every value is bound.
    let mut sql = String::from(concat!(
        "SELECT ",
        columns!(),
        " FROM accounts WHERE id > $1"
    ));
    let mut values = vec![page.after.as_deref().unwrap_or("")];
    let conditions = [
        (" AND login_name = $", filter.login_name, ""),
        (" AND password_sync_status = $", filter.sync_status, ""),
        (
            " AND resource_id IN (SELECT id FROM resources WHERE resource_type = $",
            filter.resource_type,
            ")",
        ),
    ];
    for (head, value, tail) in conditions {
        if let Some(v) = value {
            values.push(v);
            sql.push_str(&format!("{head}{}{tail}", values.len()));
        }
    }
    sql.push_str(&format!(" ORDER BY id LIMIT ${}", values.len() + 1));
    let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql));
    for v in values {
        query = query.bind(v);
    }
    let rows = query.bind(page.limit + 1).fetch_all(pool).await?;
    Ok(Page::from_rows(rows, page.limit, |r: &AccountRow| {
        r.id.clone()
    }))
}

pub async fn delete(conn: &mut AnyConnection, id: &str) -> Result<bool, super::Error> {
    let done = sqlx::query("DELETE FROM accounts WHERE id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// Stores a new sealed password (a committed reset) and marks the account in sync.
pub async fn set_password(
    conn: &mut AnyConnection,
    id: &str,
    password: &Sealed,
    changed_at: &str,
) -> Result<(), super::Error> {
    sqlx::query(
        "UPDATE accounts SET password_key_id = $2, password_nonce = $3, \
         password_ciphertext = $4, password_changed_at = $5, updated_at = $5, \
         password_sync_status = 'in-sync' WHERE id = $1",
    )
    .bind(id)
    .bind(&password.key_id)
    .bind(&password.nonce)
    .bind(&password.ciphertext)
    .bind(changed_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Settles an out-of-sync account whose stored password is still `expected` (every sealing
/// draws a fresh nonce, so an equal nonce is the same sealing): it stores `password` (a kept
/// one the target proved) or, when `None`, keeps the stored one, and marks it in sync. False
/// (nothing written) when the password or the status changed since they were read.
pub async fn settle_out_of_sync(
    conn: &mut AnyConnection,
    id: &str,
    expected: &Sealed,
    password: Option<&Sealed>,
    at: &str,
) -> Result<bool, super::Error> {
    let done = match password {
        Some(p) => sqlx::query(
            "UPDATE accounts SET password_key_id = $3, password_nonce = $4, \
             password_ciphertext = $5, password_changed_at = $6, updated_at = $6, \
             password_sync_status = 'in-sync' WHERE id = $1 AND password_nonce = $2 \
             AND password_sync_status = 'out-of-sync'",
        )
        .bind(id)
        .bind(&expected.nonce)
        .bind(&p.key_id)
        .bind(&p.nonce)
        .bind(&p.ciphertext)
        .bind(at),
        None => sqlx::query(
            "UPDATE accounts SET password_sync_status = 'in-sync', updated_at = $3 \
             WHERE id = $1 AND password_nonce = $2 AND password_sync_status = 'out-of-sync'",
        )
        .bind(id)
        .bind(&expected.nonce)
        .bind(at),
    }
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Records whether the target is known to accept the stored password.
pub async fn set_sync_status(
    conn: &mut AnyConnection,
    id: &str,
    status: &str,
    at: &str,
) -> Result<(), super::Error> {
    sqlx::query("UPDATE accounts SET password_sync_status = $2, updated_at = $3 WHERE id = $1")
        .bind(id)
        .bind(status)
        .bind(at)
        .execute(conn)
        .await?;
    Ok(())
}

/// The login names of a resource's accounts.
pub async fn logins_of(pool: &AnyPool, resource_id: &str) -> Result<Vec<String>> {
    Ok(
        sqlx::query_scalar("SELECT login_name FROM accounts WHERE resource_id = $1")
            .bind(resource_id)
            .fetch_all(pool)
            .await?,
    )
}
