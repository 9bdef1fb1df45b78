//! `/v1/notifications`: the caller's own notifications.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;

use super::AppState;
use super::extract::{ApiPath, ApiQuery, Authenticated, List, ListQuery};
use crate::error::Result;
use crate::notifications::{self, Notification};

/// `GET /v1/notifications` filters.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct NotificationQuery {
    /// Only those not yet marked read.
    pub unread: Option<bool>,
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

#[utoipa::path(get, path = "/v1/notifications", tag = "notifications", params(NotificationQuery),
    responses((status = 200, body = List<Notification>)))]
pub async fn list(
    State(s): State<AppState>,
    a: Authenticated,
    ApiQuery(q): ApiQuery<NotificationQuery>,
) -> Result<Json<List<Notification>>> {
    let page = ListQuery {
        limit: q.limit,
        cursor: q.cursor,
    }
    .page()?;
    let user = &a.principal.user_name;
    Ok(Json(
        notifications::list(&s.store, user, q.unread.unwrap_or(false), &page)
            .await?
            .into(),
    ))
}

#[utoipa::path(post, path = "/v1/notifications/{id}/read", tag = "notifications",
    responses((status = 204)))]
pub async fn mark_read(
    State(s): State<AppState>,
    a: Authenticated,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode> {
    notifications::mark_read(&s.store, &a.principal.user_name, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
