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
//!
//! One idea per file: this one owns the engine (workers, scheduler, the graceful stop) and
//! what one item's reset needs to know; `lease.rs` claims and leases, `journal.rs` the fenced
//! step writes, `fresh.rs` a fresh reset, `reconcile.rs` settling what is in flight,
//! `listeners.rs` the listener phases, `deliver.rs` post-reset deliveries and their retries,
//! `agent.rs` resets through agents, `resolve.rs` a person settling an out-of-sync account.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::batch::CommandBatcher;
use super::connector::active_directory::{ActiveDirectoryConnector, AdEndpoint};
use super::connector::mysql::{MyEndpoint, MysqlConnector};
use super::connector::postgres::{PgEndpoint, PostgresConnector};
use super::connector::ssh::SshConnector;
use super::connector::{Admin, AdminKind, AnyConnector, Timeouts};
use super::policy::PasswordPolicy;
use super::pool::AdminPool;
use super::settings::{ResetSettings, from_row, get_settings};
use super::ssh::Endpoint;
use crate::agents::AgentHub;
use crate::error::{Error, Result};
use crate::inventory::accounts::Account;
use crate::inventory::resource_types::ResetMethod;
use crate::inventory::resources::Resource;
use crate::registry::Registry;
use crate::states::AgentStatus;
use crate::store::agents::AgentRow;
use crate::store::resets::{ItemRow, JobRow};
use crate::store::{self, Store};
use crate::vault::{Secret, Vault, account_password_aad};

mod agent;
mod deliver;
mod fresh;
mod journal;
mod lease;
mod listeners;
mod reconcile;
mod resolve;

pub use resolve::{Accepted, Resolution, ResolveRequest};

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
/// How often each node looks for checkout deadlines that have passed (`access::sweep`): a
/// window ends at most this long after its end time.
const CHECKOUT_SWEEP: Duration = Duration::from_secs(5);

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

/// Where a resource's accounts are logged in to over SSH.
fn endpoint_of(resource: &Resource, settings: &ResetSettings) -> Endpoint {
    Endpoint {
        host: resource
            .ip_address
            .clone()
            .unwrap_or_else(|| resource.name.clone()),
        port: u16::try_from(resource.ssh_port.unwrap_or(22)).unwrap_or(22),
        pinned_host_key: settings.ssh_host_key.clone(),
    }
}

/// Whether `settings` pin the key a target of `method` must present (a method without a
/// connector has none to pin).
fn is_pinned(method: ResetMethod, settings: &ResetSettings) -> bool {
    match method {
        ResetMethod::Ssh => settings.ssh_host_key.is_some(),
        ResetMethod::Postgres | ResetMethod::Mysql | ResetMethod::ActiveDirectory => {
            settings.tls_certificate.is_some()
        }
        ResetMethod::Agent | ResetMethod::Local => true,
    }
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
        endpoint_of(&self.resource, &self.settings)
    }

    fn remote(&self) -> bool {
        self.job.apply_remote != 0 && (self.method != ResetMethod::Local || self.agent.is_some())
    }

    /// Whether this reset's target is changed by a connector of this server (not an agent,
    /// not the vault only).
    fn by_connector(&self) -> bool {
        self.remote() && self.agent.is_none() && self.method.has_connector()
    }

    /// Whether the key the target must present is still to be pinned at first use.
    fn unpinned(&self) -> bool {
        !is_pinned(self.method, &self.settings)
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
        if !offline {
            let e = engine.clone();
            engine.tasks.spawn(async move { e.sweep_checkouts().await });
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

    /// Every `CHECKOUT_SWEEP`, on every node: lapses unanswered checkout requests, ends the
    /// windows that are over and starts the rotations returns call for (`access::sweep`; each
    /// step is conditional, so nodes sweeping at once do each once).
    async fn sweep_checkouts(self: Arc<Self>) {
        loop {
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = tokio::time::sleep(CHECKOUT_SWEEP) => {}
            }
            match crate::access::sweep::run(&self.store, &self.vault).await {
                Ok(swept) => {
                    if swept.rotations > 0 {
                        self.wake();
                    }
                    if swept != Default::default() {
                        tracing::info!(
                            lapsed = swept.lapsed,
                            expired = swept.expired,
                            rotations = swept.rotations,
                            "checkout sweep"
                        );
                    }
                }
                Err(e) => tracing::warn!(error = %e, "checkout sweep failed; retried at the next"),
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
                    // No item to claim: a post-reset delivery whose next attempt is due.
                    match self.deliver_due().await {
                        Ok(true) => continue,
                        Ok(false) => {}
                        Err(e) => tracing::warn!(
                            error = %e,
                            "post-reset delivery attempt failed; it is tried again when its claim runs out"
                        ),
                    }
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

    /// The admin's login and password (and for SSH, how it changes passwords).
    async fn admin(&self, s: &Subject) -> std::result::Result<Admin, String> {
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
        Ok(Admin {
            login: admin.login_name,
            password,
            kind,
        })
    }

    /// How `resource`'s passwords are set and checked (`method`'s connector), or why they
    /// cannot be from here (an agent's or the vault's method, or a resource that does not say
    /// where its server is).
    fn connector<'e>(
        &'e self,
        method: ResetMethod,
        resource: &Resource,
        settings: &ResetSettings,
        command: &'e crate::inventory::reset_command::ResetCommand,
    ) -> std::result::Result<AnyConnector<'e>, String> {
        match method {
            ResetMethod::Ssh => Ok(AnyConnector::Ssh(SshConnector {
                endpoint: endpoint_of(resource, settings),
                timeouts: self.timeouts,
                pool: &self.admins,
                batcher: &self.batcher,
                command,
            })),
            ResetMethod::Postgres => {
                let host = resource.ip_address.as_deref().unwrap_or(&resource.name);
                let endpoint = PgEndpoint::new(
                    resource.url.as_deref(),
                    host,
                    settings.tls_certificate.clone(),
                )
                .map_err(|e| format!("resource '{}': {e}", resource.name))?;
                Ok(AnyConnector::Postgres(PostgresConnector {
                    endpoint,
                    timeouts: self.timeouts,
                }))
            }
            ResetMethod::Mysql => {
                let host = resource.ip_address.as_deref().unwrap_or(&resource.name);
                let endpoint = MyEndpoint::new(
                    resource.url.as_deref(),
                    host,
                    settings.tls_certificate.clone(),
                )
                .map_err(|e| format!("resource '{}': {e}", resource.name))?;
                Ok(AnyConnector::Mysql(MysqlConnector {
                    endpoint,
                    timeouts: self.timeouts,
                }))
            }
            ResetMethod::ActiveDirectory => {
                let host = resource.ip_address.as_deref().unwrap_or(&resource.name);
                let endpoint = AdEndpoint::new(
                    resource.url.as_deref(),
                    host,
                    resource.domain_name.as_deref(),
                    settings.tls_certificate.clone(),
                )
                .map_err(|e| format!("resource '{}': {e}", resource.name))?;
                Ok(AnyConnector::ActiveDirectory(ActiveDirectoryConnector {
                    endpoint,
                    timeouts: self.timeouts,
                }))
            }
            ResetMethod::Agent | ResetMethod::Local => Err(format!(
                "resources of type '{}' are reset with method '{}', which no connector on the \
                 server applies",
                resource.resource_type,
                method.as_str()
            )),
        }
    }
}
