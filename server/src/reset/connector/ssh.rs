//! The SSH connector: the resource type's command template run by the admin over a kept
//! connection (`reset/remote.rs`, batched by `reset/batch.rs`), and a fresh SSH login to check
//! a password.

use crate::inventory::reset_command::ResetCommand;
use crate::reset::batch::CommandBatcher;
use crate::reset::pool::AdminPool;
use crate::reset::remote;
use crate::reset::ssh::{self, Endpoint};
use crate::vault::Secret;

use super::{Admin, ApplyFailure, Connector, KeyRecorder, TargetFailure, TargetKey, Timeouts};

/// A target reached over SSH.
pub struct SshConnector<'e> {
    pub endpoint: Endpoint,
    pub timeouts: Timeouts,
    /// Admin connections, reused across the accounts of a target.
    pub pool: &'e AdminPool,
    /// Concurrent changes of one target share one command run.
    pub batcher: &'e CommandBatcher,
    /// The approved command template of the resource type.
    pub command: &'e ResetCommand,
}

impl Connector for SshConnector<'_> {
    fn label(&self) -> String {
        self.endpoint.label()
    }

    async fn apply(
        &self,
        admin: &Admin,
        login: &str,
        new: &Secret,
        keys: &dyn KeyRecorder,
    ) -> Result<(), ApplyFailure> {
        let Admin {
            login: user,
            password: admin_pw,
            kind,
        } = admin;
        let (conn, reused) = self.pool.get(&self.endpoint, user, admin_pw).await?;
        let key = TargetKey::SshHostKey(conn.host_key.clone());
        keys.record(&key)
            .await
            .map_err(ApplyFailure::Unrepresentable)?;
        // One run per target, admin and pin: a change of another resource at the same address
        // never rides a connection checked against another pin.
        let queue = format!(
            "{}\n{user}\n{}",
            self.label(),
            self.endpoint.pinned_host_key.as_deref().unwrap_or("")
        );
        let label = self.label();
        let r = self
            .batcher
            .apply(
                &queue,
                &conn,
                *kind,
                admin_pw,
                self.command,
                login,
                new,
                &label,
            )
            .await;
        match r {
            // A kept connection may have died in between; one fresh try.
            Err(ApplyFailure::NotSent(_)) if reused => {
                self.pool.forget(&self.endpoint, user, admin_pw).await;
                let (conn, _) = self.pool.get(&self.endpoint, user, admin_pw).await?;
                let key = TargetKey::SshHostKey(conn.host_key.clone());
                keys.record(&key)
                    .await
                    .map_err(ApplyFailure::Unrepresentable)?;
                remote::apply(&conn, *kind, admin_pw, self.command, login, new, &label).await
            }
            Err(e @ ApplyFailure::NotSent(_)) => {
                self.pool.forget(&self.endpoint, user, admin_pw).await;
                Err(e)
            }
            other => other,
        }
    }

    async fn accepts(&self, login: &str, password: &Secret) -> Result<bool, TargetFailure> {
        accepts(&self.endpoint, login, password, self.timeouts).await
    }
}

/// Logs in as `login` with `password`: `Ok(true)` when accepted, `Ok(false)` when refused.
pub async fn accepts(
    endpoint: &Endpoint,
    login: &str,
    password: &Secret,
    timeouts: Timeouts,
) -> Result<bool, TargetFailure> {
    match ssh::connect(endpoint, login, password, timeouts).await {
        Ok(c) => {
            c.close().await;
            Ok(true)
        }
        Err(TargetFailure::AuthRejected { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}
