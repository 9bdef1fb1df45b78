//! The cluster's rows: nodes (`cluster_nodes`) and leased duties (`cluster_duties`), and the
//! database's own clock.

use sqlx::{AnyConnection, AnyPool, FromRow};

use super::Backend;

#[derive(Debug, Clone, FromRow)]
pub struct NodeRow {
    pub id: String,
    pub address: String,
    pub version: String,
    pub started_at: String,
    pub heartbeat_at: String,
    pub stopped_at: Option<String>,
    pub clock_offset_ms: i64,
}

/// The database's clock in microseconds since the Unix epoch (`None` on SQLite, which runs on
/// this machine and has no clock of its own).
pub async fn database_clock_micros(
    pool: &AnyPool,
    backend: Backend,
) -> Result<Option<i64>, super::Error> {
    match backend {
        Backend::Sqlite => Ok(None),
        Backend::Postgres => Ok(Some(
            sqlx::query_scalar(
                "SELECT CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000000 AS BIGINT)",
            )
            .fetch_one(pool)
            .await?,
        )),
    }
}

pub async fn insert_node(conn: &mut AnyConnection, n: &NodeRow) -> Result<(), super::Error> {
    sqlx::query(
        "INSERT INTO cluster_nodes (id, address, version, started_at, heartbeat_at, stopped_at, \
         clock_offset_ms) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&n.id)
    .bind(&n.address)
    .bind(&n.version)
    .bind(&n.started_at)
    .bind(&n.heartbeat_at)
    .bind(&n.stopped_at)
    .bind(n.clock_offset_ms)
    .execute(conn)
    .await?;
    Ok(())
}

/// Deletes the rows of nodes whose last heartbeat is older than `before`.
pub async fn forget_nodes(conn: &mut AnyConnection, before: &str) -> Result<(), super::Error> {
    sqlx::query("DELETE FROM cluster_nodes WHERE heartbeat_at < $1")
        .bind(before)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn beat_node(
    pool: &AnyPool,
    id: &str,
    at: &str,
    clock_offset_ms: i64,
) -> Result<(), super::Error> {
    sqlx::query("UPDATE cluster_nodes SET heartbeat_at = $2, clock_offset_ms = $3 WHERE id = $1")
        .bind(id)
        .bind(at)
        .bind(clock_offset_ms)
        .execute(pool)
        .await?;
    Ok(())
}

pub async fn set_node_address(pool: &AnyPool, id: &str, address: &str) -> Result<(), super::Error> {
    sqlx::query("UPDATE cluster_nodes SET address = $2 WHERE id = $1")
        .bind(id)
        .bind(address)
        .execute(pool)
        .await?;
    Ok(())
}

pub async fn stop_node(pool: &AnyPool, id: &str, at: &str) -> Result<(), super::Error> {
    sqlx::query("UPDATE cluster_nodes SET stopped_at = $2, heartbeat_at = $2 WHERE id = $1")
        .bind(id)
        .bind(at)
        .execute(pool)
        .await?;
    Ok(())
}

pub async fn list_nodes(pool: &AnyPool) -> Result<Vec<NodeRow>, super::Error> {
    Ok(sqlx::query_as(
        "SELECT id, address, version, started_at, heartbeat_at, stopped_at, clock_offset_ms \
         FROM cluster_nodes ORDER BY started_at DESC LIMIT 1000",
    )
    .fetch_all(pool)
    .await?)
}

/// The lease owners (`resets::lease_owner`) of open reset items whose lease is live at `now`.
pub async fn live_reset_leases(pool: &AnyPool, now: &str) -> Result<Vec<String>, super::Error> {
    Ok(sqlx::query_scalar(
        "SELECT lease_owner FROM reset_items WHERE state NOT IN \
         ('done', 'vetoed', 'failed', 'out-of-sync', 'parked') \
         AND lease_owner IS NOT NULL AND lease_until >= $1",
    )
    .bind(now)
    .fetch_all(pool)
    .await?)
}

/// Renews `duty` for `node`, or takes it (raising its fence) when it has no row or its lease
/// ran out before `now`. Returns the fence when `node` holds it.
pub async fn hold_duty(
    conn: &mut AnyConnection,
    duty: &str,
    node: &str,
    now: &str,
    until: &str,
) -> Result<Option<i64>, super::Error> {
    sqlx::query(
        "INSERT INTO cluster_duties (name, holder, lease_until, fence) VALUES ($1, $2, $3, 1) \
         ON CONFLICT (name) DO NOTHING",
    )
    .bind(duty)
    .bind(node)
    .bind(until)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "UPDATE cluster_duties SET holder = $2, lease_until = $3, fence = fence + 1 \
         WHERE name = $1 AND holder <> $2 AND lease_until < $4",
    )
    .bind(duty)
    .bind(node)
    .bind(until)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    let renewed =
        sqlx::query("UPDATE cluster_duties SET lease_until = $3 WHERE name = $1 AND holder = $2")
            .bind(duty)
            .bind(node)
            .bind(until)
            .execute(&mut *conn)
            .await?;
    if renewed.rows_affected() == 0 {
        return Ok(None);
    }
    Ok(Some(
        sqlx::query_scalar("SELECT fence FROM cluster_duties WHERE name = $1")
            .bind(duty)
            .fetch_one(conn)
            .await?,
    ))
}

/// Lets `duty` go at once, if `node` holds it.
pub async fn release_duty(
    conn: &mut AnyConnection,
    duty: &str,
    node: &str,
) -> Result<(), super::Error> {
    sqlx::query("UPDATE cluster_duties SET lease_until = '' WHERE name = $1 AND holder = $2")
        .bind(duty)
        .bind(node)
        .execute(conn)
        .await?;
    Ok(())
}

/// (duty, holder) of every duty whose lease is live at `now`.
pub async fn duty_holders(
    pool: &AnyPool,
    now: &str,
) -> Result<Vec<(String, String)>, super::Error> {
    Ok(
        sqlx::query_as("SELECT name, holder FROM cluster_duties WHERE lease_until >= $1")
            .bind(now)
            .fetch_all(pool)
            .await?,
    )
}

/// The channel on which nodes ring each other (`cluster::bells`).
const BELLS: &str = "lockstep_bells";

/// Rings `payload` on the nodes' channel (PostgreSQL `pg_notify`, delivered to every listening
/// connection once the statement's transaction commits; nothing on SQLite, which has one node).
pub async fn ring(pool: &AnyPool, backend: Backend, payload: &str) -> Result<(), super::Error> {
    if backend == Backend::Postgres {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(BELLS)
            .bind(payload)
            .execute(pool)
            .await?;
    }
    Ok(())
}

/// A connection of its own that hears what the nodes ring (PostgreSQL `LISTEN`). It
/// reconnects by itself when its connection drops; bells rung meanwhile are missed, which the
/// waiters' own re-reads of the database cover.
pub struct BellListener(sqlx::postgres::PgListener);

impl BellListener {
    pub async fn connect(url: &str) -> Result<BellListener, super::Error> {
        let mut listener = sqlx::postgres::PgListener::connect(url).await?;
        listener.listen(BELLS).await?;
        Ok(BellListener(listener))
    }

    /// The next payload rung.
    pub async fn recv(&mut self) -> Result<String, super::Error> {
        Ok(self.0.recv().await?.payload().to_string())
    }
}
