//! `/v1/accounts/{id}/reset`, `/v1/reset-jobs`, `/v1/resources/{id}/reset-settings`,
//! `/v1/password-policies`.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::extract::{ApiJson, ApiPath, Authorized, need};
use crate::error::{Error, Result};
use crate::reset::jobs::{self, BulkResetRequest, Job, ResetRequest};
use crate::reset::policy::PasswordPolicy;
use crate::reset::scheduler::{self, RotationSchedule};
use crate::reset::settings::{self, ResetSettings, ResetSettingsInput};
use crate::states::JobStatus;

/// The `Idempotency-Key` header, if sent (1–200 visible ASCII characters).
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let text = v
        .to_str()
        .ok()
        .filter(|t| !t.is_empty() && t.len() <= 200 && t.chars().all(|c| c.is_ascii_graphic()));
    text.map(|t| Some(t.to_string())).ok_or(Error::Rejected {
        status: 400,
        detail: "Idempotency-Key must be 1 to 200 visible ASCII characters".into(),
    })
}

#[utoipa::path(post, path = "/v1/accounts/{id}/reset", tag = "reset", request_body = ResetRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "a repeat returns the first job")),
    responses((status = 202, body = Job), (status = 422, body = super::problem::Problem)))]
pub async fn reset_account(
    State(s): State<AppState>,
    a: Authorized<need::ResetPasswords>,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
    ApiJson(request): ApiJson<ResetRequest>,
) -> Result<Response> {
    let key = idempotency_key(&headers)?;
    let user = &a.principal.user_name;
    let (job, started) = jobs::start_single(
        &s.store,
        &s.registry,
        &a.actor,
        user,
        &id,
        request,
        key.as_deref(),
    )
    .await?;
    if started {
        s.resets.wake();
    }
    accepted(job)
}

/// 202 with the job and its URL.
fn accepted(job: Job) -> Result<Response> {
    let location = HeaderValue::from_str(&format!("/v1/reset-jobs/{}", job.id))
        .map_err(|e| Error::Internal(e.to_string()))?;
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(job),
    )
        .into_response())
}

#[utoipa::path(post, path = "/v1/reset-jobs", tag = "reset", request_body = BulkResetRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "a repeat returns the first job")),
    responses((status = 202, body = Job), (status = 422, body = super::problem::Problem)))]
pub async fn bulk_reset(
    State(s): State<AppState>,
    a: Authorized<need::ResetPasswords>,
    headers: HeaderMap,
    ApiJson(request): ApiJson<BulkResetRequest>,
) -> Result<Response> {
    let key = idempotency_key(&headers)?;
    let user = &a.principal.user_name;
    let (job, started) = jobs::start_bulk(
        &s.store,
        &s.registry,
        &a.actor,
        user,
        request,
        key.as_deref(),
    )
    .await?;
    if started {
        s.resets.wake();
    }
    accepted(job)
}

/// `GET /v1/reset-jobs/{id}` options.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct JobQuery {
    /// Long-poll: wait up to this many seconds (at most 60) for the job's progress to change
    /// or for it to finish, then answer.
    pub wait: Option<u64>,
}

#[utoipa::path(get, path = "/v1/reset-jobs/{id}", tag = "reset", params(JobQuery),
    responses((status = 200, body = Job)))]
pub async fn get_job(
    State(s): State<AppState>,
    _a: Authorized<need::ViewResources>,
    ApiPath(id): ApiPath<String>,
    super::extract::ApiQuery(q): super::extract::ApiQuery<JobQuery>,
) -> Result<Json<Job>> {
    let first = jobs::get_job(&s.store, &id).await?;
    let wait = std::time::Duration::from_secs(q.wait.unwrap_or(0).min(60));
    if wait.is_zero() || JobStatus::Finished.is(&first.status) {
        return Ok(Json(first));
    }
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        tokio::time::sleep(JOB_POLL).await;
        let (status, progress) = jobs::get_progress(&s.store, &id).await?;
        let changed = progress != first.progress;
        if changed || JobStatus::Finished.is(&status) || tokio::time::Instant::now() >= deadline {
            return Ok(Json(jobs::get_job(&s.store, &id).await?));
        }
    }
}

/// How often a long-poll or an event stream re-reads its job.
const JOB_POLL: std::time::Duration = std::time::Duration::from_millis(200);
/// How long one event stream stays open; a client reconnects to go on (the first events of a
/// new stream are the job's whole current state).
const EVENTS_MAX: std::time::Duration = std::time::Duration::from_secs(3600);

#[utoipa::path(get, path = "/v1/reset-jobs/{id}/events", tag = "reset",
    description = "Live progress as server-sent events (`text/event-stream`). The first events \
        are the job's current state: one `item` event per account, then `progress`. After that, \
        an `item` event (`ItemChange`) each time an account's state moves, a `progress` event \
        (`ProgressChange`) each time the counts move, and at the end one `finished` event with \
        the whole job (`Job`), after which the stream closes. A stream closes after an hour; \
        reconnect to go on.",
    responses((status = 200, content_type = "text/event-stream", body = String,
        description = "`item`, `progress` and `finished` events, JSON in `data`"),
        (status = 404, body = super::problem::Problem)))]
pub async fn job_events(
    State(s): State<AppState>,
    _a: Authorized<need::ViewResources>,
    ApiPath(id): ApiPath<String>,
) -> Result<Response> {
    use crate::reset::watch::{JobChange, Seen};
    use axum::response::sse::{Event, KeepAlive, Sse};
    use futures_util::stream::{self, StreamExt};

    // An unknown job is a 404 now, not an event later.
    let first = jobs::get_job(&s.store, &id).await?;
    let deadline = tokio::time::Instant::now() + EVENTS_MAX;
    let store = s.store.clone();
    // Each step yields the changes of one snapshot; the stream ends after `finished`, after
    // an error (reported as an `error` event) or at the deadline.
    let snapshots = stream::unfold(
        (Seen::default(), Some(first), false),
        move |(mut seen, next, stop)| {
            let store = store.clone();
            let id = id.clone();
            async move {
                if stop || seen.finished() || tokio::time::Instant::now() >= deadline {
                    return None;
                }
                let job = match next {
                    Some(job) => Ok(job),
                    None => {
                        tokio::time::sleep(JOB_POLL).await;
                        jobs::get_job(&store, &id).await
                    }
                };
                let events: Vec<Event> = match job {
                    Ok(job) => seen
                        .changes(job)
                        .into_iter()
                        .map(|change| {
                            let event = Event::default().event(change.name());
                            match &change {
                                JobChange::Item(i) => event.json_data(i),
                                JobChange::Progress(p) => event.json_data(p),
                                JobChange::Finished(j) => event.json_data(j),
                            }
                            .unwrap_or_else(|e| Event::default().event("error").data(e.to_string()))
                        })
                        .collect(),
                    Err(e) => {
                        let event = Event::default().event("error").data(e.to_string());
                        return Some((vec![event], (seen, None, true)));
                    }
                };
                Some((events, (seen, None, false)))
            }
        },
    );
    let events = snapshots
        .flat_map(stream::iter)
        .map(Ok::<_, std::convert::Infallible>);
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response())
}

#[utoipa::path(get, path = "/v1/resources/{id}/reset-settings", tag = "reset",
    responses((status = 200, body = ResetSettings)))]
pub async fn get_settings(
    State(s): State<AppState>,
    _a: Authorized<need::ViewResources>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<ResetSettings>> {
    Ok(Json(settings::get_settings(&s.store, &id).await?))
}

#[utoipa::path(put, path = "/v1/resources/{id}/reset-settings", tag = "reset",
    request_body = ResetSettingsInput, responses((status = 200, body = ResetSettings)))]
pub async fn put_settings(
    State(s): State<AppState>,
    a: Authorized<need::ManageResources>,
    ApiPath(id): ApiPath<String>,
    ApiJson(input): ApiJson<ResetSettingsInput>,
) -> Result<Json<ResetSettings>> {
    Ok(Json(
        settings::put_settings(&s.store, &a.actor, &id, input).await?,
    ))
}

#[utoipa::path(get, path = "/v1/password-policies", tag = "reset",
    responses((status = 200, body = Vec<PasswordPolicy>)))]
pub async fn list_policies(
    State(s): State<AppState>,
    _a: Authorized<need::ViewResources>,
) -> Result<Json<Vec<PasswordPolicy>>> {
    Ok(Json(settings::list_policies(&s.store).await?))
}

#[utoipa::path(post, path = "/v1/password-policies", tag = "reset", request_body = PasswordPolicy,
    responses((status = 201, body = PasswordPolicy)))]
pub async fn create_policy(
    State(s): State<AppState>,
    a: Authorized<need::ManageResources>,
    ApiJson(policy): ApiJson<PasswordPolicy>,
) -> Result<(StatusCode, Json<PasswordPolicy>)> {
    Ok((
        StatusCode::CREATED,
        Json(settings::create_policy(&s.store, &a.actor, policy).await?),
    ))
}

#[utoipa::path(get, path = "/v1/rotation-schedules", tag = "reset",
    responses((status = 200, body = Vec<RotationSchedule>)))]
pub async fn list_schedules(
    State(s): State<AppState>,
    _a: Authorized<need::ViewResources>,
) -> Result<Json<Vec<RotationSchedule>>> {
    Ok(Json(scheduler::list_schedules(&s.store).await?))
}

#[utoipa::path(post, path = "/v1/rotation-schedules", tag = "reset", request_body = RotationSchedule,
    responses((status = 201, body = RotationSchedule), (status = 422, body = super::problem::Problem)))]
pub async fn create_schedule(
    State(s): State<AppState>,
    a: Authorized<need::ResetPasswords>,
    ApiJson(schedule): ApiJson<RotationSchedule>,
) -> Result<(StatusCode, Json<RotationSchedule>)> {
    let user = &a.principal.user_name;
    Ok((
        StatusCode::CREATED,
        Json(scheduler::create_schedule(&s.store, &a.actor, user, schedule).await?),
    ))
}

#[utoipa::path(delete, path = "/v1/rotation-schedules/{name}", tag = "reset",
    responses((status = 204)))]
pub async fn delete_schedule(
    State(s): State<AppState>,
    a: Authorized<need::ResetPasswords>,
    ApiPath(name): ApiPath<String>,
) -> Result<StatusCode> {
    scheduler::delete_schedule(&s.store, &a.actor, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}
