//! The listener registry: trusted publisher keys, uploaded listener versions, change requests
//! with dual approval, associations, and the integrity check before every run.
//!
//! **Invariants** (docs/registry.md has the user's view):
//! - Nothing changes on one person's say-so: every add, edit and delete of a listener and every
//!   change of key trust is a [`ChangeRequest`] that only its designated approver (a different
//!   user with `approve-listeners`) can approve. Requests, decisions, refusals and integrity
//!   failures are audited in the same transaction as their effect.
//! - An approval binds exact bytes: the component's SHA-256, the canonical manifest's SHA-256,
//!   the publisher key and the association, sealed by the vault (`Vault::attest`). The database
//!   alone cannot forge an approval or a trusted key.
//! - [`Registry::runnable`] is the only way from the registry to the runtime, and it re-checks
//!   every one of those bindings before handing over a component.
//! - Seals bind content, the [`ledger`] binds time: every approved change advances the sealed
//!   registry generation in its own transaction, and every use compares each row with the
//!   ledger's entry and the ledger with the keyed audit trail, so a row restored with an older
//!   valid seal, a deleted guard or a rolled-back ledger is refused.

mod association;
mod decision;
mod integrity;
mod keys;
pub mod ledger;
mod reports;
mod request_seal;
mod reset_commands;
mod upload;

pub use association::Association;
pub use integrity::{PlanView, PlannedListener, Refusal, RunnableListener};
pub use keys::{NewPublisherKey, PublisherKey};
pub use reports::Listener;
pub use reset_commands::ResetCommandChange;
pub use upload::{AssociationChange, Upload};

use std::sync::Arc;

use serde::Serialize;

use lockstep_runtime::{LoadedListener, Runtime};

use crate::audit::{self, Actor, NewEvent, Outcome};
use crate::error::{Error, Result};
use crate::identity::Privilege;
use crate::states::ChangeStatus;
use crate::store::change_requests::ChangeRequestRow;
use crate::store::registry_ledger::LedgerRead;
use crate::store::{self, Store, WriteTx};
use crate::vault::Vault;

/// The registry's handles: the store, the vault (for approval seals) and the listener runtime
/// (to check uploads and load approved listeners). Cheap to clone.
#[derive(Clone)]
pub struct Registry {
    store: Store,
    vault: Arc<Vault>,
    runtime: Arc<Runtime>,
    max_component_bytes: usize,
    /// Listeners loaded into the runtime, by (component SHA-256, manifest digest); used only
    /// after the stored bytes were verified to have those digests.
    loaded: Arc<std::sync::Mutex<std::collections::HashMap<String, LoadedListener>>>,
    /// Listeners refused by the integrity check since start (`/metrics`).
    integrity_refusals: Arc<std::sync::atomic::AtomicU64>,
    /// The highest registry generation this process has seen: a ledger older than that was
    /// rolled back while it ran.
    ledger_seen: Arc<std::sync::atomic::AtomicU64>,
    /// Refusals without a row to keep their alert (a gone listener, the ledger), already told.
    told: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
    /// The last ledger read that `ledger::open` accepted, and what it made of it: the very same
    /// read again (the same row and witness, byte for byte) needs no second seal and MAC check.
    verified: Arc<std::sync::Mutex<Option<(LedgerRead, ledger::Ledger)>>>,
}

/// What a change request changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    ListenerAdd,
    ListenerEdit,
    ListenerDelete,
    KeyAdd,
    KeyRemove,
    /// A resource type's command template (how passwords are set over SSH, as root).
    ResetCommand,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::ListenerAdd => "listener-add",
            ChangeKind::ListenerEdit => "listener-edit",
            ChangeKind::ListenerDelete => "listener-delete",
            ChangeKind::KeyAdd => "key-add",
            ChangeKind::KeyRemove => "key-remove",
            ChangeKind::ResetCommand => "reset-command",
        }
    }

    pub fn parse(s: &str) -> Option<ChangeKind> {
        [
            ChangeKind::ListenerAdd,
            ChangeKind::ListenerEdit,
            ChangeKind::ListenerDelete,
            ChangeKind::KeyAdd,
            ChangeKind::KeyRemove,
            ChangeKind::ResetCommand,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }

    /// The audit action of requesting this change.
    fn request_action(self) -> &'static str {
        match self {
            ChangeKind::ListenerAdd => "listener.add.request",
            ChangeKind::ListenerEdit => "listener.edit.request",
            ChangeKind::ListenerDelete => "listener.delete.request",
            ChangeKind::KeyAdd => "publisher-key.add.request",
            ChangeKind::KeyRemove => "publisher-key.remove.request",
            ChangeKind::ResetCommand => "resource-type.reset-command.request",
        }
    }
}

/// A change waiting for, or decided by, a second administrator.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ChangeRequest {
    pub id: String,
    /// `listener-add`, `listener-edit`, `listener-delete`, `key-add`, `key-remove` or
    /// `reset-command`.
    pub kind: String,
    /// For `reset-command`: the resource type whose template changes.
    pub resource_type: Option<String>,
    /// For `reset-command`: the proposed template (`null`: back to `chpasswd`).
    #[schema(value_type = Option<Object>)]
    pub reset_command: Option<serde_json::Value>,
    /// `pending`, `approved`, `rejected` or `withdrawn`.
    pub status: String,
    /// The listener's name, for listener changes.
    pub listener: Option<String>,
    /// The listener version this change would make current.
    pub version: Option<String>,
    /// The publisher key: the one added or removed, or the one that signed the version.
    pub key_id: Option<String>,
    /// `key-add` only: the ed25519 public key (hex) that approval trusts.
    pub public_key: Option<String>,
    pub component_sha256: Option<String>,
    pub manifest_sha256: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub association: Option<serde_json::Value>,
    pub requested_by: String,
    pub approver: String,
    pub request_comment: Option<String>,
    pub decided_by: Option<String>,
    pub decision_comment: Option<String>,
    pub decided_at: Option<String>,
    pub created_at: String,
    /// SHA-256 of the request's content: the approver passes it back with the approval, which
    /// counts only if the request is still exactly this.
    pub digest: String,
}

impl From<ChangeRequestRow> for ChangeRequest {
    fn from(c: ChangeRequestRow) -> ChangeRequest {
        let digest = request_seal::digest(&c);
        let is_listener = c.kind.starts_with("listener-");
        let is_command = c.kind == ChangeKind::ResetCommand.as_str();
        ChangeRequest {
            listener: is_listener.then(|| c.subject.clone()),
            resource_type: is_command
                .then(|| c.subject.strip_prefix(reset_commands::SUBJECT_PREFIX))
                .flatten()
                .map(str::to_string),
            reset_command: c
                .reset_command
                .as_deref()
                .and_then(|t| serde_json::from_str(t).ok()),
            association: c
                .association
                .as_deref()
                .and_then(|a| serde_json::from_str(a).ok()),
            id: c.id,
            kind: c.kind,
            status: c.status,
            version: c.version,
            key_id: c.key_id,
            public_key: c.public_key,
            component_sha256: c.component_sha256,
            manifest_sha256: c.manifest_sha256,
            requested_by: c.requested_by,
            approver: c.approver,
            request_comment: c.request_comment,
            decided_by: c.decided_by,
            decision_comment: c.decision_comment,
            decided_at: c.decided_at,
            created_at: c.created_at,
            digest,
        }
    }
}

/// Longest comment on a request or decision.
const MAX_COMMENT_CHARS: usize = 1000;

impl Registry {
    pub fn new(
        store: Store,
        vault: Arc<Vault>,
        runtime: Arc<Runtime>,
        max_component_bytes: usize,
    ) -> Registry {
        Registry {
            store,
            vault,
            runtime,
            max_component_bytes,
            loaded: Default::default(),
            integrity_refusals: Default::default(),
            ledger_seen: Default::default(),
            told: Default::default(),
            verified: Default::default(),
        }
    }

    /// The registry ledger as it stands, judged (`ledger::open`); `Ok(Err(why))` when it
    /// cannot be trusted, and then nothing the registry approved may run.
    pub(crate) async fn ledger(&self) -> Result<std::result::Result<ledger::Ledger, String>> {
        use std::sync::atomic::Ordering;
        // Read before the ledger: a generation committed after this cannot make it look old.
        let seen = self.ledger_seen.load(Ordering::SeqCst);
        let read = store::registry_ledger::read(self.store.pool()).await?;
        let known = {
            let verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
            verified
                .as_ref()
                .filter(|(r, _)| *r == read)
                .map(|(_, l)| l.clone())
        };
        let opened = match known {
            Some(l) => ledger::not_behind(l, seen),
            None => {
                let opened = ledger::open(&self.vault, &read, seen);
                if let Ok(l) = &opened {
                    *self.verified.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some((read, l.clone()));
                }
                opened
            }
        };
        if let Ok(l) = &opened {
            self.saw_generation(l.generation());
        }
        Ok(opened)
    }

    /// Whether the stored ledger is no longer at `ledger`'s generation.
    pub(crate) async fn ledger_moved(&self, ledger: &ledger::Ledger) -> Result<bool> {
        let read = store::registry_ledger::read(self.store.pool()).await?;
        let now = read.row.map_or(0, |r| r.generation);
        Ok(u64::try_from(now).ok() != Some(ledger.generation()))
    }

    /// The highest registry generation this process has seen.
    pub(super) fn seen_generation(&self) -> u64 {
        self.ledger_seen.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Notes a generation this process read or committed.
    pub(super) fn saw_generation(&self, generation: u64) {
        self.ledger_seen
            .fetch_max(generation, std::sync::atomic::Ordering::SeqCst);
    }

    /// The vault whose master key seals what the registry pins.
    pub(crate) fn vault(&self) -> &Vault {
        &self.vault
    }

    /// Whether `alert` is new to this process (and remembers it): a refusal without a row to
    /// keep its alert is audited once.
    pub(crate) fn first_told(&self, alert: String) -> bool {
        self.told
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(alert)
    }

    /// Listeners refused by the integrity check since this server started.
    pub fn integrity_refusals(&self) -> u64 {
        self.integrity_refusals
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The largest component an upload may carry.
    pub fn max_component_bytes(&self) -> usize {
        self.max_component_bytes
    }

    /// Why `approver` cannot approve a change requested by `requester`, if they cannot.
    async fn approver_problem(&self, requester: &str, approver: &str) -> Result<Option<String>> {
        if approver.is_empty() {
            return Ok(Some(
                "name the administrator who must approve this change".into(),
            ));
        }
        if approver == requester {
            return Ok(Some(
                "you cannot approve your own change; name another administrator".into(),
            ));
        }
        Ok(
            match crate::identity::privileges_of(&self.store, approver).await? {
                None => Some(format!("there is no user '{approver}'")),
                Some(p) if !p.contains(&Privilege::ApproveListeners) => Some(format!(
                    "user '{approver}' does not have the approve-listeners privilege"
                )),
                Some(_) => crate::identity::custody::refuses_approval(
                    &self.store,
                    self,
                    approver,
                    requester,
                    &crate::time::now(),
                )
                .await?
                .map(|why| format!("'{approver}' cannot approve your changes: {why}")),
            },
        )
    }

    /// Writes a new pending change request inside `tx`: refuses when `row.subject` already has
    /// one, notifies the approver, audits the request.
    async fn open_request(
        &self,
        tx: &mut WriteTx,
        actor: &Actor,
        kind: ChangeKind,
        mut row: ChangeRequestRow,
    ) -> Result<ChangeRequest> {
        row.request_seal = Some(request_seal::seal(&self.vault, &row)?);
        if let Some(p) = store::change_requests::pending_for(tx.conn(), &row.subject).await? {
            return Err(Error::Conflict(format!(
                "'{}' already has a pending change request {} ({}, waiting for {}); it must be \
                 approved, rejected or withdrawn first",
                row.subject, p.id, p.kind, p.approver
            )));
        }
        store::change_requests::insert(tx.conn(), &row).await?;
        crate::notifications::notify(
            tx,
            &row.approver,
            "approval-requested",
            format!(
                "{} asks you to approve {} of '{}' ({})",
                row.requested_by,
                kind.as_str(),
                row.subject,
                row.id
            ),
            Some(&row.id),
        )
        .await?;
        audit::append(
            tx,
            NewEvent {
                actor,
                action: kind.request_action(),
                target: &row.subject,
                outcome: Outcome::Success,
                detail: serde_json::json!({
                    "change_request": row.id,
                    "approver": row.approver,
                    "version": row.version,
                    "component_sha256": row.component_sha256,
                    "manifest_sha256": row.manifest_sha256,
                    "key_id": row.key_id,
                }),
            },
        )
        .await?;
        Ok(row.into())
    }
}

/// A comment as given: trimmed, `None` when blank, refused when too long.
fn comment(field: &str, text: Option<String>) -> Result<Option<String>> {
    let text = text.map(|t| t.trim().to_string()).filter(|t| !t.is_empty());
    if let Some(t) = &text
        && (t.chars().count() > MAX_COMMENT_CHARS || t.chars().any(|c| c.is_control() && c != '\n'))
    {
        return Err(Error::validation(
            field,
            format!("at most {MAX_COMMENT_CHARS} characters, no control characters"),
        ));
    }
    Ok(text)
}

/// A new pending request row: the fields every kind shares.
fn new_request(
    kind: ChangeKind,
    subject: &str,
    requested_by: &str,
    approver: &str,
    request_comment: Option<String>,
) -> ChangeRequestRow {
    ChangeRequestRow {
        id: crate::time::new_id("chg"),
        kind: kind.as_str().to_string(),
        status: ChangeStatus::Pending.as_str().into(),
        subject: subject.to_string(),
        listener_id: None,
        version_id: None,
        version: None,
        key_id: None,
        component_sha256: None,
        manifest_sha256: None,
        association: None,
        requested_by: requested_by.to_string(),
        approver: approver.to_string(),
        request_comment,
        decided_by: None,
        decision_comment: None,
        decided_at: None,
        created_at: crate::time::now(),
        reset_command: None,
        request_seal: None,
        public_key: None,
    }
}
