//! Deciding change requests: approve (which applies the change), reject, withdraw.

use super::integrity::approval_binding;
use super::keys::trust_binding;
use super::ledger::{self, Change, Entry, EntryKind, Ledger};
use super::{Association, ChangeKind, ChangeRequest, Registry, comment, request_seal};
use crate::audit::{self, Actor, NewEvent, Outcome};
use crate::error::{Error, Result};
use crate::states::{ChangeStatus, KeyStatus, ListenerStatus};
use crate::store::change_requests::ChangeRequestRow;
use crate::store::{self, WriteTx};

/// How a request is decided.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    /// With the digest of the request as the approver reviewed it.
    Approve(String),
    Reject,
    Withdraw,
}

impl Verdict {
    fn status(&self) -> &'static str {
        match self {
            Verdict::Approve(_) => ChangeStatus::Approved.as_str(),
            Verdict::Reject => ChangeStatus::Rejected.as_str(),
            Verdict::Withdraw => ChangeStatus::Withdrawn.as_str(),
        }
    }

    fn action(&self) -> &'static str {
        match self {
            Verdict::Approve(_) => "change-request.approve",
            Verdict::Reject => "change-request.reject",
            Verdict::Withdraw => "change-request.withdraw",
        }
    }
}

impl Registry {
    /// Approves and applies a change. Only the designated approver may, never the requester,
    /// and only the change they reviewed: `reviewed` is the request's `digest` as they saw it.
    pub async fn approve(
        &self,
        actor: &Actor,
        user: &str,
        id: &str,
        text: Option<String>,
        reviewed: Option<String>,
    ) -> Result<ChangeRequest> {
        let Some(reviewed) = reviewed.filter(|d| !d.trim().is_empty()) else {
            return Err(Error::validation(
                "digest",
                "give the digest of the change you reviewed: the `digest` of \
                 GET /v1/change-requests/{id}",
            ));
        };
        self.decide(actor, user, id, Verdict::Approve(reviewed), text)
            .await
    }

    /// Rejects a change; a comment saying why is required.
    pub async fn reject(
        &self,
        actor: &Actor,
        user: &str,
        id: &str,
        text: Option<String>,
    ) -> Result<ChangeRequest> {
        self.decide(actor, user, id, Verdict::Reject, text).await
    }

    /// Withdraws one's own pending change.
    pub async fn withdraw(
        &self,
        actor: &Actor,
        user: &str,
        id: &str,
        text: Option<String>,
    ) -> Result<ChangeRequest> {
        self.decide(actor, user, id, Verdict::Withdraw, text).await
    }

    async fn decide(
        &self,
        actor: &Actor,
        user: &str,
        id: &str,
        verdict: Verdict,
        text: Option<String>,
    ) -> Result<ChangeRequest> {
        let decision_comment = comment("comment", text)?;
        if verdict == Verdict::Reject && decision_comment.is_none() {
            return Err(Error::validation(
                "comment",
                "say why the change is rejected; the requester is told",
            ));
        }
        let cr = store::change_requests::get(self.store.pool(), id)
            .await?
            .ok_or_else(|| Error::NotFound {
                what: "change request",
                id: id.to_string(),
            })?;
        let refusal = match verdict {
            Verdict::Withdraw if cr.requested_by != user => Some(format!(
                "only {} who requested this change can withdraw it",
                cr.requested_by
            )),
            Verdict::Withdraw => None,
            _ if cr.requested_by == user => Some(
                "you requested this change; another administrator must decide it (dual control)"
                    .to_string(),
            ),
            _ if cr.approver != user => Some(format!(
                "this change request is assigned to {}; only they can decide it",
                cr.approver
            )),
            _ => None,
        };
        // Two accounts are not two people when one person could act as both.
        let refusal = match refusal {
            None if matches!(verdict, Verdict::Approve(_)) => {
                crate::identity::custody::refuses_approval(
                    &self.store,
                    self,
                    user,
                    &cr.requested_by,
                    &cr.created_at,
                )
                .await?
            }
            other => other,
        };
        if let Some(why) = refusal {
            self.audit_refusal(actor, &verdict, &cr, Outcome::Denied, &why)
                .await?;
            return Err(Error::NotAllowed(why));
        }
        if !ChangeStatus::Pending.is(&cr.status) {
            return Err(Error::Conflict(format!(
                "change request {id} is already {}",
                cr.status
            )));
        }
        if let Some(why) = self.decided_before(&cr).await? {
            self.audit_refusal(actor, &verdict, &cr, Outcome::Failure, &why)
                .await?;
            return Err(Error::Conflict(format!("change request {id}: {why}")));
        }
        if let Verdict::Approve(reviewed) = &verdict {
            // The request must be what was asked for, and what this approver saw.
            let digest = request_seal::digest(&cr);
            let problem = if !request_seal::holds(&self.vault, &cr) {
                Some(
                    "the change request was altered in the database after it was requested \
                     (its seal does not match, or it predates sealed requests); reject it and \
                     request the change again"
                        .to_string(),
                )
            } else if *reviewed != digest {
                Some(format!(
                    "the change request is not the one you reviewed (digest {reviewed}, now \
                     {digest}); review it again"
                ))
            } else {
                None
            };
            if let Some(why) = problem {
                self.audit_refusal(actor, &verdict, &cr, Outcome::Failure, &why)
                    .await?;
                return Err(Error::Conflict(format!("change request {id}: {why}")));
            }
        }
        let kind = ChangeKind::parse(&cr.kind)
            .ok_or_else(|| Error::Internal(format!("unknown change kind '{}'", cr.kind)))?;
        let mut tx = self.store.begin_write().await?;
        let now = crate::time::now();
        let mut generation = None;
        if matches!(verdict, Verdict::Approve(_)) {
            match self.apply(&mut tx, kind, &cr, user, &now).await? {
                Ok(g) => generation = Some(g),
                Err(why) => {
                    drop(tx);
                    self.audit_refusal(actor, &verdict, &cr, Outcome::Failure, &why)
                        .await?;
                    return Err(Error::Conflict(format!(
                        "change request {id} cannot be applied: {why}"
                    )));
                }
            }
        } else {
            self.unwind(&mut tx, kind, &cr, &now).await?;
        }
        if !store::change_requests::decide(
            tx.conn(),
            id,
            verdict.status(),
            user,
            decision_comment.as_deref(),
            &now,
        )
        .await?
        {
            return Err(Error::Conflict(format!(
                "change request {id} was decided by someone else meanwhile"
            )));
        }
        if verdict != Verdict::Withdraw {
            crate::notifications::notify(
                &mut tx,
                &cr.requested_by,
                "change-decided",
                format!(
                    "{user} {} your {} of '{}' ({id}){}",
                    verdict.status(),
                    cr.kind,
                    cr.subject,
                    decision_comment
                        .as_deref()
                        .map(|c| format!(": {c}"))
                        .unwrap_or_default()
                ),
                Some(id),
            )
            .await?;
        }
        audit::append(
            &mut tx,
            NewEvent {
                actor,
                action: verdict.action(),
                target: id,
                outcome: Outcome::Success,
                detail: serde_json::json!({
                    "kind": cr.kind,
                    "subject": cr.subject,
                    "version": cr.version,
                    "component_sha256": cr.component_sha256,
                    "manifest_sha256": cr.manifest_sha256,
                    "comment": decision_comment,
                }),
            },
        )
        .await?;
        tx.commit().await?;
        if let Some(g) = generation {
            self.saw_generation(g);
        }
        store::change_requests::get(self.store.pool(), id)
            .await?
            .map(Into::into)
            .ok_or_else(|| Error::Internal(format!("change request {id} vanished")))
    }

    /// Why a request whose row says `pending` was in fact decided already: an authentic
    /// audit event records its approval, rejection or withdrawal (the status column is not
    /// sealed, so a database writer could offer an old rejected change again).
    async fn decided_before(&self, cr: &ChangeRequestRow) -> Result<Option<String>> {
        let filter = store::audit::AuditFilter {
            target: Some(cr.id.clone()),
            ..Default::default()
        };
        let decisions = [
            Verdict::Reject,
            Verdict::Withdraw,
            Verdict::Approve(String::new()),
        ];
        let mut after = 0;
        loop {
            let page = store::audit::list(self.store.pool(), &filter, after, 100).await?;
            for e in &page {
                if !decisions.iter().any(|v| v.action() == e.action) {
                    continue;
                }
                // An edited event about its decision (say, its outcome flipped) fails closed.
                if !audit::authentic(&self.vault, e) {
                    return Ok(Some(format!(
                        "audit event {} about its decision fails its keyed hash (edited in the \
                         database?); check the trail with `lockstep audit verify` and request \
                         the change again",
                        e.seq
                    )));
                }
                if e.outcome == Outcome::Success.as_str() {
                    return Ok(Some(format!(
                        "it was already decided ({} in audit event {}), though its record says \
                         pending (edited in the database?); request the change again",
                        e.action, e.seq
                    )));
                }
            }
            match page.last() {
                Some(last) if page.len() > 100 => after = last.seq,
                _ => return Ok(None),
            }
        }
    }

    /// Audits a decision that did not go through, with why (on its own: nothing of the
    /// decision is written).
    async fn audit_refusal(
        &self,
        actor: &Actor,
        verdict: &Verdict,
        cr: &ChangeRequestRow,
        outcome: Outcome,
        why: &str,
    ) -> Result<()> {
        audit::record(
            &self.store,
            NewEvent {
                actor,
                action: verdict.action(),
                target: &cr.id,
                outcome,
                detail: serde_json::json!({ "reason": why, "subject": cr.subject }),
            },
        )
        .await
    }

    /// Applies an approved change inside `tx` and advances the registry ledger by exactly the
    /// one entry it changes; returns the new generation. `Ok(Err(why))` when the stored state
    /// no longer matches what was requested, or the ledger cannot be trusted (nothing is
    /// changed then).
    async fn apply(
        &self,
        tx: &mut WriteTx,
        kind: ChangeKind,
        cr: &ChangeRequestRow,
        approver: &str,
        now: &str,
    ) -> Result<std::result::Result<u64, String>> {
        let current = match ledger::current_in(tx, &self.vault, self.seen_generation()).await? {
            Ok(l) => l,
            Err(why) => return Ok(Err(why)),
        };
        let key_id = cr.key_id.clone().unwrap_or_default();
        let change = match kind {
            ChangeKind::KeyAdd => {
                let Some(k) = store::publisher_keys::get(tx.conn(), &key_id).await? else {
                    return Ok(Err(format!("key {key_id} is gone")));
                };
                // Trust exactly the key that was requested (and reviewed), not whatever the
                // key's row holds now; a request made before requests named the key at least
                // needs the row's key to have the requested id.
                let requested = match &cr.public_key {
                    Some(requested) => *requested == k.public_key,
                    None => lockstep_runtime::signature::parse_public_key(&k.public_key)
                        .is_ok_and(|p| lockstep_runtime::signature::key_id(&p) == key_id),
                };
                if !requested || !KeyStatus::Pending.is(&k.status) {
                    return Ok(Err(format!(
                        "key {key_id} is not the key that was requested (its public key or \
                         status was edited in the database?); reject this request"
                    )));
                }
                let seal = self
                    .vault
                    .attest(&trust_binding(&k.key_id, &k.public_key))?;
                store::publisher_keys::set_status(
                    tx.conn(),
                    &key_id,
                    KeyStatus::Trusted.as_str(),
                    Some(&seal),
                    now,
                )
                .await?;
                Change::Put(Entry::key(&key_id, &seal))
            }
            ChangeKind::KeyRemove => {
                store::publisher_keys::set_status(
                    tx.conn(),
                    &key_id,
                    KeyStatus::Removed.as_str(),
                    None,
                    now,
                )
                .await?;
                Change::Remove(EntryKind::Key, key_id)
            }
            ChangeKind::ListenerAdd | ChangeKind::ListenerEdit => {
                let listener_id = cr.listener_id.clone().unwrap_or_default();
                let Some(mut l) = store::listeners::get(tx.conn(), &listener_id).await? else {
                    return Ok(Err("the listener is gone".into()));
                };
                if kind == ChangeKind::ListenerEdit && !ListenerStatus::Active.is(&l.status) {
                    return Ok(Err(format!("the listener is {} now", l.status)));
                }
                // The ledger records the name the request was made for (sealed with it), so a
                // row renamed while pending is not approved under its new name.
                if l.name != cr.subject {
                    return Ok(Err(format!(
                        "the listener's record is named '{}', not '{}' as requested (renamed in \
                         the database?)",
                        l.name, cr.subject
                    )));
                }
                let version_id = cr.version_id.clone().unwrap_or_default();
                if let Err(why) = self.recheck_version(tx, cr, &version_id, &current).await? {
                    return Ok(Err(why));
                }
                let association = cr
                    .association
                    .as_deref()
                    .and_then(Association::parse_stored)
                    .ok_or_else(|| Error::Internal("change request without association".into()))?;
                let association_json = association.canonical_json();
                let seal = self.vault.attest(&approval_binding(
                    &l.id,
                    &version_id,
                    cr.component_sha256.as_deref().unwrap_or_default(),
                    cr.manifest_sha256.as_deref().unwrap_or_default(),
                    &key_id,
                    &association_json,
                ))?;
                l.status = ListenerStatus::Active.as_str().into();
                l.current_version_id = Some(version_id.clone());
                l.position = Some(association.order);
                l.approval_seal = Some(seal.clone());
                l.association = Some(association_json);
                l.approved_by = Some(approver.to_string());
                l.approved_at = Some(now.to_string());
                l.alert = None;
                l.alert_at = None;
                l.updated_at = now.to_string();
                store::listeners::update_approved(tx.conn(), &l, &association.resource_types)
                    .await?;
                Change::Put(Entry::listener(&l.id, &cr.subject, &seal, &association))
            }
            ChangeKind::ResetCommand => match self.apply_reset_command(tx, cr, approver).await? {
                Ok((name, Some(seal))) => Change::Put(Entry::reset_command(&name, &seal)),
                Ok((name, None)) => Change::Remove(EntryKind::ResetCommand, name),
                Err(why) => return Ok(Err(why)),
            },
            ChangeKind::ListenerDelete => {
                let listener_id = cr.listener_id.clone().unwrap_or_default();
                let Some(mut l) = store::listeners::get(tx.conn(), &listener_id).await? else {
                    return Ok(Err("the listener is gone".into()));
                };
                l.status = ListenerStatus::Deleted.as_str().into();
                l.current_version_id = None;
                l.association = None;
                l.position = None;
                l.approval_seal = None;
                l.approved_by = Some(approver.to_string());
                l.approved_at = Some(now.to_string());
                l.updated_at = now.to_string();
                store::listeners::update_approved(tx.conn(), &l, &[]).await?;
                Change::Remove(EntryKind::Listener, l.id)
            }
        };
        Ok(Ok(ledger::advance(
            tx,
            &self.vault,
            &current,
            change,
            &cr.id,
        )
        .await?))
    }

    /// Before approving a version: the stored component, manifest and signature must still be
    /// exactly what was requested, and the signing key still trusted.
    async fn recheck_version(
        &self,
        tx: &mut WriteTx,
        cr: &ChangeRequestRow,
        version_id: &str,
        ledger: &Ledger,
    ) -> Result<std::result::Result<(), String>> {
        let Some(v) = store::listeners::get_version(tx.conn(), version_id).await? else {
            return Ok(Err("the uploaded version is gone".into()));
        };
        let Some(component) = store::listeners::component(tx.conn(), version_id).await? else {
            return Ok(Err("the uploaded component is gone".into()));
        };
        let expected = (
            cr.component_sha256.as_deref().unwrap_or_default(),
            cr.manifest_sha256.as_deref().unwrap_or_default(),
        );
        Ok(self
            .check_stored(&v, &component, expected.0, expected.1, ledger)
            .await?
            .map(|_| ()))
    }

    /// Undoes the placeholder state of a rejected or withdrawn request.
    async fn unwind(
        &self,
        tx: &mut WriteTx,
        kind: ChangeKind,
        cr: &ChangeRequestRow,
        now: &str,
    ) -> Result<()> {
        match kind {
            // Only what this very request put in place is unwound: a request whose seal fails
            // may name someone else's key or listener.
            ChangeKind::KeyAdd if request_seal::holds(&self.vault, cr) => {
                let key_id = cr.key_id.clone().unwrap_or_default();
                if let Some(k) = store::publisher_keys::get(tx.conn(), &key_id).await?
                    && KeyStatus::Pending.is(&k.status)
                {
                    store::publisher_keys::set_status(
                        tx.conn(),
                        &key_id,
                        KeyStatus::Rejected.as_str(),
                        None,
                        now,
                    )
                    .await?;
                }
            }
            ChangeKind::ListenerAdd if request_seal::holds(&self.vault, cr) => {
                let listener_id = cr.listener_id.clone().unwrap_or_default();
                if let Some(l) = store::listeners::get(tx.conn(), &listener_id).await?
                    && ListenerStatus::Pending.is(&l.status)
                {
                    store::listeners::set_status(
                        tx.conn(),
                        &listener_id,
                        ListenerStatus::Rejected.as_str(),
                        now,
                    )
                    .await?;
                }
            }
            // A tampered request unwinds nothing; the others changed nothing in advance.
            ChangeKind::KeyAdd
            | ChangeKind::ListenerAdd
            | ChangeKind::KeyRemove
            | ChangeKind::ListenerEdit
            | ChangeKind::ListenerDelete
            | ChangeKind::ResetCommand => {}
        }
        Ok(())
    }
}
