//! A person settling an out-of-sync account (`docs/resets.md`, "The attention queue"): the
//! engine logs in as the account with the stored password, then with each password kept for
//! it (the pending passwords of out-of-sync and interrupted resets), and the first the target
//! accepts is the account's: the vault takes it and the account is in sync again. Nothing is
//! guessed: when the target accepts none, nothing changes, and when it cannot be asked, nothing
//! is proven. A kept password the target refused stays kept (a command cut off long ago may
//! still apply it); only the one proven is let go of, into the vault. A kept password opens
//! only for the account its reset was for (`vault::reset_pending_aad`), so one re-pointed at
//! another account in the database is never tried on that account's target. What was proven
//! is written only if nothing moved meanwhile: no reset of the account started or ended, and
//! the stored password and the out-of-sync mark are the ones read (one conditional write).
//! Every resolve that logged in is audited, whatever its end.

use serde::{Deserialize, Serialize};

use super::Engine;
use crate::audit::{self, Actor, NewEvent, Outcome};
use crate::error::{Error, Result};
use crate::inventory::resource_types::ResetMethod;
use crate::reset::connector::{Connector, TargetFailure};
use crate::reset::settings::get_settings;
use crate::states::SyncStatus;
use crate::store::resets::KeptPassword;
use crate::store::{self};
use crate::vault::{Sealed, Secret, account_password_aad, reset_pending_aad};

/// Kept passwords tried, newest first: one SSH login each.
const KEPT_TRIED: i64 = 64;

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
    /// Kept passwords that did not open for this account (moved in the database?): never
    /// tried.
    pub unopenable: usize,
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
        // Asking only logs in: no command runs, so the template does not matter.
        let command = crate::inventory::reset_command::ResetCommand::chpasswd();
        let connector = self
            .connector(rtype.reset_method, &resource, &settings, &command)
            .map_err(Error::Conflict)?;
        let label = connector.label();
        let login = account.login_name.as_str();
        let stored_sealed = store::accounts::get_sealed_password(self.store.pool(), account_id)
            .await?
            .ok_or_else(|| Error::Internal(format!("account {account_id} has no password")))?;
        let stored = self
            .vault
            .open_secret(&stored_sealed, &account_password_aad(account_id))?;
        let kept_total = store::resets::count_kept(self.store.pool(), account_id).await?;
        let kept =
            store::resets::kept_passwords(self.store.pool(), account_id, "", KEPT_TRIED).await?;
        // Anything a reset of the account does from now makes what is proven here stale.
        let started = crate::time::now();

        let ask = |password: &Secret| {
            let password = password.clone();
            let (connector, label) = (&connector, &label);
            async move {
                connector.accepts(login, &password).await.map_err(|e| match e {
                    // Asking again will not help: the target must change how it checks.
                    TargetFailure::Unprovable { .. } => {
                        Error::Conflict(format!("{e}; nothing changed"))
                    }
                    e => Error::Conflict(format!(
                        "cannot ask {label} which password it holds for '{login}': {e}; nothing \
                         changed, try again when it answers"
                    )),
                })
            }
        };
        let mut tried: Vec<Secret> = Vec::new();
        let mut unopenable = 0usize;
        let proof: Result<Option<(Option<KeptPassword>, Secret)>> = async {
            if !stored.is_empty() {
                tried.push(stored.clone());
                if ask(&stored).await? {
                    return Ok(Some((None, stored.clone())));
                }
            }
            for k in kept {
                let aad = reset_pending_aad(&k.item_id, account_id);
                let Ok(candidate) = self.vault.open_secret(&k.sealed, &aad) else {
                    tracing::warn!(account = %account_id, kept_by = %k.item_id, "a kept password does not open for this account (moved in the database?); not tried");
                    unopenable += 1;
                    continue;
                };
                if tried.iter().any(|t| t.expose() == candidate.expose()) {
                    continue;
                }
                tried.push(candidate.clone());
                if ask(&candidate).await? {
                    return Ok(Some((Some(k), candidate)));
                }
            }
            Ok(None)
        }
        .await;
        let tried = tried.len();
        let tries = Tries {
            reason: reason.clone(),
            tried,
            unopenable,
        };
        let found = match proof {
            Ok(Some(found)) => found,
            Ok(None) => {
                let why = format!(
                    "the target accepts none of the {tried} password(s) tried for account \
                     '{account_id}' (the stored one and {} of the {kept_total} kept by earlier \
                     resets{}): it holds one Lockstep never set. Nothing changed. Retry the \
                     reset (POST /v1/accounts/{account_id}/reset): it sets a new password \
                     through the resource's admin login",
                    tried.saturating_sub(usize::from(!stored.is_empty())),
                    if unopenable > 0 {
                        format!("; {unopenable} kept for it did not open and were not tried")
                    } else {
                        String::new()
                    }
                );
                tracing::warn!(account = %account_id, tried, "the target accepts none of the passwords kept for an out-of-sync account");
                let e = Error::Conflict(why);
                return Err(self.resolve_failed(actor, account_id, &tries, e).await);
            }
            Err(e) if tried == 0 => return Err(e),
            Err(e) => return Err(self.resolve_failed(actor, account_id, &tries, e).await),
        };
        match self
            .take_proven(actor, account_id, &stored_sealed, &started, found, &tries)
            .await
        {
            Ok(resolution) => Ok(resolution),
            Err(e) => Err(self.resolve_failed(actor, account_id, &tries, e).await),
        }
    }

    /// Writes what the target proved, if nothing moved since the logins began (`started`),
    /// with its audit event, in one transaction.
    async fn take_proven(
        &self,
        actor: &Actor,
        account_id: &str,
        stored: &Sealed,
        started: &str,
        (kept, password): (Option<KeptPassword>, Secret),
        f: &Tries,
    ) -> Result<Resolution> {
        let now = crate::time::now();
        let sealed = match &kept {
            Some(_) => Some(
                self.vault
                    .seal_secret(&password, &account_password_aad(account_id))?,
            ),
            None => None,
        };
        let mut tx = self.store.begin_write().await?;
        if store::resets::account_moved_since(tx.conn(), account_id, started).await? {
            return Err(busy(account_id));
        }
        let settled = store::accounts::settle_out_of_sync(
            tx.conn(),
            account_id,
            stored,
            sealed.as_ref(),
            &now,
        )
        .await?;
        if !settled {
            return Err(Error::Conflict(format!(
                "account '{account_id}' changed while its passwords were tried (its stored \
                 password, or its out-of-sync mark); read it again"
            )));
        }
        if let Some(k) = &kept {
            store::resets::drop_kept(tx.conn(), k).await?;
        }
        let accepted = if kept.is_some() {
            Accepted::Kept
        } else {
            Accepted::Stored
        };
        let kept_by_item = kept.map(|k| k.item_id);
        audit::append(
            &mut tx,
            NewEvent {
                actor,
                action: "account.out-of-sync.resolve",
                target: account_id,
                outcome: Outcome::Success,
                detail: serde_json::json!({
                    "reason": f.reason, "tried": f.tried, "unopenable": f.unopenable,
                    "accepted": accepted, "kept_by_item": kept_by_item,
                }),
            },
        )
        .await?;
        tx.commit().await?;
        tracing::info!(account = %account_id, accepted = ?accepted, "an out-of-sync account was resolved");
        Ok(Resolution {
            account_id: account_id.to_string(),
            accepted,
            kept_by_item,
            tried: f.tried,
            unopenable: f.unopenable,
            sync_status: SyncStatus::InSync.as_str().into(),
        })
    }

    /// Audits a resolve that logged in and did not settle the account (`e` says why); returns
    /// `e`, or the audit's own error if it cannot be written.
    async fn resolve_failed(&self, actor: &Actor, account_id: &str, f: &Tries, e: Error) -> Error {
        let written = audit::record(
            &self.store,
            NewEvent {
                actor,
                action: "account.out-of-sync.resolve",
                target: account_id,
                outcome: Outcome::Failure,
                detail: serde_json::json!({
                    "reason": f.reason, "tried": f.tried, "unopenable": f.unopenable,
                    "why": e.to_string(),
                }),
            },
        )
        .await;
        match written {
            Ok(()) => e,
            Err(audit) => audit,
        }
    }
}

/// What a resolve that logged in did, for its audit event.
struct Tries {
    reason: String,
    tried: usize,
    unopenable: usize,
}

fn busy(account_id: &str) -> Error {
    Error::Conflict(format!(
        "a reset of account '{account_id}' is in progress or ended while its passwords were \
         tried, and a reset asks the target itself; resolve the account after it ends if it is \
         still out-of-sync"
    ))
}
