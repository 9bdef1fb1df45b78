//! Custody: who could act as a user account. Dual control means two *people*, and one person
//! can hold several accounts: the ones they created, gave a role, or issued a credential to
//! (they saw its activation code), and, transitively, the accounts those accounts control.
//!
//! Every user has a set of custodians (itself included). Creating a user, issuing it an
//! activation code or giving it a role adds the acting user's custodians to it. An approval
//! counts only when the approver's custodians and the requester's are disjoint, and the
//! approver's custody has not changed since the change was requested. The host's
//! `lockstep admin create` (an operator with the database and the master key) starts a user
//! with itself as its only custodian: that is how independent administrators come to be.

use crate::error::Result;
use crate::store::{self, Store, WriteTx};

/// The custodians a user created or credentialed by `actor_user` (None: the host CLI) gets:
/// itself, plus the actor's custodians.
pub async fn inherited(
    tx: &mut WriteTx,
    user_name: &str,
    actor_user: Option<&str>,
) -> Result<Vec<String>> {
    let mut set = vec![user_name.to_string()];
    if let Some(actor) = actor_user {
        for c in store::user_custody::custodians(tx.conn(), actor).await? {
            if !set.contains(&c) {
                set.push(c);
            }
        }
        if !set.iter().any(|c| c == actor) {
            set.push(actor.to_string());
        }
    }
    Ok(set)
}

/// Records that `actor_user` (None: the host CLI) created, credentialed or re-roled the user
/// called `user_name` at `at`.
pub async fn record(
    tx: &mut WriteTx,
    user_name: &str,
    actor_user: Option<&str>,
    at: &str,
) -> Result<()> {
    let set = inherited(tx, user_name, actor_user).await?;
    store::user_custody::add(tx.conn(), user_name, &set, at).await?;
    Ok(())
}

/// Why `approver`'s approval of a change that `requester` asked for at `requested_at` does not
/// count, or `None` when it does.
pub async fn refuses_approval(
    store: &Store,
    approver: &str,
    requester: &str,
    requested_at: &str,
) -> Result<Option<String>> {
    let of_approver = store::user_custody::custodians(store.pool(), approver).await?;
    let of_requester = store::user_custody::custodians(store.pool(), requester).await?;
    let shared: Vec<&String> = of_approver
        .iter()
        .filter(|c| of_requester.contains(c))
        .collect();
    if let Some(first) = shared.first() {
        let how = if *first == requester {
            format!("{requester} created, credentialed or gave a role to {approver}'s account")
        } else if *first == approver {
            format!("{approver} created, credentialed or gave a role to {requester}'s account")
        } else {
            format!(
                "{first} controls both {approver}'s and {requester}'s accounts (created, \
                 credentialed or gave them a role)"
            )
        };
        return Ok(Some(format!(
            "{approver}'s approval would not be independent of {requester}: {how}; dual \
             control needs an approver whose account nobody involved in the request controls"
        )));
    }
    if let Some(changed) = store::user_custody::changed_at(store.pool(), approver).await?
        && changed.as_str() > requested_at
    {
        return Ok(Some(format!(
            "{approver}'s account was created, credentialed or given its role at {changed}, \
             after this change was requested ({requested_at}); another approver must decide it"
        )));
    }
    Ok(None)
}
