//! Post-reset deliveries: every post-reset listener run of a committed reset is delivered at
//! least once. The first attempt runs in the item's post phase; an attempt the listener
//! answers `retry` (contract 0.2.0), or that the host could not finish (its server died, its
//! database or vault failed it), is tried again after a growing, jittered pause ([`pause`]),
//! until the manifest's `[delivery]` limits. An attempt answered `failure`, one the host
//! stopped (deadline, memory, trap: the host cannot tell whether running it again is safe,
//! and a hostile listener gets no second turn), a listener that cannot run, and a delivery
//! out of attempts or age end as dead letters, which a person may re-run ([`rerun`]). Every attempt of one delivery carries its id and its number, so a listener
//! can be idempotent. What the engine does with a claimed delivery is
//! `pipeline/deliver.rs`; this file holds the rules and the views.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::audit::{self, Actor, NewEvent, Outcome};
use crate::error::{Error, Result};
use crate::states::DeliveryState;
use crate::store::deliveries::{DeliveryRow, Filter};
use crate::store::{self, Page, PageRequest, Store};

/// The pause before the second attempt; each later one doubles it.
pub const FIRST_PAUSE: Duration = Duration::from_secs(2);
/// The longest pause between two attempts.
pub const MAX_PAUSE: Duration = Duration::from_secs(15 * 60);
/// How long one attempt's claim lasts: longer than the longest run a manifest may allow
/// (60 s) with loading and recording around it. A server that dies mid-attempt leaves the
/// delivery to another claim after this.
pub const ATTEMPT_LEASE: Duration = Duration::from_secs(120);
/// Attempt records kept per delivery: the first and the latest ones.
const HISTORY_KEPT: usize = 20;
/// Bytes of an attempt's message, and denials, an attempt record keeps (a row stays small).
const ATTEMPT_MESSAGE_BYTES: usize = 1024;
const ATTEMPT_DENIALS: usize = 8;

/// The pause after attempt `attempt` (counting from 1) before the next: [`FIRST_PAUSE`]
/// doubled per attempt, at most [`MAX_PAUSE`], then drawn from its upper half by `jitter`
/// (0 to 1), so deliveries that failed together do not all come back together.
pub fn pause(attempt: i64, jitter: f64) -> Duration {
    let doublings = attempt.saturating_sub(1).clamp(0, 20) as u32;
    let full = FIRST_PAUSE.saturating_mul(1u32 << doublings).min(MAX_PAUSE);
    full.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
}

/// A fresh jitter in 0..=1.
pub fn jitter() -> f64 {
    let mut b = [0u8; 4];
    if getrandom::fill(&mut b).is_err() {
        return 1.0;
    }
    f64::from(u32::from_le_bytes(b)) / f64::from(u32::MAX)
}

/// The number of the latest attempt a delivery's history records (0: none).
pub fn last_recorded(history: &str) -> i64 {
    serde_json::from_str::<Vec<Attempt>>(history)
        .ok()
        .and_then(|h| h.last().map(|a| a.attempt))
        .unwrap_or(0)
}

/// What happens to a delivery after an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    Delivered,
    /// Not run: the account's password changed since (a later reset's delivery carries it).
    Superseded,
    /// Pending again, for an attempt at this time.
    Again(DateTime<Utc>),
    /// Over, for a person: why.
    DeadLetter(String),
}

/// The rule: `success` delivers; `retry` (the listener's answer) and `interrupted` (the host
/// could not finish the attempt) try again after [`pause`] while an attempt is left and the
/// next one would start before `expires_at`; anything else (`failure`, `stopped`, `refused`)
/// is a dead letter at once.
pub fn after_attempt(
    outcome: &str,
    attempts: i64,
    max_attempts: i64,
    now: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    pause: Duration,
) -> Next {
    match outcome {
        "success" => Next::Delivered,
        o if DeliveryState::Superseded.is(o) => Next::Superseded,
        "retry" | "interrupted" => {
            let at = now + chrono::Duration::from_std(pause).unwrap_or(chrono::Duration::MAX);
            if attempts >= max_attempts {
                Next::DeadLetter(format!(
                    "gave up after {attempts} attempt(s), the listener's max_attempts"
                ))
            } else if at > expires_at {
                Next::DeadLetter(format!(
                    "gave up after {attempts} attempt(s): the next would start after the \
                     delivery's age limit ({})",
                    crate::time::format(expires_at)
                ))
            } else {
                Next::Again(at)
            }
        }
        _ => Next::DeadLetter(format!(
            "the listener answered {outcome}; it is not retried"
        )),
    }
}

/// One attempt, as its delivery's history keeps it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Attempt {
    pub attempt: i64,
    pub started_at: String,
    pub ended_at: String,
    /// The node that ran it.
    pub node: String,
    pub version: String,
    /// `success`, `failure`, `retry`, `stopped` (deadline, memory, trap), `refused` (the
    /// integrity check, no longer associated, or its row edited), `superseded` (not run: the
    /// account's password changed since), or `interrupted` (the host could not finish it: its
    /// server stopped first, recorded by the attempt after it, or the database or the vault
    /// failed it).
    pub outcome: String,
    /// The listener's message (the host redacted its granted passwords), or why it stopped.
    pub message: String,
    #[serde(default)]
    pub denials: Vec<String>,
    pub elapsed_ms: f64,
}

/// `history` with `attempt` added (its message and denials cut to their bounds), keeping the
/// first and the latest [`HISTORY_KEPT`] records.
pub fn add_attempt(history: &str, mut attempt: Attempt) -> String {
    let mut all: Vec<Attempt> = serde_json::from_str(history).unwrap_or_default();
    if attempt.message.len() > ATTEMPT_MESSAGE_BYTES {
        let mut end = ATTEMPT_MESSAGE_BYTES;
        while !attempt.message.is_char_boundary(end) {
            end -= 1;
        }
        attempt.message.truncate(end);
        attempt.message.push_str(" [cut]");
    }
    attempt.denials.truncate(ATTEMPT_DENIALS);
    all.push(attempt);
    if all.len() > HISTORY_KEPT {
        all.remove(1);
    }
    serde_json::to_string(&all).unwrap_or_else(|_| "[]".into())
}

/// A delivery as the API shows it (never a password).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Delivery {
    /// The delivery id every attempt's listener run is told.
    pub id: String,
    pub job_id: String,
    pub item_id: String,
    pub account_id: String,
    pub listener: String,
    /// Where its attempts run: `agentless` (on a server) or `agent` (on the resource's agent).
    pub mode: String,
    /// The version the latest attempt ran.
    pub version: String,
    /// `pending`, `delivered`, `dead-letter` or `superseded`.
    pub state: String,
    pub attempts: i64,
    pub max_attempts: i64,
    /// No attempt starts after this.
    pub expires_at: String,
    /// When the next attempt is due (pending deliveries).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<String>,
    /// The latest attempt's answer and message.
    pub outcome: Option<String>,
    pub message: Option<String>,
    pub history: Vec<Attempt>,
    pub created_at: String,
    pub updated_at: String,
}

pub fn view(r: DeliveryRow) -> Delivery {
    let pending = DeliveryState::Pending.is(&r.state);
    Delivery {
        history: serde_json::from_str(&r.history).unwrap_or_default(),
        next_attempt_at: pending.then_some(r.next_attempt_at),
        id: r.id,
        job_id: r.job_id,
        item_id: r.item_id,
        account_id: r.account_id,
        listener: r.listener,
        mode: r.mode,
        version: r.version,
        state: r.state,
        attempts: r.attempts,
        max_attempts: r.max_attempts,
        expires_at: r.expires_at,
        outcome: r.outcome,
        message: r.message,
        created_at: r.created_at,
        updated_at: r.updated_at,
    }
}

/// What a list of deliveries may be narrowed to.
#[derive(Debug, Default)]
pub struct DeliveryQuery {
    pub state: Option<String>,
    pub job_id: Option<String>,
    pub account_id: Option<String>,
}

pub async fn list(store: &Store, q: DeliveryQuery, page: &PageRequest) -> Result<Page<Delivery>> {
    if let Some(s) = q.state.as_deref().filter(|s| !s.is_empty())
        && DeliveryState::parse(s).is_none()
    {
        let names: Vec<&str> = DeliveryState::ALL.iter().map(|s| s.as_str()).collect();
        return Err(Error::validation(
            "state",
            format!(
                "'{s}' is not a delivery state; use one of: {}",
                names.join(", ")
            ),
        ));
    }
    let filter = Filter {
        state: q.state.as_deref().filter(|s| !s.is_empty()),
        job_id: q.job_id.as_deref().filter(|s| !s.is_empty()),
        account_id: q.account_id.as_deref().filter(|s| !s.is_empty()),
    };
    Ok(store::deliveries::list(store.pool(), &filter, page)
        .await?
        .map(view))
}

pub async fn get(store: &Store, id: &str) -> Result<Delivery> {
    store::deliveries::get(store.pool(), id)
        .await?
        .map(view)
        .ok_or_else(|| Error::NotFound {
            what: "delivery",
            id: id.to_string(),
        })
}

/// Deliveries waiting for an attempt, and dead letters waiting for a person.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpenCounts {
    pub pending: i64,
    pub dead_letters: i64,
}

pub async fn open_counts(store: &Store) -> Result<OpenCounts> {
    let (pending, dead_letters) = store::deliveries::open_counts(store.pool()).await?;
    Ok(OpenCounts {
        pending,
        dead_letters,
    })
}

/// What a person gives to re-run a dead letter.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RerunRequest {
    /// Why (kept in the audit trail), 1 to 500 characters.
    pub reason: String,
}

/// A dead letter made pending again at once, with the manifest's limits granted again from
/// now (as many attempts again, and the age limit counted from now). Audited.
pub async fn rerun(store: &Store, actor: &Actor, id: &str, req: RerunRequest) -> Result<Delivery> {
    let reason = req.reason.trim();
    if reason.is_empty() || reason.chars().count() > 500 {
        return Err(Error::validation(
            "reason",
            "say why it is re-run, in 1 to 500 characters",
        ));
    }
    let row = store::deliveries::get(store.pool(), id)
        .await?
        .ok_or_else(|| Error::NotFound {
            what: "delivery",
            id: id.to_string(),
        })?;
    if !DeliveryState::DeadLetter.is(&row.state) {
        return Err(Error::Conflict(format!(
            "delivery {id} is {}; only a dead letter is re-run (a pending one runs by itself, \
             a superseded one was replaced by a later reset's)",
            row.state
        )));
    }
    let now = crate::time::now_utc();
    let expires = now + chrono::Duration::seconds(row.round_age_secs.max(60));
    let mut tx = store.begin_write().await?;
    let done = store::deliveries::rerun(
        tx.conn(),
        id,
        row.attempts + row.round_attempts.max(1),
        &crate::time::format(expires),
        &crate::time::format(now),
    )
    .await?;
    if !done {
        return Err(Error::Conflict(format!(
            "delivery {id} changed while it was being re-run; read it again"
        )));
    }
    audit::append(
        &mut tx,
        NewEvent {
            actor,
            action: "delivery.rerun",
            target: id,
            outcome: Outcome::Success,
            detail: serde_json::json!({
                "listener": row.listener, "item": row.item_id, "account": row.account_id,
                "reason": reason,
            }),
        },
    )
    .await?;
    tx.commit().await?;
    get(store, id).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_double_from_the_first_stay_under_the_cap_and_keep_their_upper_half() {
        assert_eq!(pause(1, 1.0), FIRST_PAUSE);
        assert_eq!(pause(2, 1.0), FIRST_PAUSE * 2);
        assert_eq!(pause(4, 1.0), FIRST_PAUSE * 8);
        assert_eq!(pause(1, 0.0), FIRST_PAUSE / 2);
        assert_eq!(pause(60, 1.0), MAX_PAUSE, "capped, never overflowing");
        assert_eq!(pause(i64::MAX, 0.0), MAX_PAUSE / 2);
        for attempt in 1..30 {
            let (low, high) = (pause(attempt, 0.0), pause(attempt, 1.0));
            assert!(
                low <= high && high <= MAX_PAUSE && low * 2 == high,
                "{attempt}"
            );
        }
    }

    #[test]
    fn only_success_delivers_and_only_retry_or_interrupted_come_back_within_both_limits() {
        let now = crate::time::now_utc();
        let day = now + chrono::Duration::days(1);
        let p = Duration::from_secs(10);
        assert_eq!(after_attempt("success", 5, 5, now, now, p), Next::Delivered);
        for again in ["retry", "interrupted"] {
            assert_eq!(
                after_attempt(again, 1, 5, now, day, p),
                Next::Again(now + chrono::Duration::seconds(10))
            );
            assert!(matches!(
                after_attempt(again, 5, 5, now, day, p),
                Next::DeadLetter(m) if m.contains("5 attempt(s)")
            ));
            let soon = now + chrono::Duration::seconds(5);
            assert!(matches!(
                after_attempt(again, 1, 5, now, soon, p),
                Next::DeadLetter(m) if m.contains("age limit")
            ));
        }
        for end in ["failure", "stopped", "refused", "proceed", "anything"] {
            assert!(matches!(
                after_attempt(end, 1, 5, now, day, p),
                Next::DeadLetter(_)
            ));
        }
    }

    #[test]
    fn history_keeps_the_first_attempt_and_the_latest_ones() {
        let mut h = "[]".to_string();
        for n in 1..=250 {
            h = add_attempt(
                &h,
                Attempt {
                    attempt: n,
                    started_at: String::new(),
                    ended_at: String::new(),
                    node: "n".into(),
                    version: "1.0.0".into(),
                    outcome: "retry".into(),
                    message: String::new(),
                    denials: vec![],
                    elapsed_ms: 0.0,
                },
            );
        }
        let kept: Vec<Attempt> = serde_json::from_str(&h).unwrap();
        assert_eq!(kept.len(), HISTORY_KEPT);
        assert_eq!(kept[0].attempt, 1);
        assert_eq!(kept[1].attempt, 232);
        assert_eq!(kept.last().unwrap().attempt, 250);
    }
}
