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

use crate::error::{Error, Result};
use crate::registry::Registry;
use crate::store::user_identity::IdentityRows;
use crate::store::{self, Store, WriteTx};

/// The custodians a user created or credentialed by `actor` (None: the host CLI) gets: itself,
/// plus the actor and the actor's custodians (from the actor's checked, sealed identity).
pub fn inherited(user_name: &str, actor: Option<&IdentityRows>) -> Vec<String> {
    let mut set = vec![user_name.to_string()];
    if let Some(actor) = actor {
        for c in actor
            .custodians
            .iter()
            .chain(std::iter::once(&actor.user.name))
        {
            if !set.contains(c) {
                set.push(c.clone());
            }
        }
    }
    set
}

/// Records that `actor` (None: the host CLI) created, credentialed or re-roled the user called
/// `user_name` at `at`.
pub async fn record(
    tx: &mut WriteTx,
    user_name: &str,
    actor: Option<&IdentityRows>,
    at: &str,
) -> Result<()> {
    let set = inherited(user_name, actor);
    store::user_custody::add(tx.conn(), user_name, &set, at).await?;
    Ok(())
}

/// Why `approver`'s approval of a change that `requester` asked for at `requested_at` does not
/// count, or `None` when it does. Both accounts' custody is read from their sealed identities
/// ([`super::seal::verified`]): custody rows a database writer deleted or an account restored
/// from a backup refuse the approval.
pub async fn refuses_approval(
    store: &Store,
    registry: &Registry,
    approver: &str,
    requester: &str,
    requested_at: &str,
) -> Result<Option<String>> {
    let mut custody = Vec::new();
    for name in [approver, requester] {
        let identity = match store::user_identity::id_of(store.pool(), name).await? {
            Some(id) => match super::seal::verified(store, registry, &id).await {
                Ok(identity) => identity,
                Err(Error::Unauthenticated(_)) => {
                    return Ok(Some(format!(
                        "{name}'s account fails its identity integrity check (edited in the \
                         database?), so its approval cannot count; an operator must check it"
                    )));
                }
                Err(e) => return Err(e),
            },
            None => None,
        };
        let Some(identity) = identity else {
            return Ok(Some(format!("there is no user '{name}'")));
        };
        custody.push(identity);
    }
    let (of_approver, of_requester) = (&custody[0].custodians, &custody[1].custodians);
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
    if let Some(changed) = &custody[0].custody_changed_at
        && changed.as_str() > requested_at
    {
        return Ok(Some(format!(
            "{approver}'s account was created, credentialed or given its role at {changed}, \
             after this change was requested ({requested_at}); another approver must decide it"
        )));
    }
    Ok(None)
}
