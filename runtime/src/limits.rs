//! Every per-run limit in one place (after wasmtime's `store_limits()`): memory summed over all
//! of a run's linear memories, table growth, instance counts, the epoch deadline and the
//! wall-clock timeout.
//!
//! What this does NOT cover, by design of the layers: a host call that blocks is not
//! interrupted by the epoch (host calls here are async and sit under the outer timeout), and
//! the host's own allocations on behalf of the guest are bounded by the per-call caps
//! (`output_kib`, [`MAX_LOG_LINES`], [`crate::report::MAX_MESSAGE_BYTES`]).

use std::time::Duration;

/// How often the engine's epoch advances. A deadline of `timeout / EPOCH_TICK` ticks stops a
/// spinning guest within about one tick of its timeout.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Most bytes one `get-random-bytes` or `get-insecure-random-bytes` call may ask for; a larger
/// request traps. Those calls are synchronous, so the epoch deadline only stops the guest
/// between them: this cap keeps one call (about 20 ms in a debug build, where 1 MiB took
/// 300 ms) well inside the documented overshoot of the timeout.
pub const MAX_RANDOM_BYTES: u64 = 64 << 10;

/// Most log lines kept per run; later ones are counted as dropped.
pub const MAX_LOG_LINES: usize = 1000;

/// Most of a refused property key (one longer than
/// [`crate::manifest::MAX_PROP_KEY_BYTES`]) that its denial record shows; the rest is cut,
/// after the run's secrets are redacted from the whole key.
pub const MAX_SHOWN_KEY_BYTES: usize = 32;

/// Most core instances, memories and tables one component may create. A Rust listener needs a
/// handful; the caps stop a component that tries to exhaust the pooling allocator.
pub const MAX_INSTANCES: usize = 32;
pub const MAX_MEMORIES: usize = 4;
pub const MAX_TABLES: usize = 16;
/// Most elements one table may grow to.
pub const MAX_TABLE_ELEMENTS: usize = 100_000;

/// A `ResourceLimiter` that caps the *sum* of all linear memories of one store (wasmtime's
/// `StoreLimits` caps each memory on its own, so ten memories could take ten times the limit).
/// Growth beyond the cap traps (`trap_on_grow_failure` semantics), which ends the run.
#[derive(Debug)]
pub struct SummedLimiter {
    memory_cap: usize,
    memory_used: usize,
    /// Set when a growth was refused, so the run is reported as a memory-limit failure.
    pub memory_exceeded: bool,
    /// Set when a table growth was refused, so the run is reported as a table-limit failure.
    pub table_exceeded: bool,
}

impl SummedLimiter {
    pub fn new(memory_cap_bytes: usize) -> SummedLimiter {
        SummedLimiter {
            memory_cap: memory_cap_bytes,
            memory_used: 0,
            memory_exceeded: false,
            table_exceeded: false,
        }
    }
}

impl wasmtime::ResourceLimiter for SummedLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let growth = desired.saturating_sub(current);
        let total = self.memory_used.saturating_add(growth);
        if total > self.memory_cap {
            self.memory_exceeded = true;
            return Err(wasmtime::Error::msg(format!(
                "memory limit of {} MiB reached (asked for {} MiB in all)",
                self.memory_cap >> 20,
                total >> 20
            )));
        }
        self.memory_used = total;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > MAX_TABLE_ELEMENTS {
            self.table_exceeded = true;
            return Err(wasmtime::Error::msg(format!(
                "table limit of {MAX_TABLE_ELEMENTS} elements reached"
            )));
        }
        Ok(true)
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }
}

/// Epoch ticks for a timeout, at least one.
pub fn epoch_ticks(timeout: Duration) -> u64 {
    (timeout.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64
}
