//! The upgrade that binds the passwords resets keep to their account. They were sealed with
//! AAD naming only their reset item (`reset-item:ITEM:pending`, `…:given`), so a database
//! writer who re-pointed an item or a kept row at another account had Lockstep try one
//! account's password on another account's target. They are now sealed with
//! `vault::reset_pending_aad` / `reset_given_aad` (item and account). The first start after the
//! upgrade (the server's, or `lockstep reconcile`'s, before its reset engine starts) re-seals
//! those still sealed the old way, for the account their row names then, and appends a
//! `reset.passwords.bound` audit event; once that event is in the trail (authentic under the
//! audit-chain key, so a database writer cannot forge it), no start opens anything the old way
//! again: an old ciphertext copied back from a backup stays unopenable. (A row re-pointed
//! *before* the upgrade is bound where it was re-pointed; see `docs/security.md`.)

use crate::audit::{self, Actor, NewEvent, Outcome};
use crate::error::Result;
use crate::store::resets::{ItemSecret, ItemSecretPlace};
use crate::store::{self, Store};
use crate::vault::{Vault, reset_given_aad, reset_pending_aad};

/// The AAD a password was sealed with before the upgrade.
fn legacy_aad(s: &ItemSecret) -> String {
    match s.place {
        ItemSecretPlace::Given => format!("reset-item:{}:given", s.item_id),
        _ => format!("reset-item:{}:pending", s.item_id),
    }
}

/// The AAD it is sealed with now.
fn bound_aad(s: &ItemSecret) -> String {
    match s.place {
        ItemSecretPlace::Given => reset_given_aad(&s.item_id, &s.account_id),
        _ => reset_pending_aad(&s.item_id, &s.account_id),
    }
}

/// The audit event that says the upgrade ran.
pub const BOUND_ACTION: &str = "reset.passwords.bound";

/// Re-seals every password resets keep that is still sealed the old way, unless the upgrade
/// already ran (an authentic audit event of it is in the trail) or events of it exist and
/// none is authentic; returns how many. One that opens neither
/// way is left as it is (whatever tries it later reports it).
pub async fn bind_to_accounts(store: &Store, vault: &Vault) -> Result<usize> {
    // Any authentic event says it ran. Events that are all inauthentic (forged or edited in
    // the database, or written under another master key) say nothing either way: nothing is
    // opened the old way on their word, and the operator is told.
    let said = store::audit::with_action(store.pool(), BOUND_ACTION, 16).await?;
    if said.iter().any(|e| audit::authentic(vault, e)) {
        return Ok(0);
    }
    if let Some(e) = said.first() {
        tracing::error!(
            seq = e.seq,
            "ALERT: the {BOUND_ACTION} audit events fail their keyed hash (edited or forged in \
             the database, or written under another master key); passwords sealed the old way \
             are not bound and stay unopenable; check the chain with `lockstep audit verify`"
        );
        return Ok(0);
    }
    let mut bound = 0;
    for s in store::resets::item_secrets(store.pool()).await? {
        if vault.open_secret(&s.sealed, &bound_aad(&s)).is_ok() {
            continue;
        }
        let Ok(password) = vault.open_secret(&s.sealed, &legacy_aad(&s)) else {
            continue;
        };
        let sealed = vault.seal_secret(&password, &bound_aad(&s))?;
        let mut tx = store.begin_write().await?;
        if store::resets::reseal_item_secret(tx.conn(), &s, &sealed).await? {
            bound += 1;
        }
        tx.commit().await?;
    }
    audit::record(
        store,
        NewEvent {
            actor: &Actor::system(),
            action: BOUND_ACTION,
            target: "reset-passwords",
            outcome: Outcome::Success,
            detail: serde_json::json!({ "bound": bound }),
        },
    )
    .await?;
    if bound > 0 {
        tracing::info!(
            bound,
            "passwords kept by resets are now sealed for their account"
        );
    }
    Ok(bound)
}
