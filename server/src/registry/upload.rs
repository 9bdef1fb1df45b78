//! Proposing listener changes: a new listener, a new version, a new association, a deletion.
//! An upload is checked completely (component, manifest, signature, association, approver)
//! before anything is stored; each problem is reported against the part at fault.

use serde::Deserialize;

use lockstep_runtime::manifest::Manifest;
use lockstep_runtime::signature::{self, ListenerSignature};

use super::{Association, ChangeKind, ChangeRequest, Registry, comment, new_request};
use crate::audit::{self, Actor, NewEvent, Outcome};
use crate::error::{Error, FieldProblem, Result};
use crate::states::ListenerStatus;
use crate::store::change_requests::ChangeRequestRow;
use crate::store::listeners::{ListenerRow, VersionRow};
use crate::store::{self, WriteTx};

/// A listener upload as received: every part optional here, so a missing one is reported like
/// any other problem.
#[derive(Debug, Default)]
pub struct Upload {
    /// The `.wasm` component.
    pub component: Option<Vec<u8>>,
    /// The manifest TOML.
    pub manifest: Option<String>,
    /// The JSON signature from `lockstep listener sign`.
    pub signature: Option<String>,
    /// Who must approve.
    pub approver: Option<String>,
    /// JSON [`Association`]; default: the manifest's declarations (new listener) or the current
    /// association (new version).
    pub association: Option<String>,
    pub comment: Option<String>,
}

/// `PUT /v1/listeners/{name}/association`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AssociationChange {
    pub association: Association,
    pub approver: String,
    pub comment: Option<String>,
}

/// An upload that passed every check.
struct Checked {
    component: Vec<u8>,
    manifest: Manifest,
    manifest_text: String,
    signature: ListenerSignature,
    signature_text: String,
    association: Association,
    approver: String,
    comment: Option<String>,
}

impl Registry {
    /// Proposes a new listener. `upload` is `Err` when the request body could not be read; that
    /// refusal is audited like the others.
    pub async fn propose_listener(
        &self,
        actor: &Actor,
        requester: &str,
        upload: Result<Upload>,
    ) -> Result<ChangeRequest> {
        let result = match upload {
            Ok(u) => self.propose_listener_inner(actor, requester, u).await,
            Err(e) => Err(e),
        };
        self.audit_upload(actor, None, result).await
    }

    async fn propose_listener_inner(
        &self,
        actor: &Actor,
        requester: &str,
        upload: Upload,
    ) -> Result<ChangeRequest> {
        let c = self.check(requester, upload, None, None).await?;
        let name = c.manifest.name().to_string();
        let mut tx = self.store.begin_write().await?;
        let listener_id = match store::listeners::get_by_name(tx.conn(), &name).await? {
            Some(l)
                if ListenerStatus::Active.is(&l.status)
                    || (ListenerStatus::Pending.is(&l.status)
                        && store::change_requests::pending_for(tx.conn(), &name)
                            .await?
                            .is_some()) =>
            {
                return Err(Error::Conflict(format!(
                    "listener '{name}' already exists; upload a new version with PUT /v1/listeners/{name}"
                )));
            }
            // Pending without a pending request (its request was decided without unwinding it,
            // say because its seal failed): it may be proposed again.
            // Deleted or rejected before: the name is free again, its history stays.
            Some(l) => l.id,
            None => {
                let now = crate::time::now();
                let row = ListenerRow {
                    id: crate::time::new_id("lsn"),
                    name: name.clone(),
                    status: ListenerStatus::Pending.as_str().into(),
                    current_version_id: None,
                    association: None,
                    position: None,
                    approval_seal: None,
                    approved_by: None,
                    approved_at: None,
                    alert: None,
                    alert_at: None,
                    created_at: now.clone(),
                    updated_at: now,
                };
                store::listeners::insert(tx.conn(), &row).await?;
                row.id
            }
        };
        let cr = self
            .store_version(
                &mut tx,
                actor,
                requester,
                ChangeKind::ListenerAdd,
                &listener_id,
                c,
            )
            .await?;
        tx.commit().await?;
        Ok(cr)
    }

    /// Proposes a new version of an active listener (`upload` as for
    /// [`Registry::propose_listener`]).
    pub async fn propose_version(
        &self,
        actor: &Actor,
        requester: &str,
        name: &str,
        upload: Result<Upload>,
    ) -> Result<ChangeRequest> {
        let result = match upload {
            Ok(u) => self.propose_version_inner(actor, requester, name, u).await,
            Err(e) => Err(e),
        };
        self.audit_upload(actor, Some(name), result).await
    }

    async fn propose_version_inner(
        &self,
        actor: &Actor,
        requester: &str,
        name: &str,
        upload: Upload,
    ) -> Result<ChangeRequest> {
        let listener = self.active_listener(name).await?;
        let current = listener
            .association
            .as_deref()
            .and_then(Association::parse_stored);
        let c = self.check(requester, upload, Some(name), current).await?;
        let mut tx = self.store.begin_write().await?;
        let cr = self
            .store_version(
                &mut tx,
                actor,
                requester,
                ChangeKind::ListenerEdit,
                &listener.id,
                c,
            )
            .await?;
        tx.commit().await?;
        Ok(cr)
    }

    /// Proposes a new association for the current version of an active listener.
    pub async fn propose_association(
        &self,
        actor: &Actor,
        requester: &str,
        name: &str,
        change: AssociationChange,
    ) -> Result<ChangeRequest> {
        let listener = self.active_listener(name).await?;
        let version_id = listener.current_version_id.clone().unwrap_or_default();
        let version = store::listeners::get_version(self.store.pool(), &version_id)
            .await?
            .ok_or_else(|| Error::Internal(format!("listener {name} has no current version")))?;
        let manifest = Manifest::parse(&version.manifest).map_err(|e| {
            Error::Internal(format!(
                "the stored manifest of {name} no longer parses: {e}"
            ))
        })?;
        let association = change.association.normalized();
        let mut problems = Vec::new();
        let types = self.existing_types().await?;
        let wrong = association.problems(&manifest, &types);
        if !wrong.is_empty() {
            problems.push(FieldProblem::new("association", wrong.join("; ")));
        }
        if let Some(p) = self.approver_problem(requester, &change.approver).await? {
            problems.push(FieldProblem::new("approver", p));
        }
        if !problems.is_empty() {
            return Err(Error::Validation(problems));
        }
        let request_comment = comment("comment", change.comment)?;
        let mut row = new_request(
            ChangeKind::ListenerEdit,
            name,
            requester,
            &change.approver,
            request_comment,
        );
        row.listener_id = Some(listener.id.clone());
        row.version_id = Some(version.id.clone());
        row.version = Some(version.version.clone());
        row.key_id = Some(version.key_id.clone());
        row.component_sha256 = Some(version.component_sha256.clone());
        row.manifest_sha256 = Some(version.manifest_sha256.clone());
        row.association = Some(association.canonical_json());
        let mut tx = self.store.begin_write().await?;
        let cr = self
            .open_request(&mut tx, actor, ChangeKind::ListenerEdit, row)
            .await?;
        tx.commit().await?;
        Ok(cr)
    }

    /// Proposes deleting an active listener.
    pub async fn propose_delete(
        &self,
        actor: &Actor,
        requester: &str,
        name: &str,
        approver: &str,
    ) -> Result<ChangeRequest> {
        let listener = self.active_listener(name).await?;
        if let Some(p) = self.approver_problem(requester, approver).await? {
            return Err(Error::validation("approver", p));
        }
        let mut row = new_request(ChangeKind::ListenerDelete, name, requester, approver, None);
        row.listener_id = Some(listener.id.clone());
        if let Some(vid) = &listener.current_version_id
            && let Some(v) = store::listeners::get_version(self.store.pool(), vid).await?
        {
            row.version_id = Some(v.id);
            row.version = Some(v.version);
        }
        let mut tx = self.store.begin_write().await?;
        let cr = self
            .open_request(&mut tx, actor, ChangeKind::ListenerDelete, row)
            .await?;
        tx.commit().await?;
        Ok(cr)
    }

    async fn active_listener(&self, name: &str) -> Result<ListenerRow> {
        let l = store::listeners::get_by_name(self.store.pool(), name)
            .await?
            .ok_or_else(|| Error::NotFound {
                what: "listener",
                id: name.to_string(),
            })?;
        if !ListenerStatus::Active.is(&l.status) {
            return Err(Error::Conflict(format!(
                "listener '{name}' is {}; only an approved, active listener can be changed",
                match ListenerStatus::parse(&l.status) {
                    Some(ListenerStatus::Pending) => "still waiting for its first approval",
                    Some(ListenerStatus::Deleted) => {
                        "deleted (upload it again with POST /v1/listeners)"
                    }
                    _ => "not active (its addition was rejected)",
                }
            )));
        }
        Ok(l)
    }

    pub(super) async fn existing_types(&self) -> Result<Vec<String>> {
        Ok(store::resource_types::list(self.store.pool())
            .await?
            .into_iter()
            .map(|t| t.name)
            .collect())
    }

    /// Stores a checked version and opens its change request.
    async fn store_version(
        &self,
        tx: &mut WriteTx,
        actor: &Actor,
        requester: &str,
        kind: ChangeKind,
        listener_id: &str,
        c: Checked,
    ) -> Result<ChangeRequest> {
        let name = c.manifest.name().to_string();
        let version = c.manifest.version().to_string();
        if store::listeners::version_exists(tx.conn(), listener_id, &version).await? {
            return Err(Error::Conflict(format!(
                "version {version} of '{name}' was uploaded before; a version's bytes never \
                 change, so bump the manifest's version"
            )));
        }
        let v = VersionRow {
            id: crate::time::new_id("lsv"),
            listener_id: listener_id.to_string(),
            version: version.clone(),
            component_sha256: signature::component_digest(&c.component),
            manifest: c.manifest_text,
            manifest_sha256: c.manifest.digest(),
            signature: c.signature_text,
            key_id: c.signature.key_id.clone(),
            uploaded_by: requester.to_string(),
            created_at: crate::time::now(),
        };
        store::listeners::insert_version(tx.conn(), &v, &c.component).await?;
        let mut row: ChangeRequestRow = new_request(kind, &name, requester, &c.approver, c.comment);
        row.listener_id = Some(listener_id.to_string());
        row.version_id = Some(v.id);
        row.version = Some(version);
        row.key_id = Some(v.key_id);
        row.component_sha256 = Some(v.component_sha256);
        row.manifest_sha256 = Some(v.manifest_sha256);
        row.association = Some(c.association.canonical_json());
        self.open_request(tx, actor, kind, row).await
    }

    /// Audits a refused upload (the caller is authenticated and authorized), then passes the
    /// result on.
    async fn audit_upload(
        &self,
        actor: &Actor,
        name: Option<&str>,
        result: Result<ChangeRequest>,
    ) -> Result<ChangeRequest> {
        let Err(e) = &result else { return result };
        if matches!(
            e,
            Error::Validation(_)
                | Error::Conflict(_)
                | Error::Rejected { .. }
                | Error::TooLarge(_)
                | Error::NotFound { .. }
        ) {
            let reason: String = e.to_string().chars().take(2000).collect();
            audit::record(
                &self.store,
                NewEvent {
                    actor,
                    action: "listener.upload",
                    target: name.unwrap_or("(new listener)"),
                    outcome: Outcome::Failure,
                    detail: serde_json::json!({ "reason": reason }),
                },
            )
            .await?;
        }
        result
    }

    /// Checks every part of an upload; all problems are reported together. The component is
    /// compiled (and its imports checked against the manifest) only when everything else
    /// holds, so an unsigned or badly signed upload costs no compile.
    async fn check(
        &self,
        requester: &str,
        upload: Upload,
        expected_name: Option<&str>,
        current_association: Option<Association>,
    ) -> Result<Checked> {
        let mut problems = Vec::new();
        let component = match upload.component {
            None => {
                problems.push(FieldProblem::new(
                    "component",
                    "missing: send the .wasm file as the 'component' part",
                ));
                None
            }
            Some(bytes) if bytes.len() > self.max_component_bytes => {
                return Err(Error::TooLarge(format!(
                    "the component is {} bytes; this server accepts at most {} (--max-listener-bytes)",
                    bytes.len(),
                    self.max_component_bytes
                )));
            }
            Some(bytes) => {
                if let Some(p) = component_shape_problem(&bytes) {
                    problems.push(FieldProblem::new("component", p));
                }
                Some(bytes)
            }
        };
        let manifest_text = upload.manifest.unwrap_or_default();
        let manifest = if manifest_text.trim().is_empty() {
            problems.push(FieldProblem::new(
                "manifest",
                "missing: send the manifest TOML as the 'manifest' part",
            ));
            None
        } else {
            match Manifest::parse(&manifest_text) {
                Ok(m) => Some(m),
                Err(e) => {
                    problems.push(FieldProblem::new(
                        "manifest",
                        format!("invalid: {}", e.to_string().replace('\n', "; ")),
                    ));
                    None
                }
            }
        };
        if let (Some(m), Some(expected)) = (&manifest, expected_name)
            && m.name() != expected
        {
            problems.push(FieldProblem::new(
                "manifest",
                format!(
                    "the manifest names '{}', but this is listener '{expected}'",
                    m.name()
                ),
            ));
        }
        let signature_text = upload.signature.unwrap_or_default();
        let signature = self
            .check_signature(&signature_text, component.as_deref(), manifest.as_ref())
            .await;
        let signature = match signature {
            Ok(s) => Some(s),
            Err(p) => {
                problems.push(FieldProblem::new("signature", p));
                None
            }
        };
        let approver = upload.approver.unwrap_or_default().trim().to_string();
        if let Some(p) = self.approver_problem(requester, &approver).await? {
            problems.push(FieldProblem::new("approver", p));
        }
        let association = match (&manifest, upload.association) {
            (_, Some(text)) if !text.trim().is_empty() => {
                match serde_json::from_str::<Association>(&text) {
                    Ok(a) => Some(a.normalized()),
                    Err(e) => {
                        problems.push(FieldProblem::new(
                            "association",
                            format!("not an association: {e}"),
                        ));
                        None
                    }
                }
            }
            (Some(m), _) => {
                Some(current_association.unwrap_or_else(|| Association::from_manifest(m)))
            }
            (None, _) => None,
        };
        if let (Some(m), Some(a)) = (&manifest, &association) {
            let wrong = a.problems(m, &self.existing_types().await?);
            if !wrong.is_empty() {
                problems.push(FieldProblem::new("association", wrong.join("; ")));
            }
        }
        let comment = match comment("comment", upload.comment) {
            Ok(c) => c,
            Err(Error::Validation(mut p)) => {
                problems.append(&mut p);
                None
            }
            Err(e) => return Err(e),
        };
        let (Some(component), Some(manifest), Some(signature), Some(association), true) = (
            component,
            manifest,
            signature,
            association,
            problems.is_empty(),
        ) else {
            return Err(Error::Validation(problems));
        };
        // Compile, refuse ungranted imports, check the exported world: the same load a run
        // uses. Compiling is CPU-bound; keep it off the async workers.
        let runtime = self.runtime.clone();
        let (bytes, m) = (component.clone(), manifest.clone());
        tokio::task::spawn_blocking(move || runtime.load(&bytes, m))
            .await
            .map_err(|e| Error::Internal(format!("listener check task failed: {e}")))?
            .map_err(|e| Error::validation("component", e.to_string()))?;
        Ok(Checked {
            component,
            manifest,
            manifest_text,
            signature,
            signature_text,
            association,
            approver,
            comment,
        })
    }

    /// Parses the signature and checks it against a trusted key; `Err` is the problem text.
    async fn check_signature(
        &self,
        text: &str,
        component: Option<&[u8]>,
        manifest: Option<&Manifest>,
    ) -> std::result::Result<ListenerSignature, String> {
        if text.trim().is_empty() {
            return Err(
                "missing: every listener must be signed by a trusted publisher; \
                 run `lockstep listener sign` and send its .sig file as the 'signature' part"
                    .into(),
            );
        }
        let sig: ListenerSignature = serde_json::from_str(text)
            .map_err(|e| format!("not a signature made by `lockstep listener sign`: {e}"))?;
        let ledger = match self.ledger().await {
            Ok(Ok(ledger)) => ledger,
            Ok(Err(why)) => return Err(why),
            Err(e) => return Err(format!("cannot read the registry ledger: {e}")),
        };
        let key = self.trusted_key(&sig.key_id, &ledger).await?;
        let (Some(component), Some(manifest)) = (component, manifest) else {
            // Reported against the missing part; nothing to verify against.
            return Ok(sig);
        };
        signature::verify(&sig, &key, component, manifest).map_err(|e| e.to_string())?;
        Ok(sig)
    }
}

/// Why `bytes` cannot be a component, judged from the header alone.
fn component_shape_problem(bytes: &[u8]) -> Option<String> {
    if bytes.len() < 8 || bytes[..4] != *b"\0asm" {
        return Some(
            "not a WebAssembly component: it does not start with the WebAssembly magic bytes"
                .into(),
        );
    }
    if bytes[4..8] != [0x0d, 0x00, 0x01, 0x00] {
        return Some(
            "not a WebAssembly component: it is a core WebAssembly module; build for \
             wasm32-wasip2 or run `wasm-tools component new`"
                .into(),
        );
    }
    None
}
