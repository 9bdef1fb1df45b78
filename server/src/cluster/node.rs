//! The node registry: each `lockstep serve` writes a row when it starts, beats every few
//! seconds while it runs (aligning its clock and renewing its duties on the way), and marks
//! the row stopped when it stops gracefully. `GET /v1/cluster` reads it back with what each
//! node holds.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::duty::{self, Duty};
use crate::error::Result;
use crate::store::{self, Store};

/// How often a node beats.
pub const HEARTBEAT: Duration = Duration::from_secs(5);
/// A node that has not beaten for this long is shown as silent (killed, hung or cut off).
pub const SILENT_AFTER: Duration = Duration::from_secs(20);
/// Measurements of the clock's offset tried at start before the node gives up and goes on.
const FIRST_ALIGN_TRIES: u32 = 5;
/// Rows of nodes gone for longer than this are deleted by the next node that starts.
const FORGET_AFTER: Duration = Duration::from_secs(7 * 24 * 3600);

/// This server as a node of the cluster.
pub struct Node {
    /// `srv_…`; also the prefix of every lease it writes (`srv_…/lease_…`).
    pub id: String,
    store: Store,
    /// The duties this node performs (and so competes for).
    duties: Vec<Duty>,
}

impl Node {
    /// Registers a new node listening on `address` that performs `duties`: aligns its clock,
    /// writes its row and forgets nodes long gone.
    pub async fn register(store: Store, address: &str, duties: Vec<Duty>) -> Result<Arc<Node>> {
        // Before the first lease: a few tries when the database is slow to answer.
        for attempt in 1..=FIRST_ALIGN_TRIES {
            match super::clock::align(&store).await {
                Ok(Some(_)) => break,
                Ok(None) if store.backend() == store::Backend::Sqlite => break,
                Ok(None) if attempt == FIRST_ALIGN_TRIES => tracing::warn!(
                    "cannot measure this machine's clock against the database's (slow round \
                     trips); leases use this machine's clock until a heartbeat can"
                ),
                Ok(None) => tokio::time::sleep(Duration::from_millis(200)).await,
                Err(e) => {
                    tracing::error!(error = %e, "clock");
                    break;
                }
            }
        }
        let node = Arc::new(Node {
            id: crate::time::new_id("srv"),
            store,
            duties,
        });
        let now = crate::time::now_utc();
        let mut tx = node.store.begin_write().await?;
        store::cluster::forget_nodes(tx.conn(), &crate::time::format(now - FORGET_AFTER)).await?;
        store::cluster::insert_node(
            tx.conn(),
            &store::cluster::NodeRow {
                id: node.id.clone(),
                address: address.to_string(),
                version: env!("CARGO_PKG_VERSION").to_string(),
                started_at: crate::time::format(now),
                heartbeat_at: crate::time::format(now),
                stopped_at: None,
                clock_offset_ms: crate::time::offset_micros() / 1000,
            },
        )
        .await?;
        tx.commit().await?;
        tracing::info!(node = %node.id, "joined the cluster");
        Ok(node)
    }

    /// One beat: aligns the clock, writes the heartbeat, renews or takes the duties.
    pub async fn beat(&self) -> Result<()> {
        if let Err(e) = super::clock::align(&self.store).await {
            tracing::error!(error = %e, "clock");
        }
        store::cluster::beat_node(
            self.store.pool(),
            &self.id,
            &crate::time::now(),
            crate::time::offset_micros() / 1000,
        )
        .await?;
        for d in &self.duties {
            duty::hold(&self.store, *d, &self.id).await?;
        }
        Ok(())
    }

    /// Beats every [`HEARTBEAT`] until `stop` is cancelled.
    pub fn spawn_heartbeat(
        self: &Arc<Self>,
        stop: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let node = self.clone();
        tokio::spawn(async move {
            loop {
                if let Err(e) = node.beat().await {
                    tracing::warn!(node = %node.id, error = %e, "heartbeat failed");
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(HEARTBEAT) => {}
                }
            }
        })
    }

    /// Records the address the server listens on once it is bound.
    pub async fn listening_on(&self, address: &str) {
        if let Err(e) = store::cluster::set_node_address(self.store.pool(), &self.id, address).await
        {
            tracing::warn!(error = %e, "cannot record this node's address");
        }
    }

    /// A graceful stop: lets the duties go and marks the row stopped.
    pub async fn stop(&self) {
        for d in self.duties.iter().copied() {
            if let Err(e) = duty::release(&self.store, d, &self.id).await {
                tracing::warn!(duty = d.as_str(), error = %e, "cannot hand the duty back");
            }
        }
        if let Err(e) =
            store::cluster::stop_node(self.store.pool(), &self.id, &crate::time::now()).await
        {
            tracing::warn!(error = %e, "cannot mark this node stopped");
        }
    }
}

/// Whether a node is working, as its row shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum NodeState {
    /// Beat within the last 20 seconds.
    Live,
    /// Has not beaten for 20 seconds and did not say it stopped: killed, hung or cut off
    /// from the database. Its leases run out and other nodes take its work.
    Silent,
    /// Stopped gracefully.
    Stopped,
}

fn state_of(heartbeat_at: &str, stopped: bool, silent_before: &str) -> NodeState {
    if stopped {
        NodeState::Stopped
    } else if heartbeat_at < silent_before {
        NodeState::Silent
    } else {
        NodeState::Live
    }
}

/// One node as `GET /v1/cluster` shows it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct NodeView {
    pub id: String,
    /// The address it listens on, as configured.
    pub address: String,
    pub version: String,
    pub started_at: String,
    pub heartbeat_at: String,
    pub stopped_at: Option<String>,
    /// How far the database's clock was ahead of this node's at its last beat (negative:
    /// behind), in milliseconds; every node writes leases in the database's time.
    pub clock_offset_ms: i64,
    pub state: NodeState,
    /// Reset items it holds a live lease on (in progress there now).
    pub resets_held: usize,
    /// The cluster-wide duties whose lease it holds.
    pub duties: Vec<Duty>,
}

/// The cluster as the database sees it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct ClusterView {
    /// The database's time when this was read.
    pub now: String,
    /// The node that answered.
    pub answered_by: String,
    /// Live nodes first, then the others, newest first.
    pub nodes: Vec<NodeView>,
}

/// Every node known (gone ones for a week), with what each holds.
pub async fn view(store: &Store, answered_by: &str) -> Result<ClusterView> {
    let now_t = crate::time::now_utc();
    let now = crate::time::format(now_t);
    let silent_before = crate::time::format(now_t - SILENT_AFTER);
    let rows = store::cluster::list_nodes(store.pool()).await?;
    let leases = store::cluster::live_reset_leases(store.pool(), &now).await?;
    let duties = store::cluster::duty_holders(store.pool(), &now).await?;
    let mut nodes: Vec<NodeView> = rows
        .into_iter()
        .map(|r| NodeView {
            state: state_of(&r.heartbeat_at, r.stopped_at.is_some(), &silent_before),
            resets_held: leases
                .iter()
                .filter(|l| store::resets::node_of_lease(l) == r.id)
                .count(),
            duties: Duty::ALL
                .into_iter()
                .filter(|d| duties.iter().any(|(n, h)| n == d.as_str() && *h == r.id))
                .collect(),
            id: r.id,
            address: r.address,
            version: r.version,
            started_at: r.started_at,
            heartbeat_at: r.heartbeat_at,
            stopped_at: r.stopped_at,
            clock_offset_ms: r.clock_offset_ms,
        })
        .collect();
    nodes.sort_by(|a, b| {
        (a.state != NodeState::Live)
            .cmp(&(b.state != NodeState::Live))
            .then_with(|| b.started_at.cmp(&a.started_at))
    });
    Ok(ClusterView {
        now,
        answered_by: answered_by.to_string(),
        nodes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_is_silent_once_its_heartbeat_is_older_than_the_bound_and_stopped_wins() {
        let bound = "2026-12-01T10:00:00.000000Z";
        assert_eq!(
            state_of("2026-12-01T10:00:01.000000Z", false, bound),
            NodeState::Live
        );
        assert_eq!(
            state_of("2026-12-01T09:59:59.000000Z", false, bound),
            NodeState::Silent
        );
        assert_eq!(
            state_of("2026-12-01T10:00:01.000000Z", true, bound),
            NodeState::Stopped
        );
    }
}
