//! Claims, leases and heartbeats: a worker claims one item at a time with a lease that is
//! its own (`NODE/lease_…`), renews it while the item runs, and stops the run at once when the
//! lease is lost or the server's stop cuts it off.

use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

use super::{Engine, LEASE, MAX_RETRY_BACKOFF, SETTLE_DELAYS, state};
use crate::error::{Error, Result};
use crate::store::resets::ItemRow;
use crate::store::{self};

/// The claim that holds `item` (its lease owner when this worker claimed it).
pub(super) fn lease_of(item: &ItemRow) -> &str {
    item.lease_owner.as_deref().unwrap_or_default()
}

/// Stops a worker whose claim on `item` was taken over (its lease ran out and another worker
/// claimed the item): the step's transaction is dropped, so nothing of it is written.
pub(super) fn still_held(item: &ItemRow, written: bool) -> Result<()> {
    if written {
        Ok(())
    } else {
        Err(Error::Conflict(format!(
            "reset item {}: another worker took it over after this one's lease ran out; this \
             one stops without writing",
            item.id
        )))
    }
}

/// A task that stops when its handle goes, even when the handle goes with a panic.
pub(super) struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl AbortOnDrop {
    /// Spawns `task`, stopped when the handle goes.
    pub(super) fn spawn(task: impl std::future::Future<Output = ()> + Send + 'static) -> Self {
        AbortOnDrop(tokio::spawn(task))
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How a claimed item's run was cut short, when it was.
pub(super) enum Interrupted {
    /// Its lease was taken over (or could not be renewed before it ran out): the item is
    /// another claim's now, and this one writes nothing more for it.
    LeaseLost,
    /// This server is stopping and the grace ran out: the lease is handed back at once.
    Stopping,
}

/// What one renewal attempt of the heartbeat came to.
#[derive(Debug, Clone, Copy)]
pub(super) enum Renewal {
    Renewed,
    /// The row names another lease owner: another claim holds the item.
    TakenOver,
    /// A busy, lost or hung connection: nothing is known.
    Failed,
}

/// What the heartbeat does next.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Beat {
    Keep,
    /// Try again at the next beat.
    Retry,
    /// Stop the run: the lease is, or may soon be, another claim's.
    Lost,
}

/// The heartbeat's decision after a renewal, `since_renewed` after the last one that worked,
/// with beats every third of `lease`. A failed renewal is tried again only while the lease
/// cannot run out before the next beat; past that another node may take the item, so the run
/// stops rather than step on an item it may no longer hold.
pub(super) fn after_renewal(renewal: Renewal, since_renewed: Duration, lease: Duration) -> Beat {
    match renewal {
        Renewal::Renewed => Beat::Keep,
        Renewal::TakenOver => Beat::Lost,
        Renewal::Failed if since_renewed + lease / 3 < lease => Beat::Retry,
        Renewal::Failed => Beat::Lost,
    }
}

/// How long a reset handed back by a stopping node stays with it before another node takes
/// it. Nothing was sent to the target before the journal's pending step, so a planned item or
/// one in its pre-listeners goes at once. Past that, a command cut off may still be applying
/// its input on the target, so the next node waits as long as a settling target gets before
/// it asks which password the target holds. An item whose state could not be read counts as
/// sent.
pub(super) fn hand_back_wait(state: Option<&str>) -> Duration {
    match state {
        Some(state::PLANNED | state::PRE_LISTENERS) => Duration::ZERO,
        _ => SETTLE_DELAYS.iter().sum(),
    }
}

impl Engine {
    pub(super) fn lease_until(&self) -> String {
        crate::time::format(crate::time::now_utc() + self.lease)
    }

    pub(super) async fn claim(&self) -> Result<Option<ItemRow>> {
        self.claim_where(false).await
    }

    pub(super) async fn claim_where(&self, in_flight_only: bool) -> Result<Option<ItemRow>> {
        let mut tx = self.store.begin_write().await?;
        let backend = tx.backend();
        let lease = store::resets::lease_owner(&self.node, &crate::time::new_id("lease"));
        let item = store::resets::claim(
            tx.conn(),
            backend,
            &lease,
            &crate::time::now(),
            &self.lease_until(),
            in_flight_only,
        )
        .await?;
        tx.commit().await?;
        Ok(item)
    }

    /// Runs one claimed item with a heartbeat keeping its lease. The run stops at once when
    /// the lease is lost (taken over, or not renewed before it ran out) or when the server's
    /// stop cuts it off.
    pub(super) async fn run(self: Arc<Self>, item: ItemRow) -> Result<()> {
        let lost = Arc::new(Notify::new());
        let heartbeat = {
            let (store, id) = (self.store.clone(), item.id.clone());
            let owner = lease_of(&item).to_string();
            let engine = self.clone();
            let lost = lost.clone();
            AbortOnDrop(tokio::spawn(async move {
                // The first renewal at once: the claim may have waited (a busy database).
                let mut renewed = tokio::time::Instant::now();
                loop {
                    let attempt = tokio::time::Instant::now();
                    let until = engine.lease_until();
                    let renewal = tokio::time::timeout(
                        engine.lease / 3,
                        store::resets::renew_lease(store.pool(), &id, &owner, &until),
                    )
                    .await;
                    let (verdict, why) = match renewal {
                        Ok(Ok(true)) => (Renewal::Renewed, String::new()),
                        Ok(Ok(false)) => (Renewal::TakenOver, String::new()),
                        Ok(Err(e)) => (Renewal::Failed, e.to_string()),
                        Err(_) => (
                            Renewal::Failed,
                            "no answer within a third of the lease".to_string(),
                        ),
                    };
                    match after_renewal(verdict, renewed.elapsed(), engine.lease) {
                        Beat::Keep => renewed = attempt,
                        Beat::Retry => {
                            tracing::warn!(item = %id, error = %why, "lease renewal failed")
                        }
                        Beat::Lost => {
                            if matches!(verdict, Renewal::Failed) {
                                tracing::warn!(item = %id, error = %why, "lease renewal failed until the lease was about to run out");
                            }
                            break;
                        }
                    }
                    tokio::time::sleep_until(attempt + engine.lease / 3).await;
                }
                lost.notify_one();
            }))
        };
        let (id, updated_at) = (item.id.clone(), item.updated_at.clone());
        let lease = lease_of(&item).to_string();
        let outcome = tokio::select! {
            result = self.clone().process(item) => Ok(result),
            _ = lost.notified() => Err(Interrupted::LeaseLost),
            _ = self.abort.cancelled() => Err(Interrupted::Stopping),
        };
        drop(heartbeat);
        match outcome {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                // Left in flight (a target that cannot be asked, a store error): it is taken
                // up again when its lease runs out, later the longer it has been stuck.
                let until = Self::retry_after(&updated_at);
                let _ = store::resets::renew_lease(self.store.pool(), &id, &lease, &until).await;
                Err(e)
            }
            Err(Interrupted::LeaseLost) => {
                tracing::warn!(item = %id, "lost the lease on this reset; stopped it without another step");
                Ok(())
            }
            Err(Interrupted::Stopping) => {
                let state = match store::resets::item(self.store.pool(), &id).await {
                    Ok(Some(i)) => Some(i.state),
                    _ => None,
                };
                let wait = hand_back_wait(state.as_deref());
                let until = crate::time::format(crate::time::now_utc() + wait);
                let _ = store::resets::renew_lease(self.store.pool(), &id, &lease, &until).await;
                tracing::info!(item = %id, wait_secs = wait.as_secs(), "stopping: handed the reset back for another node");
                Ok(())
            }
        }
    }

    /// When an item stuck since `updated_at` is tried again: after as long as it has been
    /// stuck, at least a lease and at most [`MAX_RETRY_BACKOFF`].
    pub(super) fn retry_after(updated_at: &str) -> String {
        let now = crate::time::now_utc();
        let stuck = chrono::DateTime::parse_from_rfc3339(updated_at)
            .map(|t| now - t.with_timezone(&chrono::Utc))
            .ok()
            .and_then(|d| d.to_std().ok())
            .unwrap_or(LEASE);
        crate::time::format(now + stuck.clamp(LEASE, MAX_RETRY_BACKOFF))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How far in the future `until` is.
    fn wait(until: &str) -> Duration {
        let until = chrono::DateTime::parse_from_rfc3339(until).unwrap();
        (until.with_timezone(&chrono::Utc) - crate::time::now_utc())
            .to_std()
            .unwrap_or_default()
    }

    #[test]
    fn a_failed_renewal_is_retried_only_while_the_lease_outlives_the_next_beat() {
        let lease = Duration::from_secs(30);
        let s = Duration::from_secs;
        assert_eq!(after_renewal(Renewal::Renewed, s(25), lease), Beat::Keep);
        // Taken over: at once, however fresh the last renewal.
        assert_eq!(after_renewal(Renewal::TakenOver, s(0), lease), Beat::Lost);
        assert_eq!(after_renewal(Renewal::Failed, s(0), lease), Beat::Retry);
        assert_eq!(after_renewal(Renewal::Failed, s(19), lease), Beat::Retry);
        // 20 s since the last renewal + a 10 s beat: the lease may be gone at the next beat.
        assert_eq!(after_renewal(Renewal::Failed, s(20), lease), Beat::Lost);
        assert_eq!(after_renewal(Renewal::Failed, s(45), lease), Beat::Lost);
    }

    #[test]
    fn a_stopping_node_hands_back_at_once_only_what_it_never_sent() {
        assert_eq!(hand_back_wait(Some(state::PLANNED)), Duration::ZERO);
        assert_eq!(hand_back_wait(Some(state::PRE_LISTENERS)), Duration::ZERO);
        let settle: Duration = SETTLE_DELAYS.iter().sum();
        assert!(settle > Duration::ZERO);
        for sent in crate::states::ItemState::ALL
            .iter()
            .map(|s| s.as_str())
            .filter(|s| ![state::PLANNED, state::PRE_LISTENERS].contains(s))
        {
            assert_eq!(hand_back_wait(Some(sent)), settle, "{sent}");
        }
        assert_eq!(hand_back_wait(None), settle);
    }

    #[test]
    fn an_item_stuck_longer_waits_longer_up_to_the_cap() {
        let just_now = crate::time::now();
        assert!(wait(&Engine::retry_after(&just_now)) <= LEASE);
        assert!(wait(&Engine::retry_after(&just_now)) > LEASE - Duration::from_secs(2));
        let minutes_ago =
            crate::time::format(crate::time::now_utc() - chrono::Duration::minutes(3));
        let w = wait(&Engine::retry_after(&minutes_ago));
        assert!(
            w > Duration::from_secs(170) && w <= Duration::from_secs(181),
            "{w:?}"
        );
        let day_ago = crate::time::format(crate::time::now_utc() - chrono::Duration::days(1));
        assert!(wait(&Engine::retry_after(&day_ago)) <= MAX_RETRY_BACKOFF);
        assert!(wait(&Engine::retry_after("not a time")) <= LEASE);
    }
}
