//! Agents: enrollment tokens, enrolled agents and the tasks queued for them.

use sqlx::{AnyConnection, AnyPool, FromRow};

use super::{Backend, SealedColumns};
use crate::error::Result;
use crate::vault::Sealed;

#[derive(Debug, Clone, FromRow)]
pub struct EnrollmentTokenRow {
    pub id: String,
    pub token_sha256: String,
    pub owner: String,
    pub allowed_networks: String,
    pub created_by: String,
    pub created_at: String,
    pub expires_at: String,
    pub used_at: Option<String>,
    pub agent_id: Option<String>,
}

macro_rules! token_columns {
    () => {
        "id, token_sha256, owner, allowed_networks, created_by, created_at, expires_at, used_at, \
         agent_id"
    };
}

#[derive(Debug, Clone, FromRow)]
pub struct AgentRow {
    pub id: String,
    pub hostname: String,
    pub public_key: String,
    pub owner: String,
    pub allowed_networks: String,
    pub resource_id: Option<String>,
    pub status: String,
    pub version: String,
    pub session: Option<String>,
    pub last_seen_at: Option<String>,
    pub last_address: Option<String>,
    pub enrolled_at: String,
    pub revoked_at: Option<String>,
}

macro_rules! agent_columns {
    () => {
        "id, hostname, public_key, owner, allowed_networks, resource_id, status, version, \
         session, last_seen_at, last_address, enrolled_at, revoked_at"
    };
}

/// A task without its sealed password.
#[derive(Debug, Clone, FromRow)]
pub struct TaskRow {
    pub id: String,
    pub agent_id: String,
    pub kind: String,
    pub item_id: Option<String>,
    pub account_id: Option<String>,
    pub login_name: String,
    pub requested_by: String,
    pub state: String,
    pub attempts: i64,
    pub lease_session: Option<String>,
    pub lease_until: Option<String>,
    pub message: Option<String>,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    /// A listener task's work (JSON, no secret).
    pub payload: Option<String>,
    /// A listener task's report (JSON).
    pub result: Option<String>,
}

macro_rules! task_columns {
    () => {
        "id, agent_id, kind, item_id, account_id, login_name, requested_by, state, attempts, \
         lease_session, lease_until, message, created_at, started_at, finished_at, payload, result"
    };
}

/// Hand-outs of one task before it is no longer handed out (an agent that dies on it every
/// time); its reset then settles as lost.
pub const MAX_TASK_ATTEMPTS: i64 = 5;

pub async fn insert_token(
    conn: &mut AnyConnection,
    t: &EnrollmentTokenRow,
) -> Result<(), super::Error> {
    sqlx::query(concat!(
        "INSERT INTO agent_enrollment_tokens (",
        token_columns!(),
        ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
    ))
    .bind(&t.id)
    .bind(&t.token_sha256)
    .bind(&t.owner)
    .bind(&t.allowed_networks)
    .bind(&t.created_by)
    .bind(&t.created_at)
    .bind(&t.expires_at)
    .bind(&t.used_at)
    .bind(&t.agent_id)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn token_by_hash(
    conn: &mut AnyConnection,
    sha256: &str,
) -> Result<Option<EnrollmentTokenRow>, super::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        token_columns!(),
        " FROM agent_enrollment_tokens WHERE token_sha256 = $1"
    ))
    .bind(sha256)
    .fetch_optional(conn)
    .await
    .map_err(super::Error::from)
}

/// Uses a token up for `agent_id`; false when another enrollment used it first.
pub async fn use_token(
    conn: &mut AnyConnection,
    id: &str,
    agent_id: &str,
    at: &str,
) -> Result<bool, super::Error> {
    let done = sqlx::query(
        "UPDATE agent_enrollment_tokens SET used_at = $2, agent_id = $3 \
         WHERE id = $1 AND used_at IS NULL",
    )
    .bind(id)
    .bind(at)
    .bind(agent_id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

pub async fn insert_agent(conn: &mut AnyConnection, a: &AgentRow) -> Result<(), super::Error> {
    sqlx::query(concat!(
        "INSERT INTO agents (",
        agent_columns!(),
        ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
    ))
    .bind(&a.id)
    .bind(&a.hostname)
    .bind(&a.public_key)
    .bind(&a.owner)
    .bind(&a.allowed_networks)
    .bind(&a.resource_id)
    .bind(&a.status)
    .bind(&a.version)
    .bind(&a.session)
    .bind(&a.last_seen_at)
    .bind(&a.last_address)
    .bind(&a.enrolled_at)
    .bind(&a.revoked_at)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn get_agent(pool: &AnyPool, id: &str) -> Result<Option<AgentRow>> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        agent_columns!(),
        " FROM agents WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await?)
}

pub async fn list_agents(pool: &AnyPool) -> Result<Vec<AgentRow>> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        agent_columns!(),
        " FROM agents ORDER BY id"
    ))
    .fetch_all(pool)
    .await?)
}

/// The active agent that manages a resource, if any.
pub async fn agent_of_resource(pool: &AnyPool, resource_id: &str) -> Result<Option<AgentRow>> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        agent_columns!(),
        " FROM agents WHERE resource_id = $1 ORDER BY status, id LIMIT 1"
    ))
    .bind(resource_id)
    .fetch_optional(pool)
    .await?)
}

/// Whether the agent may be given work (inside the transaction that queues it, so a revoke
/// cannot slip in between).
pub async fn is_active(conn: &mut AnyConnection, id: &str) -> Result<bool, super::Error> {
    let n: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM agents WHERE id = $1 AND status = 'active'")
            .bind(id)
            .fetch_one(conn)
            .await?;
    Ok(n > 0)
}

/// Whether the account's resource has an active agent (its resets go through the agent).
pub async fn account_has_active_agent(pool: &AnyPool, account_id: &str) -> Result<bool> {
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM agents g JOIN accounts a ON a.resource_id = g.resource_id \
         WHERE a.id = $1 AND g.status = 'active'",
    )
    .bind(account_id)
    .fetch_one(pool)
    .await?;
    Ok(n > 0)
}

pub async fn set_resource(
    conn: &mut AnyConnection,
    id: &str,
    resource_id: &str,
) -> Result<(), super::Error> {
    sqlx::query("UPDATE agents SET resource_id = $2 WHERE id = $1")
        .bind(id)
        .bind(resource_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Records a poll; returns the session that polled before (another process if it differs).
pub async fn touch(
    conn: &mut AnyConnection,
    id: &str,
    session: &str,
    address: Option<&str>,
    at: &str,
) -> Result<Option<String>, super::Error> {
    let before: Option<Option<String>> =
        sqlx::query_scalar("SELECT session FROM agents WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
    sqlx::query(
        "UPDATE agents SET session = $2, last_address = $3, last_seen_at = $4 WHERE id = $1",
    )
    .bind(id)
    .bind(session)
    .bind(address)
    .bind(at)
    .execute(conn)
    .await?;
    Ok(before.flatten())
}

/// Revokes an agent and cancels its queued tasks; false when it was already revoked.
pub async fn revoke(conn: &mut AnyConnection, id: &str, at: &str) -> Result<bool, super::Error> {
    let done = sqlx::query(
        "UPDATE agents SET status = 'revoked', revoked_at = $2 WHERE id = $1 AND status = 'active'",
    )
    .bind(id)
    .bind(at)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

pub async fn insert_task(
    conn: &mut AnyConnection,
    t: &TaskRow,
    secret: &Sealed,
) -> Result<(), super::Error> {
    sqlx::query(concat!(
        "INSERT INTO agent_tasks (",
        task_columns!(),
        ", secret_key_id, secret_nonce, secret_ciphertext) VALUES ($1, $2, $3, $4, $5, $6, $7, \
         $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20)"
    ))
    .bind(&t.id)
    .bind(&t.agent_id)
    .bind(&t.kind)
    .bind(&t.item_id)
    .bind(&t.account_id)
    .bind(&t.login_name)
    .bind(&t.requested_by)
    .bind(&t.state)
    .bind(t.attempts)
    .bind(&t.lease_session)
    .bind(&t.lease_until)
    .bind(&t.message)
    .bind(&t.created_at)
    .bind(&t.started_at)
    .bind(&t.finished_at)
    .bind(&t.payload)
    .bind(&t.result)
    .bind(&secret.key_id)
    .bind(&secret.nonce)
    .bind(&secret.ciphertext)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn get_task(pool: &AnyPool, id: &str) -> Result<Option<TaskRow>> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        task_columns!(),
        " FROM agent_tasks WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await?)
}

pub async fn task_secret(pool: &AnyPool, id: &str) -> Result<Option<Sealed>> {
    let row: Option<SealedColumns> = sqlx::query_as(
        "SELECT secret_key_id AS key_id, secret_nonce AS nonce, \
         secret_ciphertext AS ciphertext FROM agent_tasks WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?;
    Ok(row.and_then(SealedColumns::sealed))
}

/// The newest task serving a reset item.
pub async fn latest_task_of_item(pool: &AnyPool, item_id: &str) -> Result<Option<TaskRow>> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        task_columns!(),
        " FROM agent_tasks WHERE item_id = $1 ORDER BY id DESC LIMIT 1"
    ))
    .bind(item_id)
    .fetch_optional(pool)
    .await?)
}

/// Tasks requested by `requester` (newest first), or every task with `None`.
pub async fn list_tasks(
    pool: &AnyPool,
    requester: Option<&str>,
    agent_id: Option<&str>,
    limit: i64,
) -> Result<Vec<TaskRow>> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        task_columns!(),
        " FROM agent_tasks WHERE ($1 IS NULL OR requested_by = $1) \
         AND ($2 IS NULL OR agent_id = $2) ORDER BY id DESC LIMIT $3"
    ))
    .bind(requester)
    .bind(agent_id)
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

/// Hands tasks taken by an earlier process of this agent (another session) out again: that
/// process is gone, since an agent runs one process at a time.
pub async fn requeue_other_sessions(
    conn: &mut AnyConnection,
    agent_id: &str,
    session: &str,
) -> Result<u64, super::Error> {
    let done = sqlx::query(
        "UPDATE agent_tasks SET state = 'queued', lease_session = NULL, lease_until = NULL \
         WHERE agent_id = $1 AND state = 'running' AND lease_session <> $2",
    )
    .bind(agent_id)
    .bind(session)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// Whether the agent has a task to take (a read: the long-poll looks before it writes).
pub async fn has_claimable(pool: &AnyPool, agent_id: &str, now: &str) -> Result<bool> {
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM agent_tasks WHERE agent_id = $1 AND attempts < $3 AND \
         (state = 'queued' OR (state = 'running' AND lease_until < $2))",
    )
    .bind(agent_id)
    .bind(now)
    .bind(MAX_TASK_ATTEMPTS)
    .fetch_one(pool)
    .await?;
    Ok(n > 0)
}

/// Takes the agent's oldest queued task (or one whose lease ran out) for `session`.
pub async fn claim_task(
    conn: &mut AnyConnection,
    backend: Backend,
    agent_id: &str,
    session: &str,
    now: &str,
    until: &str,
) -> Result<Option<TaskRow>, super::Error> {
    // Oldest first; never to a revoked agent; a running task is never handed back to the
    // process (session) that holds it, only to a later one once its lease ran out.
    let pick = match backend {
        Backend::Postgres => {
            "SELECT t.id FROM agent_tasks t JOIN agents g ON g.id = t.agent_id \
             WHERE t.agent_id = $1 AND g.status = 'active' AND t.attempts < $4 AND \
             (t.state = 'queued' OR (t.state = 'running' AND t.lease_until < $2 \
             AND t.lease_session <> $3)) ORDER BY t.created_at, t.id LIMIT 1 \
             FOR UPDATE OF t SKIP LOCKED"
        }
        Backend::Sqlite => {
            "SELECT t.id FROM agent_tasks t JOIN agents g ON g.id = t.agent_id \
             WHERE t.agent_id = $1 AND g.status = 'active' AND t.attempts < $4 AND \
             (t.state = 'queued' OR (t.state = 'running' AND t.lease_until < $2 \
             AND t.lease_session <> $3)) ORDER BY t.created_at, t.id LIMIT 1"
        }
    };
    let id: Option<String> = sqlx::query_scalar(pick)
        .bind(agent_id)
        .bind(now)
        .bind(session)
        .bind(MAX_TASK_ATTEMPTS)
        .fetch_optional(&mut *conn)
        .await?;
    let Some(id) = id else { return Ok(None) };
    sqlx::query(
        "UPDATE agent_tasks SET state = 'running', lease_session = $2, lease_until = $3, \
         attempts = attempts + 1, started_at = COALESCE(started_at, $4) WHERE id = $1",
    )
    .bind(&id)
    .bind(session)
    .bind(until)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    sqlx::query_as(concat!(
        "SELECT ",
        task_columns!(),
        " FROM agent_tasks WHERE id = $1"
    ))
    .bind(&id)
    .fetch_optional(conn)
    .await
    .map_err(super::Error::from)
}

/// Records a task's result once: only a running task of this agent changes; false otherwise.
#[allow(clippy::too_many_arguments)]
pub async fn finish_task(
    conn: &mut AnyConnection,
    id: &str,
    agent_id: &str,
    state: &str,
    message: &str,
    result: Option<&str>,
    at: &str,
) -> Result<bool, super::Error> {
    let done = sqlx::query(
        "UPDATE agent_tasks SET state = $3, message = $4, finished_at = $5, result = $6, \
         lease_session = NULL, lease_until = NULL, secret_key_id = NULL, secret_nonce = NULL, \
         secret_ciphertext = NULL WHERE id = $1 AND agent_id = $2 AND state = 'running'",
    )
    .bind(id)
    .bind(agent_id)
    .bind(state)
    .bind(message)
    .bind(at)
    .bind(result)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Cancels a task no agent ever took; false when one did (even if it is queued again: then
/// the agent may have applied it, and only `mark_lost` is honest).
pub async fn cancel_if_queued(
    conn: &mut AnyConnection,
    id: &str,
    why: &str,
    at: &str,
) -> Result<bool, super::Error> {
    let done = sqlx::query(
        "UPDATE agent_tasks SET state = 'cancelled', message = $2, finished_at = $3, \
         secret_key_id = NULL, secret_nonce = NULL, secret_ciphertext = NULL \
         WHERE id = $1 AND state = 'queued' AND attempts = 0",
    )
    .bind(id)
    .bind(why)
    .bind(at)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Cancels the attempts of post-reset delivery `delivery_id` still waiting for their agent
/// (tasks `DELIVERY-N` never handed out), forgetting their sealed passwords: the delivery was
/// superseded, and what they would tell their listener is stale. How many.
pub async fn cancel_delivery_tasks(
    conn: &mut AnyConnection,
    delivery_id: &str,
    why: &str,
    at: &str,
) -> Result<u64, super::Error> {
    let done = sqlx::query(
        "UPDATE agent_tasks SET state = 'cancelled', message = $2, finished_at = $3, \
         secret_key_id = NULL, secret_nonce = NULL, secret_ciphertext = NULL \
         WHERE substr(id, 1, length($1)) = $1 AND kind = 'listener' AND state = 'queued' \
         AND attempts = 0",
    )
    .bind(format!("{delivery_id}-"))
    .bind(why)
    .bind(at)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// Marks a task an agent took lost (it went silent holding it, or it was handed out again and
/// nobody took it since); false if it ended meanwhile.
pub async fn mark_lost(
    conn: &mut AnyConnection,
    id: &str,
    why: &str,
    at: &str,
) -> Result<bool, super::Error> {
    let done = sqlx::query(
        "UPDATE agent_tasks SET state = 'lost', message = $2, finished_at = $3, \
         lease_session = NULL, lease_until = NULL, secret_key_id = NULL, secret_nonce = NULL, \
         secret_ciphertext = NULL WHERE id = $1 AND (state = 'running' OR \
         (state = 'queued' AND attempts > 0))",
    )
    .bind(id)
    .bind(why)
    .bind(at)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Ends every open task of a revoked agent: queued ones are cancelled (nothing happened);
/// running ones are `lost` (the agent may have applied them, nobody will hear).
pub async fn end_tasks_of_revoked(
    conn: &mut AnyConnection,
    agent_id: &str,
    at: &str,
) -> Result<(), super::Error> {
    sqlx::query(
        "UPDATE agent_tasks SET state = 'cancelled', message = $2, finished_at = $3, \
         secret_key_id = NULL, secret_nonce = NULL, secret_ciphertext = NULL \
         WHERE agent_id = $1 AND state = 'queued' AND attempts = 0",
    )
    .bind(agent_id)
    .bind("the agent was revoked before it took the task; nothing was changed")
    .bind(at)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "UPDATE agent_tasks SET state = 'lost', message = $2, finished_at = $3, \
         lease_session = NULL, lease_until = NULL, secret_key_id = NULL, secret_nonce = NULL, \
         secret_ciphertext = NULL WHERE agent_id = $1 AND (state = 'running' OR \
         (state = 'queued' AND attempts > 0))",
    )
    .bind(agent_id)
    .bind("the agent was revoked after it took the task; whether it was applied is unknown")
    .bind(at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Records the nonce of a signed request; false when this agent already used it (a replay).
/// Forgets nonces whose window has passed.
pub async fn remember_nonce(
    conn: &mut AnyConnection,
    agent_id: &str,
    nonce: &str,
    keep_until: i64,
    now: i64,
) -> Result<bool, super::Error> {
    sqlx::query("DELETE FROM agent_nonces WHERE keep_until < $1")
        .bind(now)
        .execute(&mut *conn)
        .await?;
    let inserted = sqlx::query(
        "INSERT INTO agent_nonces (agent_id, nonce, keep_until) VALUES ($1, $2, $3) \
         ON CONFLICT (agent_id, nonce) DO NOTHING",
    )
    .bind(agent_id)
    .bind(nonce)
    .bind(keep_until)
    .execute(&mut *conn)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// The payloads of this agent's listener tasks whose text mentions `needle` (a pre-filter; the
/// caller parses them).
pub async fn listener_payloads_mentioning(
    pool: &AnyPool,
    agent_id: &str,
    needle: &str,
) -> Result<Vec<String>, super::Error> {
    let rows: Vec<(Option<String>,)> = sqlx::query_as(
        "SELECT payload FROM agent_tasks WHERE agent_id = $1 AND kind = 'listener' \
         AND payload LIKE $2",
    )
    .bind(agent_id)
    .bind(format!("%{needle}%"))
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().filter_map(|(p,)| p).collect())
}
