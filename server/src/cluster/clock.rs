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
/// The largest offset followed. The cluster's time also decides when tokens, activation codes
/// and agent signatures expire, so a database host whose clock is wrong by more than this
/// (or wound back on purpose) does not move them: the node keeps the offset it had, and says
/// so at every beat until someone fixes the clocks (NTP).
pub const MAX_OFFSET_MICROS: i64 = 5 * 60 * 1_000_000;

/// Measures this machine's offset from the database's clock and applies it; returns it in
/// microseconds (`None`: SQLite, or a round trip too slow to tell). An offset beyond
/// [`MAX_OFFSET_MICROS`] is an error and is not applied.
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
    if offset.abs() > MAX_OFFSET_MICROS {
        return Err(crate::error::Error::Config(format!(
            "this machine's clock is {} s off the database's, more than the {} s a node \
             follows; leases and expiries stay on this machine's clock; hint: run NTP on both",
            offset / 1_000_000,
            MAX_OFFSET_MICROS / 1_000_000
        )));
    }
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
