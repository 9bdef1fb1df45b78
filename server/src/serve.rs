//! `lockstep serve`: open everything, then serve until SIGTERM or SIGINT.

use std::sync::Arc;
use std::time::Duration;

use crate::api::{self, AppState, ops::Metrics};
use crate::audit::syslog::SyslogForwarder;
use crate::config::ServeConfig;
use crate::error::{Error, Result};
use crate::registry::Registry;
use crate::store::audit::AuditRow;
use crate::store::{Store, redact_url};
use crate::vault::{MasterKey, MasterKeySource, Vault};

/// How long in-flight requests, and then resets in progress, get to finish after a shutdown
/// signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// The master key of a command that opens the store itself (`admin create`, `audit verify`,
/// `reconcile`): `--master-key-file`, else `LOCKSTEP_MASTER_KEY`, else `DATA_DIR/master.key`.
/// With `create`, a missing key file is created (the first command on a new data directory);
/// otherwise it is an error naming `command`.
pub fn store_master_key(
    store: &crate::cli::StoreArgs,
    file: Option<std::path::PathBuf>,
    create: bool,
    command: &str,
) -> Result<MasterKey> {
    let data_dir = store
        .data_dir
        .clone()
        .unwrap_or_else(|| crate::config::DEFAULT_DATA_DIR.into());
    let source = MasterKeySource::resolve(file, &data_dir);
    if let MasterKeySource::File(p) = &source
        && !create
        && !p.exists()
    {
        return Err(Error::Config(format!(
            "{command}: no master key at {}; it needs the server's key (--master-key-file or \
             LOCKSTEP_MASTER_KEY)",
            p.display()
        )));
    }
    source.load()
}

/// Opens the store with the vault's master key as its audit-chain key, keys the chain (sealing
/// events written before it was keyed; refusing a chain keyed with another master key), pins
/// the registry ledger of a deployment that has none yet (`registry::ledger::bootstrap`) and
/// the identities of its users (`identity::seal::pin_existing`), then writes the built-in
/// roles and resource types.
pub async fn open_store(url: &str, vault: Arc<Vault>) -> Result<Store> {
    let mut store = Store::open(url).await?;
    store.set_chain_key(vault.clone());
    crate::audit::key_chain(&store).await?;
    crate::registry::ledger::bootstrap(&store, &vault).await?;
    crate::identity::seal::pin_existing(&store, &vault).await?;
    crate::identity::seed_builtin_roles(&store).await?;
    crate::inventory::resource_types::seed_builtin(&store).await?;
    crate::reset::settings::seed_default_policy(&store).await?;
    Ok(store)
}

/// How often the audit chain's head is checkpointed (`audit::Checkpoint`).
#[derive(Debug, Clone, Copy)]
pub struct CheckpointPlan {
    /// After this many audit events committed by this server.
    pub every_events: u64,
    /// At least this often while the chain grows (a server that appends nothing writes none).
    pub every: Duration,
}

/// Writes checkpoints of the audit chain's head to the log and to syslog.
struct Checkpointer {
    store: Store,
    vault: Arc<Vault>,
    /// The newest one written, shared with `GET /v1/audit/verify`.
    last: Arc<crate::audit::LastCheckpoint>,
}

impl Checkpointer {
    /// Checkpoints the head, unless it is the one already checkpointed.
    async fn write(&self, forwarder: &mut Option<SyslogForwarder>) {
        let cp = match crate::audit::checkpoint(&self.store, &self.vault).await {
            Ok(Some(cp)) => cp,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "could not make an audit checkpoint");
                return;
            }
        };
        if self
            .last
            .get()
            .is_some_and(|l| l.seq == cp.seq && l.hash == cp.hash)
        {
            return;
        }
        tracing::info!("{cp}");
        if let Some(f) = forwarder
            && let Err(e) = f.send_checkpoint(&cp).await
        {
            tracing::warn!(seq = cp.seq, error = %e, "could not forward the audit checkpoint to syslog");
        }
        self.last.set(cp);
    }
}

/// Consumes committed audit rows: counts them, forwards them to syslog if configured, and
/// checkpoints the chain's head at start, every `plan.every_events` events and at least every
/// `plan.every` while it grows.
fn spawn_audit_publisher(
    mut rx: tokio::sync::mpsc::UnboundedReceiver<AuditRow>,
    mut forwarder: Option<SyslogForwarder>,
    metrics: Arc<Metrics>,
    checkpointer: Checkpointer,
    plan: CheckpointPlan,
) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(plan.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut since_checkpoint = 0u64;
        loop {
            tokio::select! {
                row = rx.recv() => {
                    let Some(row) = row else { break };
                    metrics.count_audit_event();
                    if let Some(f) = &mut forwarder
                        && let Err(e) = f.send(&row).await
                    {
                        metrics.count_audit_forward_failure();
                        tracing::warn!(seq = row.seq, error = %e, "could not forward audit event to syslog");
                    }
                    since_checkpoint += 1;
                    if since_checkpoint >= plan.every_events {
                        since_checkpoint = 0;
                        checkpointer.write(&mut forwarder).await;
                    }
                }
                // The first tick is at once: a checkpoint at start.
                _ = tick.tick() => {
                    since_checkpoint = 0;
                    checkpointer.write(&mut forwarder).await;
                }
            }
        }
    });
}

/// Says what the start did to the open-file limit; warns when it cannot cover 64 listener runs
/// at once and the server's own descriptors.
fn log_open_files(raised: std::io::Result<crate::open_files::OpenFiles>) {
    let needed = lockstep_runtime::limits::OPEN_FILES_NEEDED;
    match raised {
        Ok(files) if files.enough() => {
            tracing::info!(before = files.before, now = files.now, "open-file limit")
        }
        Ok(files) => tracing::warn!(
            now = files.now,
            hard = ?files.hard,
            needed,
            "open-file limit: below what 64 listener runs at once and the server may hold; \
             hint: raise the hard limit (LimitNOFILE=65536 in the service unit, or ulimit -Hn)"
        ),
        Err(e) => tracing::warn!(
            error = %e,
            needed,
            "open-file limit: cannot raise the soft limit; hint: set LimitNOFILE=65536"
        ),
    }
}

pub async fn run(cfg: ServeConfig) -> Result<()> {
    // rustls needs one process-wide crypto provider; ring keeps the build free of aws-lc.
    let _ = rustls::crypto::ring::default_provider().install_default();
    crate::config::ensure_data_dir(&cfg.data_dir)?;
    log_open_files(crate::open_files::raise());
    let vault = Arc::new(Vault::new(cfg.master_key.load()?));
    let mut store = open_store(&cfg.database_url, vault.clone()).await?;
    tracing::info!(
        database = %redact_url(&cfg.database_url),
        master_key_id = %vault.current_key_id(),
        "store ready"
    );

    if let Some(smtp) = &cfg.smtp {
        let mailer = crate::notifications::mail::Mailer::new(&smtp.url, &smtp.from)?;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        store.set_notification_sink(tx);
        mailer.spawn(store.clone(), rx);
        tracing::info!(relay = %redact_url(&smtp.url), from = %smtp.from, "mailing notifications");
    }

    let metrics = Arc::new(Metrics::default());
    let checkpoints = Arc::new(crate::audit::LastCheckpoint::default());
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    store.set_audit_sink(tx);
    spawn_audit_publisher(
        rx,
        cfg.syslog.clone().map(SyslogForwarder::new),
        metrics.clone(),
        Checkpointer {
            store: store.clone(),
            vault: vault.clone(),
            last: checkpoints.clone(),
        },
        cfg.audit_checkpoints,
    );

    // Compiled listener components are cached next to the database, in a 0700 directory only
    // this user writes (it holds native code).
    let runtime = lockstep_runtime::Runtime::new(Some(&cfg.data_dir.join("listener-cache")))?;
    let registry = Registry::new(
        store.clone(),
        vault.clone(),
        Arc::new(runtime),
        cfg.max_listener_bytes,
    );
    let agents = Arc::new(crate::agents::AgentHub::default());
    // A node of the cluster: its clock follows the database's before the first lease.
    let duties = match cfg.rotation_check {
        Some(_) => vec![crate::cluster::Duty::Scheduler],
        None => Vec::new(),
    };
    let node = crate::cluster::node::Node::register(store.clone(), &cfg.listen.to_string(), duties)
        .await?;
    let cluster_stop = tokio_util::sync::CancellationToken::new();
    let heartbeat = node.spawn_heartbeat(cluster_stop.clone());
    crate::reset::sealed_binding::bind_to_accounts(&store, &vault).await?;
    let resets = crate::reset::pipeline::Engine::start(
        store.clone(),
        vault.clone(),
        registry.clone(),
        agents.clone(),
        crate::reset::pipeline::EngineOptions {
            workers: cfg.reset_workers,
            offline: false,
            timeouts: crate::reset::connector::Timeouts {
                command: cfg.ssh_command_timeout,
                ..Default::default()
            },
            rotation_check: cfg.rotation_check,
            lease: cfg.reset_lease,
            node: node.id.clone(),
        },
    );
    {
        use crate::cluster::bells::Bell;
        let (hub, engine, metrics) = (agents.clone(), resets.clone(), metrics.clone());
        crate::cluster::bells::start(
            &store,
            &cfg.database_url,
            &agents.bells,
            Arc::new(move |bell| {
                metrics.count_bell_heard(&bell);
                match bell {
                    Bell::Work => engine.wake_here(),
                    Bell::Agent(id) => hub.ring_agent_here(&id),
                    Bell::Task(id) => hub.ring_task_here(&id),
                }
            }),
            cluster_stop.clone(),
        );
    }
    let last_checkpointer = Checkpointer {
        store: store.clone(),
        vault: vault.clone(),
        last: checkpoints.clone(),
    };
    let state = AppState {
        store: store.clone(),
        vault,
        metrics,
        registry,
        resets: resets.clone(),
        agents,
        checkpoints: checkpoints.clone(),
        attention: cfg.attention,
    };
    let app = api::router(state, cfg.max_body_bytes)
        .into_make_service_with_connect_info::<std::net::SocketAddr>();

    let handle = axum_server::Handle::new();
    tokio::spawn(shutdown_on_signal(handle.clone()));
    let listening = {
        let handle = handle.clone();
        let scheme = if cfg.dev { "http" } else { "https" };
        let node = node.clone();
        tokio::spawn(async move {
            if let Some(addr) = handle.listening().await {
                // The port the system chose, when the configuration said 0.
                node.listening_on(&addr.to_string()).await;
                tracing::info!("lockstep listening on {scheme}://{addr}");
            }
        })
    };

    let served = if cfg.dev {
        tracing::warn!(
            "DEVELOPMENT MODE: serving plain HTTP without TLS on {}; tokens and passwords cross \
             the loopback interface unencrypted. Never use --dev in production.",
            cfg.listen
        );
        axum_server::bind(cfg.listen)
            .handle(handle)
            .serve(app)
            .await
    } else {
        let tls = crate::tls::load_or_create(&cfg.data_dir.join("tls"), cfg.listen)?;
        if tls.created {
            tracing::info!(cert = %tls.cert.display(), "created a self-signed TLS certificate");
        }
        tracing::info!("TLS certificate SHA-256 fingerprint: {}", tls.fingerprint);
        let rustls_config =
            axum_server::tls_rustls::RustlsConfig::from_pem_file(&tls.cert, &tls.key)
                .await
                .map_err(Error::io("cannot load the TLS certificate"))?;
        axum_server::bind_rustls(cfg.listen, rustls_config)
            .handle(handle)
            .serve(app)
            .await
    };
    listening.abort();
    // Resets in progress get their grace, then hand their leases back; the duties go and the
    // node says it stopped, so other nodes take over at once.
    resets.shutdown(SHUTDOWN_GRACE).await;
    cluster_stop.cancel();
    // A database that stopped answering must not hold the stop up: the node's row then
    // shows it silent, and its duty passes on when the lease runs out.
    let _ = tokio::time::timeout(Duration::from_secs(5), heartbeat).await;
    if tokio::time::timeout(Duration::from_secs(5), node.stop())
        .await
        .is_err()
    {
        tracing::warn!("could not mark this node stopped in time");
    }
    served.map_err(Error::io(format!("cannot serve on {}", cfg.listen)))?;
    // A last checkpoint to the log: the events of the last minutes before a stop are covered.
    last_checkpointer.write(&mut None).await;
    store.close().await;
    tracing::info!("lockstep stopped");
    Ok(())
}

async fn shutdown_on_signal(handle: axum_server::Handle) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop the server with SIGKILL");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: finishing in-flight requests"),
        _ = int.recv() => tracing::info!("SIGINT: finishing in-flight requests"),
    }
    handle.graceful_shutdown(Some(SHUTDOWN_GRACE));
}
