//! Post-reset deliveries in the engine (`reset::delivery` holds the rules): the post phase
//! writes one delivery per post-reset listener and runs each first attempt in order; a worker
//! with no item to claim claims a due delivery and runs its next attempt. Each attempt is
//! claimed (and counted) before it runs and recorded after, fenced by its claim.

use std::sync::Arc;

use lockstep_agent_protocol::messages::{DeliveryRef, ListenerReport};
use lockstep_runtime::manifest::{Phase, Secret as Grant};
use lockstep_runtime::{Delivery as RunDelivery, ResetEvent, RunContext, Trigger};
use serde_json::{Value, json};
use zeroize::Zeroizing;

use super::agent::{AGENT_MODE, listener_work, report_of};
use super::{Engine, Subject, state};
use crate::agents::tasks::{self as agent_tasks, ListenerSecrets};
use crate::audit::{self, Actor, NewEvent, Outcome};
use crate::error::{Error, Result};
use crate::inventory::resource_types::{ExecutionMode, ResetMethod};
use crate::registry::{Refusal, RunnableListener};
use crate::reset::delivery::{self, Attempt, Next};
use crate::reset::target::SshTargetExec;
use crate::states::{AgentStatus, DeliveryState, TaskState};
use crate::store::deliveries::{AttemptEnd, DeliveryRow, NewDelivery};
use crate::store::resets::ItemRow;
use crate::store::{self};
use crate::vault::{Secret, delivery_password_aad};

/// The mode server-run listeners are associated in.
const AGENTLESS: &str = ExecutionMode::Agentless.as_str();
/// How long an attempt on an agent waits for the agent to take its task (one it took is
/// waited for until its lease runs out): an agent that is offline longer makes the attempt
/// `interrupted`, tried again after a pause. Shorter than [`delivery::ATTEMPT_LEASE`].
const AGENT_ATTEMPT_PICKUP: std::time::Duration = std::time::Duration::from_secs(90);

/// A post-reset listener and where its deliveries run.
struct PostListener {
    l: RunnableListener,
    mode: ExecutionMode,
}

impl PostListener {
    /// Whether delivery `d` is this listener's.
    fn runs(&self, d: &DeliveryRow) -> bool {
        self.l.name == d.listener && self.mode.as_str() == d.mode
    }
}

impl Engine {
    /// Post-reset listeners, off the critical path: the reset is committed whatever they say.
    /// Each listener (server-run, or agent-mode on the resource's agent) becomes a delivery
    /// whose first attempt runs here, in order; later attempts are the workers'
    /// (`deliver_due`).
    pub(super) async fn post_phase(
        self: Arc<Self>,
        item: ItemRow,
        s: Subject,
        old: Option<Secret>,
    ) -> Result<()> {
        let mut listeners: Vec<Value> = serde_json::from_str(&item.listeners).unwrap_or_default();
        self.step(
            &item,
            state::POST_LISTENERS,
            None,
            &listeners,
            item.attempts,
        )
        .await?;
        // Server-run attempts share the post-reset bound; agent-mode ones (after them, in
        // order) mostly wait for their agent and hold no slot.
        let mut permit = Some(
            self.post_slots
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| Error::Internal("post-listener slots closed".into()))?,
        );
        let new = self.old_password(&s.account.id).await?;
        let (runnable, refused) = self.post_listeners(&s).await?;
        self.write_deliveries(&item, &runnable, old.as_ref(), &new)
            .await?;
        let mut trouble = None;
        for (r, agent) in &refused {
            let mut entry = json!({
                "listener": r.name, "phase": Phase::PostReset.as_str(), "outcome": "refused",
                "message": r.reason,
            });
            if let Some(a) = agent {
                entry["ran_on"] = json!(format!("agent:{a}"));
            }
            listeners.push(entry);
            trouble.get_or_insert_with(|| {
                super::listeners::guard_refused(Phase::PostReset, &r.name, &r.reason)
            });
        }
        let target = self.target_exec(&s).await;
        let now = crate::time::now();
        for d in store::deliveries::of_item(self.store.pool(), &item.id).await? {
            // A delivery already tried (before a crash) is the schedule's now.
            if !DeliveryState::Pending.is(&d.state) || d.attempts > 0 {
                continue;
            }
            if d.mode == AGENT_MODE {
                permit = None;
            }
            let Some(d) = self.claim_delivery(&d.id, &now).await? else {
                continue;
            };
            let l = runnable.iter().find(|l| l.runs(&d));
            let (entry, t) = self.attempt(d, &item, Ok(&s), l, target.clone()).await?;
            listeners.push(entry);
            if let Some(t) = t {
                trouble.get_or_insert(t);
            }
        }
        drop(permit);
        self.step(
            &item,
            state::DONE,
            trouble.as_deref(),
            &listeners,
            item.attempts,
        )
        .await
    }

    /// One delivery per runnable post-reset listener of the item (a listener the integrity
    /// check refuses is recorded in the item and alerted by the registry, as before), each with
    /// the passwords its manifest grants sealed and the fingerprint of the password it is
    /// about, in one transaction that also supersedes the account's open deliveries about an
    /// earlier password. Written once: a post phase run again after a crash keeps what exists.
    async fn write_deliveries(
        &self,
        item: &ItemRow,
        runnable: &[PostListener],
        old: Option<&Secret>,
        new: &Secret,
    ) -> Result<()> {
        let now = crate::time::now_utc();
        let at = crate::time::format(now);
        // The first attempts are this post phase's, in order: the workers leave them alone
        // for as long as they could take here. Should this node die first, the item's next
        // claim runs them, or the workers do after this.
        let count = runnable.len() as u32;
        let first = crate::time::format(now + delivery::ATTEMPT_LEASE.saturating_mul(count.max(1)));
        let fingerprint = self.password_fingerprint(&item.account_id, new)?;
        let mut tx = self.store.begin_write().await?;
        for (position, p) in runnable.iter().enumerate() {
            let l = &p.l;
            let manifest = l.listener.manifest();
            let limits = manifest.delivery();
            let id = crate::time::new_id("dlv");
            let seal = |grant: Grant, p: Option<&Secret>, which: &str| -> Result<_> {
                match p {
                    Some(p) if manifest.allows_secret(grant) && !p.is_empty() => {
                        let aad =
                            delivery_password_aad(&id, &item.id, &item.account_id, &l.name, which);
                        Ok(Some(self.vault.seal_secret(p, &aad)?))
                    }
                    _ => Ok(None),
                }
            };
            let sealed_old = seal(Grant::OldPassword, old, "old")?;
            let sealed_new = seal(Grant::NewPassword, Some(new), "new")?;
            let age = chrono::Duration::seconds(i64::try_from(limits.max_age_secs).unwrap_or(60));
            let row = DeliveryRow {
                id: id.clone(),
                item_id: item.id.clone(),
                job_id: item.job_id.clone(),
                account_id: item.account_id.clone(),
                listener: l.name.clone(),
                version: l.version.clone(),
                position: position as i64,
                state: DeliveryState::Pending.as_str().into(),
                attempts: 0,
                max_attempts: limits.max_attempts.into(),
                expires_at: crate::time::format(now + age),
                round_attempts: limits.max_attempts.into(),
                round_age_secs: age.num_seconds(),
                next_attempt_at: first.clone(),
                outcome: None,
                message: None,
                history: "[]".into(),
                fingerprint: fingerprint.clone(),
                lease_owner: None,
                lease_until: None,
                created_at: at.clone(),
                updated_at: at.clone(),
                mode: p.mode.as_str().into(),
            };
            let superseded = store::deliveries::supersede(
                tx.conn(),
                &item.account_id,
                &l.name,
                &fingerprint,
                &at,
            )
            .await?;
            for id in superseded {
                store::agents::cancel_delivery_tasks(
                    tx.conn(),
                    &id,
                    "a later reset of the account committed; what it would tell its listener \
                     is stale",
                    &at,
                )
                .await?;
            }
            store::deliveries::insert(
                tx.conn(),
                NewDelivery {
                    row: &row,
                    old: sealed_old,
                    new: sealed_new,
                },
            )
            .await?;
        }
        tx.commit().await
    }

    /// The keyed fingerprint of `password` as the password of `account_id`.
    fn password_fingerprint(&self, account_id: &str, password: &Secret) -> Result<String> {
        self.vault.fingerprint(
            &format!("delivery-password:{account_id}"),
            password.expose().as_bytes(),
        )
    }

    /// Whether delivery `d` is about the account's password as the vault holds it now.
    async fn still_current(&self, d: &DeliveryRow) -> Result<bool> {
        let now = self.old_password(&d.account_id).await?;
        Ok(self.password_fingerprint(&d.account_id, &now)? == d.fingerprint)
    }

    /// The post-reset listeners of the subject's resource type, verified: the server-run ones,
    /// then (when the reset goes through an agent) the agent-mode ones; and those the integrity
    /// check refused (with the agent they would have run on).
    async fn post_listeners(
        &self,
        s: &Subject,
    ) -> Result<(Vec<PostListener>, Vec<(Refusal, Option<String>)>)> {
        let phase = Phase::PostReset.as_str();
        let (here, refused) = self
            .registry
            .runnable(&s.resource.resource_type, phase, AGENTLESS)
            .await?;
        let mut runnable: Vec<PostListener> = here
            .into_iter()
            .map(|l| PostListener {
                l,
                mode: ExecutionMode::Agentless,
            })
            .collect();
        let mut refused: Vec<(Refusal, Option<String>)> =
            refused.into_iter().map(|r| (r, None)).collect();
        if let Some(agent) = s.via_agent() {
            let (there, refused_there) = self
                .registry
                .runnable(&s.resource.resource_type, phase, AGENT_MODE)
                .await?;
            runnable.extend(there.into_iter().map(|l| PostListener {
                l,
                mode: ExecutionMode::Agent,
            }));
            refused.extend(
                refused_there
                    .into_iter()
                    .map(|r| (r, Some(agent.id.clone()))),
            );
        }
        Ok((runnable, refused))
    }

    /// The reset's connection to its target for `target-exec`: SSH resources reset without an
    /// agent, whose admin account is known.
    async fn target_exec(&self, s: &Subject) -> Option<Arc<SshTargetExec>> {
        match self.admin(s).await {
            Ok(admin) if s.method == ResetMethod::Ssh && s.agent.is_none() => {
                Some(Arc::new(SshTargetExec::new(
                    self.admins.clone(),
                    s.endpoint(),
                    admin.login,
                    admin.password,
                )))
            }
            _ => None,
        }
    }

    /// Claims pending delivery `id` for one attempt (counted now).
    async fn claim_delivery(&self, id: &str, now: &str) -> Result<Option<DeliveryRow>> {
        let owner = store::resets::lease_owner(&self.node, &crate::time::new_id("lease"));
        let until = crate::time::format(crate::time::now_utc() + delivery::ATTEMPT_LEASE);
        Ok(store::deliveries::claim(self.store.pool(), id, &owner, now, &until).await?)
    }

    /// Claims the next due delivery, if any, and runs its attempt. False when none was due
    /// (or no post-reset slot is free: later attempts share the first attempts' bound).
    pub(super) async fn deliver_due(self: &Arc<Self>) -> Result<bool> {
        let now = crate::time::now();
        let Some(id) = store::deliveries::due(self.store.pool(), &now).await? else {
            return Ok(false);
        };
        let Ok(permit) = self.post_slots.clone().try_acquire_owned() else {
            return Ok(false);
        };
        let Some(d) = self.claim_delivery(&id, &now).await? else {
            // Taken by another worker first, or out of attempts or age with its last ones
            // never recorded: then it ends here, for a person.
            self.give_up(&id, &now).await?;
            return Ok(true);
        };
        // An attempt on an agent mostly waits for the agent: it runs beside the workers, in
        // an agent slot, so offline agents hold neither a worker nor a post-reset slot.
        if d.mode == AGENT_MODE
            && let Ok(slot) = self.agent_slots.clone().try_acquire_owned()
        {
            drop(permit);
            let e = self.clone();
            let id = d.id.clone();
            self.tasks.spawn(async move {
                if let Err(err) = e.attempt_due(d).await {
                    tracing::warn!(delivery = %id, error = %err, "post-reset delivery attempt failed; it is tried again when its claim runs out");
                }
                drop(slot);
            });
            return Ok(true);
        }
        self.attempt_due(d).await?;
        drop(permit);
        Ok(true)
    }

    /// Runs the next attempt of claimed delivery `d`.
    async fn attempt_due(&self, d: DeliveryRow) -> Result<()> {
        let item = store::resets::item(self.store.pool(), &d.item_id)
            .await?
            .ok_or_else(|| Error::Internal(format!("reset item {} is gone", d.item_id)))?;
        let subject = if item.account_id != d.account_id || item.job_id != d.job_id {
            // The row that says whose reset this is was edited: refuse rather than tell
            // this account's listener another account's password.
            Err(NoSubject::Mismatch)
        } else {
            self.subject(&item)
                .await
                .map_err(|e| NoSubject::Unreadable(e.to_string()))
        };
        let (runnable, target) = match &subject {
            Ok(s) => (self.post_listeners(s).await?.0, self.target_exec(s).await),
            Err(_) => (Vec::new(), None),
        };
        let l = runnable.iter().find(|l| l.runs(&d));
        let (_, trouble) = self
            .attempt(d, &item, subject.as_ref().map_err(Clone::clone), l, target)
            .await?;
        if let Some(t) = trouble {
            tracing::info!(item = %item.id, "post-reset delivery: {t}");
        }
        Ok(())
    }

    /// Ends pending delivery `id` as a dead letter when its limits are used up and no claim
    /// holds it (its last attempts were never recorded), with an audit event.
    async fn give_up(&self, id: &str, now: &str) -> Result<()> {
        let why = "gave up: its limits were used up by attempts that were never recorded \
                   (a server stopped, or a claim ran out, while they ran)";
        let mut tx = self.store.begin_write().await?;
        if store::deliveries::give_up(tx.conn(), id, why, now).await? {
            audit::append(
                &mut tx,
                NewEvent {
                    actor: &Actor::system(),
                    action: "delivery.dead-letter",
                    target: id,
                    outcome: Outcome::Failure,
                    detail: json!({ "outcome": "interrupted", "why": why }),
                },
            )
            .await?;
        }
        tx.commit().await
    }

    /// Runs one claimed attempt of `d` and records how it ended (and, for a dead letter, an
    /// audit event); returns the record for the item's listener list and, unless it delivered,
    /// what the item's detail says about it.
    async fn attempt(
        &self,
        d: DeliveryRow,
        item: &ItemRow,
        subject: std::result::Result<&Subject, NoSubject>,
        listener: Option<&PostListener>,
        target: Option<Arc<SshTargetExec>>,
    ) -> Result<(Value, Option<String>)> {
        let started = crate::time::now();
        let lease = d.lease_owner.clone().unwrap_or_default();
        let _heartbeat = self.keep_claim(&d.id, &lease);
        let current = match &subject {
            Ok(_) => self.still_current(&d).await,
            Err(_) => Ok(true),
        };
        // The agent an agent-mode attempt ran on.
        let mut ran_on: Option<String> = None;
        let (report, version) = match (subject, listener) {
            (Err(NoSubject::Mismatch), _) => (
                ListenerReport {
                    outcome: "refused".into(),
                    message: "its reset item names another account or job than the delivery \
                              (edited in the database?); it is not run"
                        .into(),
                    denials: Vec::new(),
                    elapsed_ms: 0.0,
                },
                d.version.clone(),
            ),
            (Ok(_), _) if matches!(current, Ok(false)) => (
                ListenerReport {
                    outcome: DeliveryState::Superseded.as_str().into(),
                    message: store::deliveries::SUPERSEDED.into(),
                    denials: Vec::new(),
                    elapsed_ms: 0.0,
                },
                d.version.clone(),
            ),
            (Ok(_), _) if current.is_err() => (
                unrunnable(format!(
                    "the account's password cannot be read: {}",
                    current
                        .as_ref()
                        .err()
                        .map(ToString::to_string)
                        .unwrap_or_default()
                )),
                d.version.clone(),
            ),
            (Err(NoSubject::Unreadable(why)), _) => (
                unrunnable(format!("the reset's account cannot be read: {why}")),
                d.version.clone(),
            ),
            (Ok(s), None) if d.mode == AGENT_MODE && s.via_agent().is_none() => {
                (no_agent(&d, s), d.version.clone())
            }
            (Ok(_), None) => (
                ListenerReport {
                    outcome: "refused".into(),
                    message: format!(
                        "{} no longer runs in this resource type's post-reset phase (its \
                         association was removed, or the integrity check refused it)",
                        d.listener
                    ),
                    denials: Vec::new(),
                    elapsed_ms: 0.0,
                },
                d.version.clone(),
            ),
            (Ok(s), Some(p)) => {
                let report = match p.mode {
                    ExecutionMode::Agent => {
                        let (report, agent) = self.run_delivery_on_agent(&d, s, &p.l).await;
                        ran_on = agent;
                        report
                    }
                    _ => self.run_delivery(&d, s, &p.l, target).await,
                };
                (report, p.l.version.clone())
            }
        };
        let mut record = Vec::new();
        let verdict = self
            .judge(
                item,
                Phase::PostReset,
                &d.listener,
                &version,
                report.clone(),
                ran_on.as_deref(),
                &mut record,
            )
            .await?;
        let now = crate::time::now_utc();
        let expires = chrono::DateTime::parse_from_rfc3339(&d.expires_at)
            .map(|t| t.with_timezone(&chrono::Utc))
            .unwrap_or(now);
        let pause = delivery::pause(d.attempts, delivery::jitter());
        let next = delivery::after_attempt(
            &report.outcome,
            d.attempts,
            d.max_attempts,
            now,
            expires,
            pause,
        );
        // Attempts counted but never recorded: their server stopped while they ran.
        let mut history = d.history.clone();
        let last = delivery::last_recorded(&history);
        for n in last + 1..d.attempts {
            history = delivery::add_attempt(
                &history,
                Attempt {
                    attempt: n,
                    started_at: String::new(),
                    ended_at: String::new(),
                    node: String::new(),
                    version: d.version.clone(),
                    outcome: "interrupted".into(),
                    message: "its server stopped before it was recorded; it may have run".into(),
                    denials: Vec::new(),
                    elapsed_ms: 0.0,
                },
            );
        }
        let ended = crate::time::format(now);
        history = delivery::add_attempt(
            &history,
            Attempt {
                attempt: d.attempts,
                started_at: started,
                ended_at: ended.clone(),
                node: ran_on.map_or_else(|| self.node.clone(), |a| format!("agent:{a}")),
                version: version.clone(),
                outcome: report.outcome.clone(),
                message: report.message.clone(),
                denials: report.denials.clone(),
                elapsed_ms: report.elapsed_ms,
            },
        );
        let (state, next_at, trouble) = match &next {
            Next::Delivered => (DeliveryState::Delivered, ended.clone(), None),
            Next::Superseded => (DeliveryState::Superseded, ended.clone(), None),
            Next::Again(at) => {
                let at = crate::time::format(*at);
                let t = format!(
                    "{} answered {}: {}; delivery {} is tried again at {at} (attempt {} of {})",
                    d.listener,
                    report.outcome,
                    report.message,
                    d.id,
                    d.attempts + 1,
                    d.max_attempts
                );
                (DeliveryState::Pending, at, Some(t))
            }
            Next::DeadLetter(why) => {
                let said = verdict
                    .clone()
                    .unwrap_or_else(|| format!("{}: {}", d.listener, report.message));
                let t = format!("{said}; delivery {} is a dead letter: {why}", d.id);
                (DeliveryState::DeadLetter, ended.clone(), Some(t))
            }
        };
        let mut tx = self.store.begin_write().await?;
        let written = store::deliveries::end_attempt(
            tx.conn(),
            &d.id,
            &lease,
            &AttemptEnd {
                state: state.as_str(),
                version: &version,
                outcome: &report.outcome,
                message: &report.message,
                history: &history,
                next_attempt_at: &next_at,
                forget: matches!(state, DeliveryState::Delivered | DeliveryState::Superseded),
                at: &ended,
            },
        )
        .await?;
        if !written {
            // Its claim ran out and another attempt holds it: that one records.
            return Err(Error::Conflict(format!(
                "delivery {}: its claim ran out while the attempt ran; the next claim records",
                d.id
            )));
        }
        if let Next::DeadLetter(why) = &next {
            audit::append(
                &mut tx,
                NewEvent {
                    actor: &Actor::system(),
                    action: "delivery.dead-letter",
                    target: &d.id,
                    outcome: Outcome::Failure,
                    detail: json!({
                        "listener": d.listener, "item": d.item_id, "account": d.account_id,
                        "attempts": d.attempts, "outcome": report.outcome, "why": why,
                    }),
                },
            )
            .await?;
        }
        tx.commit().await?;
        let mut entry = record.pop().unwrap_or_else(|| json!({}));
        entry["delivery"] = json!(d.id);
        entry["attempt"] = json!(d.attempts);
        entry["delivery_state"] = json!(state.as_str());
        Ok((entry, trouble))
    }

    /// Renews the claim `owner` holds on delivery `id` every third of [`delivery::ATTEMPT_LEASE`]
    /// until the returned handle is dropped, so a slow attempt (a busy database before and
    /// after the run) is not claimed a second time while it runs.
    fn keep_claim(&self, id: &str, owner: &str) -> super::lease::AbortOnDrop {
        let (store, id, owner) = (self.store.clone(), id.to_string(), owner.to_string());
        super::lease::AbortOnDrop::spawn(async move {
            loop {
                tokio::time::sleep(delivery::ATTEMPT_LEASE / 3).await;
                let until = crate::time::format(crate::time::now_utc() + delivery::ATTEMPT_LEASE);
                match store::deliveries::renew(store.pool(), &id, &owner, &until).await {
                    Ok(true) => {}
                    Ok(false) => return,
                    Err(e) => {
                        tracing::warn!(delivery = %id, error = %e, "cannot renew a delivery's claim")
                    }
                }
            }
        })
    }

    /// Runs one attempt of `d` with `l`, with the passwords the delivery kept for it.
    async fn run_delivery(
        &self,
        d: &DeliveryRow,
        s: &Subject,
        l: &RunnableListener,
        target: Option<Arc<SshTargetExec>>,
    ) -> ListenerReport {
        let (old, new) = match self.delivery_passwords(d).await {
            Ok(p) => p,
            Err(e) => return unrunnable(format!("its kept passwords cannot be opened: {e}")),
        };
        let event = ResetEvent {
            job_id: d.job_id.clone(),
            trigger: Trigger::from_job(&s.job.trigger),
            resource_type: s.resource.resource_type.clone(),
            parameters: l.parameters.clone(),
            delivery: Some(RunDelivery {
                id: d.id.clone(),
                attempt: u32::try_from(d.attempts).unwrap_or(u32::MAX),
            }),
        };
        let ctx = RunContext {
            resource: s.resource.properties(),
            account: s.account.properties(),
            old_password: old,
            new_password: new,
            target: target.map(|t| t as Arc<dyn lockstep_runtime::TargetExec>),
        };
        let inv = l.listener.run(Phase::PostReset, &event, ctx).await;
        let (outcome, message) = inv.verdict();
        ListenerReport {
            outcome: outcome.into(),
            message,
            denials: inv.denials.iter().map(|d| d.to_string()).collect(),
            elapsed_ms: inv.elapsed.as_secs_f64() * 1000.0,
        }
    }

    /// Runs one attempt of `d` on the resource's agent: a listener task (its id the delivery's
    /// and the attempt's) with the passwords the delivery kept, waited for. Returns the report
    /// and the agent it ran on. An agent that does not take the task in time, or took it and
    /// went silent, makes the attempt `interrupted` (tried again); one that could not load
    /// the listener (its signature, its pinned keys) stops it, for a person.
    async fn run_delivery_on_agent(
        &self,
        d: &DeliveryRow,
        s: &Subject,
        l: &RunnableListener,
    ) -> (ListenerReport, Option<String>) {
        let Some(agent) = s.via_agent().filter(|a| AgentStatus::Active.is(&a.status)) else {
            return (no_agent(d, s), None);
        };
        let ran_on = Some(agent.id.clone());
        if let Some(earlier) = self.earlier_task(d).await {
            return (earlier, ran_on);
        }
        let (old, new) = match self.delivery_passwords(d).await {
            Ok(p) => p,
            Err(e) => {
                let why = format!("its kept passwords cannot be opened: {e}");
                return (unrunnable(why), None);
            }
        };
        let secrets = ListenerSecrets {
            old: old.map(|p| p.to_string()),
            new: new.map(|p| p.to_string()),
        };
        let delivery = DeliveryRef {
            id: d.id.clone(),
            attempt: u32::try_from(d.attempts).unwrap_or(u32::MAX),
        };
        let work = listener_work(&d.job_id, s, l, Phase::PostReset, Some(delivery));
        let id = format!("{}-{}", d.id, d.attempts);
        let task = match self
            .listener_task(
                id,
                &d.item_id,
                s,
                agent,
                &work,
                secrets,
                AGENT_ATTEMPT_PICKUP,
            )
            .await
        {
            Ok(task) => task,
            Err(e) => return (unrunnable(format!("its agent task: {e}")), ran_on),
        };
        if let Some(report) = report_of(&task) {
            return (report, ran_on);
        }
        let said = task.message.clone().unwrap_or_default();
        let report = match TaskState::parse(&task.state) {
            // The agent would not or could not run it (an unpinned publisher, a digest that
            // differs): stopped, as a run the host stops, audited; a person re-runs it.
            Some(TaskState::Failed | TaskState::Refused) => ListenerReport {
                outcome: "stopped".into(),
                message: format!("the agent could not run it ({}): {said}", task.state),
                denials: Vec::new(),
                elapsed_ms: 0.0,
            },
            _ => unrunnable(format!(
                "agent {}: task {} {}: {said}",
                agent.id, task.id, task.state
            )),
        };
        (report, ran_on)
    }

    /// The answer of an earlier attempt of `d` whose server stopped while it waited on the
    /// agent (counted, never recorded), if that task ran or is running: it is this attempt's
    /// answer rather than a second run. Earlier tasks still queued are cancelled, so none runs
    /// later with no one to record it (perhaps after the delivery was superseded).
    async fn earlier_task(&self, d: &DeliveryRow) -> Option<ListenerReport> {
        let recorded = delivery::last_recorded(&d.history);
        for k in ((recorded + 1).max(1)..d.attempts).rev() {
            let id = format!("{}-{k}", d.id);
            let Ok(Some(task)) = store::agents::get_task(self.store.pool(), &id).await else {
                continue;
            };
            let task = match TaskState::parse(&task.state) {
                Some(TaskState::Queued) => {
                    let cancelled = async {
                        let mut tx = self.store.begin_write().await?;
                        let why = "a later attempt of its delivery replaced it; not run";
                        let done = store::agents::cancel_if_queued(
                            tx.conn(),
                            &id,
                            why,
                            &crate::time::now(),
                        )
                        .await?;
                        tx.commit().await?;
                        Ok::<_, Error>(done)
                    };
                    match cancelled.await {
                        Ok(true) => continue,
                        Ok(false) => {}
                        Err(e) => {
                            tracing::warn!(task = %id, error = %e, "cannot cancel an earlier attempt's task");
                        }
                    }
                    // Handed out before (or just now): the agent may run it; its answer is
                    // this attempt's rather than a second run.
                    match agent_tasks::wait(&self.store, &self.hub, &id, AGENT_ATTEMPT_PICKUP).await
                    {
                        Ok(task) => task,
                        Err(_) => continue,
                    }
                }
                Some(TaskState::Running) => {
                    match agent_tasks::wait(&self.store, &self.hub, &id, AGENT_ATTEMPT_PICKUP).await
                    {
                        Ok(task) => task,
                        Err(_) => continue,
                    }
                }
                _ => task,
            };
            let Some(mut report) = report_of(&task) else {
                continue;
            };
            report.message = format!(
                "attempt {k}, left waiting on the agent when its server stopped, answered: {}",
                report.message
            );
            return Some(report);
        }
        None
    }

    /// The (old, new) passwords delivery `d` keeps for its listener, opened.
    async fn delivery_passwords(
        &self,
        d: &DeliveryRow,
    ) -> Result<(Option<Zeroizing<String>>, Option<Zeroizing<String>>)> {
        let (old, new) = store::deliveries::sealed(self.store.pool(), &d.id).await?;
        let open = |sealed: Option<crate::vault::Sealed>, which: &str| -> Result<_> {
            sealed
                .map(|s| {
                    self.vault
                        .open_secret(
                            &s,
                            &delivery_password_aad(
                                &d.id,
                                &d.item_id,
                                &d.account_id,
                                &d.listener,
                                which,
                            ),
                        )
                        .map(|p| Zeroizing::new(p.expose().to_string()))
                })
                .transpose()
        };
        Ok((open(old, "old")?, open(new, "new")?))
    }
}

/// Why a due delivery has no reset to run for.
#[derive(Debug, Clone)]
enum NoSubject {
    /// Its item names another account or job than the delivery: refused.
    Mismatch,
    /// The reset's account, resource or settings cannot be read now: tried again.
    Unreadable(String),
}

/// The report of an agent-mode attempt whose resource has no active agent: refused, for a
/// person.
fn no_agent(d: &DeliveryRow, s: &Subject) -> ListenerReport {
    ListenerReport {
        outcome: "refused".into(),
        message: format!(
            "{} runs on the resource's agent, and resource '{}' has no active agent now \
             (revoked or removed); enroll one, then re-run the delivery",
            d.listener, s.resource.name
        ),
        denials: Vec::new(),
        elapsed_ms: 0.0,
    }
}

/// A report for an attempt the host could not run (tried again, within the limits).
fn unrunnable(message: String) -> ListenerReport {
    ListenerReport {
        outcome: "interrupted".into(),
        message,
        denials: Vec::new(),
        elapsed_ms: 0.0,
    }
}
