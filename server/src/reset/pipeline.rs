//! The reset pipeline: workers claim journaled items from the store and move each account
//! through `planned → pre-listeners → pending-written → applied → verified → committed →
//! post-listeners → done`.
//!
//! **Crash safety.** Every step is written to the store before the next begins, and the new
//! password is sealed into the item *before* the target is touched. Work is claimed with a
//! lease that a heartbeat renews; an item whose lease ran out (its server died) is claimed again
//! and, if it was in flight, reconciled by asking the target which password it accepts: the new
//! one commits, the old one fails cleanly, neither marks the account out-of-sync with both
//! passwords kept.

use std::sync::Arc;
use std::time::Duration;

use lockstep_agent_protocol::messages::ListenerReport;
use lockstep_runtime::manifest::Phase;
use lockstep_runtime::{ResetEvent, RunContext, Trigger};
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use zeroize::Zeroizing;

use super::batch::CommandBatcher;
use super::pool::AdminPool;
use super::remote::{self, AdminKind, ApplyFailure, Held};
use super::settings::{ResetSettings, from_row, get_settings};
use super::ssh::{Endpoint, Timeouts};
use super::target::SshTargetExec;
use super::{history_purpose, jobs::given_aad, policy::PasswordPolicy};
use crate::agents::AgentHub;
use crate::agents::tasks::{self as agent_tasks, Kind as TaskKind, NewTask};
use crate::audit::{self, Actor, NewEvent, Outcome};
use crate::error::{Error, Result};
use crate::inventory::accounts::Account;
use crate::inventory::resource_types::ResetMethod;
use crate::inventory::resources::Resource;
use crate::registry::Registry;
use crate::states::{AgentStatus, SyncStatus, TaskState};
use crate::store::agents::{AgentRow, TaskRow};
use crate::store::resets::{ItemRow, JobRow};
use crate::store::{self, Store};
use crate::vault::{Secret, Vault, account_password_aad};

/// How long a claim lasts without a heartbeat, unless the server says otherwise
/// (`--reset-lease-secs`); a heartbeat renews it every third of it. It is also the shortest
/// wait before an item stuck on an error is tried again.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(15);
const LEASE: Duration = DEFAULT_LEASE;
/// How often an idle worker looks for work it was not woken for (expired leases).
const IDLE_POLL: Duration = Duration::from_millis(500);
/// Generated passwords the target may refuse before the account is parked for a person.
const MAX_GENERATED_ATTEMPTS: i64 = 3;
/// Pauses before asking a target again when the command that changed it was cut off and may
/// still be running (a batch's later lines take a password hash each).
const SETTLE_DELAYS: [Duration; 3] = [
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
];
/// The longest wait before an item left in flight (its target could not be asked) is tried
/// again; the wait doubles from a lease's length as the item stays stuck.
const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(600);
/// Post-reset listener runs at once, across all jobs.
const POST_LISTENER_SLOTS: usize = 8;
/// SSH resets at once against one target (its sshd's `MaxStartups` and CPU are the limit).
const PER_TARGET: usize = 8;
/// Resets through agents in progress at once on this server, beside the workers (each mostly
/// waits for its agent; a claimed item beyond this waits for a slot).
const AGENT_RESETS: usize = 512;
/// How long a reset waits for an agent to take its task (or to report on one it took) before
/// it gives up: a queued task is cancelled (nothing changed), a taken one is marked lost.
const AGENT_PICKUP: Duration = Duration::from_secs(15 * 60);

/// Where the pipeline is, as stored.
mod state {
    use crate::states::ItemState;
    pub const PLANNED: &str = ItemState::Planned.as_str();
    pub const PRE_LISTENERS: &str = ItemState::PreListeners.as_str();
    pub const PENDING_WRITTEN: &str = ItemState::PendingWritten.as_str();
    pub const APPLIED: &str = ItemState::Applied.as_str();
    pub const VERIFIED: &str = ItemState::Verified.as_str();
    pub const COMMITTED: &str = ItemState::Committed.as_str();
    pub const POST_LISTENERS: &str = ItemState::PostListeners.as_str();
    pub const DONE: &str = ItemState::Done.as_str();
    pub const VETOED: &str = ItemState::Vetoed.as_str();
    pub const FAILED: &str = ItemState::Failed.as_str();
    pub const OUT_OF_SYNC: &str = ItemState::OutOfSync.as_str();
    pub const PARKED: &str = ItemState::Parked.as_str();
}

/// The claim that holds `item` (its lease owner when this worker claimed it).
fn lease_of(item: &ItemRow) -> &str {
    item.lease_owner.as_deref().unwrap_or_default()
}

/// Stops a worker whose claim on `item` was taken over (its lease ran out and another worker
/// claimed the item): the step's transaction is dropped, so nothing of it is written.
fn still_held(item: &ItemRow, written: bool) -> Result<()> {
    if written {
        Ok(())
    } else {
        Err(Error::Conflict(format!(
            "reset item {}: another worker took it over after this one's lease ran out; this \
             one stops without writing",
            item.id
        )))
    }
}

/// A task that stops when its handle goes, even when the handle goes with a panic.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How a claimed item's run was cut short, when it was.
enum Interrupted {
    /// Its lease was taken over (or could not be renewed before it ran out): the item is
    /// another claim's now, and this one writes nothing more for it.
    LeaseLost,
    /// This server is stopping and the grace ran out: the lease is handed back at once.
    Stopping,
}

/// How the engine runs on this server.
pub struct EngineOptions {
    /// Workers claiming items; 0 for `lockstep reconcile` (only what the caller drives runs)
    /// and for a node that serves only the API and agents.
    pub workers: usize,
    /// No API (`lockstep reconcile`): agents cannot report here, so their resets are left for
    /// a server.
    pub offline: bool,
    pub timeouts: Timeouts,
    /// How often the rotation scheduler looks for due accounts (`None`: never). It runs on
    /// the one node that holds the cluster's scheduler duty.
    pub rotation_check: Option<Duration>,
    /// How long a claim lasts without a heartbeat.
    pub lease: Duration,
    /// The node id (`cluster::node`), the prefix of every lease this engine writes.
    pub node: String,
}

/// The reset engine: owns the workers.
pub struct Engine {
    /// How long a claim lasts without a heartbeat.
    lease: Duration,
    store: Store,
    vault: Arc<Vault>,
    registry: Registry,
    /// This server's node id: every claim's lease owner is `NODE/lease_…`.
    node: String,
    timeouts: Timeouts,
    wake: Notify,
    post_slots: Arc<Semaphore>,
    /// One semaphore per target (`host:port`), created on first use.
    targets: std::sync::Mutex<std::collections::HashMap<String, Arc<Semaphore>>>,
    /// Admin connections, reused across the accounts of a target (and by `target-exec`).
    admins: Arc<AdminPool>,
    /// Concurrent changes of one target share one `chpasswd` run.
    batcher: CommandBatcher,
    /// Agent tasks: rings agents' long-polls, wakes resets waiting for results.
    hub: Arc<AgentHub>,
    /// Bounds the resets through agents running beside the workers.
    agent_slots: Arc<Semaphore>,
    /// No workers and no API (`lockstep reconcile`): agents cannot report, so their resets
    /// are left for the server.
    offline: bool,
    /// Cancelled when the server stops: nothing new is claimed or scheduled.
    stop: CancellationToken,
    /// Cancelled when the stop's grace runs out: items still running are cut off and their
    /// leases handed back.
    abort: CancellationToken,
    /// Every task the engine started (workers, resets beside them, scheduler, sweeper).
    tasks: TaskTracker,
}

/// Everything one item's reset needs to know about its account.
struct Subject {
    account: Account,
    resource: Resource,
    method: ResetMethod,
    /// How the resource type's passwords are set over SSH.
    command: crate::inventory::reset_command::ResetCommand,
    settings: ResetSettings,
    policy: PasswordPolicy,
    job: JobRow,
    /// The agent that manages the resource, if one enrolled (active or revoked).
    agent: Option<AgentRow>,
}

impl Subject {
    fn endpoint(&self) -> Endpoint {
        Endpoint {
            host: self
                .resource
                .ip_address
                .clone()
                .unwrap_or_else(|| self.resource.name.clone()),
            port: u16::try_from(self.resource.ssh_port.unwrap_or(22)).unwrap_or(22),
            pinned_host_key: self.settings.ssh_host_key.clone(),
        }
    }

    fn remote(&self) -> bool {
        self.job.apply_remote != 0 && (self.method != ResetMethod::Local || self.agent.is_some())
    }

    /// The agent that applies this reset, when the resource has one.
    fn via_agent(&self) -> Option<&AgentRow> {
        self.agent.as_ref().filter(|_| self.remote())
    }

    /// Why this reset cannot reach its target, if it cannot.
    fn unreachable(&self) -> Option<String> {
        match (&self.agent, self.remote()) {
            (_, false) => None,
            (Some(a), true) if !AgentStatus::Active.is(&a.status) => Some(format!(
                "agent {} of resource '{}' was revoked; enroll a new agent on the machine, or \
                 reset with apply_remote false to change only the vault",
                a.id, self.resource.name
            )),
            (Some(_), true) => None,
            (None, true) if self.method == ResetMethod::Agent => Some(format!(
                "resource '{}' is of type '{}', which is reset through an agent, and no agent \
                 manages it; enroll one (POST /v1/agent-tokens) or reset with apply_remote false",
                self.resource.name, self.resource.resource_type
            )),
            (None, true) => None,
        }
    }
}

/// A reset item's task for its `attempt`-th password: one task per password, so a repeated
/// hand-out never carries a different password than the one journaled.
fn agent_task_id(item_id: &str, attempt: i64) -> String {
    format!("{item_id}-{attempt}")
}

impl Engine {
    /// Starts the workers on this server (and the scheduler, every `rotation_check`).
    pub fn start(
        store: Store,
        vault: Arc<Vault>,
        registry: Registry,
        hub: Arc<AgentHub>,
        options: EngineOptions,
    ) -> Arc<Engine> {
        let EngineOptions {
            workers,
            timeouts,
            rotation_check,
            lease,
            node,
            offline,
        } = options;
        let engine = Arc::new(Engine {
            lease,
            store,
            vault,
            registry,
            node,
            timeouts,
            wake: Notify::new(),
            post_slots: Arc::new(Semaphore::new(POST_LISTENER_SLOTS)),
            targets: Default::default(),
            admins: Arc::new(AdminPool::new(timeouts)),
            batcher: CommandBatcher::default(),
            hub,
            agent_slots: Arc::new(Semaphore::new(AGENT_RESETS)),
            offline,
            stop: CancellationToken::new(),
            abort: CancellationToken::new(),
            tasks: TaskTracker::new(),
        });
        {
            let e = engine.clone();
            engine.tasks.spawn(async move {
                loop {
                    tokio::select! {
                        _ = e.stop.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(15)) => e.admins.sweep().await,
                    }
                }
            });
        }
        if let Some(every) = rotation_check {
            let e = engine.clone();
            engine.tasks.spawn(async move { e.schedule(every).await });
        }
        // No workers (`lockstep reconcile`): only what the caller drives runs.
        for _ in 0..workers {
            let e = engine.clone();
            engine.tasks.spawn(async move { e.work().await });
        }
        engine
    }

    /// Stops the engine: nothing new is claimed or scheduled, items in progress get `grace`
    /// to finish, and those still running then are cut off with their leases handed back, so
    /// another node takes them up at once instead of after the lease (`Interrupted::Stopping`).
    pub async fn shutdown(&self, grace: Duration) {
        self.stop.cancel();
        self.tasks.close();
        if tokio::time::timeout(grace, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                grace_secs = grace.as_secs(),
                "resets still running after the stop's grace: cutting them off and handing \
                 their leases back"
            );
            self.abort.cancel();
            if tokio::time::timeout(Duration::from_secs(10), self.tasks.wait())
                .await
                .is_err()
            {
                tracing::error!("reset tasks did not end; their leases run out by themselves");
            }
        }
    }

    /// Every `every`, starts a job for the accounts past their maximum age, on the node that
    /// holds the scheduler duty.
    async fn schedule(self: Arc<Self>, every: Duration) {
        loop {
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            match crate::cluster::duty::hold(
                &self.store,
                crate::cluster::Duty::Scheduler,
                &self.node,
            )
            .await
            {
                Ok(Some(_)) => {}
                // Another node holds the duty.
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot take the scheduler duty; skipping this check");
                    continue;
                }
            }
            let bucket = crate::time::now_utc().timestamp() / every.as_secs().max(1) as i64;
            match super::scheduler::rotate_due(&self.store, &self.vault, &bucket.to_string()).await
            {
                Ok(Some(job)) => {
                    tracing::info!(job = %job.id, accounts = job.progress.total, "scheduled rotation started");
                    self.wake();
                }
                Ok(None) => {}
                Err(e) => tracing::error!(error = %e, "scheduled rotation check failed"),
            }
            match super::scheduler::run_due_schedules(&self.store, &self.vault).await {
                Ok(jobs) => {
                    for job in jobs {
                        tracing::info!(job = %job.id, accounts = job.progress.total, "rotation schedule started a job");
                        self.wake();
                    }
                }
                Err(e) => tracing::error!(error = %e, "rotation schedules failed"),
            }
        }
    }

    /// The concurrency limit of one target.
    fn target_slots(&self, label: &str) -> Arc<Semaphore> {
        let mut map = self.targets.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(label.to_string())
            .or_insert_with(|| Arc::new(Semaphore::new(PER_TARGET)))
            .clone()
    }

    /// This server's node id.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Tells idle workers there is new work, on every node.
    pub fn wake(&self) {
        self.wake_here();
        self.hub
            .bells
            .ring_others(crate::cluster::bells::Bell::Work);
    }

    /// Tells this server's idle workers there is new work (a bell another node rang).
    pub fn wake_here(&self) {
        self.wake.notify_waiters();
    }

    async fn work(self: Arc<Self>) {
        loop {
            if self.stop.is_cancelled() {
                return;
            }
            match self.claim().await {
                Ok(Some(item)) => {
                    let id = item.id.clone();
                    // An agent's reset mostly waits for the agent (which may be offline for
                    // minutes): while slots last it runs beside the workers, so it never holds
                    // up resets over SSH. Without a free slot it runs here, like any other;
                    // either way `run` keeps its lease from the start.
                    if matches!(
                        store::agents::account_has_active_agent(
                            self.store.pool(),
                            &item.account_id
                        )
                        .await,
                        Ok(true)
                    ) && let Ok(slot) = self.agent_slots.clone().try_acquire_owned()
                    {
                        let e = self.clone();
                        self.tasks.spawn(async move {
                            if let Err(err) = e.run(item).await {
                                tracing::error!(item = %id, error = %err, "reset step failed; the item will be retried after its lease");
                            }
                            drop(slot);
                        });
                        continue;
                    }
                    if let Err(e) = self.clone().run(item).await {
                        tracing::error!(item = %id, error = %e, "reset step failed; the item will be retried after its lease");
                    }
                }
                Ok(None) => {
                    tokio::select! {
                        _ = self.stop.cancelled() => return,
                        _ = tokio::time::timeout(IDLE_POLL, self.wake.notified()) => {}
                    }
                }
                // A graceful stop closes the pool: the worker ends quietly, with nothing to do.
                Err(_) if self.store.pool().is_closed() => {
                    tracing::debug!("reset worker stops: the database pool is closed");
                    return;
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot claim reset work");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    fn lease_until(&self) -> String {
        crate::time::format(crate::time::now_utc() + self.lease)
    }

    async fn claim(&self) -> Result<Option<ItemRow>> {
        self.claim_where(false).await
    }

    async fn claim_where(&self, in_flight_only: bool) -> Result<Option<ItemRow>> {
        let mut tx = self.store.begin_write().await?;
        let backend = tx.backend();
        // Each claim is its own lease owner, so two workers of this server are told apart too.
        let lease = format!("{}/{}", self.node, crate::time::new_id("lease"));
        let item = store::resets::claim(
            tx.conn(),
            backend,
            &lease,
            &crate::time::now(),
            &self.lease_until(),
            in_flight_only,
        )
        .await?;
        tx.commit().await?;
        Ok(item)
    }

    /// `lockstep reconcile`: settles every item left in flight (lease expired) by asking its
    /// target, then returns how each ended, as (state, count).
    pub async fn reconcile_all(self: Arc<Self>) -> Result<Vec<(String, usize)>> {
        let mut ended: std::collections::BTreeMap<String, usize> = Default::default();
        // Each item once: one whose target cannot be asked now comes round again when its
        // lease runs out, and must not keep this command going.
        let mut seen = std::collections::HashSet::new();
        while let Some(item) = self.claim_where(true).await? {
            let id = item.id.clone();
            if !seen.insert(id.clone()) {
                break;
            }
            if let Err(e) = self.clone().run(item).await {
                tracing::error!(item = %id, error = %e, "could not reconcile");
                *ended.entry("left for later".into()).or_default() += 1;
                continue;
            }
            let state = store::resets::item(self.store.pool(), &id)
                .await?
                .map(|i| i.state)
                .unwrap_or_default();
            *ended.entry(state).or_default() += 1;
        }
        Ok(ended.into_iter().collect())
    }

    /// Runs one claimed item with a heartbeat keeping its lease. The run stops at once when
    /// the lease is lost (taken over, or not renewed before it ran out) or when the server's
    /// stop cuts it off.
    async fn run(self: Arc<Self>, item: ItemRow) -> Result<()> {
        let lost = Arc::new(Notify::new());
        let heartbeat = {
            let (store, id) = (self.store.clone(), item.id.clone());
            let owner = lease_of(&item).to_string();
            let engine = self.clone();
            let lost = lost.clone();
            AbortOnDrop(tokio::spawn(async move {
                let mut renewed = tokio::time::Instant::now();
                loop {
                    tokio::time::sleep(engine.lease / 3).await;
                    let until = engine.lease_until();
                    match store::resets::renew_lease(store.pool(), &id, &owner, &until).await {
                        Ok(true) => renewed = tokio::time::Instant::now(),
                        // Another claim holds it now.
                        Ok(false) => break,
                        // A busy or lost connection: try again at the next beat, unless the
                        // lease may have run out meanwhile (another node may hold it now).
                        Err(e) if renewed.elapsed() + engine.lease / 3 < engine.lease => {
                            tracing::warn!(item = %id, error = %e, "lease renewal failed")
                        }
                        Err(e) => {
                            tracing::warn!(item = %id, error = %e, "lease renewal failed until the lease ran out");
                            break;
                        }
                    }
                }
                lost.notify_one();
            }))
        };
        let (id, updated_at) = (item.id.clone(), item.updated_at.clone());
        let lease = lease_of(&item).to_string();
        let outcome = tokio::select! {
            result = self.clone().process(item) => Ok(result),
            _ = lost.notified() => Err(Interrupted::LeaseLost),
            _ = self.abort.cancelled() => Err(Interrupted::Stopping),
        };
        drop(heartbeat);
        match outcome {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                // Left in flight (a target that cannot be asked, a store error): it is taken
                // up again when its lease runs out, later the longer it has been stuck.
                let until = Self::retry_after(&updated_at);
                let _ = store::resets::renew_lease(self.store.pool(), &id, &lease, &until).await;
                Err(e)
            }
            Err(Interrupted::LeaseLost) => {
                tracing::warn!(item = %id, "lost the lease on this reset; stopped it without another step");
                Ok(())
            }
            Err(Interrupted::Stopping) => {
                let now = crate::time::now();
                let _ = store::resets::renew_lease(self.store.pool(), &id, &lease, &now).await;
                tracing::info!(item = %id, "stopping: handed the reset back for another node");
                Ok(())
            }
        }
    }

    /// When an item stuck since `updated_at` is tried again: after as long as it has been
    /// stuck, at least a lease and at most [`MAX_RETRY_BACKOFF`].
    fn retry_after(updated_at: &str) -> String {
        let now = crate::time::now_utc();
        let stuck = chrono::DateTime::parse_from_rfc3339(updated_at)
            .map(|t| now - t.with_timezone(&chrono::Utc))
            .ok()
            .and_then(|d| d.to_std().ok())
            .unwrap_or(LEASE);
        crate::time::format(now + stuck.clamp(LEASE, MAX_RETRY_BACKOFF))
    }

    async fn process(self: Arc<Self>, item: ItemRow) -> Result<()> {
        let subject = self.subject(&item).await?;
        match item.state.as_str() {
            state::PLANNED | state::PRE_LISTENERS => self.fresh(item, subject).await,
            state::PENDING_WRITTEN | state::APPLIED | state::VERIFIED => {
                self.reconcile(item, subject).await
            }
            // Committed before a crash: the old password is gone from memory.
            _ => self.post_phase(item, subject, None).await,
        }
    }

    async fn subject(&self, item: &ItemRow) -> Result<Subject> {
        let account = crate::inventory::accounts::get(&self.store, &item.account_id).await?;
        let resource = crate::inventory::resources::get(&self.store, &account.resource_id).await?;
        let rtype =
            crate::inventory::resource_types::get(&self.store, &resource.resource_type).await?;
        let settings = get_settings(&self.store, &resource.id).await?;
        let policy = store::password_policies::get(self.store.pool(), &settings.password_policy)
            .await?
            .map(from_row)
            .ok_or_else(|| Error::Internal("the resource's password policy is gone".into()))?;
        let job = store::resets::get_job(self.store.pool(), &item.job_id)
            .await?
            .ok_or_else(|| Error::Internal(format!("job {} is gone", item.job_id)))?;
        let agent = store::agents::agent_of_resource(self.store.pool(), &resource.id).await?;
        Ok(Subject {
            agent,
            account,
            resource,
            method: rtype.reset_method,
            command: rtype
                .reset_command
                .unwrap_or_else(crate::inventory::reset_command::ResetCommand::chpasswd),
            settings,
            policy,
            job,
        })
    }

    /// The account's password as the vault holds it now.
    async fn old_password(&self, id: &str) -> Result<Secret> {
        let sealed = store::accounts::get_sealed_password(self.store.pool(), id)
            .await?
            .ok_or_else(|| Error::Internal(format!("account {id} has no password")))?;
        self.vault.open_secret(&sealed, &account_password_aad(id))
    }

    /// The admin's login and password, for SSH resets.
    async fn admin(&self, s: &Subject) -> std::result::Result<(String, Secret, AdminKind), String> {
        let Some(admin_id) = &s.settings.admin_account_id else {
            return Err(format!(
                "resource '{}' has no admin account; set one with PUT /v1/resources/{}/reset-settings",
                s.resource.name, s.resource.id
            ));
        };
        let admin = crate::inventory::accounts::get(&self.store, admin_id)
            .await
            .map_err(|e| e.to_string())?;
        let password = self
            .old_password(admin_id)
            .await
            .map_err(|e| e.to_string())?;
        let kind = if s.settings.admin_kind == "sudo" {
            AdminKind::Sudo
        } else {
            AdminKind::Root
        };
        Ok((admin.login_name, password, kind))
    }

    /// Writes an item's new state (and audits a final one). A final state other than
    /// out-of-sync discards the pending password: call it only once the target has shown it
    /// does not hold it (or was never touched).
    async fn step(
        &self,
        item: &ItemRow,
        to: &str,
        detail: Option<&str>,
        listeners: &[serde_json::Value],
        attempts: i64,
    ) -> Result<()> {
        self.step_keeping(
            item,
            to,
            detail,
            listeners,
            attempts,
            to == state::OUT_OF_SYNC,
        )
        .await
    }

    /// [`Self::step`], keeping the pending password sealed in the item when `keep_pending`.
    async fn step_keeping(
        &self,
        item: &ItemRow,
        to: &str,
        detail: Option<&str>,
        listeners: &[serde_json::Value],
        attempts: i64,
        keep_pending: bool,
    ) -> Result<()> {
        let now = crate::time::now();
        let mut tx = self.store.begin_write().await?;
        let listeners = serde_json::Value::Array(listeners.to_vec()).to_string();
        let written = store::resets::set_state(
            tx.conn(),
            &item.id,
            lease_of(item),
            to,
            detail,
            &listeners,
            attempts,
            &now,
        )
        .await?;
        still_held(item, written)?;
        let final_state = matches!(
            to,
            state::DONE | state::VETOED | state::FAILED | state::OUT_OF_SYNC | state::PARKED
        );
        if final_state {
            store::resets::release(tx.conn(), &item.id).await?;
            if store::resets::finish_job_if_done(tx.conn(), &item.job_id, &now).await? {
                self.announce_finished(&mut tx, &item.job_id).await?;
            }
        }
        if matches!(
            to,
            state::VETOED | state::FAILED | state::OUT_OF_SYNC | state::PARKED
        ) {
            // Out-of-sync keeps the pending password: a person needs both to sort it out.
            if !keep_pending {
                store::resets::set_pending(tx.conn(), &item.id, None).await?;
            }
            if to == state::OUT_OF_SYNC {
                store::accounts::set_sync_status(
                    tx.conn(),
                    &item.account_id,
                    SyncStatus::OutOfSync.as_str(),
                    &now,
                )
                .await?;
            }
            audit::append(
                &mut tx,
                NewEvent {
                    actor: &Actor::system(),
                    action: "account.password.reset",
                    target: &item.account_id,
                    outcome: if to == state::VETOED {
                        Outcome::Denied
                    } else {
                        Outcome::Failure
                    },
                    detail: serde_json::json!({
                        "job": item.job_id, "item": item.id, "state": to, "reason": detail,
                    }),
                },
            )
            .await?;
        }
        tx.commit().await
    }

    /// Tells the job's `notify` users that it finished, with its outcome counts.
    async fn announce_finished(&self, tx: &mut crate::store::WriteTx, job_id: &str) -> Result<()> {
        let Some(job) = store::resets::get_job(self.store.pool(), job_id).await? else {
            return Ok(());
        };
        let users: Vec<String> = job
            .notify
            .as_deref()
            .and_then(|n| serde_json::from_str(n).ok())
            .unwrap_or_default();
        if users.is_empty() {
            return Ok(());
        }
        let counts = store::resets::state_counts(tx.conn(), job_id).await?;
        let summary = counts
            .iter()
            .map(|(state, n)| format!("{n} {state}"))
            .collect::<Vec<_>>()
            .join(", ");
        for u in users {
            crate::notifications::notify(
                tx,
                &u,
                "reset-finished",
                format!("reset job {job_id} ({}) finished: {summary}", job.reason),
                None,
            )
            .await?;
        }
        Ok(())
    }

    /// A reset from the start: choose the password, ask the pre-reset listeners, journal the
    /// pending password, apply, verify, commit.
    async fn fresh(self: Arc<Self>, item: ItemRow, mut s: Subject) -> Result<()> {
        let mut listeners: Vec<serde_json::Value> = Vec::new();
        self.step(&item, state::PRE_LISTENERS, None, &listeners, item.attempts)
            .await?;
        let given = match store::resets::given(self.store.pool(), &item.id).await? {
            Some(sealed) => Some(self.vault.open_secret(&sealed, &given_aad(&item.id))?),
            None => None,
        };
        let mut new = match &given {
            Some(pw) => Secret::new(pw.expose().to_string()),
            None => self.fresh_password(&s).await?,
        };
        let mut old = self.old_password(&s.account.id).await?;
        if let Some(why) = s.unreachable() {
            return self
                .step(&item, state::FAILED, Some(&why), &listeners, item.attempts)
                .await;
        }
        let over_ssh = s.remote() && s.method == ResetMethod::Ssh && s.agent.is_none();
        if over_ssh {
            // The template runs as root on the target: only the approved one, sealed.
            match self
                .registry
                .approved_command(&s.resource.resource_type)
                .await?
            {
                Ok(command) => s.command = command,
                Err(why) => {
                    tracing::error!(resource_type = %s.resource.resource_type, "ALERT: {why}");
                    audit::record(
                        &self.store,
                        NewEvent {
                            actor: &Actor::system(),
                            action: "resource-type.integrity",
                            target: &s.resource.resource_type,
                            outcome: Outcome::Failure,
                            detail: serde_json::json!({ "item": item.id, "reason": why }),
                        },
                    )
                    .await?;
                    return self
                        .step(&item, state::FAILED, Some(&why), &listeners, item.attempts)
                        .await;
                }
            }
        }
        let admin = if over_ssh {
            match self.admin(&s).await {
                Ok(a) => Some(a),
                Err(why) => {
                    return self
                        .step(&item, state::FAILED, Some(&why), &listeners, item.attempts)
                        .await;
                }
            }
        } else {
            None
        };

        // Pre-reset listeners, in order; any veto (or a listener that cannot answer) stops it.
        let target = admin.as_ref().map(|(user, pw, _)| {
            Arc::new(SshTargetExec::new(
                self.admins.clone(),
                s.endpoint(),
                user.clone(),
                Secret::new(pw.expose().to_string()),
            ))
        });
        let vetoed = self
            .run_listeners(
                &item,
                &s,
                Phase::PreReset,
                &old,
                &new,
                target.clone(),
                &mut listeners,
            )
            .await?;
        if let Some(why) = vetoed {
            return self
                .step(&item, state::VETOED, Some(&why), &listeners, item.attempts)
                .await;
        }

        // From here on the target is touched: respect its concurrency limit.
        let _slot = self
            .target_slots(&s.endpoint().label())
            .acquire_owned()
            .await
            .map_err(|_| Error::Internal("target slots closed".into()))?;
        let mut attempts = item.attempts;
        // Whether a command carrying `new` was cut off: it may still apply it later, so `new`
        // is then never discarded, only kept.
        let mut sent_by_interrupted = false;
        loop {
            attempts += 1;
            self.write_pending(&item, &new, &listeners, attempts)
                .await?;
            if let Some(agent) = s.via_agent() {
                let task = self
                    .apply_via_agent(&item, &s, agent, &new, attempts)
                    .await?;
                match TaskState::parse(&task.state) {
                    // The agent set the password and checked the account accepts it.
                    Some(TaskState::Succeeded) => {
                        self.step(&item, state::APPLIED, None, &listeners, attempts)
                            .await?;
                        self.step(&item, state::VERIFIED, None, &listeners, attempts)
                            .await?;
                        return self
                            .commit(item, s, new, Some(old), listeners, attempts)
                            .await;
                    }
                    Some(TaskState::Refused)
                        if given.is_none() && attempts < MAX_GENERATED_ATTEMPTS =>
                    {
                        new = self.fresh_password(&s).await?;
                        continue;
                    }
                    _ => {
                        return self
                            .agent_ended(item, task, listeners, attempts, given.is_none())
                            .await;
                    }
                }
            }
            let Some((user, admin_pw, kind)) = &admin else {
                // Vault only: nothing to apply or verify.
                return self
                    .commit(item, s, new, Some(old), listeners, attempts)
                    .await;
            };
            let failure = match self.apply(&s, user, admin_pw, *kind, &new).await {
                Ok(()) => break,
                // Nothing reached the target: the reset fails cleanly.
                Err(e) if !e.may_have_changed() => {
                    return self
                        .step(
                            &item,
                            state::FAILED,
                            Some(&e.to_string()),
                            &listeners,
                            attempts,
                        )
                        .await;
                }
                Err(e) => e,
            };
            // The command may have set the password whatever it said: before anything is
            // retried, regenerated or discarded, the target shows which password it holds.
            // If it cannot be asked, the item stays in flight with its pending password and
            // is reconciled when its lease runs out.
            if s.settings.ssh_host_key.is_none() {
                s = self.refresh_pin(s).await?;
            }
            // A command that was cut off may still be running on the target (a chpasswd
            // working through a batch): its answer is asked until it stops changing.
            let running = matches!(
                failure,
                ApplyFailure::Interrupted(_) | ApplyFailure::Abandoned
            );
            let held = self
                .ask_target(&item, &s, &new, &mut old, running)
                .await?
                .map_err(|e| {
                Error::Conflict(format!(
                    "{}: the change may have been applied ({failure}) and the target cannot be                      asked which password it holds ({e}); both are kept and it is asked again",
                    item.id
                ))
            })?;
            match held {
                Held::New => {
                    tracing::info!(item = %item.id, error = %failure, "the change was applied although its command failed");
                    self.step(&item, state::APPLIED, None, &listeners, attempts)
                        .await?;
                    self.step(&item, state::VERIFIED, None, &listeners, attempts)
                        .await?;
                    return self
                        .commit(item, s, new, Some(old), listeners, attempts)
                        .await;
                }
                Held::Neither => {
                    let why = format!(
                        "the target accepts neither the stored nor the new password after: \
                         {failure}; both are kept for a person to check"
                    );
                    return self
                        .out_of_sync(&item, &s, &why, &listeners, attempts)
                        .await;
                }
                Held::Old => {}
            }
            // The target holds the old password now. `new` can go unless a command carrying
            // it was cut off (it may still apply it): then it is kept.
            let generated = given.is_none();
            sent_by_interrupted |= matches!(
                failure,
                ApplyFailure::Interrupted(_) | ApplyFailure::Abandoned
            );
            match failure {
                ApplyFailure::Refused { .. } if generated && attempts < MAX_GENERATED_ATTEMPTS => {
                    // The target's own rules refused a generated password: try a fresh one.
                    if sent_by_interrupted {
                        self.keep(&item, &new).await?;
                        sent_by_interrupted = false;
                    }
                    new = self.fresh_password(&s).await?;
                }
                ApplyFailure::Interrupted(_) | ApplyFailure::Abandoned
                    if attempts < MAX_GENERATED_ATTEMPTS => {}
                // A command cut off before it applied may still be running on the target
                // and apply its input later: the same password was retried, and it stays
                // sealed in the item instead of being discarded.
                e @ (ApplyFailure::Interrupted(_) | ApplyFailure::Abandoned) => {
                    let why = format!(
                        "{e}; the target still accepts the stored password after {attempts} \
                         tries; the new one is kept with this item in case the interrupted \
                         command applies it later"
                    );
                    return self
                        .step_keeping(&item, state::FAILED, Some(&why), &listeners, attempts, true)
                        .await;
                }
                e => {
                    let parked = matches!(e, ApplyFailure::Refused { .. }) && generated;
                    let to = if parked { state::PARKED } else { state::FAILED };
                    let why = if parked {
                        format!(
                            "the target refused {attempts} generated passwords and still accepts \
                             the stored one; a person must look: {e}"
                        )
                    } else {
                        format!(
                            "{e}; the target still accepts the stored password, nothing changed"
                        )
                    };
                    return self
                        .step_keeping(
                            &item,
                            to,
                            Some(&why),
                            &listeners,
                            attempts,
                            sent_by_interrupted,
                        )
                        .await;
                }
            }
        }
        self.step(&item, state::APPLIED, None, &listeners, attempts)
            .await?;
        // The host key was pinned by this apply if none was: verify against the pin.
        let s = if s.settings.ssh_host_key.is_none() {
            self.refresh_pin(s).await?
        } else {
            s
        };
        match remote::accepts(&s.endpoint(), &s.account.login_name, &new, self.timeouts).await {
            Ok(true) => {
                self.step(&item, state::VERIFIED, None, &listeners, attempts)
                    .await?;
                self.commit(item, s, new, Some(old), listeners, attempts)
                    .await
            }
            // The change was acknowledged but the new password does not log in: find out what
            // the target holds now.
            _ => {
                self.settle(item, s, new, old, listeners, attempts, false)
                    .await
            }
        }
    }

    /// A generated password that satisfies the policy and was not used recently.
    async fn fresh_password(&self, s: &Subject) -> Result<Secret> {
        let recent =
            store::resets::recent_history(self.store.pool(), &s.account.id, s.policy.history)
                .await?;
        loop {
            let pw = s.policy.generate()?;
            let fp = self
                .vault
                .fingerprint(&history_purpose(&s.account.id), pw.expose().as_bytes())?;
            if !recent.contains(&fp) {
                return Ok(pw);
            }
        }
    }

    async fn write_pending(
        &self,
        item: &ItemRow,
        new: &Secret,
        listeners: &[serde_json::Value],
        attempts: i64,
    ) -> Result<()> {
        let sealed = self.vault.seal_secret(new, &pending_aad(&item.id))?;
        let now = crate::time::now();
        let mut tx = self.store.begin_write().await?;
        store::resets::set_pending(tx.conn(), &item.id, Some(&sealed)).await?;
        store::resets::clear_given(tx.conn(), &item.id).await?;
        let listeners = serde_json::Value::Array(listeners.to_vec()).to_string();
        let written = store::resets::set_state(
            tx.conn(),
            &item.id,
            lease_of(item),
            state::PENDING_WRITTEN,
            None,
            &listeners,
            attempts,
            &now,
        )
        .await?;
        still_held(item, written)?;
        tx.commit().await
    }

    /// Changes the password on the target through the admin account; pins the host key at
    /// first use.
    async fn apply(
        &self,
        s: &Subject,
        user: &str,
        admin_pw: &Secret,
        kind: AdminKind,
        new: &Secret,
    ) -> std::result::Result<(), ApplyFailure> {
        let endpoint = s.endpoint();
        let (conn, reused) = self.admins.get(&endpoint, user, admin_pw).await?;
        if s.settings.ssh_host_key.is_none() {
            let mut tx = self
                .store
                .begin_write()
                .await
                .map_err(|e| ApplyFailure::Unrepresentable(e.to_string()))?;
            store::reset_settings::pin_host_key(tx.conn(), &s.resource.id, &conn.host_key)
                .await
                .map_err(|e| ApplyFailure::Unrepresentable(e.to_string()))?;
            tx.commit()
                .await
                .map_err(|e| ApplyFailure::Unrepresentable(e.to_string()))?;
        }
        let key = format!("{}\n{user}", endpoint.label());
        let login = &s.account.login_name;
        let label = endpoint.label();
        let r = self
            .batcher
            .apply(&key, &conn, kind, admin_pw, &s.command, login, new, &label)
            .await;
        match r {
            // A kept connection may have died in between; one fresh try.
            Err(ApplyFailure::Ssh(_)) if reused => {
                self.admins.forget(&endpoint, user, admin_pw).await;
                let (conn, _) = self.admins.get(&endpoint, user, admin_pw).await?;
                remote::apply(&conn, kind, admin_pw, &s.command, login, new, &label).await
            }
            Err(e @ ApplyFailure::Ssh(_)) => {
                self.admins.forget(&endpoint, user, admin_pw).await;
                Err(e)
            }
            other => other,
        }
    }

    /// Re-reads the settings (the host key may have been pinned just now).
    async fn refresh_pin(&self, mut s: Subject) -> Result<Subject> {
        s.settings = get_settings(&self.store, &s.resource.id).await?;
        Ok(s)
    }

    /// Commits the new password to the vault (one transaction with its history and audit
    /// event), then hands the item to the post-reset listeners.
    async fn commit(
        self: Arc<Self>,
        item: ItemRow,
        s: Subject,
        new: Secret,
        old: Option<Secret>,
        listeners: Vec<serde_json::Value>,
        attempts: i64,
    ) -> Result<()> {
        let sealed = self
            .vault
            .seal_secret(&new, &account_password_aad(&s.account.id))?;
        let fp = self
            .vault
            .fingerprint(&history_purpose(&s.account.id), new.expose().as_bytes())?;
        let now = crate::time::now();
        let mut tx = self.store.begin_write().await?;
        store::accounts::set_password(tx.conn(), &s.account.id, &sealed, &now).await?;
        store::resets::add_history(tx.conn(), &s.account.id, &fp, &now).await?;
        store::resets::set_pending(tx.conn(), &item.id, None).await?;
        let record = serde_json::Value::Array(listeners.clone()).to_string();
        let written = store::resets::set_state(
            tx.conn(),
            &item.id,
            lease_of(&item),
            state::COMMITTED,
            None,
            &record,
            attempts,
            &now,
        )
        .await?;
        still_held(&item, written)?;
        audit::append(
            &mut tx,
            NewEvent {
                actor: &Actor::system(),
                action: "account.password.reset",
                target: &s.account.id,
                outcome: Outcome::Success,
                detail: serde_json::json!({
                    "job": item.job_id,
                    "item": item.id,
                    "applied_remotely": s.remote(),
                    "attempts": attempts,
                }),
            },
        )
        .await?;
        tx.commit().await?;
        let mut item = item;
        item.state = state::COMMITTED.into();
        item.listeners = record;
        item.attempts = attempts;
        self.post_phase(item, s, old).await
    }

    /// After a change whose verification failed, or after a crash: which password does the
    /// target accept? New: commit. Old: nothing changed; after a crash (`retry`) the reset starts
    /// over, otherwise it fails. Neither: out-of-sync, keep both. Cannot ask: an error, and the
    /// item stays in flight with both passwords until it can.
    #[allow(clippy::too_many_arguments)]
    async fn settle(
        self: Arc<Self>,
        item: ItemRow,
        s: Subject,
        new: Secret,
        old: Secret,
        listeners: Vec<serde_json::Value>,
        attempts: i64,
        retry: bool,
    ) -> Result<()> {
        let mut old = old;
        let held = self
            .ask_target(&item, &s, &new, &mut old, false)
            .await?
            .map_err(|e| Error::Conflict(format!("cannot settle {}: {e}", item.id)))?;
        match held {
            Held::New => {
                self.commit(item, s, new, Some(old), listeners, attempts)
                    .await
            }
            Held::Old if retry && attempts < MAX_GENERATED_ATTEMPTS => {
                tracing::info!(item = %item.id, "interrupted before the target changed; starting over");
                self.restart(&item, attempts).await
            }
            Held::Old => {
                self.step(
                    &item,
                    state::FAILED,
                    Some("the target kept the old password; nothing changed"),
                    &listeners,
                    attempts,
                )
                .await
            }
            Held::Neither => {
                self.out_of_sync(
                    &item,
                    &s,
                    "the target accepts neither the stored nor the new password; both are kept \
                     for a person to check",
                    &listeners,
                    attempts,
                )
                .await
            }
        }
    }

    /// Asks the target which password it holds for the item's account: the new one, the
    /// stored one (`old`) or, when it takes neither, a password that an earlier item of the
    /// account kept because the target might hold it (out-of-sync, or an interrupted command).
    /// A kept password that logs in becomes the stored one (audited as
    /// `account.password.recovered`), its item lets go of it, `old` becomes it, and the answer
    /// is [`Held::Old`]. The inner error: the target could not be asked; nothing is proven.
    ///
    /// `still_running`: the command that tried the change was cut off and may still be
    /// applying it, so an answer other than the new password is asked again after
    /// [`SETTLE_DELAYS`] until two answers in a row agree.
    async fn ask_target(
        &self,
        item: &ItemRow,
        s: &Subject,
        new: &Secret,
        old: &mut Secret,
        still_running: bool,
    ) -> Result<std::result::Result<Held, super::ssh::SshFailure>> {
        let endpoint = s.endpoint();
        let login = &s.account.login_name;
        let ask = || remote::held(&endpoint, login, new, old, self.timeouts);
        let mut answer = ask().await;
        if still_running {
            for delay in SETTLE_DELAYS {
                let Ok(before) = answer else { break };
                if before == Held::New {
                    break;
                }
                tokio::time::sleep(delay).await;
                answer = ask().await;
                if answer == Ok(before) {
                    break;
                }
            }
        }
        match answer {
            Ok(Held::Neither) => {}
            other => return Ok(other),
        }
        let kept =
            store::resets::kept_passwords(self.store.pool(), &s.account.id, &item.id, 8).await?;
        for kept in kept {
            let kept_by = kept.item_id.clone();
            let candidate = self
                .vault
                .open_secret(&kept.sealed, &pending_aad(&kept_by))?;
            if candidate.expose() == new.expose() || candidate.expose() == old.expose() {
                continue;
            }
            match remote::accepts(&endpoint, login, &candidate, self.timeouts).await {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => return Ok(Err(e)),
            }
            let stored = self
                .vault
                .seal_secret(&candidate, &account_password_aad(&s.account.id))?;
            let now = crate::time::now();
            let mut tx = self.store.begin_write().await?;
            store::accounts::set_password(tx.conn(), &s.account.id, &stored, &now).await?;
            store::resets::drop_kept(tx.conn(), &kept).await?;
            audit::append(
                &mut tx,
                NewEvent {
                    actor: &Actor::system(),
                    action: "account.password.recovered",
                    target: &s.account.id,
                    outcome: Outcome::Success,
                    detail: serde_json::json!({
                        "kept_by_item": kept_by, "found_by_item": item.id,
                        "job": item.job_id,
                    }),
                },
            )
            .await?;
            tx.commit().await?;
            tracing::warn!(account = %s.account.id, kept_by = %kept_by, "the target holds a password an earlier reset kept; the vault takes it");
            *old = candidate;
            return Ok(Ok(Held::Old));
        }
        Ok(Ok(Held::Neither))
    }

    /// Keeps `password` (an earlier pending password of `item`) as one the target may still
    /// take.
    async fn keep(&self, item: &ItemRow, password: &Secret) -> Result<()> {
        let sealed = self.vault.seal_secret(password, &pending_aad(&item.id))?;
        let mut tx = self.store.begin_write().await?;
        store::resets::keep_password(
            tx.conn(),
            &item.id,
            &item.account_id,
            &sealed,
            &crate::time::now(),
        )
        .await?;
        tx.commit().await
    }

    /// Ends an item out-of-sync: the pending password stays sealed in the item beside the
    /// stored one, the account is marked, and an alert is logged and audited.
    async fn out_of_sync(
        &self,
        item: &ItemRow,
        s: &Subject,
        why: &str,
        listeners: &[serde_json::Value],
        attempts: i64,
    ) -> Result<()> {
        tracing::error!(account = %s.account.id, item = %item.id, "ALERT: the target accepts neither the old nor the new password");
        self.step(item, state::OUT_OF_SYNC, Some(why), listeners, attempts)
            .await
    }

    /// Puts an interrupted item back to `planned` (nothing changed on the target) so a worker
    /// runs it again from the start.
    async fn restart(&self, item: &ItemRow, attempts: i64) -> Result<()> {
        let now = crate::time::now();
        // The process that sent this password may have died with its command still running
        // on the target: the password is kept as a candidate, not discarded.
        let pending = store::resets::pending(self.store.pool(), &item.id).await?;
        let mut tx = self.store.begin_write().await?;
        if let Some(sealed) = &pending {
            store::resets::keep_password(tx.conn(), &item.id, &item.account_id, sealed, &now)
                .await?;
        }
        store::resets::set_pending(tx.conn(), &item.id, None).await?;
        let written = store::resets::set_state(
            tx.conn(),
            &item.id,
            lease_of(item),
            state::PLANNED,
            Some("interrupted before the target changed; started again"),
            "[]",
            attempts,
            &now,
        )
        .await?;
        still_held(item, written)?;
        store::resets::release(tx.conn(), &item.id).await?;
        tx.commit().await?;
        self.wake();
        Ok(())
    }

    /// An item found in flight after its lease ran out.
    async fn reconcile(self: Arc<Self>, item: ItemRow, s: Subject) -> Result<()> {
        let listeners: Vec<serde_json::Value> =
            serde_json::from_str(&item.listeners).unwrap_or_default();
        let attempts = item.attempts;
        let Some(sealed) = store::resets::pending(self.store.pool(), &item.id).await? else {
            return self
                .step(
                    &item,
                    state::FAILED,
                    Some("interrupted before a new password was chosen; nothing changed"),
                    &listeners,
                    attempts,
                )
                .await;
        };
        let new = self.vault.open_secret(&sealed, &pending_aad(&item.id))?;
        let old = self.old_password(&s.account.id).await?;
        if !s.remote() {
            return self
                .commit(item, s, new, Some(old), listeners, attempts)
                .await;
        }
        if s.via_agent().is_some() {
            if self.offline {
                return Err(Error::Conflict(format!(
                    "{} is reset by an agent, which reports to a running server; it settles \
                     when the server runs",
                    item.id
                )));
            }
            let id = agent_task_id(&item.id, attempts);
            if store::agents::get_task(self.store.pool(), &id)
                .await?
                .is_none()
            {
                // Interrupted before the task was queued: the agent never saw this password.
                return self.restart(&item, attempts).await;
            }
            tracing::info!(item = %item.id, task = %id, "waiting for the agent's result of a reset left in flight");
            let task = agent_tasks::wait(&self.store, &self.hub, &id, AGENT_PICKUP).await?;
            return match TaskState::parse(&task.state) {
                Some(TaskState::Succeeded) => {
                    self.step(&item, state::VERIFIED, None, &listeners, attempts)
                        .await?;
                    self.commit(item, s, new, Some(old), listeners, attempts)
                        .await
                }
                Some(TaskState::Refused | TaskState::Failed | TaskState::Cancelled)
                    if attempts < MAX_GENERATED_ATTEMPTS =>
                {
                    self.restart(&item, attempts).await
                }
                _ => {
                    self.agent_ended(item, task, listeners, attempts, false)
                        .await
                }
            };
        }
        tracing::info!(item = %item.id, state = %item.state, "reconciling a reset left in flight");
        self.settle(item, s, new, old, listeners, attempts, true)
            .await
    }

    /// Post-reset listeners, off the critical path: the reset is committed whatever they say.
    async fn post_phase(
        self: Arc<Self>,
        item: ItemRow,
        s: Subject,
        old: Option<Secret>,
    ) -> Result<()> {
        let mut listeners: Vec<serde_json::Value> =
            serde_json::from_str(&item.listeners).unwrap_or_default();
        self.step(
            &item,
            state::POST_LISTENERS,
            None,
            &listeners,
            item.attempts,
        )
        .await?;
        let permit = self
            .post_slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::Internal("post-listener slots closed".into()))?;
        let new = self.old_password(&s.account.id).await?;
        let target = match self.admin(&s).await {
            Ok((user, pw, _)) if s.method == ResetMethod::Ssh && s.agent.is_none() => {
                Some(Arc::new(SshTargetExec::new(
                    self.admins.clone(),
                    s.endpoint(),
                    user,
                    pw,
                )))
            }
            _ => None,
        };
        let old = old.unwrap_or_else(|| Secret::new(String::new()));
        let failed = self
            .run_listeners(
                &item,
                &s,
                Phase::PostReset,
                &old,
                &new,
                target.clone(),
                &mut listeners,
            )
            .await?;
        drop(permit);
        self.step(
            &item,
            state::DONE,
            failed.as_deref(),
            &listeners,
            item.attempts,
        )
        .await
    }

    /// Queues the reset task for the agent and waits for its result.
    async fn apply_via_agent(
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
    async fn agent_ended(
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

    /// Runs the listeners of `phase`; returns the first veto (pre) or failure (post) message.
    #[allow(clippy::too_many_arguments)]
    async fn run_listeners(
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
    async fn judge(
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

    /// Runs the agent-mode listeners of `phase` on the resource's agent, one task each, in
    /// order; returns the first veto (pre) or failure (post). A task id names the item, phase
    /// and listener, so a run repeated after a crash reuses the first run's result.
    #[allow(clippy::too_many_arguments)]
    async fn agent_listeners(
        &self,
        item: &ItemRow,
        s: &Subject,
        agent: &AgentRow,
        phase: Phase,
        old: &Secret,
        new: &Secret,
        record: &mut Vec<serde_json::Value>,
    ) -> Result<Option<String>> {
        use lockstep_agent_protocol::messages::ListenerWork;
        use lockstep_runtime::manifest::Secret as Grant;
        let (runnable, refused) = self
            .registry
            .runnable(&s.resource.resource_type, phase.as_str(), "agent")
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
            let sealed = Secret::new(
                serde_json::to_string(&secrets).map_err(|e| Error::Internal(e.to_string()))?,
            );
            drop(secrets);
            let work = ListenerWork {
                name: l.name.clone(),
                version: l.version.clone(),
                phase: phase.as_str().into(),
                component_sha256: l.component_sha256.clone(),
                manifest: l.manifest_text.clone(),
                signature: l.signature.clone(),
                job_id: item.job_id.clone(),
                trigger: s.job.trigger.clone(),
                resource_type: s.resource.resource_type.clone(),
                parameters: l.parameters.clone(),
                resource: s.resource.properties(),
                account: s.account.properties(),
                old_password: None,
                new_password: None,
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
            agent_tasks::queue(
                &self.store,
                &self.vault,
                &self.hub,
                NewTask {
                    id: id.clone(),
                    agent_id: &agent.id,
                    kind: TaskKind::Listener,
                    item_id: Some(&item.id),
                    account_id: Some(&s.account.id),
                    login_name: &s.account.login_name,
                    requested_by: &s.job.requested_by,
                    password: &sealed,
                    listener: Some(&work),
                },
            )
            .await?;
            let task = agent_tasks::wait(&self.store, &self.hub, &id, AGENT_PICKUP).await?;
            let report: Option<ListenerReport> = task
                .result
                .as_deref()
                .and_then(|r| serde_json::from_str(r).ok());
            let report = report.unwrap_or_else(|| ListenerReport {
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
}

/// What a listener that cannot run (integrity refusal, load failure) means for the reset: a
/// pre-reset guard stops it (fail closed); a post-reset listener's failure is recorded.
fn guard_refused(phase: Phase, name: &str, reason: &str) -> String {
    match phase {
        Phase::PreReset => format!(
            "pre-reset listener {name} cannot run ({reason}); the reset stops rather than go \
             ahead without it"
        ),
        Phase::PostReset => format!("{name} could not run: {reason}"),
    }
}

/// The sealing context of an item's pending password.
fn pending_aad(item_id: &str) -> String {
    format!("reset-item:{item_id}:pending")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How far in the future `until` is.
    fn wait(until: &str) -> Duration {
        let until = chrono::DateTime::parse_from_rfc3339(until).unwrap();
        (until.with_timezone(&chrono::Utc) - crate::time::now_utc())
            .to_std()
            .unwrap_or_default()
    }

    #[test]
    fn an_item_stuck_longer_waits_longer_up_to_the_cap() {
        let just_now = crate::time::now();
        assert!(wait(&Engine::retry_after(&just_now)) <= LEASE);
        assert!(wait(&Engine::retry_after(&just_now)) > LEASE - Duration::from_secs(2));
        let minutes_ago =
            crate::time::format(crate::time::now_utc() - chrono::Duration::minutes(3));
        let w = wait(&Engine::retry_after(&minutes_ago));
        assert!(
            w > Duration::from_secs(170) && w <= Duration::from_secs(181),
            "{w:?}"
        );
        let day_ago = crate::time::format(crate::time::now_utc() - chrono::Duration::days(1));
        assert!(wait(&Engine::retry_after(&day_ago)) <= MAX_RETRY_BACKOFF);
        assert!(wait(&Engine::retry_after("not a time")) <= LEASE);
    }
}
