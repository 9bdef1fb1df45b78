//! Post-reset deliveries over HTTP (`docs/resets.md`, "Post-reset delivery"): list and read
//! them (with every attempt), and re-run a dead letter.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;

use super::AppState;
use super::extract::{ApiJson, ApiPath, ApiQuery, Authorized, List, ListQuery, need};
use crate::error::Result;
use crate::reset::delivery::{self, Delivery, DeliveryQuery, RerunRequest};

/// `GET /v1/deliveries` filters.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DeliveriesQuery {
    /// `pending`, `delivered`, `dead-letter` or `superseded`.
    pub state: Option<String>,
    pub job_id: Option<String>,
    pub account_id: Option<String>,
    /// Items per page, 1–500 (default 100).
    pub limit: Option<i64>,
    /// The `next` value of the previous page.
    pub cursor: Option<String>,
}

#[utoipa::path(get, path = "/v1/deliveries", tag = "reset", params(DeliveriesQuery),
    description = "Post-reset deliveries, newest first: one per post-reset listener of each committed reset, with every attempt.",
    responses((status = 200, body = List<Delivery>), (status = 422, body = super::problem::Problem)))]
pub async fn list(
    State(s): State<AppState>,
    _a: Authorized<need::ViewResources>,
    ApiQuery(q): ApiQuery<DeliveriesQuery>,
) -> Result<Json<List<Delivery>>> {
    let page = ListQuery {
        limit: q.limit,
        cursor: q.cursor,
    }
    .page()?;
    let query = DeliveryQuery {
        state: q.state,
        job_id: q.job_id,
        account_id: q.account_id,
    };
    Ok(Json(delivery::list(&s.store, query, &page).await?.into()))
}

#[utoipa::path(get, path = "/v1/deliveries/{id}", tag = "reset",
    responses((status = 200, body = Delivery), (status = 404, body = super::problem::Problem)))]
pub async fn get(
    State(s): State<AppState>,
    _a: Authorized<need::ViewResources>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Delivery>> {
    Ok(Json(delivery::get(&s.store, &id).await?))
}

#[utoipa::path(post, path = "/v1/deliveries/{id}/rerun", tag = "reset", request_body = RerunRequest,
    description = "A dead letter becomes pending at once, with the listener's attempts and age limit granted again.",
    responses((status = 200, body = Delivery), (status = 404, body = super::problem::Problem),
        (status = 409, body = super::problem::Problem)))]
pub async fn rerun(
    State(s): State<AppState>,
    a: Authorized<need::ResetPasswords>,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<RerunRequest>,
) -> Result<Json<Delivery>> {
    let d = delivery::rerun(&s.store, &a.actor, &id, req).await?;
    s.resets.wake();
    Ok(Json(d))
}
