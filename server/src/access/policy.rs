//! Access-control policies: who may check out an account's password, with whose approval, for
//! how long, and what happens when it comes back. A policy belongs to an account, a resource
//! (every account on it) or a resource type (every resource of that type); the narrowest scope
//! that has one decides (an account's policy with `enabled: false` turns access control off
//! for that account alone). No policy at any scope: retrieval needs no checkout.

use serde::{Deserialize, Serialize};

use crate::audit::{self, Actor, NewEvent, Outcome};
use crate::error::{Error, FieldProblem, Result};
use crate::store::{self, Store, access_policies::AccessPolicyRow};

/// Where a policy applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Scope {
    Account,
    Resource,
    ResourceType,
}

impl Scope {
    pub const fn as_str(self) -> &'static str {
        match self {
            Scope::Account => "account",
            Scope::Resource => "resource",
            Scope::ResourceType => "resource-type",
        }
    }

    pub fn parse(text: &str) -> Option<Scope> {
        [Scope::Account, Scope::Resource, Scope::ResourceType]
            .into_iter()
            .find(|s| s.as_str() == text)
    }
}

/// Longest window a policy may allow: a week.
pub const MAX_WINDOW_MINUTES: i64 = 7 * 24 * 60;
/// Most users a policy may name as requesters or approvers.
pub const MAX_NAMED_USERS: usize = 100;

fn yes() -> bool {
    true
}

fn default_max_minutes() -> i64 {
    60
}

fn default_answer_minutes() -> i64 {
    24 * 60
}

/// `PUT /v1/access-policies/{scope}/{id}`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AccessPolicyInput {
    /// `false` turns access control off here (an account's override of its resource's policy).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Who may request a checkout (user names); empty: anyone allowed to retrieve passwords.
    #[serde(default)]
    pub requesters: Vec<String>,
    /// Who may approve a request (user names); never its own requester.
    #[serde(default)]
    pub approvers: Vec<String>,
    /// How many different approvers must approve; 0 grants a request at once.
    #[serde(default)]
    pub approvals_needed: i64,
    /// Longest checkout window, in minutes (default 60, at most a week).
    #[serde(default = "default_max_minutes")]
    pub max_minutes: i64,
    /// A request nobody answered within this many minutes lapses (default a day).
    #[serde(default = "default_answer_minutes")]
    pub answer_minutes: i64,
    /// One holder at a time (default); `false` lets several hold it at once.
    #[serde(default = "yes")]
    pub exclusive: bool,
    /// Rotate the password when a checkout comes back (default on).
    #[serde(default = "yes")]
    pub rotate_on_checkin: bool,
}

/// A stored policy, and where it applies.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AccessPolicy {
    pub scope: Scope,
    pub scope_id: String,
    pub enabled: bool,
    pub requesters: Vec<String>,
    pub approvers: Vec<String>,
    pub approvals_needed: i64,
    pub max_minutes: i64,
    pub answer_minutes: i64,
    pub exclusive: bool,
    pub rotate_on_checkin: bool,
    pub updated_by: String,
    pub updated_at: String,
}

fn names(json: &str) -> Vec<String> {
    serde_json::from_str(json).unwrap_or_default()
}

impl From<AccessPolicyRow> for AccessPolicy {
    fn from(r: AccessPolicyRow) -> AccessPolicy {
        AccessPolicy {
            scope: Scope::parse(&r.scope_kind).unwrap_or(Scope::Account),
            requesters: names(&r.requesters),
            approvers: names(&r.approvers),
            scope_id: r.scope_id,
            enabled: r.enabled != 0,
            approvals_needed: r.approvals_needed,
            max_minutes: r.max_minutes,
            answer_minutes: r.answer_minutes,
            exclusive: r.exclusive != 0,
            rotate_on_checkin: r.rotate_on_checkin != 0,
            updated_by: r.updated_by,
            updated_at: r.updated_at,
        }
    }
}

/// Every problem of a policy, together. Pure: the users' existence is checked by the caller.
pub fn problems(p: &AccessPolicyInput) -> Vec<FieldProblem> {
    let mut out = Vec::new();
    for (field, list) in [("requesters", &p.requesters), ("approvers", &p.approvers)] {
        if list.len() > MAX_NAMED_USERS {
            out.push(FieldProblem::new(
                field,
                format!("names {} users; at most {MAX_NAMED_USERS}", list.len()),
            ));
        }
        let mut seen = list.clone();
        seen.sort();
        seen.dedup();
        if seen.len() != list.len() {
            out.push(FieldProblem::new(field, "names a user twice"));
        }
    }
    if p.approvals_needed < 0 {
        out.push(FieldProblem::new("approvals_needed", "must be 0 or more"));
    } else if p.approvals_needed as usize > p.approvers.len() {
        out.push(FieldProblem::new(
            "approvals_needed",
            format!(
                "needs {} approvals but names {} approvers; name more approvers or need fewer",
                p.approvals_needed,
                p.approvers.len()
            ),
        ));
    }
    if !(1..=MAX_WINDOW_MINUTES).contains(&p.max_minutes) {
        out.push(FieldProblem::new(
            "max_minutes",
            format!("give 1 to {MAX_WINDOW_MINUTES} minutes"),
        ));
    }
    if !(1..=MAX_WINDOW_MINUTES).contains(&p.answer_minutes) {
        out.push(FieldProblem::new(
            "answer_minutes",
            format!("give 1 to {MAX_WINDOW_MINUTES} minutes"),
        ));
    }
    out
}

/// The scope must exist: an account, a resource or a resource type.
async fn check_scope(store: &Store, scope: Scope, id: &str) -> Result<()> {
    match scope {
        Scope::Account => crate::inventory::accounts::get(store, id).await.map(drop),
        Scope::Resource => crate::inventory::resources::get(store, id).await.map(drop),
        Scope::ResourceType => crate::inventory::resource_types::get(store, id)
            .await
            .map(drop),
    }
}

pub async fn get(store: &Store, scope: Scope, id: &str) -> Result<AccessPolicy> {
    store::access_policies::get(store.pool(), scope.as_str(), id)
        .await?
        .map(AccessPolicy::from)
        .ok_or_else(|| Error::NotFound {
            what: "access policy",
            id: format!("{}/{id}", scope.as_str()),
        })
}

/// Sets a scope's policy (audited `access.policy.set`).
pub async fn put(
    store: &Store,
    actor: &Actor,
    scope: Scope,
    id: &str,
    input: AccessPolicyInput,
) -> Result<AccessPolicy> {
    check_scope(store, scope, id).await?;
    let mut found = problems(&input);
    for (field, list) in [
        ("requesters", &input.requesters),
        ("approvers", &input.approvers),
    ] {
        for name in list {
            if store::users::get_by_name(store.pool(), name)
                .await?
                .is_none()
            {
                found.push(FieldProblem::new(
                    field,
                    format!("there is no user '{name}'"),
                ));
            }
        }
    }
    if !found.is_empty() {
        return Err(Error::Validation(found));
    }
    let row = AccessPolicyRow {
        scope_kind: scope.as_str().into(),
        scope_id: id.to_string(),
        enabled: input.enabled.into(),
        requesters: serde_json::to_string(&input.requesters).unwrap_or_default(),
        approvers: serde_json::to_string(&input.approvers).unwrap_or_default(),
        approvals_needed: input.approvals_needed,
        max_minutes: input.max_minutes,
        answer_minutes: input.answer_minutes,
        exclusive: input.exclusive.into(),
        rotate_on_checkin: input.rotate_on_checkin.into(),
        updated_by: actor.name.clone(),
        updated_at: crate::time::now(),
    };
    let mut tx = store.begin_write().await?;
    store::access_policies::put(tx.conn(), &row).await?;
    audit::append(
        &mut tx,
        NewEvent {
            actor,
            action: "access.policy.set",
            target: &format!("{}/{id}", scope.as_str()),
            outcome: Outcome::Success,
            detail: serde_json::json!({
                "enabled": input.enabled,
                "requesters": input.requesters,
                "approvers": input.approvers,
                "approvals_needed": input.approvals_needed,
                "max_minutes": input.max_minutes,
                "answer_minutes": input.answer_minutes,
                "exclusive": input.exclusive,
                "rotate_on_checkin": input.rotate_on_checkin,
            }),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(row.into())
}

/// Removes a scope's policy: its accounts inherit from the next wider scope (audited
/// `access.policy.delete`).
pub async fn delete(store: &Store, actor: &Actor, scope: Scope, id: &str) -> Result<()> {
    let mut tx = store.begin_write().await?;
    if !store::access_policies::delete(tx.conn(), scope.as_str(), id).await? {
        return Err(Error::NotFound {
            what: "access policy",
            id: format!("{}/{id}", scope.as_str()),
        });
    }
    audit::append(
        &mut tx,
        NewEvent {
            actor,
            action: "access.policy.delete",
            target: &format!("{}/{id}", scope.as_str()),
            outcome: Outcome::Success,
            detail: serde_json::json!({}),
        },
    )
    .await?;
    tx.commit().await
}

/// The policy that decides for an account: its own, else its resource's, else its resource
/// type's; `None` when there is none or the deciding one is disabled.
pub async fn effective(store: &Store, account_id: &str) -> Result<Option<AccessPolicy>> {
    let account = crate::inventory::accounts::get(store, account_id).await?;
    let resource = crate::inventory::resources::get(store, &account.resource_id).await?;
    for (scope, id) in [
        (Scope::Account, account.id.as_str()),
        (Scope::Resource, resource.id.as_str()),
        (Scope::ResourceType, resource.resource_type.as_str()),
    ] {
        if let Some(row) = store::access_policies::get(store.pool(), scope.as_str(), id).await? {
            let policy = AccessPolicy::from(row);
            return Ok(policy.enabled.then_some(policy));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input() -> AccessPolicyInput {
        serde_json::from_value(serde_json::json!({"approvers": ["bob"], "approvals_needed": 1}))
            .unwrap()
    }

    #[test]
    fn defaults_are_exclusive_rotating_and_an_hour() {
        let p = input();
        assert!(p.enabled && p.exclusive && p.rotate_on_checkin);
        assert_eq!((p.max_minutes, p.answer_minutes), (60, 1440));
        assert!(problems(&p).is_empty());
    }

    #[test]
    fn more_approvals_than_approvers_and_bad_windows_are_all_reported() {
        let mut p = input();
        p.approvals_needed = 2;
        p.max_minutes = 0;
        p.answer_minutes = MAX_WINDOW_MINUTES + 1;
        p.requesters = vec!["amy".into(), "amy".into()];
        let fields: Vec<String> = problems(&p).into_iter().map(|f| f.field).collect();
        assert_eq!(
            fields,
            [
                "requesters",
                "approvals_needed",
                "max_minutes",
                "answer_minutes"
            ]
        );
    }

    #[test]
    fn scopes_round_trip() {
        for s in [Scope::Account, Scope::Resource, Scope::ResourceType] {
            assert_eq!(Scope::parse(s.as_str()), Some(s));
        }
        assert_eq!(Scope::parse("group"), None);
    }
}
