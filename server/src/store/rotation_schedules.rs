//! Rotation schedules.

use sqlx::{AnyConnection, AnyPool, FromRow};

use crate::error::Result;

#[derive(Debug, Clone, FromRow)]
pub struct ScheduleRow {
    pub name: String,
    pub resource_type: Option<String>,
    /// JSON array of resource ids.
    pub resource_ids: Option<String>,
    pub every_hours: i64,
    pub next_run_at: String,
    /// JSON array of user names.
    pub notify: Option<String>,
    pub created_by: String,
    pub created_at: String,
}

macro_rules! columns {
    () => {
        "name, resource_type, resource_ids, every_hours, next_run_at, notify, created_by, \
         created_at"
    };
}

pub async fn insert(conn: &mut AnyConnection, r: &ScheduleRow) -> Result<(), super::Error> {
    sqlx::query(concat!(
        "INSERT INTO rotation_schedules (",
        columns!(),
        ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
    ))
    .bind(&r.name)
    .bind(&r.resource_type)
    .bind(&r.resource_ids)
    .bind(r.every_hours)
    .bind(&r.next_run_at)
    .bind(&r.notify)
    .bind(&r.created_by)
    .bind(&r.created_at)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn list(pool: &AnyPool) -> Result<Vec<ScheduleRow>> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM rotation_schedules ORDER BY name"
    ))
    .fetch_all(pool)
    .await?)
}

/// Schedules whose next run is due at `now`.
pub async fn due(pool: &AnyPool, now: &str) -> Result<Vec<ScheduleRow>> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM rotation_schedules WHERE next_run_at <= $1 ORDER BY name"
    ))
    .bind(now)
    .fetch_all(pool)
    .await?)
}

/// Moves a schedule's next run on, if it still has the run we saw (another server may have).
pub async fn advance(
    conn: &mut AnyConnection,
    name: &str,
    seen: &str,
    next: &str,
) -> Result<bool, super::Error> {
    let done = sqlx::query(
        "UPDATE rotation_schedules SET next_run_at = $3 WHERE name = $1 AND next_run_at = $2",
    )
    .bind(name)
    .bind(seen)
    .bind(next)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

pub async fn delete(conn: &mut AnyConnection, name: &str) -> Result<bool, super::Error> {
    let done = sqlx::query("DELETE FROM rotation_schedules WHERE name = $1")
        .bind(name)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() > 0)
}
