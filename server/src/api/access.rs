//! Access control over HTTP: policies per scope, and the checkout workflow
//! (`docs/access-control.md`). Who may approve, hold or return a checkout is decided by the
//! domain (`access::checkout`) from the policy it was requested under; each handler names the
//! privilege a caller needs at all.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;

use super::AppState;
use super::extract::{ApiJson, ApiPath, ApiQuery, Authorized, List, ListQuery, need};
use crate::access::checkout::{
    self, Checkout, CheckoutQuery, CheckoutRequest, ForceRequest, RejectRequest,
};
use crate::access::policy::{self, AccessPolicy, AccessPolicyInput, Scope};
use crate::error::{Error, Result};

fn scope_of(text: &str) -> Result<Scope> {
    Scope::parse(text).ok_or_else(|| Error::NotFound {
        what: "access policy scope",
        id: format!("{text} (use account, resource or resource-type)"),
    })
}

#[utoipa::path(get, path = "/v1/access-policies/{scope}/{id}", tag = "access",
    params(("scope" = String, Path, description = "`account`, `resource` or `resource-type`"),
        ("id" = String, Path, description = "The account or resource id, or the type's name")),
    responses((status = 200, body = AccessPolicy), (status = 404, body = super::problem::Problem)))]
pub async fn get_policy(
    State(s): State<AppState>,
    _a: Authorized<need::ViewResources>,
    ApiPath((scope, id)): ApiPath<(String, String)>,
) -> Result<Json<AccessPolicy>> {
    Ok(Json(policy::get(&s.store, scope_of(&scope)?, &id).await?))
}

#[utoipa::path(put, path = "/v1/access-policies/{scope}/{id}", tag = "access",
    request_body = AccessPolicyInput,
    params(("scope" = String, Path, description = "`account`, `resource` or `resource-type`"),
        ("id" = String, Path, description = "The account or resource id, or the type's name")),
    responses((status = 200, body = AccessPolicy), (status = 422, body = super::problem::Problem)))]
pub async fn put_policy(
    State(s): State<AppState>,
    a: Authorized<need::ManageResources>,
    ApiPath((scope, id)): ApiPath<(String, String)>,
    ApiJson(input): ApiJson<AccessPolicyInput>,
) -> Result<Json<AccessPolicy>> {
    Ok(Json(
        policy::put(&s.store, &s.vault, &a.actor, scope_of(&scope)?, &id, input).await?,
    ))
}

#[utoipa::path(delete, path = "/v1/access-policies/{scope}/{id}", tag = "access",
    params(("scope" = String, Path, description = "`account`, `resource` or `resource-type`"),
        ("id" = String, Path, description = "The account or resource id, or the type's name")),
    responses((status = 204), (status = 404, body = super::problem::Problem)))]
pub async fn delete_policy(
    State(s): State<AppState>,
    a: Authorized<need::ManageResources>,
    ApiPath((scope, id)): ApiPath<(String, String)>,
) -> Result<StatusCode> {
    policy::delete(&s.store, &s.vault, &a.actor, scope_of(&scope)?, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/v1/accounts/{id}/access-policy", tag = "access",
    description = "The policy that decides for this account: its own, else its resource's, else its resource type's (`enabled: false` when that one lifts access control).",
    responses((status = 200, body = AccessPolicy), (status = 404, body = super::problem::Problem)))]
pub async fn effective_policy(
    State(s): State<AppState>,
    _a: Authorized<need::ViewResources>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<AccessPolicy>> {
    policy::deciding(&s.store, &s.registry, &id)
        .await?
        .map(Json)
        .ok_or_else(|| Error::NotFound {
            what: "access policy for account",
            id,
        })
}

#[utoipa::path(post, path = "/v1/accounts/{id}/checkouts", tag = "access",
    request_body = CheckoutRequest,
    responses((status = 201, body = Checkout, description = "Requested, or checked out at once when the policy needs no approval"),
        (status = 403, body = super::problem::Problem), (status = 409, body = super::problem::Problem)))]
pub async fn request_checkout(
    State(s): State<AppState>,
    a: Authorized<need::RetrievePasswords>,
    ApiPath(id): ApiPath<String>,
    ApiJson(input): ApiJson<CheckoutRequest>,
) -> Result<(StatusCode, Json<Checkout>)> {
    let made = checkout::request(
        &s.store,
        &s.registry,
        &a.actor,
        &a.principal.user_name,
        &id,
        input,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(made)))
}

/// `GET /v1/checkouts` filters; every given one must hold.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct CheckoutsQuery {
    pub account_id: Option<String>,
    pub requester: Option<String>,
    /// `requested`, `checked-out`, `checked-in`, `rejected`, `lapsed` or `withdrawn`.
    pub state: Option<String>,
    /// Items per page, 1–500 (default 100).
    pub limit: Option<i64>,
    /// The `next` value of the previous page.
    pub cursor: Option<String>,
}

#[utoipa::path(get, path = "/v1/checkouts", tag = "access", params(CheckoutsQuery),
    responses((status = 200, body = List<Checkout>), (status = 422, body = super::problem::Problem)))]
pub async fn list_checkouts(
    State(s): State<AppState>,
    _a: Authorized<need::ViewResources>,
    ApiQuery(q): ApiQuery<CheckoutsQuery>,
) -> Result<Json<List<Checkout>>> {
    let page = ListQuery {
        limit: q.limit,
        cursor: q.cursor,
    }
    .page()?;
    let query = CheckoutQuery {
        account_id: q.account_id,
        requester: q.requester,
        state: q.state,
    };
    Ok(Json(checkout::list(&s.store, query, &page).await?.into()))
}

#[utoipa::path(get, path = "/v1/checkouts/{id}", tag = "access",
    responses((status = 200, body = Checkout), (status = 404, body = super::problem::Problem)))]
pub async fn get_checkout(
    State(s): State<AppState>,
    _a: Authorized<need::ViewResources>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Checkout>> {
    Ok(Json(checkout::get(&s.store, &id).await?))
}

#[utoipa::path(post, path = "/v1/checkouts/{id}/approve", tag = "access",
    description = "By one of the checkout's approvers, never its requester nor an account in the requester's custody; the approval that completes the count starts the window.",
    responses((status = 200, body = Checkout), (status = 403, body = super::problem::Problem),
        (status = 409, body = super::problem::Problem)))]
pub async fn approve(
    State(s): State<AppState>,
    a: Authorized<need::ViewResources>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Checkout>> {
    Ok(Json(
        checkout::approve(
            &s.store,
            &s.vault,
            &s.registry,
            &a.actor,
            &a.principal.user_name,
            &id,
        )
        .await?,
    ))
}

#[utoipa::path(post, path = "/v1/checkouts/{id}/reject", tag = "access", request_body = RejectRequest,
    responses((status = 200, body = Checkout), (status = 403, body = super::problem::Problem),
        (status = 409, body = super::problem::Problem)))]
pub async fn reject(
    State(s): State<AppState>,
    a: Authorized<need::ViewResources>,
    ApiPath(id): ApiPath<String>,
    ApiJson(input): ApiJson<RejectRequest>,
) -> Result<Json<Checkout>> {
    Ok(Json(
        checkout::reject(&s.store, &a.actor, &a.principal.user_name, &id, input).await?,
    ))
}

#[utoipa::path(post, path = "/v1/checkouts/{id}/withdraw", tag = "access",
    responses((status = 200, body = Checkout), (status = 403, body = super::problem::Problem),
        (status = 409, body = super::problem::Problem)))]
pub async fn withdraw(
    State(s): State<AppState>,
    a: Authorized<need::ViewResources>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Checkout>> {
    Ok(Json(
        checkout::withdraw(&s.store, &a.actor, &a.principal.user_name, &id).await?,
    ))
}

#[utoipa::path(post, path = "/v1/checkouts/{id}/checkin", tag = "access",
    description = "By the holder. Starts the rotation (trigger `check-in`) when the policy says so.",
    responses((status = 200, body = Checkout), (status = 403, body = super::problem::Problem),
        (status = 409, body = super::problem::Problem)))]
pub async fn check_in(
    State(s): State<AppState>,
    a: Authorized<need::ViewResources>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Checkout>> {
    let (returned, rotating) =
        checkout::check_in(&s.store, &s.vault, &a.actor, &a.principal.user_name, &id).await?;
    if rotating {
        s.resets.wake();
    }
    Ok(Json(returned))
}

#[utoipa::path(post, path = "/v1/checkouts/{id}/force-checkin", tag = "access",
    request_body = ForceRequest,
    description = "An administrator ends someone's window early; the holder is notified and the rotation starts.",
    responses((status = 200, body = Checkout), (status = 409, body = super::problem::Problem)))]
pub async fn force_check_in(
    State(s): State<AppState>,
    a: Authorized<need::ManageResources>,
    ApiPath(id): ApiPath<String>,
    ApiJson(input): ApiJson<ForceRequest>,
) -> Result<Json<Checkout>> {
    let (returned, rotating) = checkout::force_check_in(
        &s.store,
        &s.vault,
        &a.actor,
        &a.principal.user_name,
        &id,
        input,
    )
    .await?;
    if rotating {
        s.resets.wake();
    }
    Ok(Json(returned))
}
