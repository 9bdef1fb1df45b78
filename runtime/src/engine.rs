//! The one wasmtime [`Engine`] and its configuration, and the epoch ticker.
//!
//! Every choice here is a limit or a safety decision, so each is documented:
//! - Cranelift on x86-64 (Winch and aarch64 have had miscompile CVEs; see
//!   `docs/listeners.md`).
//! - The pooling allocator: instantiation in microseconds, and a hard cap on how many
//!   instances, memories and tables exist at once across all runs.
//! - Epoch interruption: a spinning guest is stopped at its deadline; cheaper than fuel.
//! - Component-model async ("concurrency support") off: its code paths are new and have had
//!   CVEs, and listeners do not need it. Host calls are still async Rust futures.

use std::time::Duration;

use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Strategy};

use crate::error::Error;
use crate::limits::{
    EPOCH_TICK, MAX_CONCURRENT_RUNS, MAX_INSTANCE_SIZE, MAX_MEMORY_BYTES, MAX_WASM_STACK,
};

/// Builds the engine. The `Engine` is shared by every run; build it once.
pub fn build_engine() -> Result<Engine, Error> {
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(MAX_CONCURRENT_RUNS)
        // Sized so that MAX_CONCURRENT_RUNS runs of components at the per-component maxima fit:
        // one greedy component cannot starve every other listener of pool slots.
        .total_core_instances(MAX_CONCURRENT_RUNS * crate::limits::MAX_INSTANCES as u32)
        .total_memories(MAX_CONCURRENT_RUNS * crate::limits::MAX_MEMORIES as u32)
        .total_tables(MAX_CONCURRENT_RUNS * crate::limits::MAX_TABLES as u32)
        .total_stacks(MAX_CONCURRENT_RUNS)
        .max_memory_size(MAX_MEMORY_BYTES)
        .max_component_instance_size(MAX_INSTANCE_SIZE)
        .max_core_instance_size(MAX_INSTANCE_SIZE)
        .max_core_instances_per_component(crate::limits::MAX_INSTANCES as u32)
        .max_memories_per_component(crate::limits::MAX_MEMORIES as u32)
        .max_tables_per_component(crate::limits::MAX_TABLES as u32)
        .table_elements(crate::limits::MAX_TABLE_ELEMENTS)
        .max_unused_warm_slots(8)
        // Reset reused slots by zeroing instead of returning pages to the kernel: cheaper for
        // the small memories and stacks listeners use. With PAGEMAP_SCAN (Linux 6.7+; `Auto`
        // falls back to the plain reset elsewhere) only the pages a run actually wrote are
        // reset, up to the keep-resident size, and nothing is unmapped: a slot's reuse takes
        // one ioctl instead of page faults and `madvise` with its TLB shootdowns. Measured: half
        // the per-run cost, 3x the throughput (docs/performance.md). Every run still starts
        // from the pristine image (`runtime/tests/listeners.rs::every_run_starts_from_clean_memory`).
        .pagemap_scan(wasmtime::Enabled::Auto)
        .linear_memory_keep_resident(64 << 10)
        .table_keep_resident(64 << 10)
        .async_stack_keep_resident(64 << 10);
    let mut config = Config::new();
    config
        .strategy(Strategy::Cranelift)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
        .epoch_interruption(true)
        .memory_reservation(MAX_MEMORY_BYTES as u64)
        .max_wasm_stack(MAX_WASM_STACK)
        .async_stack_size(MAX_WASM_STACK * 2)
        .wasm_component_model(true)
        .concurrency_support(false);
    Engine::new(&config).map_err(|e| Error::Engine(format!("{e:#}")))
}

/// Advances the engine's epoch every [`EPOCH_TICK`] until the engine is dropped.
pub fn start_epoch_ticker(engine: &Engine) {
    let weak = engine.weak();
    let tick: Duration = EPOCH_TICK;
    std::thread::Builder::new()
        .name("lockstep-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(tick);
            }
        })
        .map(|_| ())
        .unwrap_or_else(|e| panic!("cannot start the epoch ticker thread: {e}"));
}
