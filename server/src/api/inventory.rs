//! `/v1/resource-types`, `/v1/resources`, `/v1/accounts`.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderName, StatusCode, header};
use serde::Deserialize;

use super::AppState;
use super::extract::{ApiJson, ApiPath, ApiQuery, Authorized, List, ListQuery, need};
use crate::error::Result;
use crate::inventory::accounts::{
    self, Account, AccountPatch, AccountSearch, NewAccount, RetrieveRequest, RetrievedPassword,
};
use crate::inventory::resource_types::{self, NewResourceType, ResourceType};
use crate::inventory::resources::{self, NewResource, Resource, ResourcePatch};

#[utoipa::path(get, path = "/v1/resource-types", tag = "inventory", responses((status = 200, body = Vec<ResourceType>)))]
pub async fn list_types(
    State(s): State<AppState>,
    _a: Authorized<need::ViewResources>,
) -> Result<Json<Vec<ResourceType>>> {
    Ok(Json(resource_types::list(&s.store).await?))
}

#[utoipa::path(get, path = "/v1/resource-types/{name}", tag = "inventory", responses((status = 200, body = ResourceType)))]
pub async fn get_type(
    State(s): State<AppState>,
    _a: Authorized<need::ViewResources>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<ResourceType>> {
    Ok(Json(resource_types::get(&s.store, &name).await?))
}

#[utoipa::path(post, path = "/v1/resource-types", tag = "inventory", request_body = NewResourceType,
    responses((status = 201, body = ResourceType)))]
pub async fn create_type(
    State(s): State<AppState>,
    a: Authorized<need::ManageResources>,
    ApiJson(input): ApiJson<NewResourceType>,
) -> Result<(StatusCode, Json<ResourceType>)> {
    Ok((
        StatusCode::CREATED,
        Json(resource_types::create(&s.store, &a.actor, input).await?),
    ))
}

#[utoipa::path(put, path = "/v1/resource-types/{name}/reset-command", tag = "inventory",
    request_body = crate::registry::ResetCommandChange,
    description = "Proposes how an `ssh` type's passwords are changed: an absolute program, its \
        arguments (`{login}` allowed) and its standard input (`{password}` required, `{login}` \
        allowed); `null` goes back to `chpasswd`. The template runs as root on every target of \
        the type, so it takes effect only when the named approver approves the change request.",
    responses((status = 202, body = crate::registry::ChangeRequest),
        (status = 422, body = super::problem::Problem),
        (status = 409, body = super::problem::Problem)))]
pub async fn put_reset_command(
    State(s): State<AppState>,
    a: Authorized<need::ManageResources>,
    ApiPath(name): ApiPath<String>,
    ApiJson(input): ApiJson<crate::registry::ResetCommandChange>,
) -> Result<(StatusCode, Json<crate::registry::ChangeRequest>)> {
    let user = &a.principal.user_name;
    let cr = s
        .registry
        .propose_reset_command(&a.actor, user, &name, input)
        .await?;
    Ok((StatusCode::ACCEPTED, Json(cr)))
}

#[utoipa::path(delete, path = "/v1/resource-types/{name}/reset-command", tag = "inventory",
    params(super::registry::ApproverQuery),
    description = "Proposes going back to the default command, `chpasswd` (approved like a new \
        template).",
    responses((status = 202, body = crate::registry::ChangeRequest),
        (status = 409, body = super::problem::Problem)))]
pub async fn delete_reset_command(
    State(s): State<AppState>,
    a: Authorized<need::ManageResources>,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<super::registry::ApproverQuery>,
) -> Result<(StatusCode, Json<crate::registry::ChangeRequest>)> {
    let user = &a.principal.user_name;
    let input = crate::registry::ResetCommandChange {
        reset_command: None,
        approver: q.approver,
        comment: None,
    };
    let cr = s
        .registry
        .propose_reset_command(&a.actor, user, &name, input)
        .await?;
    Ok((StatusCode::ACCEPTED, Json(cr)))
}

#[utoipa::path(delete, path = "/v1/resource-types/{name}", tag = "inventory", responses((status = 204)))]
pub async fn delete_type(
    State(s): State<AppState>,
    a: Authorized<need::ManageResources>,
    ApiPath(name): ApiPath<String>,
) -> Result<StatusCode> {
    resource_types::delete(&s.store, &a.actor, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/resources` filters.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ResourceQuery {
    /// Only resources of this type.
    pub resource_type: Option<String>,
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

#[utoipa::path(get, path = "/v1/resources", tag = "inventory", params(ResourceQuery),
    responses((status = 200, body = List<Resource>)))]
pub async fn list_resources(
    State(s): State<AppState>,
    _a: Authorized<need::ViewResources>,
    ApiQuery(q): ApiQuery<ResourceQuery>,
) -> Result<Json<List<Resource>>> {
    let page = ListQuery {
        limit: q.limit,
        cursor: q.cursor,
    }
    .page()?;
    Ok(Json(
        resources::list(
            &s.store,
            q.resource_type.as_deref().filter(|t| !t.is_empty()),
            &page,
        )
        .await?
        .into(),
    ))
}

#[utoipa::path(post, path = "/v1/resources", tag = "inventory", request_body = NewResource,
    responses((status = 201, body = Resource), (status = 422, body = super::problem::Problem)))]
pub async fn create_resource(
    State(s): State<AppState>,
    a: Authorized<need::ManageResources>,
    ApiJson(input): ApiJson<NewResource>,
) -> Result<(StatusCode, Json<Resource>)> {
    Ok((
        StatusCode::CREATED,
        Json(resources::create(&s.store, &a.actor, input).await?),
    ))
}

#[utoipa::path(get, path = "/v1/resources/{id}", tag = "inventory", responses((status = 200, body = Resource)))]
pub async fn get_resource(
    State(s): State<AppState>,
    _a: Authorized<need::ViewResources>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Resource>> {
    Ok(Json(resources::get(&s.store, &id).await?))
}

#[utoipa::path(patch, path = "/v1/resources/{id}", tag = "inventory", request_body = ResourcePatch,
    responses((status = 200, body = Resource)))]
pub async fn update_resource(
    State(s): State<AppState>,
    a: Authorized<need::ManageResources>,
    ApiPath(id): ApiPath<String>,
    ApiJson(patch): ApiJson<ResourcePatch>,
) -> Result<Json<Resource>> {
    Ok(Json(
        resources::update(&s.store, &a.actor, &id, patch).await?,
    ))
}

#[utoipa::path(delete, path = "/v1/resources/{id}", tag = "inventory", responses((status = 204), (status = 409, body = super::problem::Problem)))]
pub async fn delete_resource(
    State(s): State<AppState>,
    a: Authorized<need::ManageResources>,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode> {
    resources::delete(&s.store, &a.actor, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/v1/resources/{id}/accounts", tag = "inventory", params(ListQuery),
    responses((status = 200, body = List<Account>)))]
pub async fn list_accounts(
    State(s): State<AppState>,
    _a: Authorized<need::ViewResources>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<List<Account>>> {
    Ok(Json(
        accounts::list_for_resource(&s.store, &id, &q.page()?)
            .await?
            .into(),
    ))
}

/// `GET /v1/accounts` filters; every given one must hold.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AccountQuery {
    /// Only accounts with this exact LOGINNAME.
    pub login_name: Option<String>,
    /// Only accounts in this PASSWRDSYNCSTATUS: `in-sync`, `out-of-sync`, `not-verified` or
    /// `discovered`.
    pub sync_status: Option<String>,
    /// Only accounts of resources of this type.
    pub resource_type: Option<String>,
    /// Items per page, 1–500 (default 100).
    pub limit: Option<i64>,
    /// The `next` value of the previous page.
    pub cursor: Option<String>,
}

#[utoipa::path(get, path = "/v1/accounts", tag = "inventory", params(AccountQuery),
    responses((status = 200, body = List<Account>), (status = 404, body = super::problem::Problem),
        (status = 422, body = super::problem::Problem)))]
pub async fn search_accounts(
    State(s): State<AppState>,
    _a: Authorized<need::ViewResources>,
    ApiQuery(q): ApiQuery<AccountQuery>,
) -> Result<Json<List<Account>>> {
    let page = ListQuery {
        limit: q.limit,
        cursor: q.cursor,
    }
    .page()?;
    // An empty filter (`?login_name=`) is no filter, as for `GET /v1/resources`.
    let given = |v: Option<String>| v.filter(|v| !v.is_empty());
    let search = AccountSearch {
        login_name: given(q.login_name),
        sync_status: given(q.sync_status),
        resource_type: given(q.resource_type),
    };
    Ok(Json(
        accounts::search(&s.store, &search, &page).await?.into(),
    ))
}

#[utoipa::path(post, path = "/v1/resources/{id}/accounts", tag = "inventory", request_body = NewAccount,
    responses((status = 201, body = Account)))]
pub async fn create_account(
    State(s): State<AppState>,
    a: Authorized<need::ManageResources>,
    ApiPath(id): ApiPath<String>,
    ApiJson(input): ApiJson<NewAccount>,
) -> Result<(StatusCode, Json<Account>)> {
    Ok((
        StatusCode::CREATED,
        Json(accounts::create(&s.store, &s.vault, &a.actor, &id, input).await?),
    ))
}

#[utoipa::path(get, path = "/v1/accounts/{id}", tag = "inventory", responses((status = 200, body = Account)))]
pub async fn get_account(
    State(s): State<AppState>,
    _a: Authorized<need::ViewResources>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Account>> {
    Ok(Json(accounts::get(&s.store, &id).await?))
}

#[utoipa::path(patch, path = "/v1/accounts/{id}", tag = "inventory", request_body = AccountPatch,
    responses((status = 200, body = Account)))]
pub async fn update_account(
    State(s): State<AppState>,
    a: Authorized<need::ManageResources>,
    ApiPath(id): ApiPath<String>,
    ApiJson(patch): ApiJson<AccountPatch>,
) -> Result<Json<Account>> {
    Ok(Json(
        accounts::update(&s.store, &a.actor, &id, patch).await?,
    ))
}

#[utoipa::path(delete, path = "/v1/accounts/{id}", tag = "inventory", responses((status = 204)))]
pub async fn delete_account(
    State(s): State<AppState>,
    a: Authorized<need::ManageResources>,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode> {
    accounts::delete(&s.store, &a.actor, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/v1/accounts/{id}/password/retrieve", tag = "inventory", request_body = RetrieveRequest,
    responses((status = 200, body = RetrievedPassword, description = "The only response that carries a password; audited with the reason")))]
pub async fn retrieve_password(
    State(s): State<AppState>,
    a: Authorized<need::RetrievePasswords>,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<RetrieveRequest>,
) -> Result<([(HeaderName, &'static str); 1], Json<RetrievedPassword>)> {
    let retrieved = crate::access::checkout::retrieve(
        &s.store,
        &s.registry,
        &a.actor,
        &a.principal.user_name,
        &id,
        req,
    )
    .await?;
    // A password must not linger in a proxy's or browser's cache.
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(retrieved)))
}
