//! Reset jobs as the API sees them: starting one (with an idempotency key) and reading its
//! progress.

use serde::{Deserialize, Serialize};

use super::settings::from_row;
use crate::audit::{self, Actor, NewEvent, Outcome};
use crate::error::{Error, Result};
use crate::registry::Registry;
use crate::states::{ItemState, JobStatus};
use crate::store::resets::{ItemRow, JobRow};
use crate::store::{self, Store};
use crate::vault::{Secret, Vault};

/// `POST /v1/accounts/{id}/reset`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetRequest {
    /// The new password; absent: generate one that satisfies the resource's policy.
    #[schema(value_type = Option<String>)]
    pub password: Option<Secret>,
    /// Why (3–500 characters); recorded in the audit trail.
    pub reason: String,
    /// Change the password on the target too (default); false changes only the vault.
    #[serde(default = "yes")]
    pub apply_remote: bool,
    /// Users told (a notification) when the job finishes.
    #[serde(default)]
    pub notify: Vec<String>,
}

fn yes() -> bool {
    true
}

/// A job and where each of its accounts stands.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Job {
    pub id: String,
    /// `single` or `bulk`.
    pub kind: String,
    pub trigger: String,
    /// `running` or `finished`.
    pub status: String,
    pub requested_by: String,
    pub reason: String,
    pub apply_remote: bool,
    pub created_at: String,
    pub finished_at: Option<String>,
    pub progress: Progress,
    pub items: Vec<Item>,
}

/// Counts of items by outcome.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Progress {
    pub total: usize,
    pub in_progress: usize,
    pub succeeded: usize,
    pub vetoed: usize,
    pub failed: usize,
    pub out_of_sync: usize,
}

/// One account's reset.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Item {
    pub id: String,
    pub account_id: String,
    /// `planned`, `pre-listeners`, `pending-written`, `applied`, `verified`, `committed`,
    /// `post-listeners`, then `done`, `vetoed`, `failed`, `out-of-sync` or `parked`.
    pub state: String,
    pub attempts: i64,
    /// Why it stopped (a veto's reason, an error), or how post-listeners went.
    pub detail: Option<String>,
    /// Each listener's outcome and denials.
    #[schema(value_type = Vec<Object>)]
    pub listeners: serde_json::Value,
    pub updated_at: String,
    /// How often a worker claimed it: more than once when a node died or lost its lease
    /// while it held the item and another node took it over.
    pub claims: i64,
    /// Which node wrote each step, oldest first.
    pub steps: Vec<Step>,
}

/// One step of an item as the journal wrote it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Step {
    pub at: String,
    /// The node (`srv_…`, or the `lockstep reconcile` run) that wrote it.
    pub node: String,
    /// The state it moved the item to.
    pub state: String,
}

/// The steps stored as lines of `time node state`.
fn steps_of(text: &str) -> Vec<Step> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.splitn(3, ' ');
            Some(Step {
                at: f.next()?.to_string(),
                node: f.next()?.to_string(),
                state: f.next()?.to_string(),
            })
        })
        .collect()
}

impl From<ItemRow> for Item {
    fn from(i: ItemRow) -> Item {
        Item {
            steps: steps_of(&i.steps),
            claims: i.claims,
            listeners: serde_json::from_str(&i.listeners).unwrap_or_default(),
            id: i.id,
            account_id: i.account_id,
            state: i.state,
            attempts: i.attempts,
            detail: i.detail,
            updated_at: i.updated_at,
        }
    }
}

/// Adds `n` items in `state` to the progress counts.
fn count(p: &mut Progress, state: &str, n: usize) {
    p.total += n;
    match ItemState::parse(state) {
        Some(ItemState::Done | ItemState::Committed | ItemState::PostListeners) => p.succeeded += n,
        Some(ItemState::Vetoed) => p.vetoed += n,
        Some(ItemState::Failed | ItemState::Parked) => p.failed += n,
        Some(ItemState::OutOfSync) => p.out_of_sync += n,
        _ => p.in_progress += n,
    }
}

fn view(j: JobRow, items: Vec<ItemRow>) -> Job {
    let mut p = Progress::default();
    for i in &items {
        count(&mut p, &i.state, 1);
    }
    Job {
        id: j.id,
        kind: j.kind,
        trigger: j.trigger,
        status: j.status,
        requested_by: j.requested_by,
        reason: j.reason,
        apply_remote: j.apply_remote != 0,
        created_at: j.created_at,
        finished_at: j.finished_at,
        progress: p,
        items: items.into_iter().map(Into::into).collect(),
    }
}

/// A job's row, or NotFound.
async fn job_row(store: &Store, id: &str) -> Result<JobRow> {
    store::resets::get_job(store.pool(), id)
        .await?
        .ok_or_else(|| Error::NotFound {
            what: "reset job",
            id: id.to_string(),
        })
}

pub async fn get_job(store: &Store, id: &str) -> Result<Job> {
    let j = job_row(store, id).await?;
    let items = store::resets::items_of(store.pool(), id).await?;
    Ok(view(j, items))
}

/// A job's status and progress without its items: what a long-poll compares between reads, so
/// that waiting on a 10,000-item job does not read and decode every item five times a second.
pub async fn get_progress(store: &Store, id: &str) -> Result<(String, Progress)> {
    let j = job_row(store, id).await?;
    let mut p = Progress::default();
    for (state, n) in store::resets::state_counts(store.pool(), id).await? {
        count(&mut p, &state, usize::try_from(n).unwrap_or(0));
    }
    Ok((j.status, p))
}

/// `POST /v1/reset-jobs`: many accounts in one job. Give exactly one of `accounts`,
/// `resource_ids` or `resource_type`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkResetRequest {
    /// These accounts.
    pub accounts: Option<Vec<String>>,
    /// Every account of these resources (except their admin accounts).
    pub resource_ids: Option<Vec<String>>,
    /// Every account of every resource of this type (except admin accounts).
    pub resource_type: Option<String>,
    /// One password for all; absent: a unique generated password per account.
    #[schema(value_type = Option<String>)]
    pub password: Option<Secret>,
    pub reason: String,
    #[serde(default = "yes")]
    pub apply_remote: bool,
    /// Users told (a notification) when the job finishes.
    #[serde(default)]
    pub notify: Vec<String>,
}

/// Most accounts one job may hold.
pub const MAX_JOB_ACCOUNTS: usize = 10_000;

/// The first job made with this user's idempotency key, if any.
async fn repeated(store: &Store, key: Option<&str>) -> Result<Option<Job>> {
    let Some(k) = key else { return Ok(None) };
    let Some(j) = store::resets::job_by_idempotency_key(store.pool(), k).await? else {
        return Ok(None);
    };
    let items = store::resets::items_of(store.pool(), &j.id).await?;
    Ok(Some(view(j, items)))
}

/// A reset's reason, trimmed: 3–500 characters without control characters (it is audited).
pub fn check_reason(reason: &str) -> Result<String> {
    let reason = reason.trim().to_string();
    let len = reason.chars().count();
    if !(3..=500).contains(&len) || reason.chars().any(char::is_control) {
        return Err(Error::validation(
            "reason",
            "give a reason of 3 to 500 characters (no control characters); it is audited",
        ));
    }
    Ok(reason)
}

/// Starts a reset of one account. A repeated `idempotency_key` from the same user returns the
/// first job instead of starting another.
pub async fn start_single(
    store: &Store,
    registry: &Registry,
    actor: &Actor,
    user: &str,
    account_id: &str,
    request: ResetRequest,
    idempotency_key: Option<&str>,
) -> Result<(Job, bool)> {
    let key = idempotency_key.map(|k| format!("{user}\n{k}"));
    if let Some(job) = repeated(store, key.as_deref()).await? {
        return Ok((job, false));
    }
    let vault = registry.vault();
    let reason = check_reason(&request.reason)?;
    crate::inventory::accounts::get(store, account_id).await?;
    if let Some(pw) = &request.password {
        not_under_access_control(store, registry, account_id).await?;
        check_given(store, vault, account_id, pw).await?;
    }
    let notify = check_notify(store, request.notify).await?;
    let spec = NewJob {
        kind: "single",
        trigger: "manual",
        user,
        reason,
        apply_remote: request.apply_remote,
        key,
        password: request.password,
        notify,
        schedule_run: None,
    };
    let key = spec.key.clone();
    let made = create(store, vault, actor, spec, vec![account_id.to_string()]).await;
    first_on_race(store, key.as_deref(), made).await
}

/// Starts a bulk reset. A repeated `idempotency_key` returns the first job.
pub async fn start_bulk(
    store: &Store,
    registry: &Registry,
    actor: &Actor,
    user: &str,
    request: BulkResetRequest,
    idempotency_key: Option<&str>,
) -> Result<(Job, bool)> {
    let key = idempotency_key.map(|k| format!("{user}\n{k}"));
    if let Some(job) = repeated(store, key.as_deref()).await? {
        return Ok((job, false));
    }
    let reason = check_reason(&request.reason)?;
    let accounts = select(
        store,
        request.accounts.as_deref(),
        request.resource_ids.as_deref(),
        request.resource_type.as_deref(),
    )
    .await?;
    if accounts.is_empty() {
        return Err(Error::validation("accounts", "selects no account"));
    }
    let vault = registry.vault();
    if let Some(pw) = &request.password {
        for a in &accounts {
            not_under_access_control(store, registry, a).await?;
            check_given(store, vault, a, pw).await?;
        }
    }
    let notify = check_notify(store, request.notify).await?;
    let spec = NewJob {
        kind: "bulk",
        trigger: "bulk",
        user,
        reason,
        apply_remote: request.apply_remote,
        key,
        password: request.password,
        notify,
        schedule_run: None,
    };
    let key = spec.key.clone();
    let made = create(store, vault, actor, spec, accounts).await;
    first_on_race(store, key.as_deref(), made).await
}

/// Starts the rotation a returned checkout calls for (trigger `check-in`): one job per return
/// however many nodes ask, since its idempotency key names the checkout and when it ended.
pub async fn start_checkin(
    store: &Store,
    vault: &Vault,
    checkout_id: &str,
    ended_at: &str,
    account_id: &str,
) -> Result<Job> {
    let key = format!("#checkin\n{checkout_id}\n{ended_at}");
    if let Some(job) = repeated(store, Some(&key)).await? {
        return Ok(job);
    }
    let spec = NewJob {
        kind: "single",
        trigger: "check-in",
        user: "system",
        reason: format!("check-in of checkout {checkout_id}"),
        apply_remote: true,
        key: Some(key),
        password: None,
        notify: Vec::new(),
        schedule_run: None,
    };
    let key = spec.key.clone();
    let made = create(
        store,
        vault,
        &Actor::system(),
        spec,
        vec![account_id.to_string()],
    )
    .await;
    Ok(first_on_race(store, key.as_deref(), made).await?.0)
}

/// Two requests with one key at the same moment: both missed the other's job when they
/// looked, and the second insert hit the unique key. It answers with the first job, as a
/// later repeat would; only if that job is gone too (its request failed) does the conflict
/// stand.
async fn first_on_race(
    store: &Store,
    key: Option<&str>,
    made: Result<(Job, bool)>,
) -> Result<(Job, bool)> {
    match made {
        Err(Error::Conflict(why)) if key.is_some() => match repeated(store, key).await? {
            Some(job) => Ok((job, false)),
            None => Err(Error::Conflict(why)),
        },
        other => other,
    }
}

/// The users to notify must exist.
pub(super) async fn check_notify(store: &Store, users: Vec<String>) -> Result<Vec<String>> {
    for u in &users {
        if store::users::get_by_name(store.pool(), u).await?.is_none() {
            return Err(Error::validation(
                "notify",
                format!("there is no user '{u}'"),
            ));
        }
    }
    Ok(users)
}

/// The accounts a bulk selector names: exactly one of explicit accounts, every account of some
/// resources, or of a resource type (admin accounts excepted for the last two).
pub(super) async fn select(
    store: &Store,
    accounts: Option<&[String]>,
    resource_ids: Option<&[String]>,
    resource_type: Option<&str>,
) -> Result<Vec<String>> {
    let given = [
        accounts.is_some(),
        resource_ids.is_some(),
        resource_type.is_some(),
    ];
    if given.iter().filter(|s| **s).count() != 1 {
        return Err(Error::validation(
            "accounts",
            "give exactly one of accounts, resource_ids or resource_type",
        ));
    }
    let mut out = Vec::new();
    if let Some(ids) = accounts {
        let mut ids = ids.to_vec();
        ids.sort();
        ids.dedup();
        if ids.len() > MAX_JOB_ACCOUNTS {
            return Err(too_many(ids.len()));
        }
        crate::inventory::accounts::require_all(store, &ids).await?;
        out = ids;
    }
    // Each resource once, and the count checked as they add up: a body repeating one resource
    // id costs one read, and a selection past the limit stops at the first resource over it.
    let mut resources = resource_ids.unwrap_or_default().to_vec();
    resources.sort();
    resources.dedup();
    for id in &resources {
        crate::inventory::resources::get(store, id).await?;
        out.extend(store::resets::bulk_candidates(store.pool(), Some(id), None).await?);
        if out.len() > MAX_JOB_ACCOUNTS {
            return Err(too_many(out.len()));
        }
    }
    if let Some(t) = resource_type {
        crate::inventory::resource_types::get(store, t).await?;
        out.extend(store::resets::bulk_candidates(store.pool(), None, Some(t)).await?);
    }
    out.sort();
    out.dedup();
    if out.len() > MAX_JOB_ACCOUNTS {
        return Err(too_many(out.len()));
    }
    Ok(out)
}

fn too_many(n: usize) -> Error {
    Error::validation(
        "accounts",
        format!("selects {n} accounts; one job takes at most {MAX_JOB_ACCOUNTS}"),
    )
}

/// What a new job is, apart from its accounts.
pub(super) struct NewJob<'a> {
    pub kind: &'static str,
    pub trigger: &'static str,
    pub user: &'a str,
    pub reason: String,
    pub apply_remote: bool,
    pub key: Option<String>,
    pub password: Option<Secret>,
    pub notify: Vec<String>,
    /// A rotation schedule's run this job is: the schedule moves from the run time seen to the
    /// next in the job's own transaction, so the run makes its job and moves on together or
    /// not at all (none, if another node moved it, or the schedule was deleted, meanwhile).
    pub schedule_run: Option<ScheduleRun>,
}

/// A rotation schedule's move from one run to the next (`reset::scheduler`).
#[derive(Clone)]
pub(super) struct ScheduleRun {
    pub name: String,
    pub seen: String,
    pub next: String,
}

/// A reset with a given password hands its caller a working credential: refused for an account
/// under access control, whose password only a checkout's holder may know.
async fn not_under_access_control(
    store: &Store,
    registry: &Registry,
    account_id: &str,
) -> Result<()> {
    if let Some(p) = crate::access::policy::effective(store, registry, account_id).await? {
        return Err(Error::NotAllowed(format!(
            "account '{account_id}' is under access control ({} policy '{}'): a reset with a \
             given password would let its caller know the password without a checkout; leave \
             `password` out for a generated one",
            p.scope.as_str(),
            p.scope_id
        )));
    }
    Ok(())
}

/// A given password must satisfy the account's policy and not be in its recent history.
async fn check_given(store: &Store, vault: &Vault, account_id: &str, pw: &Secret) -> Result<()> {
    let account = crate::inventory::accounts::get(store, account_id).await?;
    {
        let settings = super::settings::get_settings(store, &account.resource_id).await?;
        let policy = store::password_policies::get(store.pool(), &settings.password_policy)
            .await?
            .map(from_row)
            .ok_or_else(|| Error::Internal("the resource's policy is gone".into()))?;
        let mut problems = policy.problems(pw);
        let fp = vault.fingerprint(&super::history_purpose(account_id), pw.expose().as_bytes())?;
        if policy.history > 0
            && store::resets::recent_history(store.pool(), account_id, policy.history)
                .await?
                .contains(&fp)
        {
            problems.push(format!(
                "was used among the last {} passwords of account {account_id}",
                policy.history
            ));
        }
        if !problems.is_empty() {
            return Err(Error::validation(
                "password",
                format!(
                    "does not satisfy policy '{}': {}",
                    policy.name,
                    problems.join("; ")
                ),
            ));
        }
    }
    Ok(())
}

/// Writes a job, one planned item per account and the request's audit event, in one
/// transaction.
pub(super) async fn create(
    store: &Store,
    vault: &Vault,
    actor: &Actor,
    spec: NewJob<'_>,
    accounts: Vec<String>,
) -> Result<(Job, bool)> {
    let now = crate::time::now();
    let job = JobRow {
        id: crate::time::new_id("job"),
        kind: spec.kind.into(),
        trigger: spec.trigger.into(),
        status: JobStatus::Running.as_str().into(),
        requested_by: spec.user.to_string(),
        reason: spec.reason.clone(),
        apply_remote: spec.apply_remote.into(),
        idempotency_key: spec.key,
        created_at: now.clone(),
        finished_at: None,
        notify: (!spec.notify.is_empty())
            .then(|| serde_json::to_string(&spec.notify).unwrap_or_default()),
    };
    let mut tx = store.begin_write().await?;
    store::resets::insert_job(tx.conn(), &job)
        .await
        .map_err(|e| {
            if store::is_unique_violation(&e) {
                Error::Conflict("this Idempotency-Key was used for a request just now".into())
            } else {
                e.into()
            }
        })?;
    let mut items = Vec::with_capacity(accounts.len());
    for account_id in &accounts {
        let item = ItemRow {
            id: crate::time::new_id("rst"),
            job_id: job.id.clone(),
            account_id: account_id.clone(),
            state: ItemState::Planned.as_str().into(),
            attempts: 0,
            detail: None,
            listeners: "[]".into(),
            lease_owner: None,
            lease_until: None,
            created_at: now.clone(),
            updated_at: now.clone(),
            claims: 0,
            steps: String::new(),
        };
        let given = spec
            .password
            .as_ref()
            .map(|pw| {
                vault.seal_secret(
                    pw,
                    &crate::vault::reset_given_aad(&item.id, &item.account_id),
                )
            })
            .transpose()?;
        items.push((item, given));
    }
    store::resets::insert_items(tx.conn(), &items).await?;
    let items: Vec<ItemRow> = items.into_iter().map(|(item, _)| item).collect();
    let target = if accounts.len() == 1 {
        accounts[0].clone()
    } else {
        job.id.clone()
    };
    audit::append(
        &mut tx,
        NewEvent {
            actor,
            action: "account.password.reset.request",
            target: &target,
            outcome: Outcome::Success,
            detail: serde_json::json!({
                "job": job.id,
                "kind": job.kind,
                "accounts": accounts.len(),
                "reason": spec.reason,
                "apply_remote": spec.apply_remote,
                "password": if spec.password.is_some() { "given" } else { "generated" },
            }),
        },
    )
    .await?;
    if let Some(run) = &spec.schedule_run
        && !store::rotation_schedules::advance(tx.conn(), &run.name, &run.seen, &run.next).await?
    {
        // Dropping the transaction writes nothing of the job.
        return Err(Error::Conflict(format!(
            "rotation schedule '{}' moved on or went away since its run was read",
            run.name
        )));
    }
    tx.commit().await?;
    Ok((view(job, items), true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_counted_by_state_groups_matches_progress_counted_item_by_item() {
        let states = [
            "planned",
            "applied",
            "committed",
            "post-listeners",
            "done",
            "done",
            "vetoed",
            "failed",
            "parked",
            "out-of-sync",
        ];
        let mut one_by_one = Progress::default();
        for s in states {
            count(&mut one_by_one, s, 1);
        }
        let mut grouped = Progress::default();
        for (s, n) in [
            ("applied", 1),
            ("committed", 1),
            ("done", 2),
            ("failed", 1),
            ("out-of-sync", 1),
            ("parked", 1),
            ("planned", 1),
            ("post-listeners", 1),
            ("vetoed", 1),
        ] {
            count(&mut grouped, s, n);
        }
        assert_eq!(one_by_one, grouped);
        assert_eq!(
            grouped,
            Progress {
                total: 10,
                in_progress: 2,
                succeeded: 4,
                vetoed: 1,
                failed: 2,
                out_of_sync: 1,
            }
        );
    }

    #[test]
    fn the_step_trail_reads_back_line_by_line_and_skips_a_cut_line() {
        let steps = steps_of(
            "2026-12-01T10:00:00.000000Z srv_a pre-listeners\n\
             2026-12-01T10:00:01.000000Z srv_b committed\ncut",
        );
        assert_eq!(
            steps,
            vec![
                Step {
                    at: "2026-12-01T10:00:00.000000Z".into(),
                    node: "srv_a".into(),
                    state: "pre-listeners".into(),
                },
                Step {
                    at: "2026-12-01T10:00:01.000000Z".into(),
                    node: "srv_b".into(),
                    state: "committed".into(),
                },
            ]
        );
    }
}
