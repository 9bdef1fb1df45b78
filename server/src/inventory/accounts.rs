//! Accounts and their passwords.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::fields::{
    check_custom_fields, check_name, check_text, decode_custom, double_option, encode_custom,
};
use crate::audit::{self, Actor, NewEvent, Outcome};
use crate::error::{Error, FieldProblem, Result};
use crate::states::SyncStatus;
use crate::store::accounts::AccountRow;
use crate::store::{self, Page, PageRequest, Store};
use crate::vault::{Secret, Vault, account_password_aad};

/// The built-in account property keys, as listeners see them. PASSWORD is not among them: it
/// is a secret, read only through a separately granted capability.
pub const PROPERTY_KEYS: &[&str] = &[
    "LOGINNAME",
    "DESCRIPTION",
    "DOMAINNAME",
    "COMPLIANTSTATUS",
    "COMPLIANTREASON",
    "EXPIRYSTATUS",
    "PASSWRDSYNCSTATUS",
    "PASSWORD",
];

/// PASSWRDSYNCSTATUS of an account an agent discovered: no password is stored for it until
/// its first reset.
pub const SYNC_DISCOVERED: &str = "discovered";

/// Longest password accepted.
pub const MAX_PASSWORD_CHARS: usize = 1024;

/// An account as the API shows it: never its password.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Account {
    pub id: String,
    pub resource_id: String,
    /// LOGINNAME.
    pub login_name: String,
    /// DESCRIPTION.
    pub description: Option<String>,
    /// DOMAINNAME.
    pub domain_name: Option<String>,
    /// COMPLIANTSTATUS: `unknown` until a password policy has checked it.
    pub compliant_status: String,
    /// COMPLIANTREASON.
    pub compliant_reason: Option<String>,
    /// EXPIRYSTATUS: `unknown` until a policy with a maximum age applies.
    pub expiry_status: String,
    /// PASSWRDSYNCSTATUS: `not-verified` until a reset has verified the target.
    pub password_sync_status: String,
    pub custom_fields: BTreeMap<String, String>,
    pub password_changed_at: String,
    pub created_at: String,
    pub updated_at: String,
}

impl Account {
    /// The account's properties under the keys listeners use (custom columns included; never
    /// the password).
    pub fn properties(&self) -> BTreeMap<String, String> {
        let mut p = self.custom_fields.clone();
        p.remove("PASSWORD");
        let mut put = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                p.insert(k.to_string(), v);
            }
        };
        put("LOGINNAME", Some(self.login_name.clone()));
        put("DESCRIPTION", self.description.clone());
        put("DOMAINNAME", self.domain_name.clone());
        put("COMPLIANTSTATUS", Some(self.compliant_status.clone()));
        put("COMPLIANTREASON", self.compliant_reason.clone());
        put("EXPIRYSTATUS", Some(self.expiry_status.clone()));
        put("PASSWRDSYNCSTATUS", Some(self.password_sync_status.clone()));
        p
    }
}

impl From<AccountRow> for Account {
    fn from(r: AccountRow) -> Account {
        Account {
            custom_fields: decode_custom(&r.custom_fields),
            id: r.id,
            resource_id: r.resource_id,
            login_name: r.login_name,
            description: r.description,
            domain_name: r.domain_name,
            compliant_status: r.compliant_status,
            compliant_reason: r.compliant_reason,
            expiry_status: r.expiry_status,
            password_sync_status: r.password_sync_status,
            password_changed_at: r.password_changed_at,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAccount {
    pub login_name: String,
    /// The account's current password; sealed by the vault before it is stored.
    #[schema(value_type = String, format = Password)]
    pub password: Secret,
    pub description: Option<String>,
    pub domain_name: Option<String>,
    #[serde(default)]
    pub custom_fields: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AccountPatch {
    pub login_name: Option<String>,
    #[serde(default, deserialize_with = "double_option")]
    pub description: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    pub domain_name: Option<Option<String>>,
    /// Replaces all custom fields when present.
    pub custom_fields: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetrieveRequest {
    /// Why the password is needed (3–500 characters); recorded in the audit trail.
    pub reason: String,
}

/// An authorized retrieval: the only response that carries a password.
#[derive(Serialize, utoipa::ToSchema)]
pub struct RetrievedPassword {
    pub account_id: String,
    pub password: String,
    pub retrieved_at: String,
}

impl std::fmt::Debug for RetrievedPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetrievedPassword")
            .field("account_id", &self.account_id)
            .finish_non_exhaustive()
    }
}

fn validate(a: &AccountRow, custom: &BTreeMap<String, String>, problems: &mut Vec<FieldProblem>) {
    check_name("login_name", &a.login_name, 128, problems);
    check_text("description", a.description.as_deref(), 2000, problems);
    check_text("domain_name", a.domain_name.as_deref(), 253, problems);
    check_custom_fields(custom, PROPERTY_KEYS, problems);
}

fn check_password(p: &Secret, problems: &mut Vec<FieldProblem>) {
    if p.is_empty() {
        problems.push(FieldProblem::new("password", "must not be empty"));
    } else if p.len() > MAX_PASSWORD_CHARS {
        problems.push(FieldProblem::new(
            "password",
            format!("must be at most {MAX_PASSWORD_CHARS} characters"),
        ));
    } else if p.expose().contains('\0') {
        problems.push(FieldProblem::new(
            "password",
            "must not contain NUL characters",
        ));
    }
}

fn duplicate(login: &str) -> impl FnOnce(store::Error) -> Error + '_ {
    move |e| {
        if store::is_unique_violation(&e) {
            Error::Conflict(format!("this resource already has an account '{login}'"))
        } else if store::is_foreign_key_violation(&e) {
            Error::Conflict("the resource was deleted meanwhile".into())
        } else {
            e.into()
        }
    }
}

pub async fn create(
    store: &Store,
    vault: &Vault,
    actor: &Actor,
    resource_id: &str,
    input: NewAccount,
) -> Result<Account> {
    crate::inventory::resources::get(store, resource_id).await?;
    let now = crate::time::now();
    let row = AccountRow {
        id: crate::time::new_id("acc"),
        resource_id: resource_id.to_string(),
        login_name: input.login_name,
        description: input.description,
        domain_name: input.domain_name,
        compliant_status: "unknown".into(),
        compliant_reason: None,
        expiry_status: "unknown".into(),
        password_sync_status: SyncStatus::NotVerified.as_str().into(),
        custom_fields: encode_custom(&input.custom_fields),
        password_changed_at: now.clone(),
        created_at: now.clone(),
        updated_at: now,
    };
    let mut problems = Vec::new();
    validate(&row, &input.custom_fields, &mut problems);
    check_password(&input.password, &mut problems);
    if !problems.is_empty() {
        return Err(Error::Validation(problems));
    }
    let sealed = vault.seal_secret(&input.password, &account_password_aad(&row.id))?;
    let mut tx = store.begin_write().await?;
    store::accounts::insert(tx.conn(), &row, &sealed)
        .await
        .map_err(duplicate(&row.login_name))?;
    audit::append(
        &mut tx,
        NewEvent {
            actor,
            action: "account.create",
            target: &row.id,
            outcome: Outcome::Success,
            detail: serde_json::json!({ "resource_id": row.resource_id, "login_name": row.login_name }),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(row.into())
}

async fn get_row(store: &Store, id: &str) -> Result<AccountRow> {
    store::accounts::get(store.pool(), id)
        .await?
        .ok_or_else(|| Error::NotFound {
            what: "account",
            id: id.to_string(),
        })
}

/// Every one of `ids` names an account; else the first that does not, as a 404.
pub async fn require_all(store: &Store, ids: &[String]) -> Result<()> {
    let found = store::accounts::existing(store.pool(), ids).await?;
    match ids.iter().find(|id| !found.contains(*id)) {
        None => Ok(()),
        Some(id) => Err(Error::NotFound {
            what: "account",
            id: id.clone(),
        }),
    }
}

pub async fn get(store: &Store, id: &str) -> Result<Account> {
    get_row(store, id).await.map(Into::into)
}

/// What an account search narrows by; every given filter must hold.
#[derive(Debug, Default)]
pub struct AccountSearch {
    /// This exact LOGINNAME.
    pub login_name: Option<String>,
    /// This PASSWRDSYNCSTATUS.
    pub sync_status: Option<String>,
    /// Accounts of resources of this type.
    pub resource_type: Option<String>,
}

/// Accounts across every resource, in id order, narrowed by `search`.
pub async fn search(
    store: &Store,
    search: &AccountSearch,
    page: &PageRequest,
) -> Result<Page<Account>> {
    if let Some(s) = &search.sync_status
        && SyncStatus::parse(s).is_none()
        && s != SYNC_DISCOVERED
    {
        let mut known: Vec<&str> = SyncStatus::ALL.iter().map(|v| v.as_str()).collect();
        known.push(SYNC_DISCOVERED);
        return Err(Error::validation(
            "sync_status",
            format!("is not a sync status; use one of {}", known.join(", ")),
        ));
    }
    if let Some(t) = &search.resource_type {
        crate::inventory::resource_types::get(store, t).await?;
    }
    let filter = store::accounts::AccountFilter {
        login_name: search.login_name.as_deref(),
        sync_status: search.sync_status.as_deref(),
        resource_type: search.resource_type.as_deref(),
    };
    Ok(store::accounts::list(store.pool(), &filter, page)
        .await?
        .map(Into::into))
}

pub async fn list_for_resource(
    store: &Store,
    resource_id: &str,
    page: &PageRequest,
) -> Result<Page<Account>> {
    crate::inventory::resources::get(store, resource_id).await?;
    let p = store::accounts::list_for_resource(store.pool(), resource_id, page).await?;
    Ok(Page {
        items: p.items.into_iter().map(Into::into).collect(),
        next_after: p.next_after,
    })
}

pub async fn update(
    store: &Store,
    actor: &Actor,
    id: &str,
    patch: AccountPatch,
) -> Result<Account> {
    let mut row = get_row(store, id).await?;
    let mut changed: Vec<&str> = Vec::new();
    if let Some(v) = patch.login_name {
        row.login_name = v;
        changed.push("login_name");
    }
    if let Some(v) = patch.description {
        row.description = v;
        changed.push("description");
    }
    if let Some(v) = patch.domain_name {
        row.domain_name = v;
        changed.push("domain_name");
    }
    let custom = match patch.custom_fields {
        Some(c) => {
            changed.push("custom_fields");
            c
        }
        None => decode_custom(&row.custom_fields),
    };
    row.custom_fields = encode_custom(&custom);
    row.updated_at = crate::time::now();
    let mut problems = Vec::new();
    validate(&row, &custom, &mut problems);
    if !problems.is_empty() {
        return Err(Error::Validation(problems));
    }
    let mut tx = store.begin_write().await?;
    store::accounts::update_details(tx.conn(), &row)
        .await
        .map_err(duplicate(&row.login_name))?;
    audit::append(
        &mut tx,
        NewEvent {
            actor,
            action: "account.update",
            target: &row.id,
            outcome: Outcome::Success,
            detail: serde_json::json!({ "changed": changed }),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(row.into())
}

/// Deletes an account and its sealed password.
pub async fn delete(store: &Store, actor: &Actor, id: &str) -> Result<()> {
    let row = get_row(store, id).await?;
    if store::resets::account_busy(store.pool(), id).await? {
        return Err(Error::Conflict(format!(
            "a reset of account '{id}' is in progress; delete it when the job has finished"
        )));
    }
    if let Some(resource) =
        store::reset_settings::resource_administered_by(store.pool(), id).await?
    {
        return Err(Error::Conflict(format!(
            "account '{id}' is the admin account of resource '{resource}'; name another in \
             PUT /v1/resources/{resource}/reset-settings first"
        )));
    }
    let mut tx = store.begin_write().await?;
    // Under the write lock: no checkout of it is granted between this check and the delete.
    if store::checkouts::open_on(store.pool(), id).await? {
        return Err(Error::Conflict(format!(
            "account '{id}' has a checkout that is requested, held, or returned without its \
             rotation started (GET /v1/checkouts?account_id={id}); wait for it to end, or \
             force a held one in with POST /v1/checkouts/{{id}}/force-checkin"
        )));
    }
    store::resets::forget_account(tx.conn(), id).await?;
    store::accounts::delete(tx.conn(), id).await?;
    audit::append(
        &mut tx,
        NewEvent {
            actor,
            action: "account.delete",
            target: id,
            outcome: Outcome::Success,
            detail: serde_json::json!({ "resource_id": row.resource_id, "login_name": row.login_name }),
        },
    )
    .await?;
    tx.commit().await
}

/// Opens an account's password for an authorized caller. The API reaches it only through
/// `access::checkout::retrieve`, which decides first whether an access policy lets the caller
/// have it (`checkout`: the checkout it is retrieved under). The audit event (with the reason,
/// and the checkout) is committed before the plaintext leaves this function; if it cannot be
/// written, nothing is returned.
pub async fn retrieve_password(
    store: &Store,
    vault: &Vault,
    actor: &Actor,
    id: &str,
    checkout: Option<&str>,
    request: RetrieveRequest,
) -> Result<RetrievedPassword> {
    let reason = request.reason.trim();
    let len = reason.chars().count();
    if !(3..=500).contains(&len) || reason.chars().any(|c| c.is_control()) {
        return Err(Error::validation(
            "reason",
            "give a reason of 3 to 500 characters (no control characters); it is recorded in the audit trail",
        ));
    }
    get_row(store, id).await?;
    let sealed = store::accounts::get_sealed_password(store.pool(), id)
        .await?
        .ok_or_else(|| Error::NotFound {
            what: "account",
            id: id.to_string(),
        })?;
    let secret = vault.open_secret(&sealed, &account_password_aad(id))?;
    if secret.is_empty() {
        return Err(Error::Conflict(format!(
            "account '{id}' has no stored password yet (its agent discovered it); reset it \
             with POST /v1/accounts/{id}/reset to set one"
        )));
    }
    let at = crate::time::now();
    audit::record(
        store,
        NewEvent {
            actor,
            action: "account.password.retrieve",
            target: id,
            outcome: Outcome::Success,
            detail: match checkout {
                Some(c) => serde_json::json!({ "reason": reason, "checkout": c }),
                None => serde_json::json!({ "reason": reason }),
            },
        },
    )
    .await?;
    Ok(RetrievedPassword {
        account_id: id.to_string(),
        password: secret.expose().to_string(),
        retrieved_at: at,
    })
}
