//! Scheduled rotation: accounts whose password is older than their policy's `max_age_days`,
//! and groups of accounts with a rotation schedule, are rotated by bulk jobs the server starts
//! itself.

use super::jobs::{self, Job, MAX_JOB_ACCOUNTS, NewJob, ScheduleRun};
use crate::audit::{self, Actor, NewEvent, Outcome};
use crate::error::{Error, FieldProblem, Result};
use crate::store::rotation_schedules::ScheduleRow;
use crate::store::{self, Store};
use crate::vault::Vault;

/// Starts one job for every account past its maximum age, if there is any. Servers sharing a
/// database agree through the job's idempotency key (one per `bucket`): only one starts it.
pub async fn rotate_due(store: &Store, vault: &Vault, bucket: &str) -> Result<Option<Job>> {
    let now = crate::time::now();
    let due = store::resets::due_for_rotation(store.pool(), &now, MAX_JOB_ACCOUNTS as i64).await?;
    if due.is_empty() {
        return Ok(None);
    }
    let spec = NewJob {
        kind: "bulk",
        trigger: "scheduled",
        user: "system",
        reason: "scheduled rotation: the password is older than its policy's maximum age".into(),
        apply_remote: true,
        // `#` never appears in a user name, so no user's key can collide with this one.
        key: Some(format!("#scheduler\n{bucket}")),
        password: None,
        notify: Vec::new(),
        schedule_run: None,
    };
    match jobs::create(store, vault, &Actor::system(), spec, due).await {
        Ok((job, _)) => Ok(Some(job)),
        // Another server started this bucket's job.
        Err(Error::Conflict(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// A rotation schedule: a group of accounts rotated every `every_hours`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotationSchedule {
    /// Letters, digits, `-` and `_`; 1–64 characters.
    pub name: String,
    /// Every account of every resource of this type (admin accounts excepted)…
    pub resource_type: Option<String>,
    /// …or every account of these resources (give exactly one of the two).
    pub resource_ids: Option<Vec<String>>,
    /// 1–8760 (a year).
    pub every_hours: i64,
    /// The first run (RFC 3339); default: now. Then every `every_hours`.
    pub next_run_at: Option<String>,
    /// Users told when each run's job finishes.
    #[serde(default)]
    pub notify: Vec<String>,
}

impl From<ScheduleRow> for RotationSchedule {
    fn from(r: ScheduleRow) -> RotationSchedule {
        RotationSchedule {
            name: r.name,
            resource_type: r.resource_type,
            resource_ids: r.resource_ids.and_then(|j| serde_json::from_str(&j).ok()),
            every_hours: r.every_hours,
            next_run_at: Some(r.next_run_at),
            notify: r
                .notify
                .and_then(|j| serde_json::from_str(&j).ok())
                .unwrap_or_default(),
        }
    }
}

pub async fn list_schedules(store: &Store) -> Result<Vec<RotationSchedule>> {
    Ok(store::rotation_schedules::list(store.pool())
        .await?
        .into_iter()
        .map(Into::into)
        .collect())
}

pub async fn create_schedule(
    store: &Store,
    actor: &Actor,
    user: &str,
    s: RotationSchedule,
) -> Result<RotationSchedule> {
    let mut problems = Vec::new();
    let name_ok = !s.name.is_empty()
        && s.name.len() <= 64
        && s.name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !name_ok {
        problems.push(FieldProblem::new(
            "name",
            "1 to 64 letters, digits, '-' or '_'",
        ));
    }
    if !(1..=8760).contains(&s.every_hours) {
        problems.push(FieldProblem::new("every_hours", "must be 1 to 8760"));
    }
    let next = match &s.next_run_at {
        Some(t) => crate::time::parse(t).unwrap_or_else(|| {
            problems.push(FieldProblem::new("next_run_at", "an RFC 3339 time"));
            String::new()
        }),
        None => crate::time::now(),
    };
    if !problems.is_empty() {
        return Err(Error::Validation(problems));
    }
    // The selector must name accounts that exist (checked the way a bulk job checks it).
    jobs::select(
        store,
        None,
        s.resource_ids.as_deref(),
        s.resource_type.as_deref(),
    )
    .await?;
    let notify = jobs::check_notify(store, s.notify.clone()).await?;
    let row = ScheduleRow {
        name: s.name.clone(),
        resource_type: s.resource_type.clone(),
        resource_ids: s
            .resource_ids
            .as_ref()
            .map(|ids| serde_json::to_string(ids).unwrap_or_default()),
        every_hours: s.every_hours,
        next_run_at: next,
        notify: (!notify.is_empty()).then(|| serde_json::to_string(&notify).unwrap_or_default()),
        created_by: user.to_string(),
        created_at: crate::time::now(),
    };
    let mut tx = store.begin_write().await?;
    store::rotation_schedules::insert(tx.conn(), &row)
        .await
        .map_err(|e| {
            if store::is_unique_violation(&e) {
                Error::Conflict(format!("a schedule named '{}' already exists", row.name))
            } else {
                e.into()
            }
        })?;
    audit::append(
        &mut tx,
        NewEvent {
            actor,
            action: "rotation-schedule.create",
            target: &row.name,
            outcome: Outcome::Success,
            detail: serde_json::json!({
                "resource_type": row.resource_type, "resource_ids": row.resource_ids,
                "every_hours": row.every_hours, "next_run_at": row.next_run_at,
            }),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(row.into())
}

pub async fn delete_schedule(store: &Store, actor: &Actor, name: &str) -> Result<()> {
    let mut tx = store.begin_write().await?;
    if !store::rotation_schedules::delete(tx.conn(), name).await? {
        return Err(Error::NotFound {
            what: "rotation schedule",
            id: name.to_string(),
        });
    }
    audit::append(
        &mut tx,
        NewEvent {
            actor,
            action: "rotation-schedule.delete",
            target: name,
            outcome: Outcome::Success,
            detail: serde_json::Value::Null,
        },
    )
    .await?;
    tx.commit().await
}

/// Starts a job for every schedule that is due and moves it on. Each run makes exactly one job
/// however many nodes try it and whenever one dies: the job and the schedule's move are one
/// transaction, conditional on the run time this check read (`jobs::ScheduleRun`), and the
/// job's idempotency key is the schedule and its run time. A schedule deleted or moved on by
/// another node meanwhile makes no job. A selector that names nothing usable (a deleted
/// resource, no account left) moves the schedule on without a job, so it does not fire on every
/// check; any other failure (the database) leaves the run due for the next check.
pub async fn run_due_schedules(store: &Store, vault: &Vault) -> Result<Vec<Job>> {
    let now = crate::time::now();
    let mut started = Vec::new();
    for s in store::rotation_schedules::due(store.pool(), &now).await? {
        let ids: Option<Vec<String>> = s
            .resource_ids
            .as_deref()
            .and_then(|j| serde_json::from_str(j).ok());
        let mut next = chrono::DateTime::parse_from_rfc3339(&s.next_run_at)
            .map_err(|e| Error::Internal(format!("schedule {}: {e}", s.name)))?
            .with_timezone(&chrono::Utc);
        let now_t = crate::time::now_utc();
        while next <= now_t {
            next += chrono::Duration::hours(s.every_hours);
        }
        let run = ScheduleRun {
            name: s.name.clone(),
            seen: s.next_run_at.clone(),
            next: crate::time::format(next),
        };
        let accounts = match jobs::select(store, None, ids.as_deref(), s.resource_type.as_deref())
            .await
        {
            Ok(accounts) if !accounts.is_empty() => accounts,
            Ok(_) => {
                move_on(store, &run).await?;
                continue;
            }
            Err(e @ (Error::NotFound { .. } | Error::Validation(_))) => {
                tracing::warn!(schedule = %s.name, error = %e, "rotation schedule selects nothing usable; moved on to its next run");
                move_on(store, &run).await?;
                continue;
            }
            Err(e) => {
                tracing::warn!(schedule = %s.name, error = %e, "rotation schedule not run; the next check tries again");
                continue;
            }
        };
        let spec = NewJob {
            kind: "bulk",
            trigger: "scheduled",
            user: "system",
            reason: format!("rotation schedule '{}' (every {} h)", s.name, s.every_hours),
            apply_remote: true,
            // The schedule's creation time too: a schedule deleted and made again under its
            // name is another schedule, whose runs are not the old one's.
            key: Some(format!(
                "#schedule\n{}\n{}\n{}",
                s.name, s.created_at, s.next_run_at
            )),
            password: None,
            notify: s
                .notify
                .as_deref()
                .and_then(|j| serde_json::from_str(j).ok())
                .unwrap_or_default(),
            schedule_run: Some(run.clone()),
        };
        match jobs::create(store, vault, &Actor::system(), spec, accounts).await {
            Ok((job, _)) => started.push(job),
            // Another node made this run's job and moved the schedule on, or the schedule moved
            // on or went away since it was read, or this run's job exists while the schedule
            // still shows the run (put back by a restore): moving on from the run time read
            // settles each of them without a second job.
            Err(Error::Conflict(_)) => move_on(store, &run).await?,
            Err(e) => {
                tracing::warn!(schedule = %s.name, error = %e, "rotation schedule not run; the next check tries again");
            }
        }
    }
    Ok(started)
}

/// Moves a schedule on without a job, from the run time this check read only.
async fn move_on(store: &Store, run: &ScheduleRun) -> Result<()> {
    let mut tx = store.begin_write().await?;
    store::rotation_schedules::advance(tx.conn(), &run.name, &run.seen, &run.next).await?;
    tx.commit().await
}
