//! The command line: every flag defined once, with its environment variable and its help.
//! `lockstep serve` reads the same settings from a TOML file given by `--config`; the command
//! line and environment win over the file, the file over the defaults.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "lockstep", version, about = "Rotate privileged passwords; run sandboxed listeners", long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (HTTPS with a self-signed certificate unless --dev).
    Serve(ServeArgs),
    /// Administration without a running server.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// The audit trail.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// The listener registry, without a running server.
    #[command(subcommand)]
    Registry(RegistryCommand),
    /// Listener development.
    #[command(subcommand)]
    Listener(ListenerCommand),
    /// Reset passwords through a server: one account, or many in one job (--resource,
    /// --resource-type, several --account). Shows progress until the job finishes; exits 0 when
    /// every account was reset, 1 otherwise.
    Reset(ResetArgs),
    /// Settle every reset left in flight by a server that died (its lease ran out): ask each
    /// target which password it accepts and commit, start over or mark out-of-sync. Safe while
    /// servers run. Exits 1 when an account is out of sync.
    Reconcile(ReconcileArgs),
    /// Agents, through a server: enrollment tokens, the enrolled agents, revocation.
    #[command(subcommand)]
    Agent(AgentCommand),
    /// Checkouts, through a server: ask for an account's password for a time window, approve
    /// or reject others' requests, read the password while you hold it, check it in (which
    /// rotates it). Exits 0 when the server did it, 1 when it refused (its reason on stderr).
    #[command(subcommand)]
    Checkout(CheckoutCommand),
    /// Post-reset deliveries, through a server: list them (the dead letters waiting for a
    /// person with `--state dead-letter`), show one with every attempt, re-run a dead letter.
    /// Exits 0 when the server did it, 1 when it refused (its reason on stderr).
    #[command(subcommand)]
    Delivery(DeliveryCommand),
    /// The attention queue, through a server: everything that waits for a person (out-of-sync,
    /// parked and repeatedly vetoed accounts, checkouts past their window or left unrotated,
    /// dead-lettered deliveries) with the requests that settle each, and resolving an
    /// out-of-sync account. Exits 0 when the server did it, 1 when it refused (its reason on
    /// stderr).
    #[command(subcommand)]
    Attention(AttentionCommand),
    /// Make an ed25519 publisher key pair for signing listeners: FILE (secret, mode 0600) and
    /// FILE.pub (the public key to register with the server).
    Keygen {
        /// Where to write the secret key; never overwritten.
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum ListenerCommand {
    /// Run a listener locally, without a server, against a sample event: prints the outcome,
    /// every denial, its logs and output, and the time taken. Exits 0 when the hook proceeds or
    /// succeeds, 1 when it vetoes, fails or is stopped, 2 when it cannot be loaded.
    Test {
        /// The component (`.wasm`).
        wasm: PathBuf,
        /// The listener's manifest (TOML).
        /// The listener's manifest (TOML); the signature covers its canonical form.
        #[arg(long)]
        manifest: PathBuf,
        /// The sample event (TOML): phase, resource_type, parameters, [resource], [account],
        /// [secrets]. See docs/listeners.md.
        #[arg(long)]
        event: PathBuf,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Sign a component and its manifest with a publisher key (a detached signature over
    /// SHA-256 of the component and of the canonical manifest).
    Sign {
        /// The component (`.wasm`).
        wasm: PathBuf,
        /// The listener's manifest (TOML); the signature covers its canonical form.
        #[arg(long)]
        manifest: PathBuf,
        /// The publisher's secret key (from `lockstep keygen`).
        #[arg(long)]
        key: PathBuf,
        /// Where to write the signature [default: WASM.sig].
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Sign a component and upload it to a server as a new listener, or as a new version of
    /// an existing one (--update). Prints the change request the approver must decide.
    /// The API token comes from LOCKSTEP_TOKEN or --token-file, never the command line.
    Publish {
        /// The component (`.wasm`).
        wasm: PathBuf,
        /// The listener's manifest (TOML); the signature covers its canonical form.
        #[arg(long)]
        manifest: PathBuf,
        /// The publisher's secret key (from `lockstep keygen`).
        #[arg(long)]
        key: PathBuf,
        /// The administrator who must approve the change.
        #[arg(long)]
        approver: String,
        /// A JSON association (phases, modes, resource_types, order, parameters); default: the
        /// manifest's declarations, or the current association for --update.
        #[arg(long)]
        association: Option<PathBuf>,
        /// Why, for the approver.
        #[arg(long)]
        comment: Option<String>,
        /// Upload a new version of an existing listener instead of a new listener.
        #[arg(long)]
        update: bool,
        #[command(flatten)]
        server: crate::cli::api_client::ServerArgs,
    },
    /// Check a signature against a component, its manifest and a publisher's public key.
    /// Exits 0 when valid, 1 naming what does not match.
    Verify {
        /// The component (`.wasm`).
        wasm: PathBuf,
        /// The listener's manifest (TOML); the signature covers its canonical form.
        #[arg(long)]
        manifest: PathBuf,
        /// The signature file [default: WASM.sig].
        #[arg(long)]
        signature: Option<PathBuf>,
        /// The publisher's public key file (FILE.pub from `lockstep keygen`).
        #[arg(long)]
        public_key: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct ResetArgs {
    /// An account id to reset (repeat for several).
    #[arg(long = "account")]
    pub accounts: Vec<String>,
    /// Every account of this resource, admin accounts excepted (repeat for several).
    #[arg(long = "resource")]
    pub resources: Vec<String>,
    /// Every account of every resource of this type, admin accounts excepted.
    #[arg(long)]
    pub resource_type: Option<String>,
    /// Why; recorded in the audit trail.
    #[arg(long)]
    pub reason: String,
    /// A file holding the new password, for every account; default: a generated one each.
    #[arg(long)]
    pub password_file: Option<PathBuf>,
    /// Change the vault only, not the target.
    #[arg(long)]
    pub vault_only: bool,
    /// A repeated key returns the first job instead of starting another.
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// A user told when the job finishes (repeat for several).
    #[arg(long)]
    pub notify: Vec<String>,
    /// Print the job id and return at once.
    #[arg(long)]
    pub no_wait: bool,
    /// Print the finished job as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub server: crate::cli::api_client::ServerArgs,
}

#[derive(Debug, Args)]
pub struct ReconcileArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// The master key file [default: DATA_DIR/master.key]; LOCKSTEP_MASTER_KEY may hold the key.
    #[arg(long, env = "LOCKSTEP_MASTER_KEY_FILE")]
    pub master_key_file: Option<PathBuf>,
}

/// Where the data lives: shared by every command that opens the store.
#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// Directory for the SQLite database, master key and TLS certificate.
    #[arg(long, env = "LOCKSTEP_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// `sqlite://PATH` or `postgres://USER@HOST:PORT/DB` (default: SQLite in the data dir).
    /// Prefer the environment variable when the URL holds a password: argv is visible to all.
    #[arg(long, env = "LOCKSTEP_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// A TOML file with any of: data_dir, listen, database_url, master_key_file, dev, syslog,
    /// max_body_bytes, max_listener_bytes, smtp_url, smtp_from, rotation_check_secs,
    /// ssh_command_timeout_secs, reset_lease_secs, reset_workers, audit_checkpoint_events,
    /// audit_checkpoint_secs, attention_vetoes.
    #[arg(long, env = "LOCKSTEP_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub store: StoreArgs,
    /// Address to listen on [default: 127.0.0.1:7470].
    #[arg(long, env = "LOCKSTEP_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// The master key file (64 hex characters, mode 0600) [default: DATA_DIR/master.key,
    /// created on first start]. LOCKSTEP_MASTER_KEY may hold the key itself instead.
    #[arg(long, env = "LOCKSTEP_MASTER_KEY_FILE")]
    pub master_key_file: Option<PathBuf>,
    /// Serve plain HTTP, on a loopback address only. For development and tests.
    #[arg(long, env = "LOCKSTEP_DEV")]
    pub dev: bool,
    /// Forward every audit event to a syslog collector: udp://HOST:PORT or tcp://HOST:PORT.
    #[arg(long, env = "LOCKSTEP_SYSLOG")]
    pub syslog: Option<String>,
    /// Largest JSON request body accepted, in bytes [default: 1048576].
    #[arg(long, env = "LOCKSTEP_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Largest listener component accepted by an upload, in bytes [default: 33554432].
    #[arg(long, env = "LOCKSTEP_MAX_LISTENER_BYTES")]
    pub max_listener_bytes: Option<usize>,
    /// Also mail notifications to users who have an email address, through this relay:
    /// smtps://HOST:465, smtp://HOST:587?tls=required (STARTTLS) or smtp://HOST:25 (plain).
    /// Credentials go in the URL (smtps://USER:PASS@HOST); prefer the environment variable then.
    #[arg(long, env = "LOCKSTEP_SMTP_URL", hide_env_values = true)]
    pub smtp_url: Option<String>,
    /// How often to look for passwords older than their policy's maximum age, in seconds
    /// [default: 300]; 0 turns scheduled rotation off.
    #[arg(long, env = "LOCKSTEP_ROTATION_CHECK_SECS")]
    pub rotation_check_secs: Option<u64>,
    /// How long one command on an SSH target (a reset, a listener's target-exec) may run
    /// before it counts as interrupted, in seconds [default: 30; 1 to 3600]. An interrupted
    /// reset is settled by asking the target which password it holds.
    #[arg(long, env = "LOCKSTEP_SSH_COMMAND_TIMEOUT_SECS")]
    pub ssh_command_timeout_secs: Option<u64>,
    /// How long this server's claim on a reset in progress lasts without a heartbeat, in
    /// seconds [default: 15; 15 to 600, from 3 with --dev]. When a server dies, another server
    /// (or `lockstep reconcile`) takes its resets up once their leases have run out.
    #[arg(long, env = "LOCKSTEP_RESET_LEASE_SECS")]
    pub reset_lease_secs: Option<u64>,
    /// How many accounts this node resets at once [default: 16; 0 to 256]. 0 makes a node of
    /// a cluster that serves the API and agents but claims no resets.
    #[arg(long, env = "LOCKSTEP_RESET_WORKERS")]
    pub reset_workers: Option<usize>,
    /// Write a signed checkpoint of the audit chain's head (its newest event's seq and hash)
    /// to the log and to syslog after this many audit events [default: 100]. With
    /// --audit-checkpoint-secs it bounds how many newest events can be deleted unseen.
    #[arg(long, env = "LOCKSTEP_AUDIT_CHECKPOINT_EVENTS")]
    pub audit_checkpoint_events: Option<u64>,
    /// ... and at least this often, in seconds, while the chain grows [default: 300].
    #[arg(long, env = "LOCKSTEP_AUDIT_CHECKPOINT_SECS")]
    pub audit_checkpoint_secs: Option<u64>,
    /// List an account in the attention queue (GET /v1/attention) once pre-reset listeners
    /// vetoed more than this many of its resets since its password last changed [default: 3;
    /// 0 to 1000].
    #[arg(long, env = "LOCKSTEP_ATTENTION_VETOES")]
    pub attention_vetoes: Option<i64>,
    /// The sender address of notification mail [default: lockstep@HOSTNAME].
    #[arg(long, env = "LOCKSTEP_SMTP_FROM")]
    pub smtp_from: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Create a user and print a new API token for it (the token is the last line of output).
    Create {
        /// The user's login name.
        name: String,
        /// The role: privileged-admin, admin, password-admin, auditor, password-user, or a
        /// custom role.
        #[arg(long)]
        role: String,
        /// Where notifications are mailed (when the server has --smtp-url).
        #[arg(long)]
        email: Option<String>,
        /// Token lifetime in days.
        #[arg(long, default_value_t = crate::identity::DEFAULT_TOKEN_DAYS)]
        expires_in_days: i64,
        #[command(flatten)]
        store: StoreArgs,
        /// The server's master key file [default: DATA_DIR/master.key, created if the data
        /// directory has none]; LOCKSTEP_MASTER_KEY may hold the key. The audit events this
        /// writes are keyed with it.
        #[arg(long, env = "LOCKSTEP_MASTER_KEY_FILE")]
        master_key_file: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Walk the keyed hash chain: exit 0 when intact, 1 naming the first bad event (or a
    /// forged checkpoint) otherwise, 2 when it cannot check. Needs the server's master key.
    Verify {
        #[command(flatten)]
        store: StoreArgs,
        /// The server's master key file [default: DATA_DIR/master.key]; LOCKSTEP_MASTER_KEY
        /// may hold the key. Without it the keyed chain cannot be checked.
        #[arg(long, env = "LOCKSTEP_MASTER_KEY_FILE")]
        master_key_file: Option<PathBuf>,
        /// A server log or syslog file: its signed checkpoints (`lockstep-checkpoint v1 ...`
        /// lines) are checked, and the chain must still hold every event they name (repeat for
        /// several files). This is what shows the newest events were deleted.
        #[arg(long = "checkpoints")]
        checkpoints: Vec<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum RegistryCommand {
    /// Rebuild the registry ledger from the approvals whose seals verify, at a generation above
    /// the audit trail's newest, after a legitimate restore left it refused (audited as
    /// `registry.resealed`). Every sealed listener, trusted key and reset command now in the
    /// database becomes the approved state: check them first. Stop the servers, run it, start
    /// them again.
    Reseal {
        #[command(flatten)]
        store: StoreArgs,
        /// The server's master key file [default: DATA_DIR/master.key]; LOCKSTEP_MASTER_KEY
        /// may hold the key. Seals are checked and made with it.
        #[arg(long, env = "LOCKSTEP_MASTER_KEY_FILE")]
        master_key_file: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Issue a one-time enrollment token for `lockstep-agent enroll`. Printed once (or written
    /// to --out, mode 0600), with the certificate fingerprint the agent must pin.
    Token {
        /// The user that will own the agent's resource (default: you).
        #[arg(long)]
        owner: Option<String>,
        /// Seconds until the token expires (60 to 604800; default 3600).
        #[arg(long)]
        expires_in: Option<i64>,
        /// An address or CIDR range the agent may call from (repeat for several; default any).
        #[arg(long = "allow")]
        allow: Vec<String>,
        /// Write the token to this new file (mode 0600) instead of printing it.
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        server: crate::cli::api_client::ServerArgs,
    },
    /// List the enrolled agents.
    List {
        #[command(flatten)]
        server: crate::cli::api_client::ServerArgs,
    },
    /// Revoke an agent: its every later request is refused.
    Revoke {
        /// The agent's id (agt_…).
        id: String,
        #[command(flatten)]
        server: crate::cli::api_client::ServerArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum CheckoutCommand {
    /// Ask for an account's password for a time window (granted at once when its policy needs
    /// no approval). Prints the checkout.
    Request {
        /// The account's id (acc_…).
        account: String,
        /// Why (3–500 characters; audited and shown to the approvers).
        #[arg(long)]
        reason: String,
        /// How long, in minutes [default: the policy's longest window].
        #[arg(long)]
        minutes: Option<i64>,
        #[command(flatten)]
        server: crate::cli::api_client::ServerArgs,
    },
    /// Approve a request you are an approver of.
    Approve {
        /// The checkout's id (cko_…).
        id: String,
        #[command(flatten)]
        server: crate::cli::api_client::ServerArgs,
    },
    /// Reject a request you are an approver of.
    Reject {
        /// The checkout's id (cko_…).
        id: String,
        /// Why (3–500 characters; audited and sent to the requester).
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        server: crate::cli::api_client::ServerArgs,
    },
    /// Take back your own request before it is answered.
    Withdraw {
        /// The checkout's id (cko_…).
        id: String,
        #[command(flatten)]
        server: crate::cli::api_client::ServerArgs,
    },
    /// Show one checkout.
    Show {
        /// The checkout's id (cko_…).
        id: String,
        #[command(flatten)]
        server: crate::cli::api_client::ServerArgs,
    },
    /// List checkouts, newest last.
    List {
        /// Only this account's.
        #[arg(long)]
        account: Option<String>,
        /// Only this user's requests.
        #[arg(long)]
        requester: Option<String>,
        /// Only in this state: requested, checked-out, checked-in, rejected, lapsed, withdrawn.
        #[arg(long)]
        state: Option<String>,
        #[command(flatten)]
        server: crate::cli::api_client::ServerArgs,
    },
    /// Print the password of the account you hold (audited, with the checkout as reason).
    Password {
        /// The checkout's id (cko_…).
        id: String,
        #[command(flatten)]
        server: crate::cli::api_client::ServerArgs,
    },
    /// Return the account you hold; its password is rotated (prints the rotation's job).
    Checkin {
        /// The checkout's id (cko_…).
        id: String,
        #[command(flatten)]
        server: crate::cli::api_client::ServerArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum DeliveryCommand {
    /// List deliveries, newest first.
    List {
        /// Only in this state: pending, delivered, dead-letter, superseded.
        #[arg(long)]
        state: Option<String>,
        /// Only this reset job's (job_…).
        #[arg(long)]
        job: Option<String>,
        /// Only this account's (acc_…).
        #[arg(long)]
        account: Option<String>,
        #[command(flatten)]
        server: crate::cli::api_client::ServerArgs,
    },
    /// Show one delivery and each of its attempts.
    Show {
        /// The delivery's id (dlv_…).
        id: String,
        #[command(flatten)]
        server: crate::cli::api_client::ServerArgs,
    },
    /// Re-run a dead letter now, with its listener's attempts and age limit granted again.
    Rerun {
        /// The delivery's id (dlv_…).
        id: String,
        /// Why (1–500 characters; audited).
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        server: crate::cli::api_client::ServerArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum AttentionCommand {
    /// List the queue: one line per entry, then one indented line per action it allows.
    List {
        /// Only this kind: out-of-sync, parked, vetoed, checkout-overdue, checkout-unrotated,
        /// dead-letter.
        #[arg(long)]
        kind: Option<String>,
        #[command(flatten)]
        server: crate::cli::api_client::ServerArgs,
    },
    /// Resolve an out-of-sync account: the server logs in with the stored password, then with
    /// each kept one; the one the target accepts becomes the stored one.
    Resolve {
        /// The account's id (acc_…).
        account: String,
        /// Why (3–500 characters; audited).
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        server: crate::cli::api_client::ServerArgs,
    },
}
