//! Settling what is in flight: an item found past `pending-written` after its lease ran out,
//! or whose apply cannot say what happened, is settled by asking the target which password it
//! accepts. No password the target may hold is discarded.

use std::sync::Arc;

use super::agent::agent_task_id;
use super::lease::{lease_of, still_held};
use super::{AGENT_PICKUP, Engine, MAX_GENERATED_ATTEMPTS, SETTLE_DELAYS, Subject, state};
use crate::agents::tasks::{self as agent_tasks};
use crate::audit::{self, Actor, NewEvent, Outcome};
use crate::error::{Error, Result};
use crate::reset::connector::{self, Connector, Held, TargetFailure};
use crate::states::TaskState;
use crate::store::resets::ItemRow;
use crate::store::{self};
use crate::vault::{Secret, account_password_aad, reset_pending_aad};

impl Engine {
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

    /// After a change whose verification failed, or after a crash: which password does the
    /// target accept? New: commit. Old: after a crash (`retry`) nothing changed and the reset
    /// starts over; after a change the target acknowledged (not `retry`) it fails, and the new
    /// password is *kept* with the item: the target said it took it, so a path that still
    /// shows the old one (a standby that lags, a pooler's cache) may show the new one later.
    /// Neither, or a target that cannot prove any password: out-of-sync, keep both. Cannot
    /// ask: an error, and the item stays in flight with both passwords until it can.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn settle(
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
        // Asked again after pauses until two answers agree: an acknowledged change, or a
        // command (or commit) a crash cut off, may show late.
        let held = match self.ask_target(&item, &s, &new, &mut old, true).await? {
            Ok(held) => held,
            // The target cannot prove any password: asking again will not help.
            Err(e @ TargetFailure::Unprovable { .. }) => {
                let why = format!("{e}; both passwords are kept for a person to check");
                return self
                    .out_of_sync(&item, &s, &why, &listeners, attempts)
                    .await;
            }
            Err(e) => return Err(Error::Conflict(format!("cannot settle {}: {e}", item.id))),
        };
        match held {
            Held::New => {
                self.commit(item, s, new, Some(old), listeners, attempts)
                    .await
            }
            Held::Old if retry && attempts < MAX_GENERATED_ATTEMPTS => {
                tracing::info!(item = %item.id, "interrupted before the target changed; starting over");
                self.restart(&item, attempts).await
            }
            // The command a crash cut off may still apply the password: it stays kept.
            Held::Old if retry => {
                self.step_keeping(
                    &item,
                    state::FAILED,
                    Some(
                        "the target kept the old password; the new one is kept with this item \
                         in case the interrupted change applies it later",
                    ),
                    &listeners,
                    attempts,
                    true,
                )
                .await
            }
            Held::Old => {
                self.step_keeping(
                    &item,
                    state::FAILED,
                    Some(
                        "the target acknowledged the change but a fresh login still takes only \
                         the old password; the stored password stays, and the new one is kept \
                         with this item in case the change shows later",
                    ),
                    &listeners,
                    attempts,
                    true,
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
    pub(super) async fn ask_target(
        &self,
        item: &ItemRow,
        s: &Subject,
        new: &Secret,
        old: &mut Secret,
        still_running: bool,
    ) -> Result<std::result::Result<Held, TargetFailure>> {
        let connector = match self.connector(s.method, &s.resource, &s.settings, &s.command) {
            Ok(c) => c,
            Err(reason) => {
                return Ok(Err(TargetFailure::Unreachable {
                    target: s.resource.name.clone(),
                    reason,
                }));
            }
        };
        let login = &s.account.login_name;
        let ask = || connector::held(&connector, login, new, old);
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
            // Sealed for this account's item, or it does not open: a kept row (or its item)
            // re-pointed at this account in the database is never tried on its target.
            let aad = reset_pending_aad(&kept_by, &s.account.id);
            let Ok(candidate) = self.vault.open_secret(&kept.sealed, &aad) else {
                tracing::warn!(account = %s.account.id, kept_by = %kept_by, "a kept password does not open for this account (moved in the database?); not tried");
                continue;
            };
            if candidate.expose() == new.expose() || candidate.expose() == old.expose() {
                continue;
            }
            match connector.accepts(login, &candidate).await {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => return Ok(Err(e)),
            }
            let stored = self
                .vault
                .seal_secret(&candidate, &account_password_aad(&s.account.id))?;
            let now = crate::time::now();
            let mut tx = self.store.begin_write().await?;
            let held = store::resets::holds(tx.conn(), &item.id, lease_of(item)).await?;
            still_held(item, held)?;
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
    pub(super) async fn keep(&self, item: &ItemRow, password: &Secret) -> Result<()> {
        let sealed = self
            .vault
            .seal_secret(password, &reset_pending_aad(&item.id, &item.account_id))?;
        let mut tx = self.store.begin_write().await?;
        let held = store::resets::holds(tx.conn(), &item.id, lease_of(item)).await?;
        still_held(item, held)?;
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
    pub(super) async fn out_of_sync(
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
    pub(super) async fn restart(&self, item: &ItemRow, attempts: i64) -> Result<()> {
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
    pub(super) async fn reconcile(self: Arc<Self>, item: ItemRow, s: Subject) -> Result<()> {
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
        let new = self
            .vault
            .open_secret(&sealed, &reset_pending_aad(&item.id, &item.account_id))?;
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
}
