//! Sealed identities: a database writer without the master key cannot sign in as someone else,
//! raise a role, or make a second account look independent.
//!
//! A user's identity is everything the authorization decision and dual control read about
//! them: id, name, role (and a custom role's privileges; a built-in role's come from the code),
//! custodians and when custody last changed, every live API token (id, SHA-256, expiry) and
//! the unspent activation code. Its seal (`Vault::attest` over [`binding`]) is stored on the
//! user's row and pinned in the registry ledger ([`crate::registry::ledger`], entry kind
//! `identity`), so a row inserted, edited, deleted or restored with an older seal is refused.
//!
//! **Invariants:**
//! - Every write to a user, its custody, tokens or activation code goes through an
//!   [`IdentityChange`]: in one write transaction, every existing account it touches (or reads
//!   custody from) is checked intact first ([`IdentityChange::check`]), and every account it
//!   changed is resealed and pinned before commit ([`IdentityChange::commit`]).
//! - [`verified`] runs before a token or an activation code is accepted and for both people
//!   of every approval: the rows as they are now must be the ones sealed, and the seal the one
//!   the ledger pins. A refusal is a 401 for that user (logged as an ALERT, audited once per
//!   process), or a 503 for everyone when the ledger itself cannot be trusted.
//! - Only the process that applies migration 17 seals users that have no seal yet
//!   ([`pin_existing`]); after it every user is sealed at creation.

use serde::Serialize;

use super::privilege;
use crate::audit::{self, Actor, NewEvent, Outcome};
use crate::error::{Error, Result};
use crate::registry::Registry;
use crate::registry::ledger::{self, Change, Entry, EntryKind, Ledger};
use crate::store::user_identity::IdentityRows;
use crate::store::{self, Store, WriteTx};
use crate::vault::Vault;

/// The migration that gave users their seal (`0017_identity_seal.sql`).
const IDENTITY_MIGRATION: i64 = 17;

/// How often a check is repeated when the user's seal or the ledger moved while it read.
const RECHECKS: usize = 3;

/// The audit action of a refused identity.
pub const INTEGRITY_ACTION: &str = "identity.integrity";

/// What an identity seal covers, in a fixed order.
#[derive(Serialize)]
struct Binding<'a> {
    user_id: &'a str,
    name: &'a str,
    role: &'a str,
    /// A custom role's privileges as stored; `None` for a built-in role.
    role_privileges: Option<&'a str>,
    custody_changed_at: Option<&'a str>,
    custodians: &'a [String],
    /// `[id, SHA-256, expires_at]` of every live token, by id.
    tokens: Vec<[&'a str; 3]>,
    /// `[SHA-256, issued_by, expires_at]` of the unspent activation code.
    activation: Option<[&'a str; 3]>,
}

/// The text a user's identity seal attests.
fn binding(rows: &IdentityRows) -> String {
    let builtin = privilege::builtin(&rows.user.role).is_some();
    let b = Binding {
        user_id: &rows.user.id,
        name: &rows.user.name,
        role: &rows.user.role,
        role_privileges: if builtin {
            None
        } else {
            rows.role_privileges.as_deref()
        },
        custody_changed_at: rows.custody_changed_at.as_deref(),
        custodians: &rows.custodians,
        tokens: rows
            .tokens
            .iter()
            .map(|t| {
                [
                    t.id.as_str(),
                    t.token_sha256.as_str(),
                    t.expires_at.as_str(),
                ]
            })
            .collect(),
        activation: rows.activation.as_ref().map(|a| {
            [
                a.code_sha256.as_str(),
                a.issued_by.as_str(),
                a.expires_at.as_str(),
            ]
        }),
    };
    // A struct of strings and vectors of strings cannot fail to serialize.
    format!(
        "lockstep:identity:v1\n{}",
        serde_json::to_string(&b).unwrap_or_default()
    )
}

/// The vault of a write transaction.
fn vault_of(tx: &WriteTx) -> Result<std::sync::Arc<Vault>> {
    tx.chain_key().ok_or_else(|| {
        Error::Internal(
            "identity seal: this store has no master key; open it with serve::open_store".into(),
        )
    })
}

/// A change to identities in progress: a write transaction that holds the audit chain's lock
/// (and, on PostgreSQL, keeps every other session from writing the identity tables), the
/// ledger read under it, and the accounts it found intact. Nothing is sealed that was not
/// checked first: an account whose rows were edited in the database cannot be changed (and so
/// never resealed with the edit) until an operator restores it.
pub struct IdentityChange {
    tx: WriteTx,
    vault: std::sync::Arc<Vault>,
    ledger: Ledger,
}

impl IdentityChange {
    /// Begins a change; `Error::Untrusted` when the ledger cannot be trusted.
    pub async fn begin(store: &Store) -> Result<IdentityChange> {
        let mut tx = store.begin_write().await?;
        let vault = vault_of(&tx)?;
        let backend = tx.backend();
        store::user_identity::lock_tables(tx.conn(), backend).await?;
        let ledger = ledger::current_in(&mut tx, &vault, 0)
            .await?
            .map_err(Error::Untrusted)?;
        Ok(IdentityChange { tx, vault, ledger })
    }

    /// The transaction, for the change's own writes.
    pub fn tx(&mut self) -> &mut WriteTx {
        &mut self.tx
    }

    /// The account `user_id` as it is now, when it is the sealed and pinned one; `None` when
    /// there is no such user. Refused (409) when its rows were edited.
    pub async fn check(&mut self, user_id: &str) -> Result<Option<IdentityRows>> {
        let Some(rows) = store::user_identity::read(self.tx.conn(), user_id).await? else {
            return Ok(None);
        };
        if let Some(why) = judge(&self.vault, &self.ledger, &rows) {
            tracing::error!(user = %rows.user.name, reason = %why, "ALERT: identity refused by the integrity check");
            return Err(Error::Conflict(format!(
                "{}'s account fails its identity integrity check ({why}); it cannot be changed \
                 until an operator restores its rows",
                rows.user.name
            )));
        }
        Ok(Some(rows))
    }

    /// Seals `users` (checked, or created in this change) as their rows stand now, pins the
    /// seals in one ledger generation and commits. `cause` names the change (an audit action).
    pub async fn commit(mut self, users: &[&str], cause: &str) -> Result<()> {
        let mut changes = Vec::new();
        for user_id in users {
            let change = seal_now(&mut self.tx, &self.vault, user_id)
                .await?
                .ok_or_else(|| Error::Internal(format!("identity seal: no user '{user_id}'")))?;
            changes.push(change);
        }
        ledger::advance_all(&mut self.tx, &self.vault, &self.ledger, changes, cause).await?;
        self.tx.commit().await
    }
}

/// Seals the identity of `user_id` as its rows stand in `tx` and stores the seal; returns the
/// ledger change that pins it (`None` when there is no such user).
async fn seal_now(tx: &mut WriteTx, vault: &Vault, user_id: &str) -> Result<Option<Change>> {
    let Some(rows) = store::user_identity::read(tx.conn(), user_id).await? else {
        return Ok(None);
    };
    let seal = vault.attest(&binding(&rows))?;
    store::user_identity::set_seal(tx.conn(), user_id, &seal).await?;
    Ok(Some(Change::Put(Entry::identity(user_id, &seal))))
}

/// Why `rows` are not the identity `ledger` pins, if they are not.
fn judge(vault: &Vault, ledger: &Ledger, rows: &IdentityRows) -> Option<String> {
    let Some(seal) = rows.seal.as_deref() else {
        return Some("the account has no identity seal (inserted in the database?)".into());
    };
    if !vault.check_attestation(&binding(rows), seal) {
        return Some(
            "the account's rows are not the ones sealed: a token, custodian, role or activation \
             code was edited in the database"
                .into(),
        );
    }
    ledger
        .check(EntryKind::Identity, &rows.user.id, Some(seal))
        .err()
        .map(|m| m.describe("the account's identity seal", ledger.generation()))
}

/// The identity of `user_id` when it is the one sealed and pinned now. A user whose rows were
/// edited is refused as unauthenticated (and alerted); `Error::Untrusted` when the ledger itself
/// cannot be trusted. `None` when there is no such user.
pub async fn verified(
    store: &Store,
    registry: &Registry,
    user_id: &str,
) -> Result<Option<IdentityRows>> {
    let mut last: Option<(u64, Option<String>)> = None;
    let mut checks = 0;
    loop {
        checks += 1;
        let ledger = match registry.ledger().await? {
            Ok(ledger) => ledger,
            Err(why) => {
                registry.ledger_untrusted(&why).await?;
                return Err(Error::Untrusted(why));
            }
        };
        let Some(rows) = store::user_identity::read_from(store.pool(), user_id).await? else {
            return Ok(None);
        };
        let Some(why) = judge(registry.vault(), &ledger, &rows) else {
            return Ok(Some(rows));
        };
        // A token issued (or a seal pinned) between the reads looks like an edit: read again
        // while the ledger or the user's seal moves.
        let now = (ledger.generation(), rows.seal.clone());
        if checks < RECHECKS && last.as_ref() != Some(&now) {
            last = Some(now);
            continue;
        }
        refuse(store, registry, &rows, &why).await?;
        return Err(Error::Unauthenticated(
            "the account's identity fails its integrity check (edited in the database?); an \
             operator must check it",
        ));
    }
}

/// Logs and (once per process and reason) audits a refused identity.
async fn refuse(store: &Store, registry: &Registry, rows: &IdentityRows, why: &str) -> Result<()> {
    tracing::error!(user = %rows.user.name, reason = %why, "ALERT: identity refused by the integrity check");
    // Once per account and seal: what is refused, not how (the reason names a generation).
    let told = format!(
        "identity\n{}\n{}",
        rows.user.id,
        rows.seal.as_deref().unwrap_or("-")
    );
    if !registry.first_told(told) {
        return Ok(());
    }
    let mut tx = store.begin_write().await?;
    audit::append(
        &mut tx,
        NewEvent {
            actor: &Actor::system(),
            action: INTEGRITY_ACTION,
            target: &rows.user.id,
            outcome: Outcome::Failure,
            detail: serde_json::json!({ "name": rows.user.name, "reason": why }),
        },
    )
    .await?;
    tx.commit().await
}

/// Every user whose identity seal verifies against its rows now, as ledger entries (for the
/// ledger's bootstrap and the operator's reseal).
pub async fn verified_entries(tx: &mut WriteTx, vault: &Vault) -> Result<Vec<Entry>> {
    let mut entries = Vec::new();
    for id in store::user_identity::user_ids(tx.conn()).await? {
        let Some(rows) = store::user_identity::read(tx.conn(), &id).await? else {
            continue;
        };
        if let Some(seal) = rows.seal.as_deref()
            && vault.check_attestation(&binding(&rows), seal)
        {
            entries.push(Entry::identity(&id, seal));
        }
    }
    Ok(entries)
}

/// Seals every existing user, in the process that applies [`IDENTITY_MIGRATION`] only (later,
/// an unsealed user is an inserted one and stays refused), and pins them all in one ledger
/// generation.
pub async fn pin_existing(store: &Store, vault: &Vault) -> Result<()> {
    if !store.applied_now(IDENTITY_MIGRATION) {
        return Ok(());
    }
    let mut tx = store.begin_write().await?;
    let backend = tx.backend();
    store::user_identity::lock_tables(tx.conn(), backend).await?;
    let mut changes = Vec::new();
    for id in store::user_identity::user_ids(tx.conn()).await? {
        changes.extend(seal_now(&mut tx, vault, &id).await?);
    }
    if changes.is_empty() {
        return Ok(());
    }
    let sealed = changes.len();
    let current = ledger::current_in(&mut tx, vault, 0)
        .await?
        .map_err(Error::Untrusted)?;
    ledger::advance_all(&mut tx, vault, &current, changes, "identity-upgrade").await?;
    tx.commit().await?;
    tracing::info!(
        users = sealed,
        "identity seals: sealed and pinned every existing user"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::user_identity::{LiveToken, PendingActivation};
    use crate::store::users::UserRow;

    fn rows(role: &str) -> IdentityRows {
        IdentityRows {
            user: UserRow {
                id: "usr_1".into(),
                name: "bob".into(),
                role: role.into(),
                created_at: "2026-12-01T00:00:00Z".into(),
                email: None,
            },
            seal: None,
            custody_changed_at: Some("2026-12-01T00:00:00Z".into()),
            custodians: vec!["bob".into()],
            role_privileges: Some("manage-users".into()),
            tokens: vec![LiveToken {
                id: "tok_1".into(),
                token_sha256: "aa".into(),
                expires_at: "2027-01-01T00:00:00Z".into(),
            }],
            activation: None,
        }
    }

    #[test]
    fn every_part_of_an_identity_changes_its_binding() {
        let base = rows("custom");
        let b = binding(&base);
        let mut edits: Vec<IdentityRows> = Vec::new();
        let mut r = base.clone();
        r.user.role = "other".into();
        edits.push(r);
        let mut r = base.clone();
        r.role_privileges = Some("manage-users,approve-listeners".into());
        edits.push(r);
        let mut r = base.clone();
        r.custodians.push("alice".into());
        edits.push(r);
        let mut r = base.clone();
        r.custodians.clear();
        edits.push(r);
        let mut r = base.clone();
        r.custody_changed_at = Some("2020-01-01T00:00:00Z".into());
        edits.push(r);
        let mut r = base.clone();
        r.tokens[0].expires_at = "2099-01-01T00:00:00Z".into();
        edits.push(r);
        let mut r = base.clone();
        r.tokens.push(LiveToken {
            id: "tok_2".into(),
            token_sha256: "bb".into(),
            expires_at: "2027-01-01T00:00:00Z".into(),
        });
        edits.push(r);
        let mut r = base.clone();
        r.activation = Some(PendingActivation {
            code_sha256: "cc".into(),
            issued_by: "cli".into(),
            expires_at: "2027-01-01T00:00:00Z".into(),
        });
        edits.push(r);
        let mut r = base.clone();
        r.user.id = "usr_2".into();
        edits.push(r);
        for (i, e) in edits.iter().enumerate() {
            assert_ne!(binding(e), b, "edit {i} left the binding as it was");
        }
    }

    #[test]
    fn a_builtin_roles_privileges_come_from_the_code_not_the_row() {
        let mut a = rows("admin");
        let b = binding(&a);
        a.role_privileges = Some("everything".into());
        assert_eq!(binding(&a), b);
    }
}
