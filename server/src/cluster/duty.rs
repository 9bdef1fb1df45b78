//! Cluster-wide duties: work that must run on one node at a time (the rotation scheduler). A
//! duty is a row with a holder, a lease and a fence. The holder renews it with every heartbeat;
//! another node takes it only once the lease has run out in database time, and every take
//! raises the fence, so a holder that was presumed dead and comes back can tell it lost the
//! duty (its renewal finds another holder) before it acts again.

use std::time::Duration;

use crate::error::Result;
use crate::store::{self, Store};

/// A duty's lease: several heartbeats long, so a node survives one slow beat.
pub const DUTY_LEASE: Duration = Duration::from_secs(20);

/// The cluster-wide duties, by the name their row has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Duty {
    /// Starts the scheduled rotations (`reset::scheduler`).
    Scheduler,
}

impl Duty {
    pub const ALL: [Duty; 1] = [Duty::Scheduler];

    pub const fn as_str(self) -> &'static str {
        match self {
            Duty::Scheduler => "scheduler",
        }
    }
}

/// Renews `duty` for `node`, or takes it when nobody holds it or its holder's lease ran out.
/// Returns the fence of the holding (`None`: another node holds it).
pub async fn hold(store: &Store, duty: Duty, node: &str) -> Result<Option<i64>> {
    let now = crate::time::now_utc();
    let until = crate::time::format(now + DUTY_LEASE);
    let mut tx = store.begin_write().await?;
    let fence = store::cluster::hold_duty(
        tx.conn(),
        duty.as_str(),
        node,
        &crate::time::format(now),
        &until,
    )
    .await?;
    tx.commit().await?;
    Ok(fence)
}

/// Lets `duty` go at once (a node stopping gracefully), if `node` holds it.
pub async fn release(store: &Store, duty: Duty, node: &str) -> Result<()> {
    let mut tx = store.begin_write().await?;
    store::cluster::release_duty(tx.conn(), duty.as_str(), node).await?;
    tx.commit().await
}
