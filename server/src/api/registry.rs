//! `/v1/publisher-keys`, `/v1/listeners`, `/v1/listener-plan`, `/v1/change-requests`.

use axum::Json;
use axum::extract::multipart::MultipartRejection;
use axum::extract::{Multipart, State};
use axum::http::StatusCode;
use serde::Deserialize;

use super::AppState;
use super::extract::{ApiJson, ApiPath, ApiQuery, Authorized, List, ListQuery, need};
use crate::error::{Error, Result};
use crate::inventory::resources::Resource;
use crate::registry::{
    AssociationChange, ChangeRequest, Listener, NewPublisherKey, PlanView, PublisherKey, Upload,
};

type Accepted = (StatusCode, Json<ChangeRequest>);

fn accepted(cr: ChangeRequest) -> Accepted {
    (StatusCode::ACCEPTED, Json(cr))
}

/// `?approver=NAME` on deletions.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ApproverQuery {
    /// The administrator who must approve the change.
    pub approver: String,
}

#[utoipa::path(get, path = "/v1/publisher-keys", tag = "registry",
    responses((status = 200, body = Vec<PublisherKey>)))]
pub async fn list_keys(
    State(s): State<AppState>,
    _a: Authorized<need::ViewResources>,
) -> Result<Json<Vec<PublisherKey>>> {
    Ok(Json(s.registry.list_keys().await?))
}

#[utoipa::path(post, path = "/v1/publisher-keys", tag = "registry", request_body = NewPublisherKey,
    responses((status = 202, body = ChangeRequest), (status = 422, body = super::problem::Problem)))]
pub async fn propose_key(
    State(s): State<AppState>,
    a: Authorized<need::ManageListeners>,
    ApiJson(input): ApiJson<NewPublisherKey>,
) -> Result<Accepted> {
    let user = &a.principal.user_name;
    Ok(accepted(
        s.registry.propose_key(&a.actor, user, input).await?,
    ))
}

#[utoipa::path(delete, path = "/v1/publisher-keys/{key_id}", tag = "registry", params(ApproverQuery),
    responses((status = 202, body = ChangeRequest)))]
pub async fn propose_key_removal(
    State(s): State<AppState>,
    a: Authorized<need::ManageListeners>,
    ApiPath(key_id): ApiPath<String>,
    ApiQuery(q): ApiQuery<ApproverQuery>,
) -> Result<Accepted> {
    let user = &a.principal.user_name;
    Ok(accepted(
        s.registry
            .propose_key_removal(&a.actor, user, &key_id, &q.approver)
            .await?,
    ))
}

/// Reads the parts of a listener upload. Unknown or repeated parts are refused by name.
async fn read_upload(form: std::result::Result<Multipart, MultipartRejection>) -> Result<Upload> {
    let mut form = form?;
    let mut u = Upload::default();
    while let Some(field) = form.next_field().await? {
        let name = field.name().unwrap_or_default().to_string();
        if name == "component" {
            if u.component.is_some() {
                return Err(Error::validation(name, "sent twice"));
            }
            u.component = Some(field.bytes().await?.to_vec());
            continue;
        }
        let slot = match name.as_str() {
            "manifest" => &mut u.manifest,
            "signature" => &mut u.signature,
            "approver" => &mut u.approver,
            "association" => &mut u.association,
            "comment" => &mut u.comment,
            _ => {
                return Err(Error::validation(
                    name,
                    "unknown part; an upload has component, manifest, signature, approver, \
                     and optionally association and comment",
                ));
            }
        };
        if slot.is_some() {
            return Err(Error::validation(name, "sent twice"));
        }
        let bytes = field.bytes().await?;
        *slot = Some(
            String::from_utf8(bytes.to_vec())
                .map_err(|_| Error::validation(name.clone(), "must be UTF-8 text"))?,
        );
    }
    Ok(u)
}

#[utoipa::path(post, path = "/v1/listeners", tag = "registry",
    request_body(content_type = "multipart/form-data", description = "component, manifest, signature, approver, [association], [comment]"),
    responses((status = 202, body = ChangeRequest), (status = 413, body = super::problem::Problem),
        (status = 422, body = super::problem::Problem)))]
pub async fn upload_listener(
    State(s): State<AppState>,
    a: Authorized<need::ManageListeners>,
    form: std::result::Result<Multipart, MultipartRejection>,
) -> Result<Accepted> {
    let user = &a.principal.user_name;
    // A body that cannot be read is refused (and audited) like any other bad upload.
    let upload = read_upload(form).await;
    Ok(accepted(
        s.registry.propose_listener(&a.actor, user, upload).await?,
    ))
}

#[utoipa::path(put, path = "/v1/listeners/{name}", tag = "registry",
    request_body(content_type = "multipart/form-data", description = "component, manifest, signature, approver, [association], [comment]"),
    responses((status = 202, body = ChangeRequest), (status = 413, body = super::problem::Problem),
        (status = 422, body = super::problem::Problem)))]
pub async fn upload_version(
    State(s): State<AppState>,
    a: Authorized<need::ManageListeners>,
    ApiPath(name): ApiPath<String>,
    form: std::result::Result<Multipart, MultipartRejection>,
) -> Result<Accepted> {
    let user = &a.principal.user_name;
    // A body that cannot be read is refused (and audited) like any other bad upload.
    let upload = read_upload(form).await;
    Ok(accepted(
        s.registry
            .propose_version(&a.actor, user, &name, upload)
            .await?,
    ))
}

#[utoipa::path(put, path = "/v1/listeners/{name}/association", tag = "registry",
    request_body = AssociationChange, responses((status = 202, body = ChangeRequest)))]
pub async fn propose_association(
    State(s): State<AppState>,
    a: Authorized<need::ManageListeners>,
    ApiPath(name): ApiPath<String>,
    ApiJson(change): ApiJson<AssociationChange>,
) -> Result<Accepted> {
    let user = &a.principal.user_name;
    Ok(accepted(
        s.registry
            .propose_association(&a.actor, user, &name, change)
            .await?,
    ))
}

#[utoipa::path(delete, path = "/v1/listeners/{name}", tag = "registry", params(ApproverQuery),
    responses((status = 202, body = ChangeRequest)))]
pub async fn propose_delete(
    State(s): State<AppState>,
    a: Authorized<need::ManageListeners>,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<ApproverQuery>,
) -> Result<Accepted> {
    let user = &a.principal.user_name;
    Ok(accepted(
        s.registry
            .propose_delete(&a.actor, user, &name, &q.approver)
            .await?,
    ))
}

#[utoipa::path(get, path = "/v1/listeners", tag = "registry", params(ListQuery),
    responses((status = 200, body = List<Listener>)))]
pub async fn list_listeners(
    State(s): State<AppState>,
    _a: Authorized<need::ViewResources>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<List<Listener>>> {
    Ok(Json(s.registry.list_listeners(&q.page()?).await?.into()))
}

#[utoipa::path(get, path = "/v1/listeners/{name}", tag = "registry",
    responses((status = 200, body = Listener)))]
pub async fn get_listener(
    State(s): State<AppState>,
    _a: Authorized<need::ViewResources>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<Listener>> {
    Ok(Json(s.registry.get_listener(&name).await?))
}

#[utoipa::path(get, path = "/v1/listeners/{name}/history", tag = "registry", params(ListQuery),
    responses((status = 200, body = List<ChangeRequest>)))]
pub async fn history(
    State(s): State<AppState>,
    _a: Authorized<need::ViewResources>,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<List<ChangeRequest>>> {
    Ok(Json(s.registry.history(&name, &q.page()?).await?.into()))
}

#[utoipa::path(get, path = "/v1/listeners/{name}/resources", tag = "registry", params(ListQuery),
    responses((status = 200, body = List<Resource>)))]
pub async fn resources(
    State(s): State<AppState>,
    _a: Authorized<need::ViewResources>,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<List<Resource>>> {
    Ok(Json(
        s.registry.resources_of(&name, &q.page()?).await?.into(),
    ))
}

/// `GET /v1/listener-plan` parameters.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct PlanQuery {
    pub resource_type: String,
    /// `pre-reset` or `post-reset`.
    pub phase: String,
    /// `agentless`, `agent` or `gateway`.
    pub mode: String,
}

#[utoipa::path(get, path = "/v1/listener-plan", tag = "registry", params(PlanQuery),
    responses((status = 200, body = PlanView)))]
pub async fn plan(
    State(s): State<AppState>,
    _a: Authorized<need::ViewResources>,
    ApiQuery(q): ApiQuery<PlanQuery>,
) -> Result<Json<PlanView>> {
    let mut problems = Vec::new();
    if !matches!(q.phase.as_str(), "pre-reset" | "post-reset") {
        problems.push(crate::error::FieldProblem::new(
            "phase",
            "pre-reset or post-reset",
        ));
    }
    if !matches!(q.mode.as_str(), "agentless" | "agent" | "gateway") {
        problems.push(crate::error::FieldProblem::new(
            "mode",
            "agentless, agent or gateway",
        ));
    }
    if !problems.is_empty() {
        return Err(Error::Validation(problems));
    }
    Ok(Json(
        s.registry.plan(&q.resource_type, &q.phase, &q.mode).await?,
    ))
}

/// `GET /v1/change-requests` filters.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ChangeQuery {
    /// `pending`, `approved`, `rejected` or `withdrawn`.
    pub status: Option<String>,
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

#[utoipa::path(get, path = "/v1/change-requests", tag = "registry", params(ChangeQuery),
    responses((status = 200, body = List<ChangeRequest>)))]
pub async fn list_changes(
    State(s): State<AppState>,
    _a: Authorized<need::ViewResources>,
    ApiQuery(q): ApiQuery<ChangeQuery>,
) -> Result<Json<List<ChangeRequest>>> {
    let page = ListQuery {
        limit: q.limit,
        cursor: q.cursor,
    }
    .page()?;
    Ok(Json(
        s.registry
            .list_change_requests(q.status.as_deref(), &page)
            .await?
            .into(),
    ))
}

#[utoipa::path(get, path = "/v1/change-requests/{id}", tag = "registry",
    responses((status = 200, body = ChangeRequest)))]
pub async fn get_change(
    State(s): State<AppState>,
    _a: Authorized<need::ViewResources>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<ChangeRequest>> {
    Ok(Json(s.registry.get_change_request(&id).await?))
}

/// The body of a decision.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecisionBody {
    /// Optional on approve and withdraw, required on reject; the requester is told.
    pub comment: Option<String>,
    /// Required on approve: the `digest` of the change request as you reviewed it. The
    /// approval counts only if the request is still exactly that.
    pub digest: Option<String>,
}

#[utoipa::path(post, path = "/v1/change-requests/{id}/approve", tag = "registry", request_body = DecisionBody,
    responses((status = 200, body = ChangeRequest), (status = 403, body = super::problem::Problem),
        (status = 409, body = super::problem::Problem)))]
pub async fn approve(
    State(s): State<AppState>,
    a: Authorized<need::ApproveListeners>,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<DecisionBody>,
) -> Result<Json<ChangeRequest>> {
    let user = &a.principal.user_name;
    Ok(Json(
        s.registry
            .approve(&a.actor, user, &id, body.comment, body.digest)
            .await?,
    ))
}

#[utoipa::path(post, path = "/v1/change-requests/{id}/reject", tag = "registry", request_body = DecisionBody,
    responses((status = 200, body = ChangeRequest), (status = 403, body = super::problem::Problem)))]
pub async fn reject(
    State(s): State<AppState>,
    a: Authorized<need::ApproveListeners>,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<DecisionBody>,
) -> Result<Json<ChangeRequest>> {
    let user = &a.principal.user_name;
    Ok(Json(
        s.registry.reject(&a.actor, user, &id, body.comment).await?,
    ))
}

#[utoipa::path(post, path = "/v1/change-requests/{id}/withdraw", tag = "registry", request_body = DecisionBody,
    responses((status = 200, body = ChangeRequest), (status = 403, body = super::problem::Problem)))]
pub async fn withdraw(
    State(s): State<AppState>,
    a: Authorized<need::ManageListeners>,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<DecisionBody>,
) -> Result<Json<ChangeRequest>> {
    let user = &a.principal.user_name;
    Ok(Json(
        s.registry
            .withdraw(&a.actor, user, &id, body.comment)
            .await?,
    ))
}
