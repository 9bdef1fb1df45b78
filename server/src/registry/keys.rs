//! Publisher keys: proposing that the server trust a key, or stop trusting one.

use serde::{Deserialize, Serialize};

use lockstep_runtime::signature;

use super::{ChangeKind, ChangeRequest, Registry, comment, new_request};
use crate::audit::Actor;
use crate::error::{Error, FieldProblem, Result};
use crate::states::KeyStatus;
use crate::store::publisher_keys::PublisherKeyRow;
use crate::store::{self};

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PublisherKey {
    /// The first 8 bytes of SHA-256(public key), hex: what signatures name.
    pub key_id: String,
    pub name: String,
    /// The ed25519 public key, hex.
    pub public_key: String,
    /// `pending`, `trusted`, `removed` or `rejected`.
    pub status: String,
    pub created_by: String,
    pub created_at: String,
    pub updated_at: String,
}

impl From<PublisherKeyRow> for PublisherKey {
    fn from(k: PublisherKeyRow) -> PublisherKey {
        PublisherKey {
            key_id: k.key_id,
            name: k.name,
            public_key: k.public_key,
            status: k.status,
            created_by: k.created_by,
            created_at: k.created_at,
            updated_at: k.updated_at,
        }
    }
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPublisherKey {
    /// A label for people, e.g. `ci-release`.
    pub name: String,
    /// The contents of `FILE.pub` from `lockstep keygen` (64 hex characters).
    pub public_key: String,
    /// Who must approve trusting it.
    pub approver: String,
    pub comment: Option<String>,
}

/// What the trust seal of a key covers.
pub(super) fn trust_binding(key_id: &str, public_key: &str) -> String {
    format!("lockstep:publisher-key-trust:v1\n{key_id}\n{public_key}")
}

impl Registry {
    pub async fn list_keys(&self) -> Result<Vec<PublisherKey>> {
        Ok(store::publisher_keys::list(self.store.pool())
            .await?
            .into_iter()
            .map(Into::into)
            .collect())
    }

    /// Proposes trusting a key; it is trusted once the approver approves.
    pub async fn propose_key(
        &self,
        actor: &Actor,
        requester: &str,
        input: NewPublisherKey,
    ) -> Result<ChangeRequest> {
        let mut problems = Vec::new();
        let name = input.name.trim().to_string();
        if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
            problems.push(FieldProblem::new(
                "name",
                "1 to 100 characters, no control characters",
            ));
        }
        let key = match signature::parse_public_key(&input.public_key) {
            Ok(k) => Some(k),
            Err(e) => {
                problems.push(FieldProblem::new(
                    "public_key",
                    format!("{e}; paste the contents of FILE.pub from `lockstep keygen`"),
                ));
                None
            }
        };
        if let Some(p) = self.approver_problem(requester, &input.approver).await? {
            problems.push(FieldProblem::new("approver", p));
        }
        let request_comment = comment("comment", input.comment)?;
        let Some(key) = key.filter(|_| problems.is_empty()) else {
            return Err(Error::Validation(problems));
        };
        let key_id = signature::key_id(&key);
        let public_key = hex::encode(key.as_bytes());
        let mut tx = self.store.begin_write().await?;
        // A pending key whose request was decided without unwinding it (its seal failed) may
        // be proposed again.
        if let Some(existing) = store::publisher_keys::get(tx.conn(), &key_id).await?
            && (KeyStatus::Trusted.is(&existing.status)
                || (KeyStatus::Pending.is(&existing.status)
                    && store::change_requests::pending_for(tx.conn(), &key_id)
                        .await?
                        .is_some()))
        {
            return Err(Error::Conflict(format!(
                "key {key_id} is already {} (as '{}')",
                existing.status, existing.name
            )));
        }
        let now = crate::time::now();
        store::publisher_keys::upsert(
            tx.conn(),
            &PublisherKeyRow {
                key_id: key_id.clone(),
                name,
                public_key: public_key.clone(),
                status: KeyStatus::Pending.as_str().into(),
                trust_seal: None,
                created_by: requester.to_string(),
                created_at: now.clone(),
                updated_at: now,
            },
        )
        .await?;
        let mut row = new_request(
            ChangeKind::KeyAdd,
            &key_id,
            requester,
            &input.approver,
            request_comment,
        );
        row.key_id = Some(key_id);
        row.public_key = Some(public_key);
        let cr = self
            .open_request(&mut tx, actor, ChangeKind::KeyAdd, row)
            .await?;
        tx.commit().await?;
        Ok(cr)
    }

    /// Proposes no longer trusting a key. Once approved, every listener signed with it stops
    /// running.
    pub async fn propose_key_removal(
        &self,
        actor: &Actor,
        requester: &str,
        key_id: &str,
        approver: &str,
    ) -> Result<ChangeRequest> {
        let existing = store::publisher_keys::get(self.store.pool(), key_id)
            .await?
            .ok_or_else(|| Error::NotFound {
                what: "publisher key",
                id: key_id.to_string(),
            })?;
        if !KeyStatus::Trusted.is(&existing.status) {
            return Err(Error::Conflict(format!(
                "key {key_id} is {}, not trusted; there is nothing to remove",
                existing.status
            )));
        }
        if let Some(p) = self.approver_problem(requester, approver).await? {
            return Err(Error::validation("approver", p));
        }
        let mut tx = self.store.begin_write().await?;
        let mut row = new_request(ChangeKind::KeyRemove, key_id, requester, approver, None);
        row.key_id = Some(key_id.to_string());
        let cr = self
            .open_request(&mut tx, actor, ChangeKind::KeyRemove, row)
            .await?;
        tx.commit().await?;
        Ok(cr)
    }
}
