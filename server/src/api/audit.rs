//! `/v1/audit`: read and verify the trail.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};

use super::AppState;
use super::extract::{ApiQuery, Authorized, List, MAX_LIMIT, decode_cursor, encode_cursor, need};
use crate::error::{Error, FieldProblem, Result};
use crate::store::audit::{AuditFilter, AuditRow};

/// One audit event.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AuditEvent {
    pub seq: i64,
    pub id: String,
    pub at: String,
    pub actor: String,
    pub action: String,
    pub target: String,
    /// `success`, `denied` or `failure`.
    pub outcome: String,
    pub source_ip: Option<String>,
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
    pub prev_hash: String,
    pub hash: String,
}

impl From<AuditRow> for AuditEvent {
    fn from(r: AuditRow) -> AuditEvent {
        AuditEvent {
            detail: serde_json::from_str(&r.detail).unwrap_or(serde_json::Value::Null),
            seq: r.seq,
            id: r.id,
            at: r.at,
            actor: r.actor,
            action: r.action,
            target: r.target,
            outcome: r.outcome,
            source_ip: r.source_ip,
            prev_hash: r.prev_hash,
            hash: r.hash,
        }
    }
}

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
    let mut problems = Vec::new();
    let mut time = |field: &str, v: &Option<String>| match v {
        None => None,
        Some(v) => crate::time::parse(v).or_else(|| {
            problems.push(FieldProblem::new(
                field,
                "must be an RFC 3339 timestamp, e.g. 2026-01-31T12:00:00Z",
            ));
            None
        }),
    };
    let since = time("since", &q.since);
    let until = time("until", &q.until);
    let limit = q.limit.unwrap_or(100);
    if !(1..=MAX_LIMIT).contains(&limit) {
        problems.push(FieldProblem::new(
            "limit",
            format!("must be between 1 and {MAX_LIMIT}"),
        ));
    }
    if let Some(o) = &q.outcome
        && !["success", "denied", "failure"].contains(&o.as_str())
    {
        problems.push(FieldProblem::new(
            "outcome",
            "must be success, denied or failure",
        ));
    }
    let after_seq = match &q.cursor {
        None => 0,
        Some(c) => match decode_cursor(c)?.parse::<i64>() {
            Ok(n) => n,
            Err(_) => {
                return Err(Error::validation(
                    "cursor",
                    "is not a cursor this server issued",
                ));
            }
        },
    };
    if !problems.is_empty() {
        return Err(Error::Validation(problems));
    }
    let filter = AuditFilter {
        actor: q.actor,
        action: q.action,
        target: q.target,
        outcome: q.outcome,
        since,
        until,
    };
    let mut rows = crate::store::audit::list(s.store.pool(), &filter, after_seq, limit).await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let next = if more {
        rows.last().map(|r| encode_cursor(&r.seq.to_string()))
    } else {
        None
    };
    Ok(Json(List {
        items: rows.into_iter().map(Into::into).collect(),
        next,
    }))
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
