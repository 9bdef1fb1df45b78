//! Resources: create, read, update, delete, with the property keys listeners will read.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::fields::{
    check_custom_fields, check_name, check_text, decode_custom, double_option, encode_custom,
};
use crate::audit::{self, Actor, NewEvent, Outcome};
use crate::error::{Error, FieldProblem, Result};
use crate::inventory::resource_types::ResetMethod;
use crate::store::resources::ResourceRow;
use crate::store::{self, Page, PageRequest, Store};

/// The built-in resource property keys, as listeners see them.
pub const PROPERTY_KEYS: &[&str] = &[
    "RESOURCENAME",
    "IPADDRESS",
    "RESOURCEURL",
    "DOMAINNAME",
    "SSHPORT",
    "RESOURCEDESC",
    "LOCATION",
    "DEPARTMENT",
];

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Resource {
    pub id: String,
    /// RESOURCENAME.
    pub name: String,
    pub resource_type: String,
    /// IPADDRESS: a DNS name or an IP address.
    pub ip_address: Option<String>,
    /// RESOURCEURL.
    pub url: Option<String>,
    /// DOMAINNAME.
    pub domain_name: Option<String>,
    /// SSHPORT.
    pub ssh_port: Option<i64>,
    /// RESOURCEDESC.
    pub description: Option<String>,
    /// LOCATION.
    pub location: Option<String>,
    /// DEPARTMENT.
    pub department: Option<String>,
    pub custom_fields: BTreeMap<String, String>,
    pub created_at: String,
    pub updated_at: String,
}

impl From<ResourceRow> for Resource {
    fn from(r: ResourceRow) -> Resource {
        Resource {
            custom_fields: decode_custom(&r.custom_fields),
            id: r.id,
            name: r.name,
            resource_type: r.resource_type,
            ip_address: r.ip_address,
            url: r.url,
            domain_name: r.domain_name,
            ssh_port: r.ssh_port,
            description: r.description,
            location: r.location,
            department: r.department,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

impl Resource {
    /// The resource's properties under the keys listeners use (custom columns included).
    pub fn properties(&self) -> BTreeMap<String, String> {
        let mut p = self.custom_fields.clone();
        let mut put = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                p.insert(k.to_string(), v);
            }
        };
        put("RESOURCENAME", Some(self.name.clone()));
        put("IPADDRESS", self.ip_address.clone());
        put("RESOURCEURL", self.url.clone());
        put("DOMAINNAME", self.domain_name.clone());
        put("SSHPORT", self.ssh_port.map(|v| v.to_string()));
        put("RESOURCEDESC", self.description.clone());
        put("LOCATION", self.location.clone());
        put("DEPARTMENT", self.department.clone());
        p
    }
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewResource {
    pub name: String,
    /// A resource type's name (GET /v1/resource-types).
    pub resource_type: String,
    pub ip_address: Option<String>,
    pub url: Option<String>,
    pub domain_name: Option<String>,
    /// 1–65535; SSH resets use 22 when unset.
    pub ssh_port: Option<i64>,
    pub description: Option<String>,
    pub location: Option<String>,
    pub department: Option<String>,
    #[serde(default)]
    pub custom_fields: BTreeMap<String, String>,
}

/// A partial update: absent fields are kept, `null` clears an optional field.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResourcePatch {
    pub name: Option<String>,
    pub resource_type: Option<String>,
    #[serde(default, deserialize_with = "double_option")]
    pub ip_address: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    pub url: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    pub domain_name: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    pub ssh_port: Option<Option<i64>>,
    #[serde(default, deserialize_with = "double_option")]
    pub description: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    pub location: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    pub department: Option<Option<String>>,
    /// Replaces all custom fields when present.
    pub custom_fields: Option<BTreeMap<String, String>>,
}

async fn validate(store: &Store, r: &ResourceRow, custom: &BTreeMap<String, String>) -> Result<()> {
    let mut problems: Vec<FieldProblem> = Vec::new();
    check_name("name", &r.name, 128, &mut problems);
    if let Some(ip) = &r.ip_address
        && (ip.is_empty()
            || ip.len() > 253
            || ip.chars().any(|c| c.is_whitespace() || c.is_control()))
    {
        problems.push(FieldProblem::new(
            "ip_address",
            "must be a DNS name or an IP address (1 to 253 characters, no spaces)",
        ));
    }
    let rtype = store::resource_types::get(store.pool(), &r.resource_type).await?;
    let method = rtype.as_ref().map(|t| ResetMethod::parse(&t.reset_method));
    if let Some(url) = &r.url {
        // Where a connector connects: parsed now, so a reset never meets a bad one.
        let parsed = match method {
            Some(ResetMethod::Postgres) => {
                Some(crate::reset::connector::postgres::parse_url(url).map(drop))
            }
            Some(ResetMethod::Mysql) => {
                Some(crate::reset::connector::mysql::parse_url(url).map(drop))
            }
            Some(ResetMethod::ActiveDirectory) => {
                Some(crate::reset::connector::active_directory::parse_url(url).map(drop))
            }
            _ => None,
        };
        if let Some(parsed) = parsed {
            if let Err(e) = parsed {
                problems.push(FieldProblem::new("url", e));
            }
        } else {
            let scheme_ok = url.starts_with("http://") || url.starts_with("https://");
            if !scheme_ok || url.len() > 2048 || url.chars().any(char::is_whitespace) {
                problems.push(FieldProblem::new(
                    "url",
                    "must be an http:// or https:// URL without spaces",
                ));
            }
        }
    }
    if let Some(port) = r.ssh_port
        && !(1..=65535).contains(&port)
    {
        problems.push(FieldProblem::new("ssh_port", "must be between 1 and 65535"));
    }
    check_text("domain_name", r.domain_name.as_deref(), 253, &mut problems);
    check_text("description", r.description.as_deref(), 2000, &mut problems);
    check_text("location", r.location.as_deref(), 256, &mut problems);
    check_text("department", r.department.as_deref(), 256, &mut problems);
    check_custom_fields(custom, PROPERTY_KEYS, &mut problems);
    if rtype.is_none() {
        problems.push(FieldProblem::new(
            "resource_type",
            format!(
                "no resource type named '{}'; GET /v1/resource-types lists them",
                r.resource_type
            ),
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::Validation(problems))
    }
}

fn duplicate(name: &str) -> impl FnOnce(store::Error) -> Error + '_ {
    move |e| {
        if store::is_unique_violation(&e) {
            Error::Conflict(format!("a resource named '{name}' already exists"))
        } else if store::is_foreign_key_violation(&e) {
            Error::Conflict("the resource type was deleted meanwhile; try again".into())
        } else {
            e.into()
        }
    }
}

pub async fn create(store: &Store, actor: &Actor, input: NewResource) -> Result<Resource> {
    let now = crate::time::now();
    let row = ResourceRow {
        id: crate::time::new_id("res"),
        name: input.name,
        resource_type: input.resource_type,
        ip_address: input.ip_address,
        url: input.url,
        domain_name: input.domain_name,
        ssh_port: input.ssh_port,
        description: input.description,
        location: input.location,
        department: input.department,
        custom_fields: encode_custom(&input.custom_fields),
        created_at: now.clone(),
        updated_at: now,
    };
    validate(store, &row, &input.custom_fields).await?;
    let mut tx = store.begin_write().await?;
    store::resources::insert(tx.conn(), &row)
        .await
        .map_err(duplicate(&row.name))?;
    audit::append(
        &mut tx,
        NewEvent {
            actor,
            action: "resource.create",
            target: &row.id,
            outcome: Outcome::Success,
            detail: serde_json::json!({ "name": row.name, "resource_type": row.resource_type }),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(row.into())
}

pub async fn get(store: &Store, id: &str) -> Result<Resource> {
    get_row(store, id).await.map(Into::into)
}

async fn get_row(store: &Store, id: &str) -> Result<ResourceRow> {
    store::resources::get(store.pool(), id)
        .await?
        .ok_or_else(|| Error::NotFound {
            what: "resource",
            id: id.to_string(),
        })
}

pub async fn list(
    store: &Store,
    resource_type: Option<&str>,
    page: &PageRequest,
) -> Result<Page<Resource>> {
    let p = store::resources::list(store.pool(), resource_type, page).await?;
    Ok(Page {
        items: p.items.into_iter().map(Into::into).collect(),
        next_after: p.next_after,
    })
}

pub async fn update(
    store: &Store,
    actor: &Actor,
    id: &str,
    patch: ResourcePatch,
) -> Result<Resource> {
    let mut row = get_row(store, id).await?;
    let mut changed: Vec<&str> = Vec::new();
    macro_rules! set {
        ($field:ident) => {
            if let Some(v) = patch.$field {
                row.$field = v;
                changed.push(stringify!($field));
            }
        };
    }
    set!(name);
    set!(resource_type);
    set!(ip_address);
    set!(url);
    set!(domain_name);
    set!(ssh_port);
    set!(description);
    set!(location);
    set!(department);
    let custom = match patch.custom_fields {
        Some(c) => {
            changed.push("custom_fields");
            c
        }
        None => decode_custom(&row.custom_fields),
    };
    row.custom_fields = encode_custom(&custom);
    row.updated_at = crate::time::now();
    validate(store, &row, &custom).await?;
    let mut tx = store.begin_write().await?;
    store::resources::update(tx.conn(), &row)
        .await
        .map_err(duplicate(&row.name))?;
    audit::append(
        &mut tx,
        NewEvent {
            actor,
            action: "resource.update",
            target: &row.id,
            outcome: Outcome::Success,
            detail: serde_json::json!({ "changed": changed }),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(row.into())
}

/// Deletes a resource that has no accounts left (deleting accounts, and so their passwords, is
/// a separate, explicit step).
pub async fn delete(store: &Store, actor: &Actor, id: &str) -> Result<()> {
    let row = get_row(store, id).await?;
    let accounts = store::resources::count_accounts(store.pool(), id).await?;
    if accounts > 0 {
        return Err(Error::Conflict(format!(
            "resource '{}' still has {accounts} account(s); delete them first",
            row.name
        )));
    }
    let mut tx = store.begin_write().await?;
    store::reset_settings::delete(tx.conn(), id).await?;
    store::resources::delete(tx.conn(), id).await.map_err(|e| {
        if store::is_foreign_key_violation(&e) {
            Error::Conflict(
                "an account was added to this resource meanwhile; delete it first".into(),
            )
        } else {
            e.into()
        }
    })?;
    audit::append(
        &mut tx,
        NewEvent {
            actor,
            action: "resource.delete",
            target: id,
            outcome: Outcome::Success,
            detail: serde_json::json!({ "name": row.name }),
        },
    )
    .await?;
    tx.commit().await
}
