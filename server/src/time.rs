//! Timestamps as stored and served: RFC 3339 in UTC with a fixed width (microseconds, `Z`), so
//! that text comparison in SQL orders them correctly on both SQLite and PostgreSQL.

use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, SecondsFormat, Utc};

/// How far the database's clock is ahead of this machine's, in microseconds
/// (`cluster::clock::align`); 0 until measured, and always on SQLite.
static OFFSET_MICROS: AtomicI64 = AtomicI64::new(0);

/// Now in the cluster's time (the database's clock): what every lease and timestamp is
/// written in, so that nodes whose clocks disagree still agree on when a lease runs out.
pub fn now_utc() -> DateTime<Utc> {
    machine_now() + chrono::Duration::microseconds(OFFSET_MICROS.load(Ordering::Relaxed))
}

/// Now, formatted for storage and the API (in the cluster's time).
pub fn now() -> String {
    format(now_utc())
}

/// This machine's own clock, unmoved: only for measuring the offset.
pub fn machine_now() -> DateTime<Utc> {
    Utc::now()
}

/// Sets the offset of the cluster's time from this machine's clock.
pub fn set_offset(micros: i64) {
    OFFSET_MICROS.store(micros, Ordering::Relaxed);
}

/// The offset now in use.
pub fn offset_micros() -> i64 {
    OFFSET_MICROS.load(Ordering::Relaxed)
}

pub fn format(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Parses an RFC 3339 timestamp given by a client (any offset) into the stored form.
pub fn parse(s: &str) -> Option<String> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| format(t.with_timezone(&Utc)))
}

/// A new opaque, time-ordered identifier with a type prefix (`usr_`, `res_`, ...). Ordering by
/// id is creation order, which makes cursor pagination stable.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::now_v7().simple())
}
