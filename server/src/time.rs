//! Timestamps as stored and served: RFC 3339 in UTC with a fixed width (microseconds, `Z`), so
//! that text comparison in SQL orders them correctly on both SQLite and PostgreSQL.

use chrono::{DateTime, SecondsFormat, Utc};

/// Now, formatted for storage and the API.
pub fn now() -> String {
    format(Utc::now())
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
