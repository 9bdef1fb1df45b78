//! The attention queue (`docs/resets.md`, "The attention queue"): one list, across jobs, of
//! every account that waits for a person and every post-reset delivery that gave up, each with
//! the actions that settle it. The queue is a view: each kind is read from the rows the reset
//! engine, the checkouts and the deliveries already keep (`store::attention`), so it holds no
//! state of its own, and an entry leaves it when the thing it reports is settled (the account
//! is in sync again, its password changed, the delivery was re-run or superseded).
//! `reset::pipeline::resolve` is the one action that lives nowhere else.

use std::time::Duration;

use serde::{Serialize, Serializer};

use crate::error::{Error, Result};
use crate::states::{DeliveryState, ItemState};
use crate::store::attention::{self as rows, AttentionRow};
use crate::store::{Page, PageRequest, Store};

/// An account enters the queue once pre-reset listeners vetoed more than this many of its
/// resets since its password last changed, unless `--attention-vetoes` says otherwise.
pub const DEFAULT_VETOES: i64 = 3;
/// A checkout still held this long after its window ended is one the expiry sweep (every
/// 5 s) cannot end.
pub const OVERDUE_GRACE: Duration = Duration::from_secs(60);

/// How the queue decides (the server's settings).
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Vetoes an account may have before it is listed (it is listed at one more).
    pub vetoes: i64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            vetoes: DEFAULT_VETOES,
        }
    }
}

/// What waits for a person. The order is the queue's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// The target accepted neither the stored nor the new password: both are kept.
    OutOfSync,
    /// The target refused every generated password: the policy and the target disagree.
    Parked,
    /// Pre-reset listeners vetoed more resets than [`Settings::vetoes`] since the password
    /// last changed.
    Vetoed,
    /// A checkout still held well after its window ended.
    CheckoutOverdue,
    /// A checkout came back and its rotation finished without changing the password.
    CheckoutUnrotated,
    /// A post-reset delivery that gave up.
    DeadLetter,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::OutOfSync,
        Kind::Parked,
        Kind::Vetoed,
        Kind::CheckoutOverdue,
        Kind::CheckoutUnrotated,
        Kind::DeadLetter,
    ];

    /// The name shown and accepted: a kind that is a state is named as that state.
    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::OutOfSync => ItemState::OutOfSync.as_str(),
            Kind::Parked => ItemState::Parked.as_str(),
            Kind::Vetoed => ItemState::Vetoed.as_str(),
            Kind::CheckoutOverdue => "checkout-overdue",
            Kind::CheckoutUnrotated => "checkout-unrotated",
            Kind::DeadLetter => DeliveryState::DeadLetter.as_str(),
        }
    }

    pub fn parse(text: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == text)
    }

    fn names() -> String {
        Kind::ALL.map(Kind::as_str).join(", ")
    }
}

impl Serialize for Kind {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// What a person can do about an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ActionKind {
    /// Log in with each kept password; the one the target accepts becomes the stored one.
    Resolve,
    /// Reset the account again (through the admin login: no kept password is needed).
    RetryReset,
    /// End the checkout now (and start its rotation).
    ForceCheckIn,
    /// Re-run the dead-lettered delivery.
    Rerun,
}

/// One action: the request that takes it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Action {
    pub action: ActionKind,
    pub method: &'static str,
    pub path: String,
    /// What the request's body must hold.
    pub body: serde_json::Value,
}

impl Action {
    fn post(action: ActionKind, path: String) -> Action {
        Action {
            action,
            method: "POST",
            path,
            body: serde_json::json!({ "reason": "why (kept in the audit trail)" }),
        }
    }
}

/// One entry of the queue.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Entry {
    /// `KIND/KEY`: stable while the entry is listed, and the paging cursor.
    pub id: String,
    /// `out-of-sync`, `parked`, `vetoed`, `checkout-overdue`, `checkout-unrotated` or
    /// `dead-letter`.
    #[schema(value_type = String)]
    pub kind: Kind,
    pub account_id: String,
    pub login_name: String,
    pub resource_id: String,
    /// Since when it has waited.
    pub since: String,
    /// What happened, in words (never a password).
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub item_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkout_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub holder: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivery_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listener: Option<String>,
    /// Out-of-sync: the passwords kept besides the stored one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kept_passwords: Option<i64>,
    /// Parked, vetoed: the resets that ended so since the password last changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub times: Option<i64>,
    /// Dead letter: the attempts made.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempts: Option<i64>,
    pub actions: Vec<Action>,
}

impl Entry {
    fn from_row(kind: Kind, r: AttentionRow) -> Entry {
        let account = r.account_id.clone();
        let retry = || {
            Action::post(
                ActionKind::RetryReset,
                format!("/v1/accounts/{account}/reset"),
            )
        };
        let mut e = Entry {
            id: format!("{}/{}", kind.as_str(), r.key),
            kind,
            account_id: r.account_id.clone(),
            login_name: r.login_name,
            resource_id: r.resource_id,
            since: r.since,
            detail: r.detail.unwrap_or_default(),
            job_id: r.job_id,
            item_id: r.item_id,
            checkout_id: None,
            holder: None,
            delivery_id: None,
            listener: None,
            kept_passwords: None,
            times: None,
            attempts: None,
            actions: Vec::new(),
        };
        match kind {
            Kind::OutOfSync => {
                if e.item_id.is_none() {
                    e.detail = "its agent's verification was refused: the target does not \
                                accept the stored password"
                        .into();
                }
                e.kept_passwords = Some(r.count);
                // Resolving logs in over SSH: not for accounts an agent or the vault alone
                // manages (it would only say so).
                if r.resolvable == 1 {
                    e.actions.push(Action::post(
                        ActionKind::Resolve,
                        format!("/v1/accounts/{account}/resolve"),
                    ));
                }
                e.actions.push(retry());
            }
            Kind::Parked | Kind::Vetoed => {
                e.times = Some(r.count);
                e.actions = vec![retry()];
            }
            Kind::CheckoutOverdue => {
                let id = r.subject_id.unwrap_or_default();
                e.detail = format!(
                    "still checked out after its window ended (the expiry sweep could not end \
                     it); reason given: {}",
                    e.detail
                );
                e.actions = vec![Action::post(
                    ActionKind::ForceCheckIn,
                    format!("/v1/checkouts/{id}/force-checkin"),
                )];
                e.checkout_id = Some(id);
                e.holder = r.party;
            }
            Kind::CheckoutUnrotated => {
                e.detail = format!(
                    "returned, and its rotation ended without changing the password the holder \
                     saw: {}",
                    if e.detail.is_empty() {
                        "no reset ran"
                    } else {
                        &e.detail
                    }
                );
                e.checkout_id = r.subject_id;
                e.holder = r.party;
                e.actions = vec![retry()];
            }
            Kind::DeadLetter => {
                let id = r.subject_id.unwrap_or_default();
                e.attempts = Some(r.count);
                e.actions = vec![Action::post(
                    ActionKind::Rerun,
                    format!("/v1/deliveries/{id}/rerun"),
                )];
                e.delivery_id = Some(id);
                e.listener = r.party;
            }
        }
        e
    }
}

/// `GET /v1/attention` filters.
#[derive(Debug, Default)]
pub struct AttentionQuery {
    pub kind: Option<String>,
}

/// The queue in its order (kind, then key), one page.
pub async fn list(
    store: &Store,
    settings: Settings,
    q: AttentionQuery,
    page: &PageRequest,
) -> Result<Page<Entry>> {
    let only = match q.kind.as_deref() {
        None => None,
        Some(k) => Some(
            Kind::parse(k)
                .ok_or_else(|| Error::validation("kind", format!("is one of {}", Kind::names())))?,
        ),
    };
    let (from_kind, from_key) = match page.after.as_deref() {
        None => (Kind::OutOfSync, String::new()),
        Some(cursor) => cursor
            .split_once('/')
            .and_then(|(k, key)| Some((Kind::parse(k)?, key.to_string())))
            .ok_or_else(|| {
                Error::validation("cursor", "is not one this server gave; start without it")
            })?,
    };
    let mut entries = Vec::new();
    for kind in Kind::ALL {
        if kind < from_kind || only.is_some_and(|o| o != kind) {
            continue;
        }
        let want = page.limit + 1 - i64::try_from(entries.len()).unwrap_or(i64::MAX);
        if want <= 0 {
            break;
        }
        let after = if kind == from_kind {
            from_key.as_str()
        } else {
            ""
        };
        for r in of_kind(store, settings, kind, after, want).await? {
            entries.push(Entry::from_row(kind, r));
        }
    }
    Ok(Page::from_rows(entries, page.limit, |e| e.id.clone()))
}

async fn of_kind(
    store: &Store,
    settings: Settings,
    kind: Kind,
    after: &str,
    limit: i64,
) -> Result<Vec<AttentionRow>> {
    let pool = store.pool();
    match kind {
        Kind::OutOfSync => rows::out_of_sync(pool, after, limit).await,
        Kind::Parked => rows::ended_since_change(pool, kind.as_str(), 0, after, limit).await,
        Kind::Vetoed => {
            rows::ended_since_change(pool, kind.as_str(), settings.vetoes, after, limit).await
        }
        Kind::CheckoutOverdue => {
            rows::checkouts_overdue(pool, &overdue_before(), after, limit).await
        }
        Kind::CheckoutUnrotated => rows::checkouts_unrotated(pool, after, limit).await,
        Kind::DeadLetter => rows::dead_letters(pool, after, limit).await,
    }
}

fn overdue_before() -> String {
    let grace = chrono::Duration::from_std(OVERDUE_GRACE).unwrap_or_default();
    crate::time::format(crate::time::now_utc() - grace)
}

/// How many entries of each kind the queue holds now (`/metrics`).
pub async fn counts(store: &Store, settings: Settings) -> Result<Vec<(Kind, i64)>> {
    let pool = store.pool();
    let mut out = Vec::with_capacity(Kind::ALL.len());
    for kind in Kind::ALL {
        let n = match kind {
            Kind::OutOfSync => rows::count_out_of_sync(pool).await?,
            Kind::Parked => rows::count_ended_since_change(pool, kind.as_str(), 0).await?,
            Kind::Vetoed => {
                rows::count_ended_since_change(pool, kind.as_str(), settings.vetoes).await?
            }
            Kind::CheckoutOverdue => rows::count_checkouts_overdue(pool, &overdue_before()).await?,
            Kind::CheckoutUnrotated => rows::count_checkouts_unrotated(pool).await?,
            Kind::DeadLetter => crate::store::deliveries::open_counts(pool).await?.1,
        };
        out.push((kind, n));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_its_own_name_and_parses_back() {
        let mut names: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
        for k in Kind::ALL {
            assert_eq!(Kind::parse(k.as_str()), Some(k));
        }
        names.sort();
        names.dedup();
        assert_eq!(names.len(), Kind::ALL.len());
        assert_eq!(Kind::parse("Out-Of-Sync"), None);
        let mut sorted = Kind::ALL;
        sorted.sort();
        assert_eq!(sorted, Kind::ALL, "ALL is the queue's order");
    }
}
