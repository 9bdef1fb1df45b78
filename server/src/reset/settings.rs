//! Per-resource reset settings and password policies.

use serde::{Deserialize, Serialize};

use super::policy::{PasswordPolicy, default_policy};
use crate::audit::{self, Actor, NewEvent, Outcome};
use crate::error::{Error, FieldProblem, Result};
use crate::store::password_policies::PolicyRow;
use crate::store::reset_settings::ResetSettingsRow;
use crate::store::{self, Store};

/// How a resource's passwords are reset.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ResetSettings {
    pub resource_id: String,
    /// The account (on this resource) that changes other accounts' passwords.
    pub admin_account_id: Option<String>,
    /// `root` (changes passwords directly) or `sudo` (through `sudo -S`).
    pub admin_kind: String,
    /// The SSH host key fingerprint pinned at first use; a different key refuses resets.
    pub ssh_host_key: Option<String>,
    /// The TLS certificate fingerprint (`SHA256:…` of the leaf) of a database or directory
    /// target, pinned at first use; a different certificate refuses resets.
    pub tls_certificate: Option<String>,
    pub password_policy: String,
    pub updated_at: Option<String>,
}

impl From<ResetSettingsRow> for ResetSettings {
    fn from(r: ResetSettingsRow) -> ResetSettings {
        ResetSettings {
            resource_id: r.resource_id,
            admin_account_id: r.admin_account_id,
            admin_kind: r.admin_kind,
            ssh_host_key: r.ssh_host_key,
            tls_certificate: r.tls_certificate,
            password_policy: r.password_policy,
            updated_at: Some(r.updated_at),
        }
    }
}

/// `PUT /v1/resources/{id}/reset-settings`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetSettingsInput {
    pub admin_account_id: Option<String>,
    /// `root` (default) or `sudo`.
    #[serde(default = "root")]
    pub admin_kind: String,
    /// Leave out to keep the pinned key; send `null` to forget it (the next reset pins the
    /// key it sees); send a `SHA256:…` fingerprint to pin that one.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub ssh_host_key: Option<Option<String>>,
    /// As `ssh_host_key`, for a target reached over TLS (PostgreSQL): leave out to keep the
    /// pinned certificate, `null` to forget it, a `SHA256:…` fingerprint of the leaf
    /// certificate's DER to pin that one.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub tls_certificate: Option<Option<String>>,
    #[serde(default = "default_name")]
    pub password_policy: String,
}

/// Tells a field sent as `null` (`Some(None)`) from one left out (`None`).
fn present<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

fn root() -> String {
    "root".into()
}

fn default_name() -> String {
    "default".into()
}

/// The settings of a resource (defaults when none were saved).
pub async fn get_settings(store: &Store, resource_id: &str) -> Result<ResetSettings> {
    crate::inventory::resources::get(store, resource_id).await?;
    Ok(
        match store::reset_settings::get(store.pool(), resource_id).await? {
            Some(r) => r.into(),
            None => ResetSettings {
                resource_id: resource_id.to_string(),
                admin_account_id: None,
                admin_kind: "root".into(),
                ssh_host_key: None,
                tls_certificate: None,
                password_policy: "default".into(),
                updated_at: None,
            },
        },
    )
}

pub async fn put_settings(
    store: &Store,
    actor: &Actor,
    resource_id: &str,
    input: ResetSettingsInput,
) -> Result<ResetSettings> {
    crate::inventory::resources::get(store, resource_id).await?;
    let mut problems = Vec::new();
    if let Some(a) = &input.admin_account_id {
        match crate::store::accounts::get(store.pool(), a).await? {
            Some(acc) if acc.resource_id == resource_id => {}
            Some(_) => problems.push(FieldProblem::new(
                "admin_account_id",
                "the admin account must belong to this resource",
            )),
            None => problems.push(FieldProblem::new(
                "admin_account_id",
                format!("no account '{a}'"),
            )),
        }
    }
    if !matches!(input.admin_kind.as_str(), "root" | "sudo") {
        problems.push(FieldProblem::new("admin_kind", "root or sudo"));
    }
    if let Some(Some(k)) = &input.ssh_host_key
        && !k.starts_with("SHA256:")
    {
        problems.push(FieldProblem::new(
            "ssh_host_key",
            "a SHA256:… fingerprint (as `ssh-keygen -lf` prints it), or null to pin at first use",
        ));
    }
    if let Some(Some(k)) = &input.tls_certificate
        && !crate::reset::connector::tls_pin::is_fingerprint(k)
    {
        problems.push(FieldProblem::new(
            "tls_certificate",
            "a SHA256:… fingerprint of the certificate's DER in unpadded base64 (`openssl x509 \
             -outform der | openssl dgst -sha256 -binary | base64`, without the trailing =), or \
             null to pin at first use",
        ));
    }
    if store::password_policies::get(store.pool(), &input.password_policy)
        .await?
        .is_none()
    {
        problems.push(FieldProblem::new(
            "password_policy",
            format!(
                "no policy '{}'; GET /v1/password-policies",
                input.password_policy
            ),
        ));
    }
    if !problems.is_empty() {
        return Err(Error::Validation(problems));
    }
    let mut tx = store.begin_write().await?;
    // Left out: the pin stays. Forgetting it (the next reset trusts whatever key answers and
    // sends the admin's password to it) must be asked for with an explicit null.
    let ssh_host_key = match input.ssh_host_key {
        Some(k) => k,
        None => store::reset_settings::pinned_host_key(tx.conn(), resource_id).await?,
    };
    let tls_certificate = match input.tls_certificate {
        Some(k) => k,
        None => store::reset_settings::pinned_tls_certificate(tx.conn(), resource_id).await?,
    };
    let row = ResetSettingsRow {
        resource_id: resource_id.to_string(),
        admin_account_id: input.admin_account_id,
        admin_kind: input.admin_kind,
        ssh_host_key,
        tls_certificate,
        password_policy: input.password_policy,
        updated_at: crate::time::now(),
    };
    store::reset_settings::upsert(tx.conn(), &row).await?;
    audit::append(
        &mut tx,
        NewEvent {
            actor,
            action: "resource.reset-settings.update",
            target: resource_id,
            outcome: Outcome::Success,
            detail: serde_json::json!({
                "admin_account_id": row.admin_account_id,
                "admin_kind": row.admin_kind,
                "ssh_host_key": row.ssh_host_key,
                "tls_certificate": row.tls_certificate,
                "password_policy": row.password_policy,
            }),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(row.into())
}

fn to_row(p: &PasswordPolicy, builtin: bool) -> PolicyRow {
    PolicyRow {
        name: p.name.clone(),
        min_length: p.min_length,
        generated_length: p.generated_length,
        require_lowercase: p.require_lowercase.into(),
        require_uppercase: p.require_uppercase.into(),
        require_digits: p.require_digits.into(),
        require_symbols: p.require_symbols.into(),
        excluded_characters: p.excluded_characters.clone(),
        history: p.history,
        max_age_days: p.max_age_days,
        builtin: builtin.into(),
        created_at: crate::time::now(),
    }
}

pub(super) fn from_row(r: PolicyRow) -> PasswordPolicy {
    PasswordPolicy {
        name: r.name,
        min_length: r.min_length,
        generated_length: r.generated_length,
        require_lowercase: r.require_lowercase != 0,
        require_uppercase: r.require_uppercase != 0,
        require_digits: r.require_digits != 0,
        require_symbols: r.require_symbols != 0,
        excluded_characters: r.excluded_characters,
        history: r.history,
        max_age_days: r.max_age_days,
    }
}

/// Writes the built-in `default` policy (at every start).
pub async fn seed_default_policy(store: &Store) -> Result<()> {
    let mut tx = store.begin_write().await?;
    store::password_policies::upsert(tx.conn(), &to_row(&default_policy(), true)).await?;
    tx.commit().await
}

pub async fn list_policies(store: &Store) -> Result<Vec<PasswordPolicy>> {
    Ok(store::password_policies::list(store.pool())
        .await?
        .into_iter()
        .map(from_row)
        .collect())
}

pub async fn create_policy(
    store: &Store,
    actor: &Actor,
    policy: PasswordPolicy,
) -> Result<PasswordPolicy> {
    policy.validate()?;
    if store::password_policies::get(store.pool(), &policy.name)
        .await?
        .is_some()
    {
        return Err(Error::Conflict(format!(
            "a policy named '{}' already exists",
            policy.name
        )));
    }
    let mut tx = store.begin_write().await?;
    store::password_policies::upsert(tx.conn(), &to_row(&policy, false)).await?;
    audit::append(
        &mut tx,
        NewEvent {
            actor,
            action: "password-policy.create",
            target: &policy.name,
            outcome: Outcome::Success,
            detail: serde_json::to_value(&policy).unwrap_or_default(),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(policy)
}
