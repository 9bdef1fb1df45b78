//! The integrity check before every run, and the run plan built from it.

use ed25519_dalek::VerifyingKey;
use serde::Serialize;
use sha2::{Digest, Sha256};

use lockstep_runtime::LoadedListener;
use lockstep_runtime::manifest::Manifest;
use lockstep_runtime::signature::{self, ListenerSignature};

use super::keys::trust_binding;
use super::ledger::{EntryKind, Ledger};
use super::{Association, Registry};
use crate::audit::{self, Actor, NewEvent, Outcome};
use crate::error::{Error, Result};
use crate::states::{KeyStatus, ListenerStatus};
use crate::store::listeners::{ListenerRow, VersionRow};
use crate::store::{self};
use crate::vault::Vault;

/// What the approval seal of a listener covers: everything an approver approved.
pub(super) fn approval_binding(
    listener_id: &str,
    version_id: &str,
    component_sha256: &str,
    manifest_sha256: &str,
    key_id: &str,
    association_json: &str,
) -> String {
    format!(
        "lockstep:listener-approval:v1\n{listener_id}\n{version_id}\n{component_sha256}\n\
         {manifest_sha256}\n{key_id}\n{association_json}"
    )
}

/// Whether `l`'s approval seal covers version `v` and `association` as they are stored.
pub(super) fn approval_holds(
    vault: &Vault,
    l: &ListenerRow,
    v: &VersionRow,
    association: &Association,
) -> bool {
    l.approval_seal.as_deref().is_some_and(|seal| {
        vault.check_attestation(
            &approval_binding(
                &l.id,
                &v.id,
                &v.component_sha256,
                &v.manifest_sha256,
                &v.key_id,
                &association.canonical_json(),
            ),
            seal,
        )
    })
}

/// The name a refusal of the whole registry goes by (no listener is named so: names are
/// manifest names, without spaces or parentheses).
const LEDGER_REFUSAL: &str = "(registry ledger)";

/// A listener that passed every check, loaded into the runtime.
#[derive(Clone)]
pub struct RunnableListener {
    pub name: String,
    pub version: String,
    pub order: i64,
    /// The additional parameters of its association, in order.
    pub parameters: Vec<String>,
    pub component_sha256: String,
    /// The approved manifest as published (agent-mode runs send it to the agent).
    pub manifest_text: String,
    /// The publisher's signature as uploaded (agent-mode runs send it: agents verify it).
    pub signature: String,
    pub key_id: String,
    pub listener: LoadedListener,
}

/// A listener in the run plan.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PlannedListener {
    pub name: String,
    pub version: String,
    pub order: i64,
    pub parameters: Vec<String>,
    pub component_sha256: String,
    pub key_id: String,
}

/// A listener that would have run but was refused.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Refusal {
    pub name: String,
    pub version: Option<String>,
    /// What did not match; also in the `listener.integrity` audit event and the listener's alert.
    pub reason: String,
}

/// `GET /v1/listener-plan`: what a reset of this type, phase and mode would run.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PlanView {
    pub resource_type: String,
    pub phase: String,
    pub mode: String,
    /// In run order.
    pub listeners: Vec<PlannedListener>,
    pub refused: Vec<Refusal>,
}

/// A listener whose stored bytes match its approval.
struct Verified {
    version: String,
    component: Vec<u8>,
    component_sha256: String,
    manifest: Manifest,
    manifest_text: String,
    signature: String,
    key_id: String,
    association: Association,
}

/// What the checks decided for one listener, before anything is loaded or recorded.
enum Judged {
    Run(Box<(ListenerRow, Verified)>),
    Refuse(Refused, Option<String>, String),
}

/// Who a refusal is about.
pub(super) enum Refused {
    /// A listener whose row is there.
    Row(Box<ListenerRow>),
    /// A listener the ledger approves whose row is gone or no longer active.
    Gone { name: String },
    /// Every listener: the ledger itself cannot be trusted.
    Ledger,
}

/// How many times a check that found a refusal is made again when the ledger moved meanwhile
/// (an approval committed between reading the ledger and reading the rows).
pub(super) const RECHECKS: usize = 3;

impl Registry {
    /// The key with `key_id`, if it is trusted, its trust seal holds and the ledger holds that
    /// seal; `Err` says why not.
    pub(super) async fn trusted_key(
        &self,
        key_id: &str,
        ledger: &Ledger,
    ) -> std::result::Result<VerifyingKey, String> {
        let untrusted = || {
            format!(
                "it was made with publisher key {key_id}, which this server does not trust; \
                 register the key (POST /v1/publisher-keys) and have it approved"
            )
        };
        let row = store::publisher_keys::get(self.store.pool(), key_id)
            .await
            .map_err(|e| format!("cannot read publisher keys: {e}"))?
            .ok_or_else(untrusted)?;
        match KeyStatus::parse(&row.status) {
            Some(KeyStatus::Trusted) => {}
            Some(KeyStatus::Removed) => {
                return Err(format!(
                    "publisher key {key_id} is no longer trusted (removed)"
                ));
            }
            _ => return Err(untrusted()),
        }
        let sealed = row.trust_seal.as_deref().is_some_and(|seal| {
            self.vault
                .check_attestation(&trust_binding(&row.key_id, &row.public_key), seal)
        });
        if !sealed {
            return Err(format!(
                "publisher key {key_id}'s trust record fails its integrity check (edited outside Lockstep?)"
            ));
        }
        if let Err(m) = ledger.check(EntryKind::Key, key_id, row.trust_seal.as_deref()) {
            return Err(m.describe(
                &format!("publisher key {key_id}'s trust record"),
                ledger.generation(),
            ));
        }
        signature::parse_public_key(&row.public_key)
            .map_err(|e| format!("publisher key {key_id}: {e}"))
    }

    /// Re-checks a stored version's bytes: the component and the manifest against the digests
    /// expected of them, the signature against a publisher key that is still trusted. Shared by
    /// approval (expecting what was requested) and every run (expecting what was approved).
    /// `Ok(Err(why))` when they do not hold; the component is hashed once.
    pub(super) async fn check_stored(
        &self,
        v: &VersionRow,
        component: &[u8],
        component_sha256: &str,
        manifest_sha256: &str,
        ledger: &Ledger,
    ) -> Result<std::result::Result<Manifest, String>> {
        let digest = Sha256::digest(component);
        let actual = hex::encode(digest);
        if actual != component_sha256 {
            return Ok(Err(format!(
                "the stored component's SHA-256 is {actual}, but {component_sha256} was expected"
            )));
        }
        let manifest = match Manifest::parse(&v.manifest) {
            Ok(m) => m,
            Err(e) => return Ok(Err(format!("the stored manifest no longer parses: {e}"))),
        };
        let manifest_digest = manifest.digest();
        if manifest_digest != manifest_sha256 {
            return Ok(Err(format!(
                "the stored manifest's digest is {manifest_digest}, but {manifest_sha256} was expected"
            )));
        }
        let sig: ListenerSignature = match serde_json::from_str(&v.signature) {
            Ok(s) => s,
            Err(e) => return Ok(Err(format!("the stored signature no longer parses: {e}"))),
        };
        if sig.key_id != v.key_id {
            return Ok(Err(format!(
                "the stored signature names key {}, but the version records key {}",
                sig.key_id, v.key_id
            )));
        }
        let key = match self.trusted_key(&sig.key_id, ledger).await {
            Ok(k) => k,
            Err(why) => return Ok(Err(format!("signature: {why}"))),
        };
        if let Err(e) = signature::verify_digest(&sig, &key, &digest, &manifest) {
            return Ok(Err(e.to_string()));
        }
        Ok(Ok(manifest))
    }

    /// The approved version row and association of an active listener, once the approval seal
    /// over them holds (no component is read or hashed). `Ok(Err(why))` when it does not: then
    /// nobody can tell where the listener applies.
    async fn approved_association(
        &self,
        l: &ListenerRow,
    ) -> Result<std::result::Result<(VersionRow, Association), String>> {
        let version_id = l.current_version_id.clone().unwrap_or_default();
        let Some(v) = store::listeners::get_version(self.store.pool(), &version_id).await? else {
            return Ok(Err("its approved version is missing".into()));
        };
        let Some(association) = l.association.as_deref().and_then(Association::parse_stored) else {
            return Ok(Err("its association is missing or unreadable".into()));
        };
        if !approval_holds(&self.vault, l, &v, &association) {
            return Ok(Err(
                "its approval record does not match what was approved (edited outside Lockstep?)"
                    .into(),
            ));
        }
        Ok(Ok((v, association)))
    }

    /// Re-checks the stored bytes of an approved version (its seal held): component and
    /// manifest against the approved digests, the signature against a key still trusted.
    /// `Ok(Err(why))` when it must not run.
    async fn verify(
        &self,
        v: VersionRow,
        association: Association,
        ledger: &Ledger,
    ) -> Result<std::result::Result<Verified, String>> {
        let Some(component) = store::listeners::component(self.store.pool(), &v.id).await? else {
            return Ok(Err("its approved component is missing".into()));
        };
        let manifest = match self
            .check_stored(
                &v,
                &component,
                &v.component_sha256,
                &v.manifest_sha256,
                ledger,
            )
            .await?
        {
            Ok(m) => m,
            Err(why) => return Ok(Err(why)),
        };
        Ok(Ok(Verified {
            version: v.version,
            component,
            component_sha256: v.component_sha256,
            manifest,
            manifest_text: v.manifest,
            signature: v.signature,
            key_id: v.key_id,
            association,
        }))
    }

    /// The listeners a reset of `resource_type` runs in `phase` and `mode`, in order, each
    /// verified against its approval and the registry ledger, and loaded; and those refused.
    /// This is the only way from the registry to the runtime. Each refusal is audited and
    /// alerted.
    pub async fn runnable(
        &self,
        resource_type: &str,
        phase: &str,
        mode: &str,
    ) -> Result<(Vec<RunnableListener>, Vec<Refusal>)> {
        let mut ok = Vec::new();
        let mut refused = Vec::new();
        for judged in self.judge(resource_type, phase, mode).await? {
            let (l, verified) = match judged {
                Judged::Run(run) => *run,
                Judged::Refuse(who, version, reason) => {
                    refused.push(self.refuse(who, version, reason).await?);
                    continue;
                }
            };
            // The bytes were just verified against their digests, so a listener loaded earlier
            // from the same digests is the same listener: reuse it rather than load it again.
            let key = format!(
                "{}\n{}",
                verified.component_sha256,
                verified.manifest.digest()
            );
            let known = self
                .loaded
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&key)
                .cloned();
            let loaded = match known {
                Some(listener) => Ok(listener),
                None => {
                    let runtime = self.runtime.clone();
                    let (bytes, manifest) = (verified.component, verified.manifest);
                    let loaded =
                        tokio::task::spawn_blocking(move || runtime.load(&bytes, manifest))
                            .await
                            .map_err(|e| {
                                Error::Internal(format!("listener load task failed: {e}"))
                            })?;
                    if let Ok(listener) = &loaded {
                        self.loaded
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert(key, listener.clone());
                    }
                    loaded
                }
            };
            match loaded {
                Ok(listener) => ok.push(RunnableListener {
                    name: l.name.clone(),
                    version: verified.version,
                    order: verified.association.order,
                    parameters: verified.association.parameters,
                    component_sha256: verified.component_sha256,
                    manifest_text: verified.manifest_text,
                    signature: verified.signature,
                    key_id: verified.key_id,
                    listener,
                }),
                Err(e) => {
                    let reason = format!("it no longer loads: {e}");
                    let version = Some(verified.version);
                    refused.push(
                        self.refuse(Refused::Row(Box::new(l)), version, reason)
                            .await?,
                    );
                }
            }
        }
        ok.sort_by(|a: &RunnableListener, b: &RunnableListener| {
            (a.order, &a.name).cmp(&(b.order, &b.name))
        });
        Ok((ok, refused))
    }

    /// Every check of [`Registry::runnable`], reading only. When one refuses, the ledger is
    /// read again: if an approval moved it meanwhile, the rows may simply be newer than the
    /// ledger that was read, so everything is checked again (a concurrent approval never reads
    /// as tampering).
    async fn judge(&self, resource_type: &str, phase: &str, mode: &str) -> Result<Vec<Judged>> {
        let mut checks = 0;
        loop {
            let ledger = match self.ledger().await? {
                Ok(ledger) => ledger,
                Err(why) => return Ok(vec![Judged::Refuse(Refused::Ledger, None, why)]),
            };
            let judged = self
                .judge_against(&ledger, resource_type, phase, mode)
                .await?;
            checks += 1;
            let refusal = judged.iter().any(|j| matches!(j, Judged::Refuse(..)));
            if !refusal || checks >= RECHECKS || !self.ledger_moved(&ledger).await? {
                return Ok(judged);
            }
        }
    }

    async fn judge_against(
        &self,
        ledger: &Ledger,
        resource_type: &str,
        phase: &str,
        mode: &str,
    ) -> Result<Vec<Judged>> {
        let rows = store::listeners::active(self.store.pool()).await?;
        let mut judged = Vec::new();
        // A listener the ledger approves is a guard even when its row was deleted (or its seal
        // cleared with its status): where the ledger says it applies, it is refused.
        for entry in ledger.listeners() {
            let Some(reach) = &entry.reach else {
                continue;
            };
            if rows.iter().any(|l| l.id == entry.subject)
                || !reach.covers(resource_type, phase, mode)
            {
                continue;
            }
            let reason = super::ledger::Mismatch::Missing
                .describe("its approved record", ledger.generation());
            let who = Refused::Gone {
                name: reach.name.clone(),
            };
            judged.push(Judged::Refuse(who, None, reason));
        }
        // Where a listener applies (types, phases, modes, order, parameters) is read only from
        // its sealed approval, never from unsealed columns or the type index: an inserted index
        // row cannot widen a listener, a deleted one cannot lift it, an edited position cannot
        // reorder it. A listener whose seal fails, or whose approval is not the one the ledger
        // holds, might guard anything: it is refused here, whatever the type, and a pre-reset
        // refusal stops the reset.
        for l in rows {
            // Approval clears the seal of a deleted listener: a sealed one that is not active
            // had its status edited (a guard lifted by one UPDATE): refuse it everywhere.
            if !ListenerStatus::Active.is(&l.status) {
                let reason = format!(
                    "its status says '{}' but it still carries an approval (edited outside \
                     Lockstep?)",
                    l.status
                );
                judged.push(Judged::Refuse(Refused::Row(Box::new(l)), None, reason));
                continue;
            }
            let (v, association) = match self.approved_association(&l).await? {
                Ok(found) => found,
                Err(reason) => {
                    let version = self.version_name(&l).await?;
                    judged.push(Judged::Refuse(Refused::Row(Box::new(l)), version, reason));
                    continue;
                }
            };
            if let Err(m) = ledger.check(EntryKind::Listener, &l.id, l.approval_seal.as_deref()) {
                let reason = m.describe("its approval record", ledger.generation());
                let who = Refused::Row(Box::new(l));
                judged.push(Judged::Refuse(who, Some(v.version), reason));
                continue;
            }
            // The name orders listeners of the same `order`, keys agent tasks and names
            // refusals: it must be the one approved (the ledger's entry holds it).
            let approved_name = ledger
                .get(EntryKind::Listener, &l.id)
                .and_then(|e| e.reach.as_ref())
                .map(|r| r.name.clone());
            if let Some(approved) = approved_name
                && approved != l.name
            {
                let reason = format!(
                    "its name was approved as '{approved}' but its record says '{}' (renamed in \
                     the database?)",
                    l.name
                );
                judged.push(Judged::Refuse(
                    Refused::Row(Box::new(l)),
                    Some(v.version),
                    reason,
                ));
                continue;
            }
            if !association
                .resource_types
                .iter()
                .any(|t| t == resource_type)
                || !association.has(phase, mode)
            {
                continue;
            }
            let version = v.version.clone();
            match self.verify(v, association, ledger).await? {
                Ok(verified) => judged.push(Judged::Run(Box::new((l, verified)))),
                Err(reason) => {
                    let who = Refused::Row(Box::new(l));
                    judged.push(Judged::Refuse(who, Some(version), reason));
                }
            }
        }
        Ok(judged)
    }

    /// The version name of a listener's current version, if it has one.
    async fn version_name(&self, l: &ListenerRow) -> Result<Option<String>> {
        Ok(match &l.current_version_id {
            Some(id) => store::listeners::get_version(self.store.pool(), id)
                .await?
                .map(|v| v.version),
            None => None,
        })
    }

    /// [`Registry::runnable`], described for people.
    pub async fn plan(&self, resource_type: &str, phase: &str, mode: &str) -> Result<PlanView> {
        let (ok, refused) = self.runnable(resource_type, phase, mode).await?;
        Ok(PlanView {
            resource_type: resource_type.to_string(),
            phase: phase.to_string(),
            mode: mode.to_string(),
            listeners: ok
                .into_iter()
                .map(|r| PlannedListener {
                    component_sha256: r.component_sha256,
                    key_id: r.key_id,
                    name: r.name,
                    version: r.version,
                    order: r.order,
                    parameters: r.parameters,
                })
                .collect(),
            refused,
        })
    }

    /// Reports a ledger that cannot be trusted, found while authenticating a caller (who is
    /// refused): audited as `registry.integrity` and told to the approvers once per reason
    /// and process, however many requests are refused.
    pub(crate) async fn ledger_untrusted(&self, why: &str) -> Result<()> {
        if self.first_told(format!("authentication\n{why}")) {
            self.refuse(Refused::Ledger, None, why.to_string()).await?;
        }
        Ok(())
    }

    /// Who is told of an integrity refusal: every user who may approve listener changes,
    /// and whoever uploaded the listener's current version (when its row is there).
    async fn integrity_recipients(&self, l: Option<&ListenerRow>) -> Result<Vec<String>> {
        let roles: Vec<String> = store::roles::list(self.store.pool())
            .await?
            .into_iter()
            .filter(|r| {
                crate::identity::role_privileges(&r.name, Some(&r.privileges))
                    .contains(&crate::identity::Privilege::ApproveListeners)
            })
            .map(|r| r.name)
            .collect();
        let mut users = store::users::names_with_roles(self.store.pool(), &roles).await?;
        if let Some(l) = l
            && let Some(v) = &l.current_version_id
            && let Some(v) = store::listeners::get_version(self.store.pool(), v).await?
        {
            users.push(v.uploaded_by);
        }
        users.sort();
        users.dedup();
        Ok(users)
    }

    /// Records a refusal: the listener's alert (when its row is there), an audit event
    /// (`listener.integrity`, or `registry.integrity` when the ledger itself is refused), and
    /// a notification to the approvers once per new alert, not at every reset it refuses.
    pub(super) async fn refuse(
        &self,
        who: Refused,
        version: Option<String>,
        reason: String,
    ) -> Result<Refusal> {
        let (name, row) = match &who {
            Refused::Row(l) => (l.name.clone(), Some(l.as_ref())),
            Refused::Gone { name } => (name.clone(), None),
            Refused::Ledger => (LEDGER_REFUSAL.to_string(), None),
        };
        tracing::error!(listener = %name, %reason, "ALERT: listener refused by the integrity check");
        self.integrity_refusals
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // A row keeps its alert; a refusal without a row is remembered by this process.
        let new_alert = match row {
            Some(l) => l.alert.as_deref() != Some(reason.as_str()),
            None => self.first_told(format!("{name}\n{reason}")),
        };
        let recipients = if new_alert {
            self.integrity_recipients(row).await?
        } else {
            Vec::new()
        };
        let mut tx = self.store.begin_write().await?;
        let now = crate::time::now();
        if let Some(l) = row {
            store::listeners::set_alert(tx.conn(), &l.id, &reason, &now).await?;
        }
        let message = match who {
            Refused::Ledger => format!(
                "no listener runs and no reset goes ahead: the registry was refused by the \
                 integrity check: {reason}"
            ),
            _ => format!(
                "listener '{name}' was refused by the integrity check and will not run until a \
                 new version or association is approved: {reason}"
            ),
        };
        for user in &recipients {
            crate::notifications::notify(
                &mut tx,
                user,
                "listener-integrity",
                message.clone(),
                None,
            )
            .await?;
        }
        let (action, target) = match who {
            Refused::Ledger => ("registry.integrity", "registry"),
            _ => ("listener.integrity", name.as_str()),
        };
        audit::append(
            &mut tx,
            NewEvent {
                actor: &Actor::system(),
                action,
                target,
                outcome: Outcome::Failure,
                detail: serde_json::json!({ "reason": reason, "version": version }),
            },
        )
        .await?;
        tx.commit().await?;
        Ok(Refusal {
            name,
            version,
            reason,
        })
    }
}
