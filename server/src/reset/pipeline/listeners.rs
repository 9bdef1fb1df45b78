//! Listeners in the pipeline: each phase's listeners run in order, a pre-reset veto or a guard
//! that cannot run stops the reset; post-reset ones run after the commit, off the critical
//! path, as deliveries (`deliver.rs`).

use lockstep_agent_protocol::messages::ListenerReport;
use lockstep_runtime::manifest::Phase;
use lockstep_runtime::{ResetEvent, RunContext, Trigger};
use std::sync::Arc;
use zeroize::Zeroizing;

use super::{Engine, Subject};
use crate::audit::{self, Actor, NewEvent, Outcome};
use crate::error::Result;
use crate::reset::target::SshTargetExec;
use crate::states::AgentStatus;
use crate::store::resets::ItemRow;
use crate::vault::Secret;

/// What a listener that cannot run (integrity refusal, load failure) means for the reset: a
/// pre-reset guard stops it (fail closed); a post-reset listener's failure is recorded.
pub(super) fn guard_refused(phase: Phase, name: &str, reason: &str) -> String {
    match phase {
        Phase::PreReset => format!(
            "pre-reset listener {name} cannot run ({reason}); the reset stops rather than go \
             ahead without it"
        ),
        Phase::PostReset => format!("{name} could not run: {reason}"),
    }
}

impl Engine {
    /// Runs the listeners of `phase`; returns the first veto (pre) or failure (post) message.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn run_listeners(
        &self,
        item: &ItemRow,
        s: &Subject,
        phase: Phase,
        old: &Secret,
        new: &Secret,
        target: Option<Arc<SshTargetExec>>,
        record: &mut Vec<serde_json::Value>,
    ) -> Result<Option<String>> {
        let (runnable, refused) = self
            .registry
            .runnable(&s.resource.resource_type, phase.as_str(), "agentless")
            .await?;
        let mut stop = None;
        for r in refused {
            record.push(serde_json::json!({
                "listener": r.name, "phase": phase.as_str(), "outcome": "refused",
                "message": r.reason,
            }));
            stop.get_or_insert_with(|| guard_refused(phase, &r.name, &r.reason));
        }
        // A pre-reset guard that cannot run stops the reset: it never goes ahead without it.
        if phase == Phase::PreReset && stop.is_some() {
            return Ok(stop);
        }
        for l in runnable {
            let event = ResetEvent {
                job_id: item.job_id.clone(),
                trigger: Trigger::from_job(&s.job.trigger),
                resource_type: s.resource.resource_type.clone(),
                parameters: l.parameters.clone(),
                delivery: None,
            };
            let secret =
                |p: &Secret| (!p.is_empty()).then(|| Zeroizing::new(p.expose().to_string()));
            let ctx = RunContext {
                resource: s.resource.properties(),
                account: s.account.properties(),
                old_password: secret(old),
                new_password: secret(new),
                target: target
                    .clone()
                    .map(|t| t as Arc<dyn lockstep_runtime::TargetExec>),
            };
            let inv = l.listener.run(phase, &event, ctx).await;
            let (outcome, message) = inv.verdict();
            let report = ListenerReport {
                outcome: outcome.into(),
                message,
                denials: inv.denials.iter().map(|d| d.to_string()).collect(),
                elapsed_ms: inv.elapsed.as_secs_f64() * 1000.0,
            };
            let verdict = self
                .judge(item, phase, &l.name, &l.version, report, None, record)
                .await?;
            if let Some(v) = verdict {
                stop.get_or_insert(v);
                if phase == Phase::PreReset {
                    break;
                }
            }
        }
        if let Some(agent) = s.via_agent().filter(|a| AgentStatus::Active.is(&a.status))
            && !(phase == Phase::PreReset && stop.is_some())
        {
            let on_agent = self
                .agent_listeners(item, s, agent, phase, old, new, record)
                .await?;
            if let Some(v) = on_agent {
                stop.get_or_insert(v);
            }
        }
        Ok(stop)
    }

    /// Records one listener run (where it ran: the server, or `agent`), audits each of its
    /// denials and a run stopped by a limit or a trap, and returns what it means for the reset: a veto or failure message, or `None`.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn judge(
        &self,
        item: &ItemRow,
        phase: Phase,
        name: &str,
        version: &str,
        r: ListenerReport,
        agent: Option<&str>,
        record: &mut Vec<serde_json::Value>,
    ) -> Result<Option<String>> {
        // Where it ran goes with every event, so an agent's denials are told apart.
        let system = Actor::system();
        let event = |action: &'static str, outcome: Outcome, mut detail: serde_json::Value| {
            if let Some(a) = agent {
                detail["agent"] = serde_json::json!(a);
            }
            audit::record(
                &self.store,
                NewEvent {
                    actor: &system,
                    action,
                    target: name,
                    outcome,
                    detail,
                },
            )
        };
        for d in &r.denials {
            let detail = serde_json::json!({ "item": item.id, "denial": d });
            event("listener.denial", Outcome::Denied, detail).await?;
        }
        // A listener stopped by a limit or a trap is audited too: a hostile component
        // leaves a trace even when it never asked for anything.
        if r.outcome == "stopped" {
            let detail = serde_json::json!({
                "item": item.id, "phase": phase.as_str(), "reason": r.message,
            });
            event("listener.stopped", Outcome::Failure, detail).await?;
        }
        let verdict = match (r.outcome.as_str(), phase) {
            ("veto", _) => Some(format!("vetoed by {name}: {}", r.message)),
            ("failure", _) => Some(format!("{name} failed: {}", r.message)),
            ("stopped", Phase::PreReset) => Some(format!(
                "{name} could not answer ({}); the reset stops rather than guess",
                r.message
            )),
            ("stopped", Phase::PostReset) => Some(format!("{name} stopped: {}", r.message)),
            ("retry", _) => Some(format!(
                "{name} failed and asked to be tried again: {}",
                r.message
            )),
            _ => None,
        };
        let mut entry = serde_json::json!({
            "listener": name, "version": version, "phase": phase.as_str(),
            "outcome": r.outcome, "message": r.message, "denials": r.denials,
            "elapsed_ms": r.elapsed_ms,
        });
        if let Some(a) = agent {
            entry["ran_on"] = serde_json::json!(format!("agent:{a}"));
        }
        record.push(entry);
        Ok(verdict)
    }
}
