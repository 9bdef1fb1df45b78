//! Who controls which user account (`identity::custody`), and one-time activation codes.

use sqlx::{Any, AnyConnection, AnyPool, Executor};

use crate::error::Result;

/// The custodians of the user called `name` (the user itself included), from the pool or
/// inside a write transaction.
pub async fn custodians<'c>(
    db: impl Executor<'c, Database = Any>,
    name: &str,
) -> Result<Vec<String>> {
    Ok(sqlx::query_scalar(
        "SELECT custodian FROM user_custody WHERE user_name = $1 ORDER BY custodian",
    )
    .bind(name)
    .fetch_all(db)
    .await?)
}

/// Adds `custodians` to the user called `name` and stamps the user's custody change time.
pub async fn add(
    conn: &mut AnyConnection,
    name: &str,
    custodians: &[String],
    at: &str,
) -> Result<(), super::Error> {
    for c in custodians {
        sqlx::query(
            "INSERT INTO user_custody (user_name, custodian) VALUES ($1, $2) \
             ON CONFLICT DO NOTHING",
        )
        .bind(name)
        .bind(c)
        .execute(&mut *conn)
        .await?;
    }
    sqlx::query("UPDATE users SET custody_changed_at = $2 WHERE name = $1")
        .bind(name)
        .bind(at)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Replaces the user's activation code.
pub async fn set_activation(
    conn: &mut AnyConnection,
    user_id: &str,
    code_sha256: &str,
    issued_by: &str,
    expires_at: &str,
) -> Result<(), super::Error> {
    sqlx::query("DELETE FROM user_activations WHERE user_id = $1")
        .bind(user_id)
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "INSERT INTO user_activations (user_id, code_sha256, issued_by, expires_at) \
         VALUES ($1, $2, $3, $4)",
    )
    .bind(user_id)
    .bind(code_sha256)
    .bind(issued_by)
    .bind(expires_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Whether an unexpired activation code has this hash (a read; no write lock).
pub async fn activation_exists(pool: &AnyPool, code_sha256: &str, now: &str) -> Result<bool> {
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM user_activations WHERE code_sha256 = $1 AND expires_at > $2",
    )
    .bind(code_sha256)
    .bind(now)
    .fetch_one(pool)
    .await?;
    Ok(n > 0)
}

/// Spends the activation code with this hash if it is unexpired at `now`: deletes it and
/// returns its user's id. One caller wins a race; the other gets `None`.
pub async fn take_activation(
    conn: &mut AnyConnection,
    code_sha256: &str,
    now: &str,
) -> Result<Option<String>, super::Error> {
    let user: Option<String> = sqlx::query_scalar(
        "SELECT user_id FROM user_activations WHERE code_sha256 = $1 AND expires_at > $2",
    )
    .bind(code_sha256)
    .bind(now)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(user) = user else {
        return Ok(None);
    };
    let gone = sqlx::query("DELETE FROM user_activations WHERE user_id = $1 AND code_sha256 = $2")
        .bind(&user)
        .bind(code_sha256)
        .execute(conn)
        .await?;
    Ok((gone.rows_affected() == 1).then_some(user))
}
