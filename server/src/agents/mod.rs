//! Agents: `lockstep-agent` processes that dial out to this server from machines it cannot
//! reach, enroll once, register their machine and accounts, and take reset work over a
//! long-poll task channel.
//!
//! - `enrollment`: one-time tokens and the enrollment that turns one into an agent.
//! - `networks`: the source-address ranges an agent may call from (the reference product's "restrict agent access by IP").
//! - `auth`: the signed-request check every agent call goes through.
//! - `discovery`: the agent's machine as a resource, its local accounts as accounts.
//! - `tasks`: the queue, the long-poll, result reports, and waiting for a result.
//!
//! **Invariant:** an agent acts only through its own signed requests, only on its own
//! resource's tasks, and a revoked agent is refused on every call.

pub mod auth;
pub mod discovery;
pub mod enrollment;
pub mod networks;
pub mod refusals;
pub mod tasks;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::Notify;

use crate::audit::{self, Actor, NewEvent, Outcome};
use crate::error::{Error, Result};
use crate::store::agents::AgentRow;
use crate::store::{self, Store};

/// Wake-ups: an agent's long-poll when a task is queued for it, and a reset waiting for a
/// task's result, in this process and (through `bells`) on the other nodes. The store stays
/// the truth; a missed bell only costs a re-read interval.
#[derive(Default)]
pub struct AgentHub {
    agents: Mutex<HashMap<String, Arc<Notify>>>,
    tasks: Mutex<HashMap<String, Arc<Notify>>>,
    /// Rings the other nodes (`cluster::bells`).
    pub bells: crate::cluster::bells::Bells,
    /// How many refused agent requests per source address are audited one by one.
    pub refusals: refusals::RefusalBudget,
}

fn bell(map: &Mutex<HashMap<String, Arc<Notify>>>, id: &str) -> Arc<Notify> {
    map.lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(id.to_string())
        .or_default()
        .clone()
}

impl AgentHub {
    pub(crate) fn agent_bell(&self, agent_id: &str) -> Arc<Notify> {
        bell(&self.agents, agent_id)
    }

    /// Wakes the agent's long-poll (or lets its next poll return at once), on whichever node
    /// holds it.
    pub fn ring_agent(&self, agent_id: &str) {
        self.agent_bell(agent_id).notify_one();
        self.bells
            .ring_others(crate::cluster::bells::Bell::Agent(agent_id.to_string()));
    }

    /// Wakes the agent's long-poll if it is held on this node (a bell another node rang; an
    /// agent that is not polling here looks at the store when it polls). Bells come from the
    /// database, which anyone who can connect may ring: an unknown id adds nothing here.
    pub fn ring_agent_here(&self, agent_id: &str) {
        let map = self.agents.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get(agent_id) {
            n.notify_one();
        }
    }

    pub(crate) fn task_bell(&self, task_id: &str) -> Arc<Notify> {
        bell(&self.tasks, task_id)
    }

    /// Wakes the reset waiting for the task's result, on whichever node runs it.
    pub(crate) fn ring_task(&self, task_id: &str) {
        self.ring_task_here(task_id);
        self.bells
            .ring_others(crate::cluster::bells::Bell::Task(task_id.to_string()));
    }

    /// [`Self::ring_task`] in this process only (a bell another node rang).
    pub fn ring_task_here(&self, task_id: &str) {
        let map = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get(task_id) {
            n.notify_one();
        }
    }

    pub(crate) fn forget_task(&self, task_id: &str) {
        self.tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(task_id);
    }
}

/// An agent as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Agent {
    pub id: String,
    pub hostname: String,
    /// The user who owns the agent's resource.
    pub owner: String,
    /// The resource the agent registered (after its first discovery).
    pub resource_id: Option<String>,
    /// `active` or `revoked`.
    pub status: String,
    pub version: String,
    /// CIDR ranges the agent may call from; empty means any.
    pub allowed_networks: Vec<String>,
    pub last_seen_at: Option<String>,
    pub last_address: Option<String>,
    pub enrolled_at: String,
    pub revoked_at: Option<String>,
}

impl From<AgentRow> for Agent {
    fn from(r: AgentRow) -> Agent {
        Agent {
            allowed_networks: serde_json::from_str(&r.allowed_networks).unwrap_or_default(),
            id: r.id,
            hostname: r.hostname,
            owner: r.owner,
            resource_id: r.resource_id,
            status: r.status,
            version: r.version,
            last_seen_at: r.last_seen_at,
            last_address: r.last_address,
            enrolled_at: r.enrolled_at,
            revoked_at: r.revoked_at,
        }
    }
}

/// The actor name of an agent in the audit trail.
pub fn actor(agent: &AgentRow, source_ip: Option<String>) -> Actor {
    Actor {
        name: format!("agent:{}", agent.id),
        source_ip,
    }
}

pub async fn list(store: &Store) -> Result<Vec<Agent>> {
    Ok(store::agents::list_agents(store.pool())
        .await?
        .into_iter()
        .map(Into::into)
        .collect())
}

pub async fn get(store: &Store, id: &str) -> Result<Agent> {
    store::agents::get_agent(store.pool(), id)
        .await?
        .map(Into::into)
        .ok_or_else(|| Error::NotFound {
            what: "agent",
            id: id.to_string(),
        })
}

/// Revokes an agent: every later call it makes is refused, its queued tasks are cancelled and
/// tasks it held are marked lost (their resets settle as out-of-sync for a person to check).
pub async fn revoke(store: &Store, hub: &AgentHub, actor: &Actor, id: &str) -> Result<Agent> {
    get(store, id).await?;
    let now = crate::time::now();
    let mut tx = store.begin_write().await?;
    if !store::agents::revoke(tx.conn(), id, &now).await? {
        return Err(Error::Conflict(format!("agent '{id}' is already revoked")));
    }
    store::agents::end_tasks_of_revoked(tx.conn(), id, &now).await?;
    audit::append(
        &mut tx,
        NewEvent {
            actor,
            action: "agent.revoke",
            target: id,
            outcome: Outcome::Success,
            detail: serde_json::Value::Null,
        },
    )
    .await?;
    tx.commit().await?;
    // Resets waiting on its tasks look again now.
    for t in store::agents::list_tasks(store.pool(), None, Some(id), 1000).await? {
        hub.ring_task(&t.id);
    }
    hub.ring_agent(id);
    get(store, id).await
}
