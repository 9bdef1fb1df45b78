//! `/v1/agent-tokens`, `/v1/agents`, `/v1/agent-tasks` (people) and `/v1/agent/...` (agents,
//! which sign every request instead of sending a bearer token; see `agents::auth`).

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, OriginalUri, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use lockstep_agent_protocol::messages::{
    Discovery, DiscoveryResult, EnrollRequest, EnrollResponse, ResultReceipt, TaskResult,
};
use serde::Deserialize;

use super::AppState;
use super::extract::{
    ApiJson, ApiPath, ApiQuery, Authenticated, Authorized, ClientIp, client_ip, need,
};
use crate::agents::enrollment::{IssuedEnrollmentToken, NewEnrollmentToken};
use crate::agents::tasks::{self, TaskView};
use crate::agents::{self, Agent};
use crate::error::{Error, Result};
use crate::store::agents::AgentRow;

/// Largest body an agent may send (a discovery of 10,000 accounts fits).
const MAX_AGENT_BODY: usize = 4 * 1024 * 1024;

/// A request signed by an enrolled, active agent, from an allowed address; with its body.
pub struct AgentCall {
    pub agent: AgentRow,
    pub body: Bytes,
    pub ip: Option<String>,
}

impl FromRequest<AppState> for AgentCall {
    type Rejection = Error;

    async fn from_request(req: Request, state: &AppState) -> Result<Self> {
        let (parts, body) = req.into_parts();
        let ip = client_ip(&parts);
        // Nested routers see their URI without the `/v1` prefix; the agent signed the original.
        let uri = parts
            .extensions
            .get::<OriginalUri>()
            .map(|u| u.0.clone())
            .unwrap_or_else(|| parts.uri.clone());
        let path = uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| uri.path().to_string());
        let body = axum::body::to_bytes(body, MAX_AGENT_BODY)
            .await
            .map_err(|_| Error::Rejected {
                status: 413,
                detail: format!("an agent request body may be at most {MAX_AGENT_BODY} bytes"),
            })?;
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let agent = agents::auth::authenticate(
            &state.store,
            &state.agents.refusals,
            header,
            parts.method.as_str(),
            &path,
            &body,
            ip.as_deref(),
        )
        .await?;
        Ok(AgentCall { agent, body, ip })
    }
}

impl AgentCall {
    fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_slice(&self.body).map_err(|e| Error::Rejected {
            status: 422,
            detail: format!("the request body is not what this endpoint takes: {e}"),
        })
    }
}

#[utoipa::path(post, path = "/v1/agent-tokens", tag = "agents", request_body = NewEnrollmentToken,
    responses((status = 201, body = IssuedEnrollmentToken), (status = 422, body = super::problem::Problem)))]
pub async fn issue_token(
    State(s): State<AppState>,
    a: Authorized<need::ManageResources>,
    ApiJson(input): ApiJson<NewEnrollmentToken>,
) -> Result<(StatusCode, Json<IssuedEnrollmentToken>)> {
    let issued =
        agents::enrollment::issue(&s.store, &a.actor, &a.principal.user_name, input).await?;
    Ok((StatusCode::CREATED, Json(issued)))
}

#[utoipa::path(get, path = "/v1/agents", tag = "agents", responses((status = 200, body = Vec<Agent>)))]
pub async fn list(
    State(s): State<AppState>,
    _a: Authorized<need::ManageResources>,
) -> Result<Json<Vec<Agent>>> {
    Ok(Json(agents::list(&s.store).await?))
}

#[utoipa::path(get, path = "/v1/agents/{id}", tag = "agents", responses((status = 200, body = Agent)))]
pub async fn get(
    State(s): State<AppState>,
    _a: Authorized<need::ManageResources>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Agent>> {
    Ok(Json(agents::get(&s.store, &id).await?))
}

#[utoipa::path(post, path = "/v1/agents/{id}/revoke", tag = "agents",
    responses((status = 200, body = Agent), (status = 409, body = super::problem::Problem)))]
pub async fn revoke(
    State(s): State<AppState>,
    a: Authorized<need::ManageResources>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Agent>> {
    Ok(Json(
        agents::revoke(&s.store, &s.agents, &a.actor, &id).await?,
    ))
}

/// `?limit=` of the task lists.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct TaskQuery {
    /// Newest first, 1–500 (default 100).
    pub limit: Option<i64>,
}

impl TaskQuery {
    fn limit(&self) -> Result<i64> {
        let l = self.limit.unwrap_or(100);
        if (1..=500).contains(&l) {
            Ok(l)
        } else {
            Err(Error::validation("limit", "must be between 1 and 500"))
        }
    }
}

#[utoipa::path(get, path = "/v1/agents/{id}/tasks", tag = "agents", params(TaskQuery),
    responses((status = 200, body = Vec<TaskView>)))]
pub async fn tasks_of_agent(
    State(s): State<AppState>,
    _a: Authorized<need::ManageResources>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<TaskQuery>,
) -> Result<Json<Vec<TaskView>>> {
    Ok(Json(tasks::list_of_agent(&s.store, &id, q.limit()?).await?))
}

/// The caller's own agent tasks: pending and finished (the reference product's "Find tasks
/// awaiting execution").
#[utoipa::path(get, path = "/v1/agent-tasks", tag = "agents", params(TaskQuery),
    responses((status = 200, body = Vec<TaskView>)))]
pub async fn my_tasks(
    State(s): State<AppState>,
    a: Authenticated,
    ApiQuery(q): ApiQuery<TaskQuery>,
) -> Result<Json<Vec<TaskView>>> {
    Ok(Json(
        tasks::list_mine(&s.store, &a.principal.user_name, q.limit()?).await?,
    ))
}

/// Agent enrollment with a one-time token (no bearer token; the body carries it).
#[utoipa::path(post, path = "/v1/agent/enroll", tag = "agent protocol", security(()),
    responses((status = 201, description = "enrolled"), (status = 401, body = super::problem::Problem)))]
pub async fn enroll(
    State(s): State<AppState>,
    ClientIp(ip): ClientIp,
    ApiJson(req): ApiJson<EnrollRequest>,
) -> Result<(StatusCode, Json<EnrollResponse>)> {
    let done = agents::enrollment::enroll(&s.store, &s.agents.refusals, req, ip).await?;
    Ok((StatusCode::CREATED, Json(done)))
}

/// The agent's machine and local accounts (signed by the agent).
#[utoipa::path(post, path = "/v1/agent/discovery", tag = "agent protocol", security(()),
    responses((status = 200, description = "registered")))]
pub async fn discovery(
    State(s): State<AppState>,
    call: AgentCall,
) -> Result<Json<DiscoveryResult>> {
    let d: Discovery = call.json()?;
    Ok(Json(
        agents::discovery::discover(&s.store, &s.vault, &call.agent, d, call.ip).await?,
    ))
}

/// `?session=&wait=` of the long-poll.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct NextQuery {
    /// The agent process's session id (random per start).
    pub session: String,
    /// Seconds to hold when no task is queued, 0–60 (default 25).
    pub wait: Option<u64>,
}

/// The agent's long-poll: 200 with a task, or 204 after the hold.
#[utoipa::path(get, path = "/v1/agent/tasks/next", tag = "agent protocol", security(()), params(NextQuery),
    responses((status = 200, description = "a task"), (status = 204, description = "nothing to do")))]
pub async fn next_task(
    State(s): State<AppState>,
    ApiQuery(q): ApiQuery<NextQuery>,
    call: AgentCall,
) -> Result<Response> {
    let hold = std::time::Duration::from_secs(
        q.wait
            .unwrap_or(tasks::DEFAULT_HOLD.as_secs())
            .min(lockstep_agent_protocol::MAX_HOLD_SECS),
    );
    match tasks::next(
        &s.store,
        &s.vault,
        &s.agents,
        &call.agent,
        &q.session,
        hold,
        call.ip.as_deref(),
    )
    .await?
    {
        Some(task) => Ok(Json(task).into_response()),
        None => Ok(StatusCode::NO_CONTENT.into_response()),
    }
}

/// A task's result; repeating it is harmless (`recorded: false`).
#[utoipa::path(post, path = "/v1/agent/tasks/{id}/result", tag = "agent protocol", security(()),
    responses((status = 200, description = "recorded, or already recorded")))]
pub async fn report(
    State(s): State<AppState>,
    ApiPath(id): ApiPath<String>,
    call: AgentCall,
) -> Result<Json<ResultReceipt>> {
    if call.body.len() > tasks::MAX_RESULT_BYTES {
        return Err(Error::Rejected {
            status: 413,
            detail: format!(
                "a task result may be at most {} bytes (this one is {}); a listener report \
                 carries at most 64 denials and a 4 KiB message",
                tasks::MAX_RESULT_BYTES,
                call.body.len()
            ),
        });
    }
    let result: TaskResult = call.json()?;
    Ok(Json(
        tasks::report(
            &s.store,
            &s.agents,
            &call.agent,
            &id,
            result,
            call.ip.clone(),
        )
        .await?,
    ))
}

/// A listener component one of this agent's listener tasks names, by SHA-256 (the agent
/// checks it); 404 for any other.
#[utoipa::path(get, path = "/v1/agent/components/{sha256}", tag = "agent protocol", security(()),
    responses((status = 200, description = "the component", content_type = "application/wasm"),
        (status = 404, body = super::problem::Problem)))]
pub async fn component(
    State(s): State<AppState>,
    ApiPath(sha256): ApiPath<String>,
    call: AgentCall,
) -> Result<Response> {
    let bytes = tasks::component(&s.store, &call.agent.id, &sha256).await?;
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/wasm")],
        bytes,
    )
        .into_response())
}

/// Verifies the stored password on the account's machine through its agent (202; the task's
/// result sets the account's `password_sync_status`).
#[utoipa::path(post, path = "/v1/accounts/{id}/verify", tag = "agents",
    responses((status = 202, body = TaskView), (status = 409, body = super::problem::Problem)))]
pub async fn verify_account(
    State(s): State<AppState>,
    a: Authorized<need::ResetPasswords>,
    ApiPath(id): ApiPath<String>,
) -> Result<(StatusCode, Json<TaskView>)> {
    let task = tasks::request_verify(
        &s.store,
        &s.vault,
        &s.agents,
        &a.actor,
        &a.principal.user_name,
        &id,
    )
    .await?;
    Ok((StatusCode::ACCEPTED, Json(task)))
}

/// One agent task: its requester, or anyone who may manage resources, may read it.
#[utoipa::path(get, path = "/v1/agent-tasks/{id}", tag = "agents",
    responses((status = 200, body = TaskView), (status = 404, body = super::problem::Problem)))]
pub async fn get_task(
    State(s): State<AppState>,
    a: Authenticated,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<TaskView>> {
    let task = tasks::visible_task(&s.store, &a.principal, &id).await?;
    Ok(Json(task))
}
