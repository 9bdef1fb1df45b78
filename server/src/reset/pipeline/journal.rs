//! Writing an item's steps: every write is fenced by the claim that holds the item, and a
//! final state audits itself and may finish the job.

use super::lease::{lease_of, still_held};
use super::{Engine, state};
use crate::audit::{self, Actor, NewEvent, Outcome};
use crate::error::Result;
use crate::states::SyncStatus;
use crate::store::resets::ItemRow;
use crate::store::{self};

impl Engine {
    /// Writes an item's new state (and audits a final one). A final state other than
    /// out-of-sync discards the pending password: call it only once the target has shown it
    /// does not hold it (or was never touched).
    pub(super) async fn step(
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
    pub(super) async fn step_keeping(
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
        let ended_badly = matches!(
            to,
            state::VETOED | state::FAILED | state::OUT_OF_SYNC | state::PARKED
        );
        if final_state {
            store::resets::release(tx.conn(), &item.id).await?;
        }
        if ended_badly {
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
        }
        if final_state {
            // Two last items ending at once on two nodes of one PostgreSQL would each see
            // the other still in progress (each transaction reads what is committed) and
            // leave the job running for ever: the chain's lock (held to the commit) orders
            // them, so the second one's check sees the first one's end. It is taken after
            // the row writes above, as every audit append takes it after its own rows (one
            // lock order: no deadlock with an account update or an agent's report).
            let backend = tx.backend();
            store::audit::lock_chain(tx.conn(), backend).await?;
            if store::resets::finish_job_if_done(tx.conn(), &item.job_id, &now).await? {
                self.announce_finished(&mut tx, &item.job_id).await?;
            }
        }
        if ended_badly {
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
    pub(super) async fn announce_finished(
        &self,
        tx: &mut crate::store::WriteTx,
        job_id: &str,
    ) -> Result<()> {
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
}
