//! The attention queue over HTTP (`docs/resets.md`, "The attention queue"): list what waits
//! for a person, and resolve an out-of-sync account. The other actions an entry names are the
//! existing requests (retry a reset, re-run a delivery, end a checkout).

use axum::Json;
use axum::extract::State;
use serde::Deserialize;

use super::AppState;
use super::extract::{ApiJson, ApiPath, ApiQuery, Authorized, List, ListQuery, need};
use crate::attention::{self, AttentionQuery, Entry};
use crate::error::Result;
use crate::reset::pipeline::{Resolution, ResolveRequest};

/// `GET /v1/attention` filters.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AttentionParams {
    /// `out-of-sync`, `parked`, `vetoed`, `checkout-overdue`, `checkout-unrotated` or
    /// `dead-letter`.
    pub kind: Option<String>,
    /// Items per page, 1–500 (default 100).
    pub limit: Option<i64>,
    /// The `next` value of the previous page.
    pub cursor: Option<String>,
}

#[utoipa::path(get, path = "/v1/attention", tag = "reset", params(AttentionParams),
    description = "Everything that waits for a person, across jobs: out-of-sync, parked and repeatedly vetoed accounts, checkouts past their window or left unrotated, dead-lettered deliveries; each with the actions that settle it.",
    responses((status = 200, body = List<Entry>), (status = 422, body = super::problem::Problem)))]
pub async fn list(
    State(s): State<AppState>,
    _a: Authorized<need::ViewResources>,
    ApiQuery(q): ApiQuery<AttentionParams>,
) -> Result<Json<List<Entry>>> {
    let page = ListQuery {
        limit: q.limit,
        cursor: q.cursor,
    }
    .page()?;
    let query = AttentionQuery { kind: q.kind };
    Ok(Json(
        attention::list(&s.store, s.attention, query, &page)
            .await?
            .into(),
    ))
}

#[utoipa::path(post, path = "/v1/accounts/{id}/resolve", tag = "reset", request_body = ResolveRequest,
    description = "Logs in as an out-of-sync account with the stored password, then with each password kept for it; the first the target accepts becomes the stored one and the account is in sync. 409 when the target accepts none (nothing changes) or cannot be asked.",
    responses((status = 200, body = Resolution), (status = 404, body = super::problem::Problem),
        (status = 409, body = super::problem::Problem)))]
pub async fn resolve(
    State(s): State<AppState>,
    a: Authorized<need::ResetPasswords>,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<ResolveRequest>,
) -> Result<Json<Resolution>> {
    Ok(Json(s.resets.resolve(&a.actor, &id, req).await?))
}
