//! Discovery: the agent's machine becomes a resource owned by the agent's owner, its local
//! accounts become accounts. Later discoveries add what is new and never duplicate.
//!
//! A discovered account's password is not known: the vault holds an empty value until the
//! first reset sets one, and the account says so (`PASSWRDSYNCSTATUS = discovered`).

use lockstep_agent_protocol::messages::{Discovery, DiscoveryResult};

use crate::audit::{self, NewEvent, Outcome};
use crate::error::{Error, Result};
use crate::inventory::accounts::SYNC_DISCOVERED;
use crate::inventory::resources::{NewResource, ResourcePatch};
use crate::store::accounts::AccountRow;
use crate::store::agents::AgentRow;
use crate::store::{self, Store};
use crate::vault::{Secret, Vault, account_password_aad};

/// Most accounts one discovery may report.
pub const MAX_ACCOUNTS: usize = 10_000;

fn printable(s: &str, max: usize) -> bool {
    !s.is_empty() && s.len() <= max && !s.chars().any(char::is_control)
}

pub async fn discover(
    store: &Store,
    vault: &Vault,
    agent: &AgentRow,
    d: Discovery,
    source_ip: Option<String>,
) -> Result<DiscoveryResult> {
    let actor = super::actor(agent, source_ip);
    if d.accounts.len() > MAX_ACCOUNTS {
        return Err(Error::validation(
            "accounts",
            format!("at most {MAX_ACCOUNTS} accounts per discovery"),
        ));
    }
    if !printable(&d.hostname, 253) {
        return Err(Error::validation(
            "hostname",
            "must be 1–253 printable characters",
        ));
    }
    let existing = match &agent.resource_id {
        Some(id) => store::resources::get(store.pool(), id).await?,
        None => None,
    };
    let description = format!("{} ({}), managed by agent {}", d.hostname, d.os, agent.id);
    let resource_id = match existing {
        // Later starts bring the address up to date (audited, only when it changed); what an
        // administrator wrote about the resource stays theirs.
        Some(r) => {
            let address = d.addresses.first().cloned();
            if address.is_some() && r.ip_address != address {
                crate::inventory::resources::update(
                    store,
                    &actor,
                    &r.id,
                    ResourcePatch {
                        ip_address: Some(address),
                        ..Default::default()
                    },
                )
                .await?;
            }
            r.id
        }
        None => {
            // The machine's name, unless another resource has it already.
            let taken = store::resources::get_by_name(store.pool(), &d.hostname)
                .await?
                .is_some();
            let name = if taken {
                format!("{}-{}", d.hostname, &agent.id[agent.id.len() - 8..])
            } else {
                d.hostname.clone()
            };
            let resource = crate::inventory::resources::create(
                store,
                &actor,
                NewResource {
                    name,
                    resource_type: "Linux".into(),
                    ip_address: d.addresses.first().cloned(),
                    url: None,
                    domain_name: None,
                    ssh_port: None,
                    description: Some(description.clone()),
                    location: None,
                    department: None,
                    custom_fields: [("OWNER".to_string(), agent.owner.clone())]
                        .into_iter()
                        .collect(),
                },
            )
            .await?;
            let mut tx = store.begin_write().await?;
            store::agents::set_resource(tx.conn(), &agent.id, &resource.id).await?;
            tx.commit().await?;
            resource.id
        }
    };
    let known: std::collections::HashSet<String> =
        store::accounts::logins_of(store.pool(), &resource_id)
            .await?
            .into_iter()
            .collect();
    let now = crate::time::now();
    let mut added = Vec::new();
    let mut tx = store.begin_write().await?;
    for a in &d.accounts {
        if known.contains(&a.login_name)
            || added.contains(&a.login_name)
            || !printable(&a.login_name, 128)
        {
            continue;
        }
        let row = AccountRow {
            id: crate::time::new_id("acc"),
            resource_id: resource_id.clone(),
            login_name: a.login_name.clone(),
            description: a
                .description
                .clone()
                .filter(|g| printable(g, 2000))
                .or_else(|| Some(format!("uid {}", a.uid))),
            domain_name: None,
            compliant_status: "unknown".into(),
            compliant_reason: None,
            expiry_status: "unknown".into(),
            password_sync_status: SYNC_DISCOVERED.into(),
            custom_fields: "{}".into(),
            password_changed_at: now.clone(),
            created_at: now.clone(),
            updated_at: now.clone(),
        };
        let sealed =
            vault.seal_secret(&Secret::new(String::new()), &account_password_aad(&row.id))?;
        store::accounts::insert(tx.conn(), &row, &sealed).await?;
        audit::append(
            &mut tx,
            NewEvent {
                actor: &actor,
                action: "account.create",
                target: &row.id,
                outcome: Outcome::Success,
                detail: serde_json::json!({
                    "resource_id": resource_id, "login_name": row.login_name, "discovered": true,
                }),
            },
        )
        .await?;
        added.push(row.login_name);
    }
    audit::append(
        &mut tx,
        NewEvent {
            actor: &actor,
            action: "agent.discovery",
            target: &resource_id,
            outcome: Outcome::Success,
            detail: serde_json::json!({
                "hostname": d.hostname, "os": d.os, "addresses": d.addresses,
                "reported": d.accounts.len(), "added": added,
            }),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(DiscoveryResult {
        resource_id,
        known: known.len(),
        added,
    })
}
