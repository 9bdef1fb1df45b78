//! Group commit for many-account commands (`chpasswd`): accounts of one target waiting to be
//! applied at the same time go to the target in one run (one process and PAM setup instead of
//! one each). A command whose arguments name the login runs once per account, unbatched.
//!
//! No timer adds latency: the first caller runs at once with whatever is queued; callers that
//! arrive while a run is under way queue up and the next of them runs them all together.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::oneshot;

use super::connector::{AdminKind, ApplyFailure};
use super::remote::{self, AccountInput, command_input};
use super::ssh::Connection;
use crate::inventory::reset_command::ResetCommand;
use crate::vault::Secret;

struct Entry {
    input: AccountInput,
    reply: oneshot::Sender<Result<(), ApplyFailure>>,
}

#[derive(Default)]
struct Queue {
    pending: std::sync::Mutex<Vec<Entry>>,
    /// Held by the caller running a batch.
    running: tokio::sync::Mutex<()>,
}

/// One queue per (target, admin, admin kind, command).
#[derive(Default)]
pub struct CommandBatcher {
    queues: std::sync::Mutex<HashMap<String, Arc<Queue>>>,
}

impl CommandBatcher {
    fn queue(&self, key: &str) -> Arc<Queue> {
        let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        queues.entry(key.to_string()).or_default().clone()
    }

    /// Sets `login`'s password, together with whatever else is waiting for the same target,
    /// admin and command. `key` names the target and admin; `conn` is an admin connection to it.
    #[allow(clippy::too_many_arguments)]
    pub async fn apply(
        &self,
        key: &str,
        conn: &Connection,
        kind: AdminKind,
        admin_password: &Secret,
        command: &ResetCommand,
        login: &str,
        new_password: &Secret,
        target: &str,
    ) -> Result<(), ApplyFailure> {
        if !command.batchable() {
            return remote::apply(
                conn,
                kind,
                admin_password,
                command,
                login,
                new_password,
                target,
            )
            .await;
        }
        let input = command_input(command, login, new_password)?;
        let queue = self.queue(&format!(
            "{key}\n{kind:?}\n{}\n{:?}\n{}",
            command.program, command.args, command.stdin
        ));
        let (reply, answer) = oneshot::channel();
        queue
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Entry { input, reply });
        {
            let _running = queue.running.lock().await;
            let mut batch =
                std::mem::take(&mut *queue.pending.lock().unwrap_or_else(|p| p.into_inner()));
            // A caller that stopped waiting (its run was cut off: a lost lease, a stop) takes
            // its password with it: the item is another claim's now, and nothing may be
            // applied for it from here.
            batch.retain(|e| !e.reply.is_closed());
            if !batch.is_empty() {
                let (replies, lines): (Vec<_>, Vec<_>) =
                    batch.into_iter().map(|e| (e.reply, e.input)).unzip();
                let results =
                    remote::apply_many(conn, kind, admin_password, command, lines, target).await;
                for (reply, result) in replies.into_iter().zip(results) {
                    let _ = reply.send(result);
                }
            }
        }
        answer.await.unwrap_or(Err(ApplyFailure::Abandoned))
    }
}
