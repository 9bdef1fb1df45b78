//! The database's clock is the cluster's clock. Each node measures how far its own clock is
//! from the database's (a query's round trip, the database's time taken at its middle) and
//! moves every time it reads by that much (`crate::time::set_offset`). On SQLite the database
//! runs on the server's own machine: nothing to measure.

use std::time::Instant;

use crate::error::Result;
use crate::store::{self, Store};

/// A measurement whose round trip took longer than this says little about the offset; the
/// previous offset is kept.
const MAX_ROUND_TRIP_MICROS: i64 = 500_000;

/// Measures this machine's offset from the database's clock and applies it; returns it in
/// microseconds (`None`: SQLite, or a round trip too slow to tell).
pub async fn align(store: &Store) -> Result<Option<i64>> {
    let sent = crate::time::machine_now();
    let started = Instant::now();
    let Some(database) =
        store::cluster::database_clock_micros(store.pool(), store.backend()).await?
    else {
        return Ok(None);
    };
    let round_trip = i64::try_from(started.elapsed().as_micros()).unwrap_or(i64::MAX);
    if round_trip > MAX_ROUND_TRIP_MICROS {
        tracing::debug!(
            round_trip,
            "clock alignment skipped: the round trip was too slow"
        );
        return Ok(None);
    }
    let middle = sent.timestamp_micros() + round_trip / 2;
    let offset = offset_of(database, middle);
    let before = crate::time::offset_micros();
    crate::time::set_offset(offset);
    if (offset - before).abs() > 1_000_000 {
        tracing::info!(
            offset_ms = offset / 1000,
            "this machine's clock is off the database's; leases and timestamps follow the database"
        );
    }
    Ok(Some(offset))
}

/// How far the database's clock is ahead of this machine's (negative: behind).
fn offset_of(database_micros: i64, machine_micros: i64) -> i64 {
    database_micros - machine_micros
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_machine_behind_the_database_moves_forward() {
        assert_eq!(offset_of(10_000_000, 4_000_000), 6_000_000);
        assert_eq!(offset_of(4_000_000, 10_000_000), -6_000_000);
        assert_eq!(offset_of(7, 7), 0);
    }
}
