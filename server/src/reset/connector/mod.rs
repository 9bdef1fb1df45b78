//! The connector boundary: how a password is changed on the system it belongs to, and how
//! that system is asked which password it accepts. The pipeline (`reset/pipeline/`), its
//! journal and reconciliation, listeners and batching know only [`Connector`]; a resource type
//! names its connector through its reset method (`inventory/resource_types.rs`).
//!
//! - `ssh`: the command templates run over SSH (`reset/ssh.rs`, `remote.rs`, `batch.rs`).
//! - `postgres`: `ALTER ROLE … PASSWORD` with a SCRAM verifier computed here (`scram`).
//! - `mysql`: `ALTER USER … IDENTIFIED WITH mysql_native_password AS` a hash computed here,
//!   over the few parts of the MySQL protocol it needs (`mysql/wire.rs`).
//! - `active_directory`: `unicodePwd` replaced over LDAPS, checked by a simple bind.
//!
//! Shared by the TLS connectors: `tls_pin` (certificates pinned like host keys), `tls_tunnel`
//! (a pinned session handed to a client crate), `capped` (what a target may send),
//! `server_url` (a resource's `url`) and `words` (a target's messages made safe to keep).
//!
//! **What a failure means.** Only [`ApplyFailure::may_have_changed`] false says the target is
//! untouched; anything else makes the engine ask the target which password it accepts before
//! it discards one (`docs/resets.md`, "No password is ever lost"). A connector that cannot
//! tell must say "may have changed".

use std::future::Future;
use std::time::Duration;

use crate::vault::Secret;

pub mod active_directory;
pub mod ber_frames;
pub mod capped;
pub mod mysql;
pub mod postgres;
pub mod scram;
pub mod server_url;
pub mod ssh;
pub mod tls_pin;
pub mod tls_tunnel;
pub mod words;

/// Why a target could not be reached or asked. Every message names the target and is safe to
/// show and audit (no password, no verifier).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetFailure {
    /// TCP connect refused, no route, or the handshake failed.
    #[error("cannot reach {target}: {reason}")]
    Unreachable { target: String, reason: String },
    /// The SSH host key differs from the one recorded at first use.
    #[error(
        "the host key of {target} changed: {actual} was offered, {expected} is pinned; if the \
         target was rebuilt, clear the resource's pinned host key after checking the new one"
    )]
    HostKeyChanged {
        target: String,
        expected: String,
        actual: String,
    },
    /// The TLS certificate differs from the one recorded at first use.
    #[error(
        "the TLS certificate of {target} changed: {actual} was offered, {expected} is pinned; if \
         the server's certificate was replaced, clear the resource's pinned certificate \
         (tls_certificate) after checking the new one"
    )]
    CertificateChanged {
        target: String,
        expected: String,
        actual: String,
    },
    /// The target will not show whether a password is right (it asks for none, or only in a
    /// way Lockstep does not send passwords): no login there proves anything, now or later.
    #[error("{target} cannot prove which password '{user}' has: {reason}")]
    Unprovable {
        target: String,
        user: String,
        reason: String,
    },
    /// A target with a pinned TLS certificate answered without TLS.
    #[error(
        "{target} no longer offers TLS, and its certificate {expected} is pinned; nothing was \
         sent: turn TLS back on (Lockstep reaches it only over TLS)"
    )]
    TlsGone { target: String, expected: String },
    /// The password was refused.
    #[error("{target} refused the password of '{user}'")]
    AuthRejected { target: String, user: String },
    /// A step took longer than its timeout.
    #[error("{target}: {step} timed out after {seconds} s")]
    Timeout {
        target: String,
        step: &'static str,
        seconds: u64,
    },
    /// Anything else on an established connection.
    #[error("{target}: {reason}")]
    Protocol { target: String, reason: String },
}

/// Limits of one exchange with a target.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// TCP connect, handshake and authentication together.
    pub connect: Duration,
    /// One command or statement, from sending it to its answer.
    pub command: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(15),
            command: Duration::from_secs(30),
        }
    }
}

/// Why a change was not applied, or not known to be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyFailure {
    /// Nothing reached the target: connecting, authenticating the admin or opening a session
    /// failed. Nothing changed.
    #[error(transparent)]
    NotSent(#[from] TargetFailure),
    /// The change was sent and how it ended is unknown (connection broken, killed, timed
    /// out): it may have changed the password.
    #[error("{0}; the password may have been changed")]
    Interrupted(TargetFailure),
    /// The command ran and exited non-zero; `detail` is its error output, passwords redacted.
    /// It may still have changed the password (chpasswd applies the lines it can).
    #[error("{target}: {command} exited with status {status}: {detail}")]
    Refused {
        target: String,
        command: String,
        status: u32,
        detail: String,
    },
    /// The target answered that it did not make the change, atomically (a database statement
    /// that failed and rolled back): nothing changed. `reason` is the target's own words.
    #[error("{target} refused the change: {reason}; nothing changed")]
    Rejected { target: String, reason: String },
    /// The target's password policy refused the new password (complexity, length, history),
    /// atomically: nothing changed, and another generated password may pass.
    #[error("{target} refused the new password by its policy: {reason}; nothing changed")]
    PolicyRefused { target: String, reason: String },
    /// The login or password cannot be written in the command's input; nothing was sent.
    #[error("{0}")]
    Unrepresentable(String),
    /// The batch carrying this change was dropped while it ran: it may have been applied.
    #[error("the batch carrying this change was abandoned while it ran")]
    Abandoned,
}

impl ApplyFailure {
    /// False only when the target is known to be untouched; true when the command may have
    /// set the password (the target must then be asked which password it accepts).
    pub fn may_have_changed(&self) -> bool {
        match self {
            ApplyFailure::NotSent(_)
            | ApplyFailure::Unrepresentable(_)
            | ApplyFailure::Rejected { .. }
            | ApplyFailure::PolicyRefused { .. } => false,
            ApplyFailure::Interrupted(_)
            | ApplyFailure::Refused { .. }
            | ApplyFailure::Abandoned => true,
        }
    }
}

/// The resource's administrative account, as the vault holds it.
pub struct Admin {
    pub login: String,
    pub password: Secret,
    /// How it changes other accounts' passwords over SSH (root or sudo); other connectors
    /// ignore it.
    pub kind: AdminKind,
}

/// How the administrative account changes other accounts' passwords over SSH.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminKind {
    /// The admin is root: the command directly.
    Root,
    /// The admin may `sudo` (`reset/remote.rs` says how its password is handled).
    Sudo,
}

/// The key a target shows: pinned at first use, checked ever after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetKey {
    /// An SSH host key's `SHA256:…` fingerprint.
    SshHostKey(String),
    /// A TLS leaf certificate's `SHA256:…` fingerprint.
    TlsCertificate(String),
}

/// Where a connector records the key its target showed, once the admin is logged in and
/// before anything is sent: at first use the key becomes the resource's pin, and a key that
/// differs from one pinned meanwhile (by another connection of the same bulk job) stops the
/// change. An error means nothing may be sent (the connector then fails with
/// [`ApplyFailure::Unrepresentable`], which says nothing was).
pub trait KeyRecorder: Sync {
    fn record<'a>(
        &'a self,
        key: &'a TargetKey,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;
}

/// One way of setting and checking passwords. Implementations hold where the target is and
/// the pins it must match; every input from the target is bounded while it is read, and no
/// secret goes to argv, env, logs or error messages.
pub trait Connector: Sync {
    /// The target's name in messages and its concurrency limit (`host:port`).
    fn label(&self) -> String;

    /// Sets `login`'s password to `new` as `admin`. The key the target showed goes to
    /// `keys` after the admin logged in and before the change is sent; if it refuses, nothing
    /// is sent ([`ApplyFailure::Unrepresentable`]).
    fn apply(
        &self,
        admin: &Admin,
        login: &str,
        new: &Secret,
        keys: &dyn KeyRecorder,
    ) -> impl Future<Output = Result<(), ApplyFailure>> + Send;

    /// Logs in as `login` with `password`, afresh: `Ok(true)` accepted, `Ok(false)` refused.
    /// An error means the target could not be asked: nothing is proven.
    fn accepts(
        &self,
        login: &str,
        password: &Secret,
    ) -> impl Future<Output = Result<bool, TargetFailure>> + Send;
}

/// Which password a target holds for an account, as shown by logging in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    /// The new (pending) password logs in.
    New,
    /// The new one is refused and the old one logs in: the change did not happen.
    Old,
    /// Both are refused: the target holds something else, or refuses the account.
    Neither,
}

/// Asks the target which of `new` and `old` it accepts for `login`, new first (a fresh login
/// each). An error means the target could not be asked: nothing is proven.
pub async fn held<C: Connector>(
    connector: &C,
    login: &str,
    new: &Secret,
    old: &Secret,
) -> Result<Held, TargetFailure> {
    if connector.accepts(login, new).await? {
        return Ok(Held::New);
    }
    if !old.is_empty() && connector.accepts(login, old).await? {
        return Ok(Held::Old);
    }
    Ok(Held::Neither)
}

/// The connectors the engine chooses from by a resource type's reset method.
pub enum AnyConnector<'e> {
    Ssh(ssh::SshConnector<'e>),
    Postgres(postgres::PostgresConnector),
    Mysql(mysql::MysqlConnector),
    ActiveDirectory(active_directory::ActiveDirectoryConnector),
}

impl Connector for AnyConnector<'_> {
    fn label(&self) -> String {
        match self {
            AnyConnector::Ssh(c) => c.label(),
            AnyConnector::Postgres(c) => c.label(),
            AnyConnector::Mysql(c) => c.label(),
            AnyConnector::ActiveDirectory(c) => c.label(),
        }
    }

    async fn apply(
        &self,
        admin: &Admin,
        login: &str,
        new: &Secret,
        keys: &dyn KeyRecorder,
    ) -> Result<(), ApplyFailure> {
        match self {
            AnyConnector::Ssh(c) => c.apply(admin, login, new, keys).await,
            AnyConnector::Postgres(c) => c.apply(admin, login, new, keys).await,
            AnyConnector::Mysql(c) => c.apply(admin, login, new, keys).await,
            AnyConnector::ActiveDirectory(c) => c.apply(admin, login, new, keys).await,
        }
    }

    async fn accepts(&self, login: &str, password: &Secret) -> Result<bool, TargetFailure> {
        match self {
            AnyConnector::Ssh(c) => c.accepts(login, password).await,
            AnyConnector::Postgres(c) => c.accepts(login, password).await,
            AnyConnector::Mysql(c) => c.accepts(login, password).await,
            AnyConnector::ActiveDirectory(c) => c.accepts(login, password).await,
        }
    }
}
