//! The expiry sweep: every node runs it every few seconds, reading deadlines from the database,
//! so a node that was down catches up and a window ends even with no node up at its end time
//! (the first node back ends it). Each step is a conditional transition (`store::checkouts`)
//! and each rotation a job keyed on its checkout, so two nodes sweeping at once end every
//! checkout once and rotate it once.

use crate::audit::Actor;
use crate::error::Result;
use crate::states::{CheckinKind, CheckoutState};
use crate::store::{self, Store};
use crate::vault::Vault;

/// Most checkouts one sweep handles of each kind; the rest wait for the next sweep.
const BATCH: i64 = 100;

/// What one sweep did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Swept {
    pub lapsed: usize,
    pub expired: usize,
    /// Rotation jobs started (for ended windows, and returns whose rotation had not started).
    pub rotations: usize,
}

/// Lapses overdue requests, ends windows that are over, and starts the rotations of returns
/// that have none yet.
pub async fn run(store: &Store, vault: &Vault) -> Result<Swept> {
    let mut swept = Swept::default();
    let system = Actor::system();
    let now = crate::time::now();
    for r in store::checkouts::due(
        store.pool(),
        &now,
        CheckoutState::Requested.as_str(),
        CheckoutState::CheckedOut.as_str(),
        BATCH,
    )
    .await?
    {
        // Another node (or the holder) may have moved it since it was read: a lost race is
        // a Conflict, and nothing to do.
        if CheckoutState::Requested.is(&r.state) {
            if super::checkout::close(
                store,
                &system,
                r,
                CheckoutState::Lapsed,
                None,
                "nobody answered in time",
            )
            .await
            .is_ok()
            {
                swept.lapsed += 1;
            }
        } else if let Ok((_, started)) =
            super::checkout::end(store, vault, &system, r, CheckinKind::Expired, "system").await
        {
            swept.expired += 1;
            swept.rotations += usize::from(started);
        }
    }
    for r in store::checkouts::unrotated(store.pool(), BATCH).await? {
        match super::checkout::rotate(store, vault, &r).await {
            Ok(()) => swept.rotations += 1,
            Err(e) => {
                tracing::warn!(checkout = %r.id, error = %e, "a check-in's rotation could not start; retried at the next sweep")
            }
        }
    }
    Ok(swept)
}
