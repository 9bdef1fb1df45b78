//! The reset engine: changing passwords on the systems they belong to, keeping the vault and
//! the target in lockstep.
//!
//! - `policy`: password policies and the generator.
//! - `settings`: per-resource reset settings (admin account, host key pin, policy).
//! - `jobs`: starting a reset and reading a job's progress.
//! - `watch`: a job's successive snapshots turned into changes, for the live event stream.
//! - `pipeline`: the workers and the journaled, crash-safe state machine per account.
//! - `connector`: the boundary every way of setting passwords implements (SSH, PostgreSQL).
//! - `ssh`, `remote`, `batch`, `pool`, `target`: the agentless SSH side (connect, `chpasswd`,
//!   `target-exec`).
//! - `command`: command templates, how a resource type's passwords are set over SSH.
//! - `sealed_binding`: the start-up upgrade binding the passwords resets keep to their account.

pub mod batch;
pub mod connector;
pub mod delivery;
pub mod jobs;
pub mod pipeline;
pub mod policy;
pub mod pool;
pub mod remote;
pub mod scheduler;
pub mod sealed_binding;
pub mod settings;
pub mod ssh;
pub mod target;
pub mod watch;

/// The fingerprint purpose of an account's password history (see `Vault::fingerprint`).
pub fn history_purpose(account_id: &str) -> String {
    format!("password-history:{account_id}")
}
