//! A cap on how many refused agent requests from one source address are audited one by one,
//! so a flood of bad requests cannot grow the audit trail without bound. In each minute the
//! first [`PER_MINUTE`] refusals from an address are audited as they come; the rest are
//! counted, and the count goes into the next refusal from that address that is audited.
//! Refused signed requests (`auth`) and refused enrollments (`enrollment`) share the budget.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Refusals audited one by one per source address and minute.
pub const PER_MINUTE: u32 = 20;
/// Addresses tracked at once; beyond that, new addresses share one budget.
const MAX_SOURCES: usize = 10_000;
const WINDOW: Duration = Duration::from_secs(60);
/// The shared budget of addresses beyond [`MAX_SOURCES`].
const OVERFLOW: &str = "(other addresses)";

/// What to do with one refusal.
#[derive(Debug, PartialEq, Eq)]
pub enum Admission {
    /// Audit it, with the number of refusals from this address counted but not audited since
    /// the last audited one.
    Record { suppressed_before: u64 },
    /// Count it only.
    Count,
}

#[derive(Debug)]
struct Window {
    started: Instant,
    recorded: u32,
    /// Counted in this window.
    suppressed: u64,
    /// Counted in earlier windows, not yet reported.
    carried: u64,
}

/// Per-address refusal budgets (in memory: each server keeps its own).
#[derive(Debug, Default)]
pub struct RefusalBudget {
    sources: Mutex<HashMap<String, Window>>,
}

impl RefusalBudget {
    /// Decides for one refusal from `source` at `now`.
    pub fn admit(&self, source: &str, now: Instant) -> Admission {
        let mut map = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        let mut key = source;
        if map.len() >= MAX_SOURCES && !map.contains_key(source) {
            // Forget quiet addresses whose counts were all reported.
            map.retain(|_, w| {
                now.duration_since(w.started) < WINDOW || w.suppressed + w.carried > 0
            });
            if map.len() >= MAX_SOURCES {
                key = OVERFLOW;
            }
        }
        let w = map.entry(key.to_string()).or_insert(Window {
            started: now,
            recorded: 0,
            suppressed: 0,
            carried: 0,
        });
        if now.duration_since(w.started) >= WINDOW {
            w.carried += w.suppressed;
            w.suppressed = 0;
            w.recorded = 0;
            w.started = now;
        }
        if w.recorded < PER_MINUTE {
            w.recorded += 1;
            Admission::Record {
                suppressed_before: std::mem::take(&mut w.carried),
            }
        } else {
            w.suppressed += 1;
            Admission::Count
        }
    }
}

/// The detail of an audited refusal: its reason, and the refusals from the same address that
/// were counted but not audited before it (when there were any).
pub fn refusal_detail(reason: &str, suppressed_before: u64) -> serde_json::Value {
    let mut detail = serde_json::json!({ "reason": reason });
    if suppressed_before > 0 {
        detail["refusals_not_recorded_before"] = serde_json::json!(suppressed_before);
    }
    detail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_is_audited_up_to_the_budget_then_counted_and_reported() {
        let b = RefusalBudget::default();
        let t0 = Instant::now();
        let first: Vec<Admission> = (0..PER_MINUTE + 5)
            .map(|_| b.admit("10.0.0.9", t0))
            .collect();
        let recorded = first.iter().filter(|a| **a != Admission::Count).count();
        assert_eq!(recorded, PER_MINUTE as usize);
        assert_eq!(first.last(), Some(&Admission::Count));
        // Another address has its own budget.
        assert_eq!(
            b.admit("10.0.0.10", t0),
            Admission::Record {
                suppressed_before: 0
            }
        );
        // A minute later the next refusal is audited with the five that were only counted.
        assert_eq!(
            b.admit("10.0.0.9", t0 + WINDOW),
            Admission::Record {
                suppressed_before: 5
            }
        );
        assert_eq!(
            b.admit("10.0.0.9", t0 + WINDOW),
            Admission::Record {
                suppressed_before: 0
            }
        );
    }

    #[test]
    fn addresses_beyond_the_cap_share_one_budget() {
        let b = RefusalBudget::default();
        let t0 = Instant::now();
        for i in 0..MAX_SOURCES {
            b.admit(&format!("fd00::{i:x}"), t0);
        }
        for _ in 0..PER_MINUTE {
            assert_ne!(b.admit("192.0.2.1", t0), Admission::Count);
        }
        assert_eq!(b.admit("192.0.2.2", t0), Admission::Count);
        assert!(b.sources.lock().unwrap().len() <= MAX_SOURCES + 1);
    }
}
