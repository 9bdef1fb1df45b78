//! The task channel. The reset engine queues a task (its password sealed); the agent's
//! long-poll takes it at once; the agent reports the result, which is recorded once however
//! often the report is repeated; the waiting reset wakes.
//!
//! **Leases.** A taken task is leased to the agent process (its session) for [`TASK_LEASE`]. A
//! task whose lease ran out, or that an earlier process of the same agent held (the agent
//! restarted), is handed out again. The agent checks before it changes anything, so a task
//! handed out twice changes the password once.

use std::time::{Duration, Instant};

use lockstep_agent_protocol::messages::{
    ListenerReport, ListenerWork, Outcome as TaskOutcome, Password, ResultReceipt, Task,
    TaskResult, Work,
};
use serde::Serialize;

use super::AgentHub;
use crate::audit::{self, NewEvent, Outcome};
use crate::error::{Error, Result};
use crate::states::{AgentStatus, SyncStatus, TaskState};
use crate::store::agents::{AgentRow, TaskRow};
use crate::store::{self, Store};
use crate::vault::{Secret, Vault};

/// How long an agent holds a task it took before it is handed out again.
pub const TASK_LEASE: Duration = Duration::from_secs(120);
/// How often a held long-poll looks at the store without being rung: longer than a default
/// hold, so the bells (`cluster::bells`, across nodes too) are the only hot path, and a task
/// whose agent lease ran out, or a bell lost with a dropped connection, waits at most for the
/// agent's next poll.
const RECHECK: Duration = Duration::from_secs(30);
/// How often a reset waiting for its task's result looks at the store without being rung
/// (whether the agent took the task in time, a bell lost).
const RESULT_RECHECK: Duration = Duration::from_secs(5);
/// How long the long-poll holds when the agent asks for nothing else.
pub const DEFAULT_HOLD: Duration = Duration::from_secs(25);

/// The largest task result an agent may send. An honest agent's is a few KiB (its runtime
/// already cuts a listener's message to 4 KiB and its denials to 64 and a count); anything
/// this large is refused whole.
pub const MAX_RESULT_BYTES: usize = 256 * 1024;
/// Most of a task result's message kept, in bytes.
const MAX_TASK_MESSAGE_BYTES: usize = 2000;
/// Longest text of one denial an agent reports: a denial as the runtime writes it (capability,
/// request and reason, each cut to `MAX_DENIAL_TEXT`).
const MAX_DENIAL_BYTES: usize = 2 * lockstep_runtime::limits::MAX_DENIAL_TEXT + 64;
/// How a listener run may end, as an agent reports it.
const LISTENER_OUTCOMES: [&str; 6] = ["proceed", "veto", "success", "failure", "retry", "stopped"];

/// What a task asks the agent to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Reset,
    Verify,
    /// An agent-mode listener run; the sealed secret is [`ListenerSecrets`] as JSON.
    Listener,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Reset => "reset",
            Kind::Verify => "verify",
            Kind::Listener => "listener",
        }
    }
}

/// The passwords a listener task may hand its listener, sealed together.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct ListenerSecrets {
    pub old: Option<String>,
    pub new: Option<String>,
}

impl Drop for ListenerSecrets {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.old.zeroize();
        self.new.zeroize();
    }
}

fn secret_aad(task_id: &str) -> String {
    format!("agent-task:{task_id}:secret")
}

/// A task as its requester sees it (never its password).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TaskView {
    pub id: String,
    pub agent_id: String,
    /// `reset` or `verify`.
    pub kind: String,
    pub account_id: Option<String>,
    pub login_name: String,
    /// The reset item it serves.
    pub item_id: Option<String>,
    pub requested_by: String,
    /// `queued`, `running`, `succeeded`, `refused`, `failed`, `cancelled` or `lost`.
    pub state: String,
    pub attempts: i64,
    pub message: Option<String>,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
}

impl From<TaskRow> for TaskView {
    fn from(t: TaskRow) -> TaskView {
        TaskView {
            id: t.id,
            agent_id: t.agent_id,
            kind: t.kind,
            account_id: t.account_id,
            login_name: t.login_name,
            item_id: t.item_id,
            requested_by: t.requested_by,
            state: t.state,
            attempts: t.attempts,
            message: t.message,
            created_at: t.created_at,
            started_at: t.started_at,
            finished_at: t.finished_at,
        }
    }
}

/// What to queue.
pub struct NewTask<'a> {
    pub id: String,
    pub agent_id: &'a str,
    pub kind: Kind,
    pub item_id: Option<&'a str>,
    pub account_id: Option<&'a str>,
    pub login_name: &'a str,
    pub requested_by: &'a str,
    /// The password (reset, verify) or the sealed [`ListenerSecrets`] JSON (listener).
    pub password: &'a Secret,
    /// A listener task's work, without its passwords.
    pub listener: Option<&'a ListenerWork>,
}

/// Queues a task and rings its agent. Queuing the same id twice keeps the first.
pub async fn queue(store: &Store, vault: &Vault, hub: &AgentHub, t: NewTask<'_>) -> Result<()> {
    if store::agents::get_task(store.pool(), &t.id)
        .await?
        .is_some()
    {
        return Ok(());
    }
    let sealed = vault.seal_secret(t.password, &secret_aad(&t.id))?;
    let row = TaskRow {
        id: t.id.clone(),
        agent_id: t.agent_id.to_string(),
        kind: t.kind.as_str().into(),
        item_id: t.item_id.map(str::to_string),
        account_id: t.account_id.map(str::to_string),
        login_name: t.login_name.to_string(),
        requested_by: t.requested_by.to_string(),
        state: TaskState::Queued.as_str().into(),
        attempts: 0,
        lease_session: None,
        lease_until: None,
        message: None,
        created_at: crate::time::now(),
        started_at: None,
        finished_at: None,
        payload: match t.listener {
            Some(w) => Some(serde_json::to_string(w).map_err(|e| Error::Internal(e.to_string()))?),
            None => None,
        },
        result: None,
    };
    let mut tx = store.begin_write().await?;
    if !store::agents::is_active(tx.conn(), t.agent_id).await? {
        return Err(Error::Conflict(format!(
            "agent {} was revoked; its machine gets no more work",
            t.agent_id
        )));
    }
    store::agents::insert_task(tx.conn(), &row, &sealed).await?;
    tx.commit().await?;
    hub.ring_agent(t.agent_id);
    Ok(())
}

/// The long-poll: the agent's next task, waiting up to `hold` for one to be queued.
pub async fn next(
    store: &Store,
    vault: &Vault,
    hub: &AgentHub,
    agent: &AgentRow,
    session: &str,
    hold: Duration,
    source_ip: Option<&str>,
) -> Result<Option<Task>> {
    check_session(session)?;
    let hold = hold.min(Duration::from_secs(lockstep_agent_protocol::MAX_HOLD_SECS));
    let deadline = Instant::now() + hold;
    {
        let mut tx = store.begin_write().await?;
        store::agents::touch(
            tx.conn(),
            &agent.id,
            session,
            source_ip,
            &crate::time::now(),
        )
        .await?;
        let requeued = store::agents::requeue_other_sessions(tx.conn(), &agent.id, session).await?;
        tx.commit().await?;
        if requeued > 0 {
            tracing::info!(agent = %agent.id, requeued, "the agent restarted; its unfinished tasks are handed out again");
        }
    }
    let bell = hub.agent_bell(&agent.id);
    loop {
        let rung = bell.notified();
        tokio::pin!(rung);
        rung.as_mut().enable();
        // Look (a read) before taking (a write): a thousand idle agents re-checking now and
        // then must not queue up on the write lock.
        if store::agents::has_claimable(store.pool(), &agent.id, &crate::time::now()).await?
            && let Some(task) = claim(store, vault, agent, session).await?
        {
            return Ok(Some(task));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        // Woken by a queued task (on this node or, by its bell, another), or a look at the
        // store now and then.
        let _ = tokio::time::timeout(left.min(RECHECK), rung).await;
    }
}

async fn claim(
    store: &Store,
    vault: &Vault,
    agent: &AgentRow,
    session: &str,
) -> Result<Option<Task>> {
    let now = crate::time::now_utc();
    let until = crate::time::format(
        now + chrono::Duration::from_std(TASK_LEASE).unwrap_or(chrono::Duration::seconds(120)),
    );
    let mut tx = store.begin_write().await?;
    let backend = tx.backend();
    let Some(row) = store::agents::claim_task(
        tx.conn(),
        backend,
        &agent.id,
        session,
        &crate::time::format(now),
        &until,
    )
    .await?
    else {
        return Ok(None);
    };
    tx.commit().await?;
    let sealed = store::agents::task_secret(store.pool(), &row.id)
        .await?
        .ok_or_else(|| Error::Internal(format!("task {} has no sealed password", row.id)))?;
    let secret = vault.open_secret(&sealed, &secret_aad(&row.id))?;
    if row.kind == "listener" {
        let mut work: ListenerWork = serde_json::from_str(row.payload.as_deref().unwrap_or(""))
            .map_err(|e| Error::Internal(format!("task {} has a bad payload: {e}", row.id)))?;
        let secrets: ListenerSecrets = serde_json::from_str(secret.expose())
            .map_err(|_| Error::Internal(format!("task {} has bad sealed secrets", row.id)))?;
        work.old_password = secrets.old.clone().map(Password::new);
        work.new_password = secrets.new.clone().map(Password::new);
        return Ok(Some(Task {
            id: row.id,
            attempt: row.attempts,
            work: Work::Listener(Box::new(work)),
        }));
    }
    let password = Password::new(secret.expose().to_string());
    let work = match row.kind.as_str() {
        "reset" => Work::Reset {
            login_name: row.login_name.clone(),
            password,
        },
        _ => Work::Verify {
            login_name: row.login_name.clone(),
            password,
        },
    };
    Ok(Some(Task {
        id: row.id,
        attempt: row.attempts,
        work,
    }))
}

/// An agent process's session id: 1–64 letters, digits, `-` or `_`.
fn check_session(session: &str) -> Result<()> {
    if session.is_empty()
        || session.len() > 64
        || !session
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(Error::validation(
            "session",
            "must be 1–64 letters, digits, '-' or '_'",
        ));
    }
    Ok(())
}

/// Text from an agent made safe to store, show and audit: control characters (and bidi
/// overrides) escaped, cut to `max` bytes.
fn scrub(text: &str, max: usize) -> String {
    use lockstep_runtime::report::{sanitize, truncate};
    truncate(sanitize(text, false), max)
}

/// A listener report as an agent sent it, bounded the way the server's own runtime bounds a
/// run it did itself: a known outcome; the message cut to 4 KiB; at most
/// [`lockstep_runtime::limits::MAX_DENIALS`] denials kept one by one (each cut), the rest
/// counted in one more; control characters escaped everywhere. Each kept denial becomes one
/// `listener.denial` audit event, so a report costs the audit trail at most 65 of them.
pub fn bound_listener_report(r: ListenerReport) -> Result<ListenerReport> {
    use lockstep_runtime::limits::{MAX_DENIALS, MAX_MESSAGE_BYTES};
    if !LISTENER_OUTCOMES.contains(&r.outcome.as_str()) {
        return Err(Error::validation(
            "listener.outcome",
            format!("must be one of {}", LISTENER_OUTCOMES.join(", ")),
        ));
    }
    let claimed = r.denials.len();
    // An honest agent sends at most MAX_DENIALS and its own count of the rest.
    let kept = if claimed > MAX_DENIALS + 1 {
        MAX_DENIALS
    } else {
        claimed
    };
    let mut denials: Vec<String> = r
        .denials
        .iter()
        .take(kept)
        .map(|d| scrub(d, MAX_DENIAL_BYTES))
        .collect();
    if claimed > kept {
        denials.push(format!(
            "many: {} more denied call(s) reported by the agent (not recorded one by one)",
            claimed - kept
        ));
    }
    Ok(ListenerReport {
        message: scrub(&r.message, MAX_MESSAGE_BYTES),
        denials,
        elapsed_ms: if r.elapsed_ms.is_finite() {
            r.elapsed_ms.clamp(0.0, 1e9)
        } else {
            0.0
        },
        outcome: r.outcome,
    })
}

/// Records a task's result: once. A repeated report changes nothing and says so. Everything
/// the agent says is bounded and scrubbed first ([`bound_listener_report`]); the caller
/// refuses a body over [`MAX_RESULT_BYTES`].
pub async fn report(
    store: &Store,
    hub: &AgentHub,
    agent: &AgentRow,
    task_id: &str,
    result: TaskResult,
    source_ip: Option<String>,
) -> Result<ResultReceipt> {
    let Some(task) = store::agents::get_task(store.pool(), task_id)
        .await?
        .filter(|t| t.agent_id == agent.id)
    else {
        return Err(Error::NotFound {
            what: "task",
            id: task_id.to_string(),
        });
    };
    check_session(&result.session)?;
    let listener = match result.listener {
        Some(_) if task.kind != Kind::Listener.as_str() => {
            return Err(Error::validation(
                "listener",
                format!(
                    "only a listener task's result carries a listener report; task '{task_id}' \
                     is a {} task",
                    task.kind
                ),
            ));
        }
        Some(l) => Some(
            serde_json::to_string(&bound_listener_report(l)?)
                .map_err(|e| Error::Internal(e.to_string()))?,
        ),
        None => None,
    };
    let message = scrub(&result.message, MAX_TASK_MESSAGE_BYTES);
    let state = result.outcome.as_str();
    let now = crate::time::now();
    let mut tx = store.begin_write().await?;
    if !store::agents::finish_task(
        tx.conn(),
        task_id,
        &agent.id,
        state,
        &message,
        listener.as_deref(),
        &now,
    )
    .await?
    {
        drop(tx);
        let current = store::agents::get_task(store.pool(), task_id)
            .await?
            .map(|t| t.state)
            .unwrap_or_default();
        if TaskState::Queued.is(&current) {
            return Err(Error::Conflict(format!(
                "task '{task_id}' was handed out again; report it after taking it"
            )));
        }
        return Ok(ResultReceipt {
            recorded: false,
            state: current,
        });
    }
    // A verification tells whether the vault and the machine agree.
    if task.kind == "verify"
        && let Some(account) = &task.account_id
    {
        let status = match result.outcome {
            TaskOutcome::Succeeded => Some(SyncStatus::InSync.as_str()),
            TaskOutcome::Refused => Some(SyncStatus::OutOfSync.as_str()),
            TaskOutcome::Failed | TaskOutcome::Unconfirmed => None,
        };
        if let Some(status) = status {
            store::accounts::set_sync_status(tx.conn(), account, status, &now).await?;
        }
    }
    audit::append(
        &mut tx,
        NewEvent {
            actor: &super::actor(agent, source_ip),
            action: "agent.task",
            target: task_id,
            outcome: match result.outcome {
                TaskOutcome::Succeeded => Outcome::Success,
                _ => Outcome::Failure,
            },
            detail: serde_json::json!({
                "kind": task.kind, "account_id": task.account_id, "item": task.item_id,
                "outcome": state, "message": message, "session": result.session,
            }),
        },
    )
    .await?;
    tx.commit().await?;
    hub.ring_task(task_id);
    Ok(ResultReceipt {
        recorded: true,
        state: state.into(),
    })
}

/// Waits until the task has a final state. A task nobody took within `pickup` is cancelled
/// (nothing changed); one taken whose agent went silent past `pickup` is marked lost.
pub async fn wait(
    store: &Store,
    hub: &AgentHub,
    task_id: &str,
    pickup: Duration,
) -> Result<TaskRow> {
    let bell = hub.task_bell(task_id);
    let started = Instant::now();
    let result = loop {
        let rung = bell.notified();
        tokio::pin!(rung);
        rung.as_mut().enable();
        let task = store::agents::get_task(store.pool(), task_id)
            .await?
            .ok_or_else(|| Error::Internal(format!("task {task_id} is gone")))?;
        if TaskState::parse(&task.state).is_some_and(TaskState::is_final) {
            break task;
        }
        if started.elapsed() > pickup {
            let now = crate::time::now();
            let expired = task.lease_until.as_deref().is_none_or(|u| u < now.as_str());
            let mut tx = store.begin_write().await?;
            let ended = if TaskState::Queued.is(&task.state) && task.attempts == 0 {
                store::agents::cancel_if_queued(
                    tx.conn(),
                    task_id,
                    "the agent did not take the task in time; nothing was changed",
                    &now,
                )
                .await?
            } else if expired {
                // Taken at least once: the agent may have applied it.
                store::agents::mark_lost(
                    tx.conn(),
                    task_id,
                    "the agent took the task and went silent; whether it was applied is unknown",
                    &now,
                )
                .await?
            } else {
                false
            };
            tx.commit().await?;
            if ended {
                continue;
            }
        }
        let _ = tokio::time::timeout(RESULT_RECHECK, rung).await;
    };
    hub.forget_task(task_id);
    Ok(result)
}

/// Tasks the caller requested (the reference product's "find tasks awaiting execution"), newest first.
pub async fn list_mine(store: &Store, actor_name: &str, limit: i64) -> Result<Vec<TaskView>> {
    Ok(
        store::agents::list_tasks(store.pool(), Some(actor_name), None, limit)
            .await?
            .into_iter()
            .map(Into::into)
            .collect(),
    )
}

/// Every task of one agent, newest first.
pub async fn list_of_agent(store: &Store, agent_id: &str, limit: i64) -> Result<Vec<TaskView>> {
    super::get(store, agent_id).await?;
    Ok(
        store::agents::list_tasks(store.pool(), None, Some(agent_id), limit)
            .await?
            .into_iter()
            .map(Into::into)
            .collect(),
    )
}

/// A listener component by SHA-256, for an agent-mode task (the agent checks the digest).
/// A listener component, for an agent that was given a listener task naming it: an agent
/// learns nothing about listeners that never ran on its machine.
pub async fn component(store: &Store, agent_id: &str, sha256: &str) -> Result<Vec<u8>> {
    let not_found = || Error::NotFound {
        what: "listener component",
        id: sha256.to_string(),
    };
    // A digest is 64 lowercase hex digits; anything else cannot name a component (and never
    // reaches the LIKE pattern below).
    if sha256.len() != 64
        || !sha256
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    {
        return Err(not_found());
    }
    let entitled = store::agents::listener_payloads_mentioning(store.pool(), agent_id, sha256)
        .await?
        .iter()
        .filter_map(|p| serde_json::from_str::<ListenerWork>(p).ok())
        .any(|w| w.component_sha256 == sha256);
    if !entitled {
        return Err(not_found());
    }
    store::listeners::component_by_digest(store.pool(), sha256)
        .await?
        .ok_or_else(|| Error::NotFound {
            what: "listener component",
            id: sha256.to_string(),
        })
}

/// Asks the account's agent whether the machine accepts the password the vault holds; the
/// report sets the account's `password_sync_status` (`in-sync` or `out-of-sync`).
pub async fn request_verify(
    store: &Store,
    vault: &Vault,
    hub: &AgentHub,
    actor: &crate::audit::Actor,
    requester: &str,
    account_id: &str,
) -> Result<TaskView> {
    let account = crate::inventory::accounts::get(store, account_id).await?;
    let agent = store::agents::agent_of_resource(store.pool(), &account.resource_id)
        .await?
        .filter(|a| AgentStatus::Active.is(&a.status))
        .ok_or_else(|| {
            Error::Conflict(format!(
                "account '{account_id}' is not on a machine with an active agent; resets over \
                 SSH verify by logging in as part of every reset"
            ))
        })?;
    let sealed = store::accounts::get_sealed_password(store.pool(), account_id)
        .await?
        .ok_or_else(|| Error::Internal(format!("account {account_id} has no sealed password")))?;
    let password = vault.open_secret(&sealed, &crate::vault::account_password_aad(account_id))?;
    if password.is_empty() {
        return Err(Error::Conflict(format!(
            "account '{account_id}' has no stored password yet (its agent discovered it); reset \
             it first"
        )));
    }
    let id = crate::time::new_id("vfy");
    queue(
        store,
        vault,
        hub,
        NewTask {
            id: id.clone(),
            agent_id: &agent.id,
            kind: Kind::Verify,
            item_id: None,
            account_id: Some(account_id),
            login_name: &account.login_name,
            requested_by: requester,
            password: &password,
            listener: None,
        },
    )
    .await?;
    audit::record(
        store,
        NewEvent {
            actor,
            action: "account.password.verify.request",
            target: account_id,
            outcome: Outcome::Success,
            detail: serde_json::json!({ "task": id, "agent": agent.id }),
        },
    )
    .await?;
    task_view(store, &id).await
}

async fn task_view(store: &Store, id: &str) -> Result<TaskView> {
    store::agents::get_task(store.pool(), id)
        .await?
        .map(Into::into)
        .ok_or_else(|| Error::NotFound {
            what: "agent task",
            id: id.to_string(),
        })
}

/// One task, as its requester or someone who may manage resources sees it; to anyone else it
/// is as absent as an unknown one.
pub async fn visible_task(
    store: &Store,
    who: &crate::identity::Principal,
    id: &str,
) -> Result<TaskView> {
    let task = task_view(store, id).await?;
    let admin = who
        .require(crate::identity::Privilege::ManageResources)
        .is_ok();
    if task.requested_by != who.user_name && !admin {
        return Err(Error::NotFound {
            what: "agent task",
            id: id.to_string(),
        });
    }
    Ok(task)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(denials: usize) -> ListenerReport {
        ListenerReport {
            outcome: "success".into(),
            message: format!("\u{1b}[2J{}", "m".repeat(10_000)),
            denials: (0..denials).map(|i| format!("net: {i}\u{7}")).collect(),
            elapsed_ms: f64::INFINITY,
        }
    }

    #[test]
    fn a_hostile_listener_report_is_bounded_and_scrubbed() {
        let r = bound_listener_report(report(10_000)).unwrap();
        assert_eq!(r.denials.len(), 65);
        assert!(r.denials[64].contains("9936 more"), "{}", r.denials[64]);
        assert_eq!(r.denials[0], "net: 0\\u{7}");
        assert!(r.message.starts_with("\\u{1b}[2J"), "{}", &r.message[..20]);
        assert!(r.message.len() < 4200 && r.message.contains("bytes cut"));
        assert_eq!(r.elapsed_ms, 0.0);
        let long = ListenerReport {
            denials: vec!["x".repeat(100_000)],
            ..report(0)
        };
        assert!(bound_listener_report(long).unwrap().denials[0].len() <= MAX_DENIAL_BYTES + 32);
    }

    #[test]
    fn an_honest_agents_report_passes_unchanged() {
        // 64 denials and the runtime's own count of the rest: kept as sent.
        let mut honest = report(64);
        honest
            .denials
            .push("many: 3 more denied call(s) (not recorded one by one)".into());
        honest.message = "restarted nginx".into();
        honest.elapsed_ms = 12.5;
        let bounded = bound_listener_report(honest.clone()).unwrap();
        assert_eq!(bounded.denials.len(), 65);
        assert_eq!(bounded.denials[64], honest.denials[64]);
        assert_eq!(bounded.message, "restarted nginx");
        assert_eq!(bounded.elapsed_ms, 12.5);
    }

    #[test]
    fn an_unknown_outcome_is_refused() {
        let mut r = report(0);
        r.outcome = "approve-everything".into();
        let err = bound_listener_report(r).unwrap_err().to_string();
        assert!(err.contains("listener.outcome"), "{err}");
    }
}
