//! A person settling an out-of-sync account (`docs/resets.md`, "The attention queue"): the
//! engine logs in as the account with the stored password, then with each password kept for
//! it (the pending passwords of out-of-sync and interrupted resets), and the first the target
//! accepts is the account's: the vault takes it and the account is in sync again. Nothing is
//! guessed: when the target accepts none, nothing changes, and when it cannot be asked, nothing
//! is proven. A kept password the target refused stays kept (a command cut off long ago may
//! still apply it); only the one proven is let go of, into the vault.

use serde::{Deserialize, Serialize};

use super::journal::pending_aad;
use super::{Engine, endpoint_of};
use crate::audit::{self, Actor, NewEvent, Outcome};
use crate::error::{Error, Result};
use crate::inventory::resource_types::ResetMethod;
use crate::reset::remote;
use crate::reset::settings::get_settings;
use crate::states::SyncStatus;
use crate::store::resets::KeptPassword;
use crate::store::{self};
use crate::vault::{Secret, account_password_aad};

/// Kept passwords tried, newest first (as a reset's own recovery tries).
const KEPT_TRIED: i64 = 8;

/// What a person gives to resolve an out-of-sync account.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResolveRequest {
    /// Why (3–500 characters); recorded in the audit trail.
    pub reason: String,
}

/// Which password the target proved it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Accepted {
    /// The stored one: the vault was right all along.
    Stored,
    /// One a reset kept: it is the stored one now.
    Kept,
}

/// How an out-of-sync account was resolved.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Resolution {
    pub account_id: String,
    pub accepted: Accepted,
    /// The reset that kept the password the target accepted (`kept`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kept_by_item: Option<String>,
    /// Passwords tried (one login each) before the target accepted one.
    pub tried: usize,
    /// The account's sync status now: `in-sync`.
    pub sync_status: String,
}

impl Engine {
    /// Proves which kept password the target accepts for an out-of-sync account and makes it
    /// the stored one (audited as `account.out-of-sync.resolve`, with the outcome).
    pub async fn resolve(
        &self,
        actor: &Actor,
        account_id: &str,
        req: ResolveRequest,
    ) -> Result<Resolution> {
        let reason = crate::reset::jobs::check_reason(&req.reason)?;
        let account = crate::inventory::accounts::get(&self.store, account_id).await?;
        if !SyncStatus::OutOfSync.is(&account.password_sync_status) {
            return Err(Error::Conflict(format!(
                "account '{account_id}' is {}, not out-of-sync: there is nothing to resolve",
                account.password_sync_status
            )));
        }
        if store::resets::account_busy(self.store.pool(), account_id).await? {
            return Err(busy(account_id));
        }
        let resource = crate::inventory::resources::get(&self.store, &account.resource_id).await?;
        let rtype =
            crate::inventory::resource_types::get(&self.store, &resource.resource_type).await?;
        let agent = store::agents::agent_of_resource(self.store.pool(), &resource.id).await?;
        if agent.is_some() || rtype.reset_method == ResetMethod::Agent {
            return Err(Error::Conflict(format!(
                "account '{account_id}' is on a machine an agent manages, and an agent checks \
                 only the stored password (POST /v1/accounts/{account_id}/verify); retry the \
                 reset (POST /v1/accounts/{account_id}/reset) to set a new password through it"
            )));
        }
        if rtype.reset_method == ResetMethod::Local {
            return Err(Error::Conflict(format!(
                "resources of type '{}' are reset in the vault only: there is no target to ask; \
                 retry the reset (POST /v1/accounts/{account_id}/reset) to choose the password",
                rtype.name
            )));
        }
        let settings = get_settings(&self.store, &resource.id).await?;
        let endpoint = endpoint_of(&resource, &settings);
        let login = account.login_name.as_str();
        let stored_sealed = store::accounts::get_sealed_password(self.store.pool(), account_id)
            .await?
            .ok_or_else(|| Error::Internal(format!("account {account_id} has no password")))?;
        let stored = self
            .vault
            .open_secret(&stored_sealed, &account_password_aad(account_id))?;
        let kept =
            store::resets::kept_passwords(self.store.pool(), account_id, "", KEPT_TRIED).await?;

        let ask = |password: &Secret| {
            let endpoint = endpoint.clone();
            let password = password.clone();
            async move {
                remote::accepts(&endpoint, login, &password, self.timeouts)
                    .await
                    .map_err(|e| {
                        Error::Conflict(format!(
                            "cannot ask {} which password it holds for '{login}': {e}; nothing \
                             changed, try again when it answers",
                            endpoint.label()
                        ))
                    })
            }
        };
        let mut tried: Vec<Secret> = Vec::new();
        let mut accepted: Option<(Option<KeptPassword>, Secret)> = None;
        if !stored.is_empty() {
            tried.push(stored.clone());
            if ask(&stored).await? {
                accepted = Some((None, stored.clone()));
            }
        }
        if accepted.is_none() {
            for k in kept {
                let candidate = self
                    .vault
                    .open_secret(&k.sealed, &pending_aad(&k.item_id))?;
                if tried.iter().any(|t| t.expose() == candidate.expose()) {
                    continue;
                }
                tried.push(candidate.clone());
                if ask(&candidate).await? {
                    accepted = Some((Some(k), candidate));
                    break;
                }
            }
        }

        let now = crate::time::now();
        let mut tx = self.store.begin_write().await?;
        if store::resets::account_busy(tx.conn(), account_id).await? {
            return Err(busy(account_id));
        }
        if !store::accounts::password_unchanged(tx.conn(), account_id, &stored_sealed).await? {
            return Err(Error::Conflict(format!(
                "the stored password of account '{account_id}' changed while its passwords were \
                 tried; read the account again"
            )));
        }
        let kept_by_item = match &accepted {
            Some((None, _)) => {
                store::accounts::set_sync_status(
                    tx.conn(),
                    account_id,
                    SyncStatus::InSync.as_str(),
                    &now,
                )
                .await?;
                None
            }
            Some((Some(k), password)) => {
                let sealed = self
                    .vault
                    .seal_secret(password, &account_password_aad(account_id))?;
                store::accounts::set_password(tx.conn(), account_id, &sealed, &now).await?;
                store::resets::drop_kept(tx.conn(), k).await?;
                Some(k.item_id.clone())
            }
            None => None,
        };
        let which = accepted.as_ref().map(|(k, _)| match k {
            None => Accepted::Stored,
            Some(_) => Accepted::Kept,
        });
        audit::append(
            &mut tx,
            NewEvent {
                actor,
                action: "account.out-of-sync.resolve",
                target: account_id,
                outcome: if which.is_some() {
                    Outcome::Success
                } else {
                    Outcome::Failure
                },
                detail: serde_json::json!({
                    "reason": reason, "tried": tried.len(), "accepted": which,
                    "kept_by_item": kept_by_item,
                }),
            },
        )
        .await?;
        tx.commit().await?;
        let Some(accepted) = which else {
            tracing::warn!(account = %account_id, tried = tried.len(), "the target accepts none of the passwords kept for an out-of-sync account");
            return Err(Error::Conflict(format!(
                "the target accepts none of the {} password(s) Lockstep kept for account \
                 '{account_id}' (the stored one and those earlier resets kept): it holds one \
                 Lockstep never set. Nothing changed. Retry the reset \
                 (POST /v1/accounts/{account_id}/reset): it sets a new password through the \
                 resource's admin login",
                tried.len()
            )));
        };
        tracing::info!(account = %account_id, accepted = ?accepted, "an out-of-sync account was resolved");
        Ok(Resolution {
            account_id: account_id.to_string(),
            accepted,
            kept_by_item,
            tried: tried.len(),
            sync_status: SyncStatus::InSync.as_str().into(),
        })
    }
}

fn busy(account_id: &str) -> Error {
    Error::Conflict(format!(
        "a reset of account '{account_id}' is in progress, and it asks the target itself; \
         resolve the account after it ends if it is still out-of-sync"
    ))
}
