//! Reading the trail: `GET /v1/audit`'s filters, checked, and one page of events in chain
//! order. The API parses and maps; the rules (what a filter may say, what a cursor is) are here.

use serde::Serialize;

use crate::error::{Error, FieldProblem, Result};
use crate::store::audit::{AuditFilter, AuditRow};
use crate::store::{Page, PageRequest, Store};

/// One audit event, as the API shows it.
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

/// The filters as given; all optional, combined with AND.
#[derive(Debug, Default)]
pub struct Search {
    pub actor: Option<String>,
    pub action: Option<String>,
    pub target: Option<String>,
    pub outcome: Option<String>,
    /// RFC 3339; events at or after.
    pub since: Option<String>,
    /// RFC 3339; events before.
    pub until: Option<String>,
}

impl Search {
    /// The store's filter, or every problem with the search at once.
    fn filter(self) -> Result<AuditFilter> {
        let mut problems = Vec::new();
        let mut time = |field: &str, v: Option<String>| match v {
            None => None,
            Some(v) => crate::time::parse(&v).or_else(|| {
                problems.push(FieldProblem::new(
                    field,
                    "must be an RFC 3339 timestamp, e.g. 2026-01-31T12:00:00Z",
                ));
                None
            }),
        };
        let since = time("since", self.since);
        let until = time("until", self.until);
        if let Some(o) = &self.outcome
            && !["success", "denied", "failure"].contains(&o.as_str())
        {
            problems.push(FieldProblem::new(
                "outcome",
                "must be success, denied or failure",
            ));
        }
        if !problems.is_empty() {
            return Err(Error::Validation(problems));
        }
        Ok(AuditFilter {
            actor: self.actor,
            action: self.action,
            target: self.target,
            outcome: self.outcome,
            since,
            until,
        })
    }
}

/// One page of the events `search` selects, in chain order. A page's cursor is the sequence
/// number of its last event.
pub async fn list(store: &Store, search: Search, page: &PageRequest) -> Result<Page<AuditEvent>> {
    let filter = search.filter()?;
    let after_seq = match &page.after {
        None => 0,
        Some(after) => after
            .parse::<i64>()
            .map_err(|_| Error::validation("cursor", "is not a cursor this server issued"))?,
    };
    let rows = crate::store::audit::list(store.pool(), &filter, after_seq, page.limit).await?;
    Ok(Page::from_rows(rows, page.limit, |r| r.seq.to_string()).map(Into::into))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_problem_of_a_search_is_named_at_once() {
        let search = Search {
            outcome: Some("maybe".into()),
            since: Some("yesterday".into()),
            until: Some("2026-01-31T12:00:00Z".into()),
            ..Default::default()
        };
        let Err(Error::Validation(problems)) = search.filter() else {
            panic!("accepted");
        };
        let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(fields, ["since", "outcome"]);
    }
}
