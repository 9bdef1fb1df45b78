//! Resolved settings for `lockstep serve` and the store-opening commands.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

pub use crate::vault::MasterKeySource;

use serde::Deserialize;

use crate::audit::syslog::SyslogTarget;
use crate::cli::{ServeArgs, StoreArgs};
use crate::error::{Error, Result};

pub const DEFAULT_DATA_DIR: &str = "./lockstep-data";
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7470";
/// An audit checkpoint after this many events...
pub const DEFAULT_CHECKPOINT_EVENTS: u64 = 100;
/// ... or this many seconds, whichever comes first (while the chain grows).
pub const DEFAULT_CHECKPOINT_SECS: u64 = 300;

/// The config file: the same settings as the flags, all optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    data_dir: Option<PathBuf>,
    listen: Option<SocketAddr>,
    database_url: Option<String>,
    master_key_file: Option<PathBuf>,
    dev: Option<bool>,
    syslog: Option<String>,
    max_body_bytes: Option<usize>,
    max_listener_bytes: Option<usize>,
    smtp_url: Option<String>,
    smtp_from: Option<String>,
    rotation_check_secs: Option<u64>,
    ssh_command_timeout_secs: Option<u64>,
    reset_lease_secs: Option<u64>,
    reset_workers: Option<usize>,
    audit_checkpoint_events: Option<u64>,
    audit_checkpoint_secs: Option<u64>,
    attention_vetoes: Option<i64>,
}

/// Accounts reset at once by one node unless `--reset-workers` says otherwise (each holds at
/// most one SSH connection at a time).
pub const DEFAULT_RESET_WORKERS: usize = 16;

#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub database_url: String,
    pub master_key: MasterKeySource,
    pub dev: bool,
    pub syslog: Option<SyslogTarget>,
    pub max_body_bytes: usize,
    /// How long one command on an SSH target may run.
    pub ssh_command_timeout: std::time::Duration,
    /// How long a claim on a reset in progress lasts without a heartbeat.
    pub reset_lease: std::time::Duration,
    /// Workers claiming reset items on this node (0: it serves the API and agents only).
    pub reset_workers: usize,
    pub max_listener_bytes: usize,
    /// The SMTP relay for notification mail and the sender address, if configured.
    pub smtp: Option<SmtpConfig>,
    /// How often scheduled rotation looks for old passwords; `None`: never.
    pub rotation_check: Option<std::time::Duration>,
    /// How often the audit chain's head is checkpointed to the log and syslog.
    pub audit_checkpoints: crate::serve::CheckpointPlan,
    /// How the attention queue decides.
    pub attention: crate::attention::Settings,
}

/// Where notification mail goes out.
#[derive(Clone)]
pub struct SmtpConfig {
    /// May hold credentials: never printed as is (`store::redact_url`).
    pub url: String,
    pub from: String,
}

impl std::fmt::Debug for SmtpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpConfig")
            .field("url", &crate::store::redact_url(&self.url))
            .field("from", &self.from)
            .finish()
    }
}

impl ServeConfig {
    pub fn resolve(args: ServeArgs) -> Result<ServeConfig> {
        let file = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(Error::io(format!(
                    "cannot read config file {}",
                    path.display()
                )))?;
                toml::from_str::<ConfigFile>(&text).map_err(|e| {
                    Error::Config(format!("config file {}: {}", path.display(), e.message()))
                })?
            }
            None => ConfigFile::default(),
        };
        let data_dir = args
            .store
            .data_dir
            .or(file.data_dir)
            .unwrap_or_else(|| DEFAULT_DATA_DIR.into());
        let listen = match args.listen.or(file.listen) {
            Some(l) => l,
            None => DEFAULT_LISTEN
                .parse()
                .map_err(|_| Error::Config("bad default listen".into()))?,
        };
        let database_url = args.store.database_url.or(file.database_url);
        let database_url = match database_url {
            Some(url) => url,
            None => default_database_url(&data_dir),
        };
        let master_key =
            MasterKeySource::resolve(args.master_key_file.or(file.master_key_file), &data_dir);
        let dev = args.dev || file.dev.unwrap_or(false);
        if dev && !listen.ip().is_loopback() {
            return Err(Error::Config(format!(
                "--dev serves plain HTTP and is allowed only on a loopback address, not {listen}; \
                 drop --dev to serve HTTPS"
            )));
        }
        let syslog = args.syslog.or(file.syslog).map(|s| s.parse()).transpose()?;
        let max_body_bytes = args
            .max_body_bytes
            .or(file.max_body_bytes)
            .unwrap_or(crate::api::DEFAULT_MAX_BODY_BYTES);
        if max_body_bytes < 1024 {
            return Err(Error::Config(
                "--max-body-bytes must be at least 1024".into(),
            ));
        }
        let max_listener_bytes = args
            .max_listener_bytes
            .or(file.max_listener_bytes)
            .unwrap_or(crate::api::DEFAULT_MAX_LISTENER_BYTES);
        if max_listener_bytes < 1024 {
            return Err(Error::Config(
                "--max-listener-bytes must be at least 1024".into(),
            ));
        }
        let smtp = args.smtp_url.or(file.smtp_url).map(|url| {
            let from = args.smtp_from.or(file.smtp_from).unwrap_or_else(|| {
                let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .map(|h| h.trim().to_string())
                    .unwrap_or_else(|_| "localhost".into());
                format!("lockstep@{host}")
            });
            SmtpConfig { url, from }
        });
        let rotation_check = match args.rotation_check_secs.or(file.rotation_check_secs) {
            Some(0) => None,
            Some(s) => Some(std::time::Duration::from_secs(s)),
            None => Some(std::time::Duration::from_secs(300)),
        };
        let ssh_command_timeout = match args
            .ssh_command_timeout_secs
            .or(file.ssh_command_timeout_secs)
        {
            None => crate::reset::connector::Timeouts::default().command,
            Some(s @ 1..=3600) => std::time::Duration::from_secs(s),
            Some(_) => {
                return Err(Error::Config(
                    "--ssh-command-timeout-secs must be between 1 and 3600".into(),
                ));
            }
        };
        // A lease must outlast a renewal that waits on a busy database (up to the store's
        // 10 s busy timeout), or a second worker could take an item still being worked. Only a
        // --dev server (tests on loopback) may use shorter ones.
        let shortest = if dev { 3 } else { 15 };
        let reset_lease = match args.reset_lease_secs.or(file.reset_lease_secs) {
            None => crate::reset::pipeline::DEFAULT_LEASE,
            Some(s) if (shortest..=600).contains(&s) => std::time::Duration::from_secs(s),
            Some(_) => {
                return Err(Error::Config(format!(
                    "--reset-lease-secs must be between {shortest} and 600 (shorter leases \
                     only with --dev: a lease must outlast a renewal that waits on a busy \
                     database)"
                )));
            }
        };
        let reset_workers = match args.reset_workers.or(file.reset_workers) {
            None => DEFAULT_RESET_WORKERS,
            Some(n @ 0..=256) => n,
            Some(_) => {
                return Err(Error::Config(
                    "--reset-workers must be between 0 and 256 (0: this node claims no resets)"
                        .into(),
                ));
            }
        };
        let every_events = args
            .audit_checkpoint_events
            .or(file.audit_checkpoint_events)
            .unwrap_or(DEFAULT_CHECKPOINT_EVENTS);
        let every_secs = args
            .audit_checkpoint_secs
            .or(file.audit_checkpoint_secs)
            .unwrap_or(DEFAULT_CHECKPOINT_SECS);
        if every_events == 0 || every_secs == 0 {
            return Err(Error::Config(
                "--audit-checkpoint-events and --audit-checkpoint-secs must be at least 1; \
                 checkpoints are what make a deleted tail of the audit chain visible"
                    .into(),
            ));
        }
        let audit_checkpoints = crate::serve::CheckpointPlan {
            every_events,
            every: std::time::Duration::from_secs(every_secs),
        };
        let attention = match args.attention_vetoes.or(file.attention_vetoes) {
            None => crate::attention::Settings::default(),
            Some(vetoes @ 0..=1000) => crate::attention::Settings { vetoes },
            Some(_) => {
                return Err(Error::Config(
                    "--attention-vetoes must be between 0 and 1000".into(),
                ));
            }
        };
        Ok(ServeConfig {
            attention,
            audit_checkpoints,
            ssh_command_timeout,
            reset_lease,
            reset_workers,
            data_dir,
            listen,
            database_url,
            master_key,
            dev,
            syslog,
            max_body_bytes,
            max_listener_bytes,
            smtp,
            rotation_check,
        })
    }
}

/// The SQLite database inside a data directory.
pub fn default_database_url(data_dir: &Path) -> String {
    format!("sqlite://{}", data_dir.join("lockstep.db").display())
}

/// The database URL for a store-opening command (`admin`, `audit`).
pub fn store_url(args: &StoreArgs) -> String {
    match &args.database_url {
        Some(url) => url.clone(),
        None => default_database_url(
            args.data_dir
                .as_deref()
                .unwrap_or(Path::new(DEFAULT_DATA_DIR)),
        ),
    }
}

/// Creates the data directory (mode 0700) if needed.
pub fn ensure_data_dir(dir: &Path) -> Result<()> {
    if !dir.exists() {
        std::fs::create_dir_all(dir).map_err(Error::io(format!(
            "cannot create data directory {}",
            dir.display()
        )))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(
            Error::io(format!("cannot restrict data directory {}", dir.display())),
        )?;
    }
    Ok(())
}
