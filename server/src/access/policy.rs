//! Access-control policies: who may check out an account's password, with whose approval, for
//! how long, and what happens when it comes back. A policy belongs to an account, a resource
//! (every account on it) or a resource type (every resource of that type); the narrowest scope
//! that has one decides (an account's policy with `enabled: false` turns access control off
//! for that account alone). No policy at any scope: retrieval needs no checkout.
//!
//! A policy is sealed by the vault and its seal pinned in the registry ledger (entry kind
//! `access-policy`) in the transaction that writes it, as identities are: a database writer
//! who deletes a policy row, or edits one (to need no approval, say), makes the account's
//! retrievals fail closed instead of opening it.

use serde::{Deserialize, Serialize};

use crate::audit::{self, Actor, NewEvent, Outcome};
use crate::error::{Error, FieldProblem, Result};
use crate::registry::Registry;
use crate::registry::ledger::{self, Change, Entry, EntryKind, Ledger};
use crate::store::{self, Store, WriteTx, access_policies::AccessPolicyRow};
use crate::vault::Vault;

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

/// A day of the week, for auto-approval windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Day {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

impl Day {
    fn of(d: chrono::Weekday) -> Day {
        match d {
            chrono::Weekday::Mon => Day::Mon,
            chrono::Weekday::Tue => Day::Tue,
            chrono::Weekday::Wed => Day::Wed,
            chrono::Weekday::Thu => Day::Thu,
            chrono::Weekday::Fri => Day::Fri,
            chrono::Weekday::Sat => Day::Sat,
            chrono::Weekday::Sun => Day::Sun,
        }
    }
}

/// When a request needs no approval: on these days (UTC), from `from` up to `to` (`HH:MM`,
/// `to` may be `24:00`; a window across midnight is two windows).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AutoApproveWindow {
    pub days: Vec<Day>,
    pub from: String,
    pub to: String,
}

/// Minutes since midnight of `HH:MM` (00:00 to 24:00).
fn minutes_of(hhmm: &str) -> Option<u32> {
    let (h, m) = hhmm.split_once(':')?;
    let digits = |t: &str| t.len() == 2 && t.bytes().all(|b| b.is_ascii_digit());
    if !digits(h) || !digits(m) {
        return None;
    }
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    let total = h * 60 + m;
    (m < 60 && total <= 24 * 60).then_some(total)
}

impl AutoApproveWindow {
    /// Whether `at` falls inside this window.
    pub fn covers(&self, at: chrono::DateTime<chrono::Utc>) -> bool {
        use chrono::{Datelike, Timelike};
        let now = at.hour() * 60 + at.minute();
        let (Some(from), Some(to)) = (minutes_of(&self.from), minutes_of(&self.to)) else {
            return false;
        };
        self.days.contains(&Day::of(at.weekday())) && from <= now && now < to
    }
}

/// Most auto-approval windows one policy may have.
pub const MAX_WINDOWS: usize = 20;

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
    /// When a request is granted without approval (UTC); empty: never.
    #[serde(default)]
    pub auto_approve: Vec<AutoApproveWindow>,
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
    pub auto_approve: Vec<AutoApproveWindow>,
    pub updated_by: String,
    pub updated_at: String,
}

impl AccessPolicy {
    /// The auto-approval window `at` falls in, if any.
    pub fn auto_approves(&self, at: chrono::DateTime<chrono::Utc>) -> Option<&AutoApproveWindow> {
        self.auto_approve.iter().find(|w| w.covers(at))
    }
}

/// User names stored as a JSON array (an unreadable one names nobody).
pub(super) fn names(json: &str) -> Vec<String> {
    serde_json::from_str(json).unwrap_or_default()
}

/// The ledger subject of a scope's policy.
fn subject(kind: &str, id: &str) -> String {
    format!("{kind}/{id}")
}

/// What a policy's seal binds: its scope and every field that decides (a fixed struct, so the
/// bytes are the same for the same policy).
fn binding(r: &AccessPolicyRow) -> String {
    #[derive(Serialize)]
    struct Sealed<'a> {
        enabled: i64,
        requesters: &'a str,
        approvers: &'a str,
        approvals_needed: i64,
        max_minutes: i64,
        answer_minutes: i64,
        exclusive: i64,
        rotate_on_checkin: i64,
        auto_approve: &'a str,
    }
    let fields = serde_json::to_string(&Sealed {
        enabled: r.enabled,
        requesters: &r.requesters,
        approvers: &r.approvers,
        approvals_needed: r.approvals_needed,
        max_minutes: r.max_minutes,
        answer_minutes: r.answer_minutes,
        exclusive: r.exclusive,
        rotate_on_checkin: r.rotate_on_checkin,
        auto_approve: &r.auto_approve,
    })
    .unwrap_or_default();
    format!("access-policy\n{}\n{}\n{fields}", r.scope_kind, r.scope_id)
}

/// Why a scope's policy row is not the one sealed and pinned, if it is not.
fn judge(
    vault: &Vault,
    ledger: &Ledger,
    kind: &str,
    id: &str,
    row: Option<&AccessPolicyRow>,
) -> Option<String> {
    if let Some(r) = row
        && !vault.check_attestation(&binding(r), &r.seal)
    {
        return Some(format!(
            "the access policy of {kind} '{id}' is not the one sealed (edited in the database?)"
        ));
    }
    ledger
        .check(
            EntryKind::AccessPolicy,
            &subject(kind, id),
            row.map(|r| r.seal.as_str()),
        )
        .err()
        .map(|m| {
            m.describe(
                &format!("the access policy of {kind} '{id}'"),
                ledger.generation(),
            )
        })
}

/// Every policy whose seal verifies, as ledger entries (the ledger's bootstrap and reseal).
pub async fn verified_entries(tx: &mut WriteTx, vault: &Vault) -> Result<Vec<Entry>> {
    Ok(store::access_policies::all(tx.conn())
        .await?
        .into_iter()
        .filter(|r| vault.check_attestation(&binding(r), &r.seal))
        .map(|r| Entry::access_policy(&subject(&r.scope_kind, &r.scope_id), &r.seal))
        .collect())
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
            auto_approve: serde_json::from_str(&r.auto_approve).unwrap_or_default(),
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
    if p.auto_approve.len() > MAX_WINDOWS {
        out.push(FieldProblem::new(
            "auto_approve",
            format!(
                "has {} windows; at most {MAX_WINDOWS}",
                p.auto_approve.len()
            ),
        ));
    }
    for (i, w) in p.auto_approve.iter().enumerate() {
        let field = format!("auto_approve[{i}]");
        if w.days.is_empty() {
            out.push(FieldProblem::new(&field, "names no day (mon … sun)"));
        }
        match (minutes_of(&w.from), minutes_of(&w.to)) {
            (Some(from), Some(to)) if from < to => {}
            (Some(_), Some(_)) => out.push(FieldProblem::new(
                &field,
                "`from` must come before `to` (a window across midnight is two windows)",
            )),
            _ => out.push(FieldProblem::new(
                &field,
                "`from` and `to` are times of day in UTC as HH:MM, 00:00 to 24:00",
            )),
        }
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

/// The registry ledger in a write transaction, or why it cannot be trusted.
async fn ledger_in(tx: &mut WriteTx, vault: &Vault) -> Result<Ledger> {
    ledger::current_in(tx, vault, 0)
        .await?
        .map_err(|why| Error::Untrusted(format!("{why}; {}", ledger::RESEAL_HINT)))
}

/// Sets a scope's policy (audited `access.policy.set`), sealed and pinned in the registry
/// ledger.
pub async fn put(
    store: &Store,
    vault: &Vault,
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
    let mut row = AccessPolicyRow {
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
        auto_approve: serde_json::to_string(&input.auto_approve).unwrap_or_default(),
        updated_by: actor.name.clone(),
        updated_at: crate::time::now(),
        seal: String::new(),
    };
    row.seal = vault.attest(&binding(&row))?;
    let mut tx = store.begin_write().await?;
    let current = ledger_in(&mut tx, vault).await?;
    store::access_policies::put(tx.conn(), &row).await?;
    audit::append(
        &mut tx,
        NewEvent {
            actor,
            action: "access.policy.set",
            target: &subject(scope.as_str(), id),
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
                "auto_approve": input.auto_approve,
            }),
        },
    )
    .await?;
    let pin = Entry::access_policy(&subject(scope.as_str(), id), &row.seal);
    ledger::advance(
        &mut tx,
        vault,
        &current,
        Change::Put(pin),
        "access.policy.set",
    )
    .await?;
    tx.commit().await?;
    Ok(row.into())
}

/// Removes a scope's policy: its accounts inherit from the next wider scope (audited
/// `access.policy.delete`; its ledger entry goes in the same transaction).
pub async fn delete(
    store: &Store,
    vault: &Vault,
    actor: &Actor,
    scope: Scope,
    id: &str,
) -> Result<()> {
    let mut tx = store.begin_write().await?;
    let current = ledger_in(&mut tx, vault).await?;
    if !store::access_policies::delete(tx.conn(), scope.as_str(), id).await? {
        return Err(Error::NotFound {
            what: "access policy",
            id: subject(scope.as_str(), id),
        });
    }
    audit::append(
        &mut tx,
        NewEvent {
            actor,
            action: "access.policy.delete",
            target: &subject(scope.as_str(), id),
            outcome: Outcome::Success,
            detail: serde_json::json!({}),
        },
    )
    .await?;
    let unpin = Change::Remove(EntryKind::AccessPolicy, subject(scope.as_str(), id));
    ledger::advance(&mut tx, vault, &current, unpin, "access.policy.delete").await?;
    tx.commit().await
}

/// How often a policy that looks edited is read again while the ledger moves (a policy set
/// between the two reads looks like an edit).
const RECHECKS: usize = 3;

/// The policy in force for an account: [`deciding`], unless that one is disabled.
pub async fn effective(
    store: &Store,
    registry: &Registry,
    account_id: &str,
) -> Result<Option<AccessPolicy>> {
    Ok(deciding(store, registry, account_id)
        .await?
        .filter(|p| p.enabled))
}

/// The policy that decides for an account: its own, else its resource's, else its resource
/// type's (possibly one with `enabled: false`); `None` when there is none. A policy row that
/// is not the one sealed and pinned (edited, deleted, restored) refuses: the account's
/// password stays shut until an administrator sets its policy again.
pub async fn deciding(
    store: &Store,
    registry: &Registry,
    account_id: &str,
) -> Result<Option<AccessPolicy>> {
    let account = crate::inventory::accounts::get(store, account_id).await?;
    let resource = crate::inventory::resources::get(store, &account.resource_id).await?;
    let scopes = [
        (Scope::Account, account.id.as_str()),
        (Scope::Resource, resource.id.as_str()),
        (Scope::ResourceType, resource.resource_type.as_str()),
    ];
    let mut checks = 0;
    'again: loop {
        checks += 1;
        let ledger = match registry.ledger().await? {
            Ok(l) => l,
            Err(why) => {
                registry.ledger_untrusted(&why).await?;
                return Err(Error::Untrusted(why));
            }
        };
        for (scope, id) in scopes {
            let row = store::access_policies::get(store.pool(), scope.as_str(), id).await?;
            if let Some(why) = judge(registry.vault(), &ledger, scope.as_str(), id, row.as_ref()) {
                if checks < RECHECKS && registry.ledger_moved(&ledger).await? {
                    continue 'again;
                }
                refuse(store, registry, scope, id, &why).await?;
                return Err(Error::NotAllowed(format!(
                    "{why}; account '{account_id}' stays shut until an administrator sets that \
                     policy again (PUT /v1/access-policies/{}/{id})",
                    scope.as_str()
                )));
            }
            if let Some(row) = row {
                return Ok(Some(AccessPolicy::from(row)));
            }
        }
        return Ok(None);
    }
}

/// Logs and (once per process, policy and seal) audits a policy refused by its seal or the
/// ledger (`access.policy.integrity`).
async fn refuse(
    store: &Store,
    registry: &Registry,
    scope: Scope,
    id: &str,
    why: &str,
) -> Result<()> {
    tracing::error!(scope = scope.as_str(), id, reason = %why, "ALERT: access policy refused by the integrity check");
    if !registry.first_told(format!(
        "access-policy\n{}\n{why}",
        subject(scope.as_str(), id)
    )) {
        return Ok(());
    }
    audit::record(
        store,
        NewEvent {
            actor: &Actor::system(),
            action: "access.policy.integrity",
            target: &subject(scope.as_str(), id),
            outcome: Outcome::Failure,
            detail: serde_json::json!({ "reason": why }),
        },
    )
    .await
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
    fn an_auto_approval_window_covers_its_days_from_its_start_up_to_its_end() {
        let w = AutoApproveWindow {
            days: vec![Day::Sat, Day::Sun],
            from: "08:00".into(),
            to: "24:00".into(),
        };
        let at = |s: &str| {
            chrono::DateTime::parse_from_rfc3339(s)
                .unwrap()
                .with_timezone(&chrono::Utc)
        };
        // 2026-12-05 is a Saturday.
        assert!(w.covers(at("2026-12-05T08:00:00Z")));
        assert!(w.covers(at("2026-12-06T23:59:59Z")));
        assert!(!w.covers(at("2026-12-05T07:59:59Z")));
        assert!(!w.covers(at("2026-12-07T12:00:00Z")), "a Monday");
        let mut p = input();
        p.auto_approve = vec![
            w,
            AutoApproveWindow {
                days: vec![],
                from: "22:00".into(),
                to: "06:00".into(),
            },
            AutoApproveWindow {
                days: vec![Day::Mon],
                from: "+9:00".into(),
                to: "24:01".into(),
            },
        ];
        let fields: Vec<String> = problems(&p).into_iter().map(|f| f.field).collect();
        assert_eq!(
            fields,
            ["auto_approve[1]", "auto_approve[1]", "auto_approve[2]"]
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
