//! The registry ledger: what is approved now, and in which generation.
//!
//! A seal (`Vault::attest`) proves that a row was approved once, not that it is the approval in
//! force: a database writer without the master key could restore an older listener row, a
//! removed publisher key or an older reset-command template together with its old, valid seal,
//! or delete a listener's row and lift a guard. The ledger binds time. It is one row holding a
//! generation and the list of every sealed thing approved now ([`Entry`]: its kind, subject and
//! the exact seal string on its row; for a listener also its name and where it applies), sealed
//! with the master key over both.
//!
//! **Invariants:**
//! - Every approved change that writes or clears a seal replaces or removes exactly its one
//!   entry ([`Ledger::next`]) in the same write transaction, raises the generation by one,
//!   reseals the ledger and appends a `registry.generation` audit event naming the generation
//!   and the entries' SHA-256 ([`advance`]). The ledger is never rebuilt from the rows as they
//!   are, which would launder a row restored in the database; only the operator's
//!   [`reseal`] does that, on purpose and audited.
//! - Before every use the row's seal must hold, and its generation and entries must be the
//!   ones the newest `registry.generation` event (authentic under the audit-chain key) records,
//!   and no older than the highest generation this process has seen ([`open`]). Otherwise
//!   nothing the registry approved runs: every listener and every sealed template is refused,
//!   and resets fail closed.
//! - Generation 0 is the empty ledger and needs no row, as long as the audit trail records no
//!   generation. Existing deployments are pinned at generation 1 by [`bootstrap`] when a
//!   process first opens the store with the master key after the migration.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::Association;
use super::integrity::approval_holds;
use super::keys::trust_binding;
use crate::audit::{self, Actor, NewEvent, Outcome};
use crate::error::{Error, Result};
use crate::inventory::resource_types::command_binding;
use crate::states::{KeyStatus, ListenerStatus};
use crate::store::registry_ledger::{GENERATION_ACTION, LedgerRead, LedgerRow};
use crate::store::{self, Store, WriteTx};
use crate::vault::Vault;

/// What the operator does about a ledger that cannot be trusted.
pub const RESEAL_HINT: &str = "nothing the registry approved runs until an operator checks the \
     database (after a legitimate restore) and runs `lockstep registry reseal`";

/// The audit action of the operator's [`reseal`].
pub const RESEALED_ACTION: &str = "registry.resealed";

/// What an entry is the approval of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EntryKind {
    /// A listener's approval seal (subject: the listener's id).
    Listener,
    /// A publisher key's trust seal (subject: the key id).
    Key,
    /// A resource type's reset-command seal (subject: the type's name).
    ResetCommand,
    /// A user's identity seal (subject: the user's id; `identity::seal`).
    Identity,
    /// An access policy's seal (subject: `SCOPE/ID`; `access::policy`).
    AccessPolicy,
}

/// One approved, sealed thing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub kind: EntryKind,
    pub subject: String,
    /// The seal exactly as its row stores it. Seals carry a fresh nonce, so even the same
    /// content approved again has another seal: an older row never matches.
    pub seal: String,
    /// Listeners only: their name and where they apply, so a listener whose row is gone is
    /// still known, and still guards what it guarded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reach: Option<Reach>,
}

/// Where an approved listener applies (from its sealed association).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reach {
    pub name: String,
    pub phases: Vec<String>,
    pub modes: Vec<String>,
    pub resource_types: Vec<String>,
}

impl Reach {
    pub fn covers(&self, resource_type: &str, phase: &str, mode: &str) -> bool {
        self.resource_types.iter().any(|t| t == resource_type)
            && self.phases.iter().any(|p| p == phase)
            && self.modes.iter().any(|m| m == mode)
    }
}

impl Entry {
    pub fn listener(id: &str, name: &str, seal: &str, association: &Association) -> Entry {
        let a = association.clone().normalized();
        Entry {
            kind: EntryKind::Listener,
            subject: id.to_string(),
            seal: seal.to_string(),
            reach: Some(Reach {
                name: name.to_string(),
                phases: a.phases,
                modes: a.modes,
                resource_types: a.resource_types,
            }),
        }
    }

    pub fn key(key_id: &str, seal: &str) -> Entry {
        Entry {
            kind: EntryKind::Key,
            subject: key_id.to_string(),
            seal: seal.to_string(),
            reach: None,
        }
    }

    pub fn reset_command(resource_type: &str, seal: &str) -> Entry {
        Entry {
            kind: EntryKind::ResetCommand,
            subject: resource_type.to_string(),
            seal: seal.to_string(),
            reach: None,
        }
    }

    pub fn identity(user_id: &str, seal: &str) -> Entry {
        Entry {
            kind: EntryKind::Identity,
            subject: user_id.to_string(),
            seal: seal.to_string(),
            reach: None,
        }
    }

    pub fn access_policy(subject: &str, seal: &str) -> Entry {
        Entry {
            kind: EntryKind::AccessPolicy,
            subject: subject.to_string(),
            seal: seal.to_string(),
            reach: None,
        }
    }

    fn key_of(&self) -> (EntryKind, &str) {
        (self.kind, &self.subject)
    }
}

/// What one approved change does to the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Adds the entry, or replaces the one of the same kind and subject.
    Put(Entry),
    /// Removes the entry of this kind and subject, if there is one.
    Remove(EntryKind, String),
}

/// How a row differs from its ledger entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mismatch {
    /// The row is sealed but the ledger approves nothing for it: restored after its removal.
    Unlisted,
    /// The row's seal is not the entry's: an older (or other) approval.
    Superseded,
    /// The ledger approves it but the row has no seal, or is gone.
    Missing,
}

impl Mismatch {
    /// The reason, for `what` (e.g. "its approval record") in ledger generation `generation`.
    pub fn describe(self, what: &str, generation: u64) -> String {
        match self {
            Mismatch::Unlisted => format!(
                "{what} has no approval in the registry ledger, generation {generation} \
                 (restored from a backup after its removal?)"
            ),
            Mismatch::Superseded => format!(
                "{what} is older than (or other than) the approved one in the registry ledger, \
                 generation {generation} (restored from a backup?)"
            ),
            Mismatch::Missing => format!(
                "{what} is missing, though the registry ledger, generation {generation}, holds \
                 its approval (deleted in the database?)"
            ),
        }
    }
}

/// A ledger whose seal and witnesses held (or the empty generation 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ledger {
    generation: u64,
    /// Sorted by (kind, subject), one per pair.
    entries: Vec<Entry>,
}

impl Ledger {
    /// Generation 0: nothing approved yet.
    pub fn empty() -> Ledger {
        Ledger {
            generation: 0,
            entries: Vec::new(),
        }
    }

    fn new(generation: u64, mut entries: Vec<Entry>) -> Ledger {
        entries.sort_by(|a, b| a.key_of().cmp(&b.key_of()));
        entries.dedup_by(|a, b| a.key_of() == b.key_of());
        Ledger {
            generation,
            entries,
        }
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn get(&self, kind: EntryKind, subject: &str) -> Option<&Entry> {
        self.entries
            .binary_search_by(|e| e.key_of().cmp(&(kind, subject)))
            .ok()
            .map(|i| &self.entries[i])
    }

    /// The approved listeners.
    pub fn listeners(&self) -> impl Iterator<Item = &Entry> {
        self.entries
            .iter()
            .filter(|e| e.kind == EntryKind::Listener)
    }

    /// How many entries of `kind` it holds.
    pub fn count(&self, kind: EntryKind) -> usize {
        self.entries.iter().filter(|e| e.kind == kind).count()
    }

    /// Whether a row of `kind` and `subject` whose seal is `seal` (`None`: unsealed or gone) is
    /// the approval this ledger holds. Neither sealed nor listed is fine: nothing is approved.
    pub fn check(
        &self,
        kind: EntryKind,
        subject: &str,
        seal: Option<&str>,
    ) -> std::result::Result<(), Mismatch> {
        match (self.get(kind, subject), seal) {
            (None, None) => Ok(()),
            (None, Some(_)) => Err(Mismatch::Unlisted),
            (Some(_), None) => Err(Mismatch::Missing),
            (Some(e), Some(s)) if e.seal == s => Ok(()),
            (Some(_), Some(_)) => Err(Mismatch::Superseded),
        }
    }

    /// The next generation: exactly the one entry `change` names replaced or removed, every
    /// other entry as it was.
    pub fn next(&self, change: Change) -> Ledger {
        self.next_all([change])
    }

    /// The next generation with every one of `changes` applied in order: one generation for
    /// all of them (an upgrade that seals what exists).
    pub fn next_all(&self, changes: impl IntoIterator<Item = Change>) -> Ledger {
        let mut entries = self.entries.clone();
        for change in changes {
            match change {
                Change::Put(entry) => {
                    entries.retain(|e| e.key_of() != entry.key_of());
                    entries.push(entry);
                }
                Change::Remove(kind, subject) => {
                    entries.retain(|e| e.key_of() != (kind, subject.as_str()));
                }
            }
        }
        Ledger::new(self.generation + 1, entries)
    }

    /// The entries as stored and sealed.
    fn entries_json(&self) -> String {
        // A vector of structs of strings cannot fail to serialize.
        serde_json::to_string(&self.entries).unwrap_or_default()
    }

    /// The row that stores this ledger, sealed.
    fn sealed(&self, vault: &Vault) -> Result<LedgerRow> {
        let entries = self.entries_json();
        let generation = i64::try_from(self.generation)
            .map_err(|_| Error::Internal("registry ledger: generation out of range".into()))?;
        Ok(LedgerRow {
            seal: vault.attest(&binding(self.generation, &entries))?,
            generation,
            entries,
            updated_at: crate::time::now(),
        })
    }
}

/// What the ledger's seal covers.
fn binding(generation: u64, entries: &str) -> String {
    format!("lockstep:registry-ledger:v1\n{generation}\n{entries}")
}

/// SHA-256 of the entries as stored, hex: what a `registry.generation` event records.
fn digest(entries: &str) -> String {
    hex::encode(Sha256::digest(entries.as_bytes()))
}

/// What a `registry.generation` event says.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
struct Witness {
    generation: u64,
    entries_sha256: String,
}

impl Witness {
    fn parse(detail: &str) -> Option<Witness> {
        #[derive(Deserialize)]
        struct Detail {
            generation: u64,
            entries_sha256: String,
        }
        let d: Detail = serde_json::from_str(detail).ok()?;
        Some(Witness {
            generation: d.generation,
            entries_sha256: d.entries_sha256,
        })
    }
}

/// Judges what was read: the row's seal and entries, its generation and digest against the
/// newest `registry.generation` event (which must be authentic under the audit-chain key), and
/// its generation against `seen`, the highest this process has seen. `Err` says why nothing
/// the registry approved may run.
pub fn open(vault: &Vault, read: &LedgerRead, seen: u64) -> std::result::Result<Ledger, String> {
    let witness = match &read.newest_event {
        None => None,
        Some(e) if !audit::authentic(vault, e) => {
            return Err(format!(
                "the newest {GENERATION_ACTION} audit event (seq {}) fails its keyed hash \
                 (edited or forged in the database?); {RESEAL_HINT}",
                e.seq
            ));
        }
        Some(e) => Some(Witness::parse(&e.detail).ok_or_else(|| {
            format!(
                "the newest {GENERATION_ACTION} audit event (seq {}) names no generation; \
                 {RESEAL_HINT}",
                e.seq
            )
        })?),
    };
    let ledger = match (&read.row, witness) {
        (None, None) => Ledger::empty(),
        (None, Some(w)) => {
            return Err(format!(
                "the registry ledger is missing, but the audit trail records generation {} \
                 (deleted in the database?); {RESEAL_HINT}",
                w.generation
            ));
        }
        (Some(row), witness) => {
            let generation = u64::try_from(row.generation).unwrap_or(u64::MAX);
            if !vault.check_attestation(&binding(generation, &row.entries), &row.seal) {
                return Err(format!(
                    "the registry ledger fails its seal (edited outside Lockstep?); {RESEAL_HINT}"
                ));
            }
            let entries: Vec<Entry> = serde_json::from_str(&row.entries).map_err(|e| {
                format!("the registry ledger's entries cannot be read ({e}); {RESEAL_HINT}")
            })?;
            match witness {
                None => {
                    return Err(format!(
                        "the registry ledger is at generation {generation}, but the audit trail \
                         records none (audit events deleted?); {RESEAL_HINT}"
                    ));
                }
                Some(w) if w.generation > generation => {
                    return Err(format!(
                        "the registry ledger is at generation {generation}, older than \
                         generation {} that the audit trail records (rolled back, or restored \
                         from a backup?); {RESEAL_HINT}",
                        w.generation
                    ));
                }
                Some(w) if w.generation < generation => {
                    return Err(format!(
                        "the registry ledger is at generation {generation}, but the audit \
                         trail's newest is generation {} (audit events deleted?); {RESEAL_HINT}",
                        w.generation
                    ));
                }
                Some(w) if w.entries_sha256 != digest(&row.entries) => {
                    return Err(format!(
                        "the registry ledger's entries are not the ones the audit trail records \
                         for generation {generation}; {RESEAL_HINT}"
                    ));
                }
                Some(_) => {}
            }
            Ledger::new(generation, entries)
        }
    };
    not_behind(ledger, seen)
}

/// `ledger`, unless it is older than `seen`, the highest generation this process has seen.
pub fn not_behind(ledger: Ledger, seen: u64) -> std::result::Result<Ledger, String> {
    if ledger.generation < seen {
        return Err(format!(
            "the registry ledger is at generation {}, older than generation {seen} that this \
             server has already seen (rolled back while it ran?); {RESEAL_HINT}",
            ledger.generation
        ));
    }
    Ok(ledger)
}

/// The ledger inside a write transaction, under the audit chain's lock (so another server on
/// the same PostgreSQL cannot advance it meanwhile). `Ok(Err(why))` when it cannot be trusted.
pub async fn current_in(
    tx: &mut WriteTx,
    vault: &Vault,
    seen: u64,
) -> Result<std::result::Result<Ledger, String>> {
    let backend = tx.backend();
    store::audit::lock_chain(tx.conn(), backend).await?;
    let read = store::registry_ledger::read(tx.conn()).await?;
    Ok(open(vault, &read, seen))
}

/// Applies `change` to `current` (read by [`current_in`] in this transaction): the next
/// generation is sealed, written and witnessed in the audit trail. Returns the new generation.
/// `cause` names what changed it (a change request id).
pub async fn advance(
    tx: &mut WriteTx,
    vault: &Vault,
    current: &Ledger,
    change: Change,
    cause: &str,
) -> Result<u64> {
    advance_all(tx, vault, current, [change], cause).await
}

/// [`advance`] with every one of `changes` in one generation.
pub async fn advance_all(
    tx: &mut WriteTx,
    vault: &Vault,
    current: &Ledger,
    changes: impl IntoIterator<Item = Change>,
    cause: &str,
) -> Result<u64> {
    let next = current.next_all(changes);
    write(tx, vault, &next, cause).await?;
    Ok(next.generation)
}

/// Writes `ledger` and appends its `registry.generation` event.
async fn write(tx: &mut WriteTx, vault: &Vault, ledger: &Ledger, cause: &str) -> Result<()> {
    let row = ledger.sealed(vault)?;
    store::registry_ledger::put(tx.conn(), &row).await?;
    audit::append(
        tx,
        NewEvent {
            actor: &Actor::system(),
            action: GENERATION_ACTION,
            target: "registry",
            outcome: Outcome::Success,
            detail: serde_json::json!({
                "generation": ledger.generation,
                "entries_sha256": digest(&row.entries),
                "cause": cause,
            }),
        },
    )
    .await
}

/// Every sealed thing whose seal verifies, as the rows are now: active listeners, trusted
/// keys, approved templates, user identities. Only [`bootstrap`] and [`reseal`] build a
/// ledger this way.
async fn verified_entries(tx: &mut WriteTx, vault: &Vault) -> Result<Vec<Entry>> {
    let mut entries = Vec::new();
    for l in store::listeners::active(tx.conn()).await? {
        let (Some(seal), Some(version_id)) = (&l.approval_seal, &l.current_version_id) else {
            continue;
        };
        if !ListenerStatus::Active.is(&l.status) {
            continue;
        }
        let Some(v) = store::listeners::get_version(tx.conn(), version_id).await? else {
            continue;
        };
        let Some(a) = l.association.as_deref().and_then(Association::parse_stored) else {
            continue;
        };
        if approval_holds(vault, &l, &v, &a) {
            entries.push(Entry::listener(&l.id, &l.name, seal, &a));
        }
    }
    for k in store::publisher_keys::list(tx.conn()).await? {
        if let Some(seal) = &k.trust_seal
            && KeyStatus::Trusted.is(&k.status)
            && vault.check_attestation(&trust_binding(&k.key_id, &k.public_key), seal)
        {
            entries.push(Entry::key(&k.key_id, seal));
        }
    }
    for t in store::resource_types::list(tx.conn()).await? {
        if let (Some(json), Some(seal)) = (&t.reset_command, &t.reset_command_seal)
            && vault.check_attestation(&command_binding(&t.name, json), seal)
        {
            entries.push(Entry::reset_command(&t.name, seal));
        }
    }
    entries.extend(crate::identity::seal::verified_entries(tx, vault).await?);
    entries.extend(crate::access::policy::verified_entries(tx, vault).await?);
    Ok(entries)
}

/// The migration that made the ledger's table (`0016_registry_ledger.sql`).
const LEDGER_MIGRATION: i64 = 16;

/// Pins an existing deployment, in the process that applies [`LEDGER_MIGRATION`]: when there is
/// no ledger row and the audit trail records no generation, generation 1 is built from the
/// rows whose seals verify (nothing is written when
/// nothing is sealed: the empty generation 0 needs no row). A missing row that the audit trail
/// says existed is tampering: it is left for every check to refuse, and logged. Runs under the
/// write lock (and the audit chain's lock on PostgreSQL), so two processes cannot both pin.
pub async fn bootstrap(store: &Store, vault: &Vault) -> Result<()> {
    let mut tx = store.begin_write().await?;
    let backend = tx.backend();
    store::audit::lock_chain(tx.conn(), backend).await?;
    let read = store::registry_ledger::read(tx.conn()).await?;
    match (&read.row, &read.newest_event) {
        (Some(_), _) => return Ok(()),
        (None, Some(e)) => {
            tracing::error!(
                audit_seq = e.seq,
                "ALERT: registry ledger: the row is missing, but the audit trail records a \
                 generation (deleted in the database?); {RESEAL_HINT}"
            );
            return Ok(());
        }
        // Only the upgrade itself pins what is sealed: after it, every approval writes a row,
        // so no row and no generation event later means both were deleted. Pinning then would
        // launder rows restored with their old seals; they stay refused until `reseal`.
        (None, None) if !store.applied_now(LEDGER_MIGRATION) => return Ok(()),
        (None, None) => {}
    }
    let entries = verified_entries(&mut tx, vault).await?;
    if entries.is_empty() {
        return Ok(());
    }
    let ledger = Ledger::new(1, entries);
    write(&mut tx, vault, &ledger, "bootstrap").await?;
    tx.commit().await?;
    tracing::info!(
        listeners = ledger.count(EntryKind::Listener),
        keys = ledger.count(EntryKind::Key),
        reset_commands = ledger.count(EntryKind::ResetCommand),
        identities = ledger.count(EntryKind::Identity),
        access_policies = ledger.count(EntryKind::AccessPolicy),
        "registry ledger: pinned what is approved now at generation 1"
    );
    Ok(())
}

/// What [`reseal`] made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resealed {
    pub generation: u64,
    pub listeners: usize,
    pub keys: usize,
    pub reset_commands: usize,
    pub identities: usize,
    pub access_policies: usize,
}

/// The operator's repair after a legitimate restore (`lockstep registry reseal`): the ledger is
/// rebuilt from the rows whose seals verify, whatever it held, at a generation above both the
/// ledger's (when its seal holds) and the audit trail's newest; audited as
/// `registry.resealed`. Whatever sealed rows the database holds become the approved state, so
/// check them first.
pub async fn reseal(store: &Store, vault: &Vault, actor: &Actor) -> Result<Resealed> {
    let mut tx = store.begin_write().await?;
    let backend = tx.backend();
    store::audit::lock_chain(tx.conn(), backend).await?;
    let read = store::registry_ledger::read(tx.conn()).await?;
    let stored = read
        .row
        .as_ref()
        .and_then(|r| u64::try_from(r.generation).ok().map(|g| (g, r)))
        .filter(|(g, r)| vault.check_attestation(&binding(*g, &r.entries), &r.seal))
        .map_or(0, |(g, _)| g);
    let audited = read
        .newest_event
        .as_ref()
        .filter(|e| audit::authentic(vault, e))
        .and_then(|e| Witness::parse(&e.detail))
        .map_or(0, |w| w.generation);
    let generation = stored.max(audited).checked_add(1).ok_or_else(|| {
        Error::Internal("registry ledger: the generation cannot grow any further".into())
    })?;
    let ledger = Ledger::new(generation, verified_entries(&mut tx, vault).await?);
    write(&mut tx, vault, &ledger, "reseal").await?;
    let done = Resealed {
        generation,
        listeners: ledger.count(EntryKind::Listener),
        keys: ledger.count(EntryKind::Key),
        reset_commands: ledger.count(EntryKind::ResetCommand),
        identities: ledger.count(EntryKind::Identity),
        access_policies: ledger.count(EntryKind::AccessPolicy),
    };
    audit::append(
        &mut tx,
        NewEvent {
            actor,
            action: RESEALED_ACTION,
            target: "registry",
            outcome: Outcome::Success,
            detail: serde_json::json!({
                "generation": generation,
                "previous_generation": read.row.as_ref().map(|r| r.generation),
                "audit_generation": audited,
                "listeners": done.listeners,
                "keys": done.keys,
                "reset_commands": done.reset_commands,
                "identities": done.identities,
                "access_policies": done.access_policies,
            }),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::audit::AuditRow;
    use crate::vault::MasterKey;

    fn vault() -> Vault {
        Vault::new(MasterKey::from_bytes([9u8; 32]))
    }

    fn association(types: &[&str]) -> Association {
        Association {
            phases: vec!["pre-reset".into()],
            modes: vec!["agentless".into()],
            resource_types: types.iter().map(|t| t.to_string()).collect(),
            order: 10,
            parameters: vec!["DC1".into()],
        }
    }

    fn sample() -> Ledger {
        Ledger::empty()
            .next(Change::Put(Entry::key("k1", "seal-k1")))
            .next(Change::Put(Entry::listener(
                "lst_1",
                "change-freeze",
                "seal-l1",
                &association(&["Linux"]),
            )))
            .next(Change::Put(Entry::reset_command("Linux", "seal-t1")))
    }

    /// The row and the `registry.generation` event that `write` would store for `ledger`.
    fn stored(vault: &Vault, ledger: &Ledger, seq: i64) -> LedgerRead {
        let row = ledger.sealed(vault).unwrap();
        let mut event = AuditRow {
            seq,
            id: format!("evt_{seq}"),
            at: "2026-01-01T00:00:00.000000Z".into(),
            actor: "system".into(),
            action: GENERATION_ACTION.into(),
            target: "registry".into(),
            outcome: "success".into(),
            source_ip: None,
            detail: lockstep_canonical_json::to_string(&serde_json::json!({
                "generation": ledger.generation, "entries_sha256": digest(&row.entries),
                "cause": "test",
            })),
            prev_hash: "0".repeat(64),
            hash: String::new(),
            chain_version: audit::KEYED,
            key_id: None,
        };
        let (key_id, hash) = audit::keyed_hash(vault, &event).unwrap();
        event.key_id = Some(key_id);
        event.hash = hash;
        LedgerRead {
            row: Some(row),
            newest_event: Some(event),
        }
    }

    #[test]
    fn a_change_replaces_or_removes_exactly_its_one_entry() {
        let l = sample();
        assert_eq!(l.generation(), 3);
        assert_eq!(l.entries.len(), 3);
        let edited = l.next(Change::Put(Entry::listener(
            "lst_1",
            "change-freeze",
            "seal-l2",
            &association(&["Linux", "AIX"]),
        )));
        assert_eq!(edited.generation(), 4);
        assert_eq!(edited.entries.len(), 3, "replaced, not added");
        let entry = edited.get(EntryKind::Listener, "lst_1").unwrap();
        assert_eq!(entry.seal, "seal-l2");
        assert!(
            entry
                .reach
                .as_ref()
                .unwrap()
                .covers("AIX", "pre-reset", "agentless")
        );
        assert_eq!(
            edited.get(EntryKind::Key, "k1"),
            l.get(EntryKind::Key, "k1")
        );
        assert_eq!(
            edited.get(EntryKind::ResetCommand, "Linux"),
            l.get(EntryKind::ResetCommand, "Linux")
        );

        // The same subject under another kind is another entry.
        let removed = edited.next(Change::Remove(EntryKind::Key, "lst_1".into()));
        assert_eq!(removed.entries, edited.entries);
        let removed = edited.next(Change::Remove(EntryKind::Listener, "lst_1".into()));
        assert_eq!(removed.generation(), 5);
        assert!(removed.get(EntryKind::Listener, "lst_1").is_none());
        assert_eq!(removed.entries.len(), 2);
        assert_eq!(removed.listeners().count(), 0);
    }

    #[test]
    fn a_row_matches_only_the_seal_its_entry_holds() {
        let l = sample();
        assert_eq!(l.check(EntryKind::Key, "k1", Some("seal-k1")), Ok(()));
        assert_eq!(
            l.check(EntryKind::Key, "k1", Some("an-older-seal")),
            Err(Mismatch::Superseded)
        );
        assert_eq!(
            l.check(EntryKind::Key, "k2", Some("seal-k2")),
            Err(Mismatch::Unlisted)
        );
        assert_eq!(
            l.check(EntryKind::ResetCommand, "Linux", None),
            Err(Mismatch::Missing)
        );
        assert_eq!(l.check(EntryKind::ResetCommand, "AIX", None), Ok(()));
        let reach = l.get(EntryKind::Listener, "lst_1").unwrap().reach.clone();
        let reach = reach.unwrap();
        assert!(reach.covers("Linux", "pre-reset", "agentless"));
        assert!(!reach.covers("Linux", "post-reset", "agentless"));
        assert!(!reach.covers("Linux", "pre-reset", "agent"));
        assert!(!reach.covers("Windows", "pre-reset", "agentless"));
        let why = Mismatch::Superseded.describe("its approval record", 7);
        assert!(
            why.contains("generation 7") && why.contains("restored"),
            "{why}"
        );
    }

    #[test]
    fn a_stored_ledger_opens_only_with_its_seal_and_its_witness() {
        let v = vault();
        let l = sample();
        let read = stored(&v, &l, 40);
        assert_eq!(open(&v, &read, 0), Ok(l.clone()));
        assert_eq!(open(&v, &read, 3), Ok(l.clone()));

        // Entries edited (a listener's seal swapped for an older one): the seal fails.
        let mut edited = read.clone();
        let row = edited.row.as_mut().unwrap();
        row.entries = row.entries.replace("seal-l1", "seal-l0");
        let why = open(&v, &edited, 0).unwrap_err();
        assert!(
            why.contains("fails its seal") && why.contains("reseal"),
            "{why}"
        );

        // Another master key's seal, or none that parses.
        let other = Vault::new(MasterKey::from_bytes([1u8; 32]));
        assert!(open(&other, &read, 0).unwrap_err().contains("keyed hash"));
        let mut garbage = read.clone();
        garbage.row.as_mut().unwrap().seal = "k.00.00".into();
        assert!(
            open(&v, &garbage, 0)
                .unwrap_err()
                .contains("fails its seal")
        );

        // Its witness edited: the event's keyed hash fails.
        let mut forged = read.clone();
        let e = forged.newest_event.as_mut().unwrap();
        e.detail = e.detail.replace("\"generation\":3", "\"generation\":2");
        let why = open(&v, &forged, 0).unwrap_err();
        assert!(why.contains("keyed hash"), "{why}");
        // ... or written without the key.
        let mut unkeyed = read.clone();
        unkeyed.newest_event.as_mut().unwrap().chain_version = audit::UNKEYED;
        assert!(open(&v, &unkeyed, 0).unwrap_err().contains("keyed hash"));
    }

    #[test]
    fn the_generation_is_compared_with_the_audit_trail_and_with_what_was_seen() {
        let v = vault();
        let old = sample();
        let new = old.next(Change::Remove(EntryKind::Key, "k1".into()));
        let old_read = stored(&v, &old, 40);
        let new_read = stored(&v, &new, 41);

        // The row rolled back to generation 3 (its old seal is valid), the trail says 4.
        let rolled_back = LedgerRead {
            row: old_read.row.clone(),
            newest_event: new_read.newest_event.clone(),
        };
        let why = open(&v, &rolled_back, 0).unwrap_err();
        assert!(
            why.contains("generation 3, older than generation 4"),
            "{why}"
        );
        // The row deleted, the trail says 4.
        let deleted = LedgerRead {
            row: None,
            newest_event: new_read.newest_event.clone(),
        };
        let why = open(&v, &deleted, 0).unwrap_err();
        assert!(
            why.contains("missing") && why.contains("generation 4"),
            "{why}"
        );
        // Newer than the trail: events deleted.
        let ahead = LedgerRead {
            row: new_read.row.clone(),
            newest_event: old_read.newest_event.clone(),
        };
        assert!(
            open(&v, &ahead, 0)
                .unwrap_err()
                .contains("audit events deleted")
        );
        // A row without any witness.
        let unwitnessed = LedgerRead {
            row: new_read.row.clone(),
            newest_event: None,
        };
        assert!(
            open(&v, &unwitnessed, 0)
                .unwrap_err()
                .contains("records none")
        );
        // Same generation, other entries than the trail records.
        let mut other = new_read.clone();
        let swapped = Ledger::new(4, old.entries.clone());
        other.row = Some(swapped.sealed(&v).unwrap());
        assert!(open(&v, &other, 0).unwrap_err().contains("not the ones"));

        // Both rolled back together (the trail's tail deleted too): this process saw 4.
        assert_eq!(open(&v, &old_read, 3), Ok(old.clone()));
        let why = open(&v, &old_read, 4).unwrap_err();
        assert!(why.contains("already seen"), "{why}");

        // Nothing at all: the empty generation 0, unless this process saw more.
        let nothing = LedgerRead::default();
        assert_eq!(open(&v, &nothing, 0), Ok(Ledger::empty()));
        assert!(open(&v, &nothing, 1).unwrap_err().contains("already seen"));
    }

    #[test]
    fn entries_are_stored_in_one_order_whatever_the_order_of_changes() {
        let a = Ledger::empty()
            .next(Change::Put(Entry::key("k2", "s2")))
            .next(Change::Put(Entry::key("k1", "s1")));
        let b = Ledger::empty()
            .next(Change::Put(Entry::key("k1", "s1")))
            .next(Change::Put(Entry::key("k2", "s2")));
        assert_eq!(a.entries_json(), b.entries_json());
        assert!(a.entries_json().find("k1") < a.entries_json().find("k2"));
        let kinds = sample().entries_json();
        assert!(
            kinds.find("\"listener\"") < kinds.find("\"key\"")
                && kinds.find("\"key\"") < kinds.find("\"reset-command\""),
            "{kinds}"
        );
    }
}
