//! `/v1/audit`: read and verify the trail.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};

use super::AppState;
use super::extract::{ApiQuery, Authorized, List, ListQuery, need};
use crate::audit::{AuditEvent, Search};
use crate::error::Result;

/// `GET /v1/audit` filters; all optional and combined with AND.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// e.g. `user:alice`.
    pub actor: Option<String>,
    /// e.g. `account.password.retrieve`.
    pub action: Option<String>,
    /// The id or name acted on.
    pub target: Option<String>,
    /// `success`, `denied` or `failure`.
    pub outcome: Option<String>,
    /// RFC 3339; events at or after.
    pub since: Option<String>,
    /// RFC 3339; events before.
    pub until: Option<String>,
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

#[utoipa::path(get, path = "/v1/audit", tag = "audit", params(AuditQuery),
    responses((status = 200, body = List<AuditEvent>)))]
pub async fn list(
    State(s): State<AppState>,
    _a: Authorized<need::ReadAudit>,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<Json<List<AuditEvent>>> {
    let page = ListQuery {
        limit: q.limit,
        cursor: q.cursor,
    }
    .page()?;
    let search = Search {
        actor: q.actor,
        action: q.action,
        target: q.target,
        outcome: q.outcome,
        since: q.since,
        until: q.until,
    };
    Ok(Json(
        crate::audit::list(&s.store, search, &page).await?.into(),
    ))
}

/// The result of walking the chain.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ChainStatus {
    pub intact: bool,
    /// Events checked (up to the break, if any).
    pub events: u64,
    /// Of those, events written before the chain was keyed (SHA-256 only), sealed by the first
    /// keyed event.
    pub unkeyed_events: u64,
    /// The first bad event, if any.
    pub broken_at_seq: Option<i64>,
    pub broken_at_id: Option<String>,
    pub problem: Option<String>,
}

/// Walks the keyed chain, and compares it with the newest checkpoint this server wrote (so a
/// tail deleted since is named too).
#[utoipa::path(get, path = "/v1/audit/verify", tag = "audit", responses((status = 200, body = ChainStatus)))]
pub async fn verify(
    State(s): State<AppState>,
    _a: Authorized<need::ReadAudit>,
) -> Result<Json<ChainStatus>> {
    let checkpoints: Vec<_> = s.checkpoints.get().into_iter().collect();
    Ok(Json(
        match crate::audit::verify(&s.store, &s.vault, &checkpoints).await? {
            Ok(report) => ChainStatus {
                intact: true,
                events: report.events,
                unkeyed_events: report.unkeyed,
                broken_at_seq: None,
                broken_at_id: None,
                problem: None,
            },
            Err(b) => ChainStatus {
                intact: false,
                events: (b.seq - 1).max(0) as u64,
                unkeyed_events: 0,
                broken_at_seq: Some(b.seq),
                broken_at_id: Some(b.id),
                problem: Some(b.problem),
            },
        },
    ))
}
