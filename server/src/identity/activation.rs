//! A user's first credential, and a new one after it was lost: a one-time activation code that
//! the new user spends on `POST /v1/activate` for a token of their own. Whoever issues a code
//! could spend it, so issuing one makes the issuer a custodian of the account
//! ([`super::custody`]): nobody can quietly obtain a credential for another user, and an
//! account one person could have used never counts as a second person's approval.

use chrono::Duration;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::{IssuedToken, NewToken, Principal, custody, seal, token, write_token};
use crate::audit::{self, Actor, NewEvent, Outcome};
use crate::error::{Error, Result};
use crate::registry::Registry;
use crate::store::{self, Store, WriteTx};

/// How long an activation code can be spent.
pub const ACTIVATION_HOURS: i64 = 24;

/// A fresh activation code: shown once, to the caller who must hand it to the user.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Activation {
    pub user_id: String,
    pub user_name: String,
    /// One-time code (`lsa_…`) the user spends on `POST /v1/activate`; Lockstep keeps only its
    /// hash.
    pub activation_code: String,
    pub expires_at: String,
}

impl std::fmt::Debug for Activation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Activation")
            .field("user_name", &self.user_name)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// `POST /v1/activate`: no bearer token, the code is the credential.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ActivateInput {
    /// The user's login name.
    pub name: String,
    /// The activation code the user was given.
    pub activation_code: String,
    /// The first token's label and lifetime (as `POST /v1/tokens`).
    #[serde(default)]
    pub token: Option<NewToken>,
}

impl std::fmt::Debug for ActivateInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActivateInput")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Writes a new activation code for `user_id` inside `tx`; `issuer` is the API user issuing it
/// (None: the host CLI).
pub(super) async fn write_code(
    tx: &mut WriteTx,
    user_id: &str,
    user_name: &str,
    issuer: Option<&str>,
) -> Result<Activation> {
    let code: Zeroizing<String> = token::generate_with(token::ACTIVATION_PREFIX)?;
    let expires_at =
        crate::time::format(crate::time::now_utc() + Duration::hours(ACTIVATION_HOURS));
    store::user_custody::set_activation(
        tx.conn(),
        user_id,
        &token::hash(&code),
        issuer.unwrap_or("cli"),
        &expires_at,
    )
    .await?;
    Ok(Activation {
        user_id: user_id.to_string(),
        user_name: user_name.to_string(),
        activation_code: code.to_string(),
        expires_at,
    })
}

/// Resets a user's credential: every token of theirs is revoked and a new activation code is
/// issued. The caller must hold every privilege of the user's role, and becomes a custodian.
pub async fn reissue(
    store: &Store,
    caller: &Principal,
    actor: &Actor,
    user_id: &str,
) -> Result<Activation> {
    let user = store::users::get(store.pool(), user_id)
        .await?
        .ok_or_else(|| Error::NotFound {
            what: "user",
            id: user_id.to_string(),
        })?;
    super::require_all_of_role(store, caller, &user.role).await?;
    let now = crate::time::now();
    let mut change = seal::IdentityChange::begin(store).await?;
    // Both accounts must be intact: the caller's custody is passed on, and the user's custody
    // is carried forward.
    let by = change
        .check(&caller.user_id)
        .await?
        .ok_or(Error::Unauthenticated(
            "the caller's account no longer exists",
        ))?;
    change.check(&user.id).await?;
    let tx = change.tx();
    let revoked = store::tokens::revoke_all_of(tx.conn(), &user.id, &now).await?;
    let activation = write_code(tx, &user.id, &user.name, Some(&caller.user_name)).await?;
    custody::record(tx, &user.name, Some(&by), &now).await?;
    audit::append(
        tx,
        NewEvent {
            actor,
            action: "user.activation.issue",
            target: &user.id,
            outcome: Outcome::Success,
            detail: serde_json::json!({
                "name": user.name, "tokens_revoked": revoked,
                "expires_at": activation.expires_at,
            }),
        },
    )
    .await?;
    change.commit(&[&user.id], "user.activation.issue").await?;
    Ok(activation)
}

/// Spends an activation code for the user's first token. Every failure is the same 401, so the
/// endpoint tells nothing about which names exist. The code must be the one the user's sealed
/// identity holds: a code row a database writer inserted is refused.
pub async fn activate(
    store: &Store,
    registry: &Registry,
    actor: &Actor,
    input: ActivateInput,
) -> Result<IssuedToken> {
    const REFUSED: Error = Error::Unauthenticated(
        "the activation code is unknown, spent or expired; ask an administrator for a new one",
    );
    if !input.activation_code.starts_with(token::ACTIVATION_PREFIX)
        || input.activation_code.len() > 128
    {
        return Err(REFUSED);
    }
    let now = crate::time::now();
    let user = store::users::get_by_name(store.pool(), &input.name)
        .await?
        .ok_or(REFUSED)?;
    let code_sha256 = token::hash(&input.activation_code);
    // Read first: a flood of wrong codes never queues on the store's write lock (which every
    // reset step needs); only a code that exists is spent in a write transaction.
    if !store::user_custody::activation_exists(store.pool(), &code_sha256, &now).await? {
        return Err(REFUSED);
    }
    // A refused identity is alerted and audited here (the change below only refuses).
    match seal::verified(store, registry, &user.id).await {
        Ok(Some(_)) => {}
        Ok(None) | Err(Error::Unauthenticated(_)) => return Err(REFUSED),
        Err(e) => return Err(e),
    }
    let mut change = seal::IdentityChange::begin(store).await?;
    let identity = match change.check(&user.id).await {
        Ok(Some(identity)) => identity,
        Ok(None) | Err(Error::Conflict(_)) => return Err(REFUSED),
        Err(e) => return Err(e),
    };
    if identity
        .activation
        .as_ref()
        .is_none_or(|a| a.code_sha256 != code_sha256)
    {
        return Err(REFUSED);
    }
    let tx = change.tx();
    let Some(user_id) = store::user_custody::take_activation(tx.conn(), &code_sha256, &now).await?
    else {
        return Err(REFUSED);
    };
    if user_id != user.id {
        return Err(REFUSED);
    }
    audit::append(
        tx,
        NewEvent {
            actor,
            action: "user.activate",
            target: &user.id,
            outcome: Outcome::Success,
            detail: serde_json::json!({ "name": user.name }),
        },
    )
    .await?;
    // The code is spent and the first token written in one transaction.
    let own = Actor::user(&user.name, actor.source_ip.clone());
    let issued = write_token(tx, &own, &user.id, input.token.unwrap_or_default()).await?;
    change.commit(&[&user.id], "user.activate").await?;
    Ok(issued)
}
