//! Resets through agents: the change and the agent-mode listeners become tasks for the
//! resource's agent, and the reset waits for their results.

use std::time::Duration;

use lockstep_agent_protocol::messages::{DeliveryRef, ListenerReport, ListenerWork};
use lockstep_runtime::manifest::Phase;

use super::listeners::guard_refused;
use super::{AGENT_PICKUP, Engine, Subject, state};
use crate::agents::tasks::{self as agent_tasks, Kind as TaskKind, NewTask};
use crate::error::{Error, Result};
use crate::inventory::resource_types::ExecutionMode;
use crate::registry::RunnableListener;
use crate::states::TaskState;
use crate::store::agents::{AgentRow, TaskRow};
use crate::store::resets::ItemRow;
use crate::vault::Secret;

/// A reset item's task for its `attempt`-th password: one task per password, so a repeated
/// hand-out never carries a different password than the one journaled.
pub(super) fn agent_task_id(item_id: &str, attempt: i64) -> String {
    format!("{item_id}-{attempt}")
}

impl Engine {
    /// Queues the reset task for the agent and waits for its result.
    pub(super) async fn apply_via_agent(
        &self,
        item: &ItemRow,
        s: &Subject,
        agent: &AgentRow,
        new: &Secret,
        attempts: i64,
    ) -> Result<TaskRow> {
        let id = agent_task_id(&item.id, attempts);
        agent_tasks::queue(
            &self.store,
            &self.vault,
            &self.hub,
            NewTask {
                id: id.clone(),
                agent_id: &agent.id,
                kind: TaskKind::Reset,
                item_id: Some(&item.id),
                account_id: Some(&s.account.id),
                login_name: &s.account.login_name,
                requested_by: &s.job.requested_by,
                password: new,
                listener: None,
            },
        )
        .await?;
        agent_tasks::wait(&self.store, &self.hub, &id, AGENT_PICKUP).await
    }

    /// An agent task that did not succeed ends the item: refused generated passwords park it,
    /// a lost task leaves it out-of-sync (both passwords kept), anything else fails it.
    pub(super) async fn agent_ended(
        &self,
        item: ItemRow,
        task: TaskRow,
        listeners: Vec<serde_json::Value>,
        attempts: i64,
        generated: bool,
    ) -> Result<()> {
        let message = task.message.unwrap_or_default();
        let (to, why) = match TaskState::parse(&task.state) {
            Some(TaskState::Refused) if generated => (
                state::PARKED,
                format!(
                    "the target refused {attempts} generated passwords; a person must look: {message}"
                ),
            ),
            Some(TaskState::Lost | TaskState::Unconfirmed) => (
                state::OUT_OF_SYNC,
                format!("agent task {} {}: {message}", task.id, task.state),
            ),
            _ => (
                state::FAILED,
                format!("the agent's task {}: {message}", task.state),
            ),
        };
        self.step(&item, to, Some(&why), &listeners, attempts).await
    }

    /// Runs the agent-mode pre-reset listeners on the resource's agent, one task each, in
    /// order; returns the first veto. A task id names the item, phase and listener, so a run
    /// repeated after a crash reuses the first run's result. (Agent-mode post-reset listeners
    /// are deliveries: `deliver.rs`.)
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn agent_listeners(
        &self,
        item: &ItemRow,
        s: &Subject,
        agent: &AgentRow,
        phase: Phase,
        old: &Secret,
        new: &Secret,
        record: &mut Vec<serde_json::Value>,
    ) -> Result<Option<String>> {
        use lockstep_runtime::manifest::Secret as Grant;
        let (runnable, refused) = self
            .registry
            .runnable(&s.resource.resource_type, phase.as_str(), AGENT_MODE)
            .await?;
        let mut stop = None;
        for r in refused {
            record.push(serde_json::json!({
                "listener": r.name, "phase": phase.as_str(), "outcome": "refused",
                "message": r.reason, "ran_on": format!("agent:{}", agent.id),
            }));
            stop.get_or_insert_with(|| guard_refused(phase, &r.name, &r.reason));
        }
        if phase == Phase::PreReset && stop.is_some() {
            return Ok(stop);
        }
        for l in runnable {
            let m = l.listener.manifest();
            let pass = |grant: Grant, p: &Secret| {
                (m.allows_secret(grant) && !p.is_empty()).then(|| p.expose().to_string())
            };
            let secrets = agent_tasks::ListenerSecrets {
                old: pass(Grant::OldPassword, old),
                new: pass(Grant::NewPassword, new),
            };
            // One run per item, phase, listener and new password: a crash repeats nothing, and
            // a password chosen again after a crash gets its own run. The password appears only
            // as a keyed fingerprint's prefix.
            let fp = self.vault.fingerprint(
                &format!("agent-listener:{}", item.id),
                new.expose().as_bytes(),
            )?;
            let id = format!(
                "{}-{}-{}-{}",
                item.id,
                phase.as_str(),
                l.name,
                &fp[..fp.len().min(12)]
            );
            let work = listener_work(&item.job_id, s, &l, phase, None);
            let task = self
                .listener_task(id, &item.id, s, agent, &work, secrets, AGENT_PICKUP)
                .await?;
            let report = report_of(&task).unwrap_or_else(|| ListenerReport {
                outcome: "stopped".into(),
                message: format!(
                    "the agent could not run it ({}): {}",
                    task.state,
                    task.message.clone().unwrap_or_default()
                ),
                denials: Vec::new(),
                elapsed_ms: 0.0,
            });
            let verdict = self
                .judge(
                    item,
                    phase,
                    &l.name,
                    &l.version,
                    report,
                    Some(&agent.id),
                    record,
                )
                .await?;
            if let Some(v) = verdict {
                stop.get_or_insert(v);
                if phase == Phase::PreReset {
                    break;
                }
            }
        }
        Ok(stop)
    }

    /// Queues listener task `id` (the work, and `secrets` sealed for it) for `agent` and waits
    /// for its end, `pickup` at most for the agent to take it (or report on it).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn listener_task(
        &self,
        id: String,
        item_id: &str,
        s: &Subject,
        agent: &AgentRow,
        work: &ListenerWork,
        secrets: agent_tasks::ListenerSecrets,
        pickup: Duration,
    ) -> Result<TaskRow> {
        let sealed = Secret::new(
            serde_json::to_string(&secrets).map_err(|e| Error::Internal(e.to_string()))?,
        );
        drop(secrets);
        agent_tasks::queue(
            &self.store,
            &self.vault,
            &self.hub,
            NewTask {
                id: id.clone(),
                agent_id: &agent.id,
                kind: TaskKind::Listener,
                item_id: Some(item_id),
                account_id: Some(&s.account.id),
                login_name: &s.account.login_name,
                requested_by: &s.job.requested_by,
                password: &sealed,
                listener: Some(work),
            },
        )
        .await?;
        agent_tasks::wait(&self.store, &self.hub, &id, pickup).await
    }
}

/// The mode agent-run listeners are associated in.
pub(super) const AGENT_MODE: &str = ExecutionMode::Agent.as_str();

/// What an agent-mode run of `l` for `s`'s reset (job `job_id`) is told, without passwords.
pub(super) fn listener_work(
    job_id: &str,
    s: &Subject,
    l: &RunnableListener,
    phase: Phase,
    delivery: Option<DeliveryRef>,
) -> ListenerWork {
    ListenerWork {
        name: l.name.clone(),
        version: l.version.clone(),
        phase: phase.as_str().into(),
        component_sha256: l.component_sha256.clone(),
        manifest: l.manifest_text.clone(),
        signature: l.signature.clone(),
        job_id: job_id.to_string(),
        trigger: s.job.trigger.clone(),
        resource_type: s.resource.resource_type.clone(),
        parameters: l.parameters.clone(),
        resource: s.resource.properties(),
        account: s.account.properties(),
        old_password: None,
        new_password: None,
        delivery,
    }
}

/// The listener report a finished listener task carries, if the agent ran it.
pub(super) fn report_of(task: &TaskRow) -> Option<ListenerReport> {
    task.result
        .as_deref()
        .and_then(|r| serde_json::from_str(r).ok())
}
