//! Several servers on one database. Every `lockstep serve` is a **node**: equal to the others,
//! it claims reset items by lease (`reset::pipeline`), registers itself and beats (`node`),
//! takes the cluster-wide duties by lease (`duty`), and keeps its clock on the database's
//! (`clock`), so that leases written by one node mean the same to every other; what one node
//! queues wakes the waiters of every node (`bells`).
//!
//! **Invariants.**
//! - Every lease and timestamp a node writes is in database time (`crate::time::now`, moved by
//!   the offset `clock::align` measured); a node whose clock is a minute off takes nothing it
//!   should not.
//! - A duty (the rotation scheduler) runs on at most one node at a time: the one whose lease
//!   on the duty's row is current. A node that dies loses it when the lease runs out, and the
//!   next node to beat takes it with a higher fence.

pub mod bells;
pub mod clock;
pub mod duty;
pub mod node;

pub use duty::Duty;
pub use node::{ClusterView, NodeState, NodeView};
