//! Notifications: messages for one user (a change waiting for their approval, a decision).

use sqlx::{AnyConnection, AnyPool, FromRow};

use super::{Page, PageRequest};
use crate::error::Result;

#[derive(Debug, Clone, FromRow)]
pub struct NotificationRow {
    pub id: String,
    pub user_name: String,
    pub at: String,
    pub kind: String,
    pub message: String,
    pub change_request_id: Option<String>,
    pub read_at: Option<String>,
}

macro_rules! columns {
    () => {
        "id, user_name, at, kind, message, change_request_id, read_at"
    };
}

pub async fn insert(conn: &mut AnyConnection, n: &NotificationRow) -> Result<(), super::Error> {
    sqlx::query(concat!(
        "INSERT INTO notifications (",
        columns!(),
        ") VALUES ($1, $2, $3, $4, $5, $6, $7)"
    ))
    .bind(&n.id)
    .bind(&n.user_name)
    .bind(&n.at)
    .bind(&n.kind)
    .bind(&n.message)
    .bind(&n.change_request_id)
    .bind(&n.read_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// One user's notifications, oldest first (ids are time-ordered), optionally unread only.
pub async fn list(
    pool: &AnyPool,
    user_name: &str,
    unread_only: bool,
    page: &PageRequest,
) -> Result<Page<NotificationRow>> {
    let rows = sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM notifications WHERE user_name = $1 AND id > $2 \
         AND ($3 = 0 OR read_at IS NULL) ORDER BY id LIMIT $4"
    ))
    .bind(user_name)
    .bind(page.after.as_deref().unwrap_or(""))
    .bind(i64::from(unread_only))
    .bind(page.limit + 1)
    .fetch_all(pool)
    .await?;
    Ok(Page::from_rows(rows, page.limit, |n: &NotificationRow| {
        n.id.clone()
    }))
}

/// Marks one of `user_name`'s notifications read; false when it is not theirs or unknown.
pub async fn mark_read(
    conn: &mut AnyConnection,
    user_name: &str,
    id: &str,
    at: &str,
) -> Result<bool, super::Error> {
    let done = sqlx::query(
        "UPDATE notifications SET read_at = COALESCE(read_at, $3) WHERE id = $1 AND user_name = $2",
    )
    .bind(id)
    .bind(user_name)
    .bind(at)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() > 0)
}
