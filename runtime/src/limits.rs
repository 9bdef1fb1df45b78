//! Every per-run limit in one place (after wasmtime's `store_limits()`): memory summed over all
//! of a run's linear memories, table growth, instance counts, the epoch deadline and the
//! wall-clock timeout, and the host memory and file descriptors a run can make the host hold.
//!
//! What this does NOT cover, by design of the layers: a host call that blocks is not
//! interrupted by the epoch (host calls here are async and sit under the outer timeout). The
//! host's own allocations on behalf of the guest are bounded per call (`output_kib`,
//! [`MAX_LOG_LINES`], [`MAX_MESSAGE_BYTES`]) and, for what outlives a call
//! (requests, bodies, fields, streams, pollables, sockets), by [`MAX_RESOURCES`] handles of
//! bounded size each: see [`MAX_HELD_BYTES_PER_RUN`].

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
/// [`MAX_PROP_KEY_BYTES`]) that its denial record shows; the rest is cut,
/// after the run's secrets are redacted from the whole key.
pub const MAX_SHOWN_KEY_BYTES: usize = 32;

/// Most core instances, memories and tables one component may create. A Rust listener needs a
/// handful; the caps stop a component that tries to exhaust the pooling allocator.
pub const MAX_INSTANCES: usize = 32;
pub const MAX_MEMORIES: usize = 4;
pub const MAX_TABLES: usize = 16;
/// Most elements one table may grow to.
pub const MAX_TABLE_ELEMENTS: usize = 100_000;

/// Most live resource handles (the host's resource table) one run may hold: every host-side
/// object a guest keeps between calls is one (an HTTP request, its body and body stream, a
/// fields object, a response, a pollable, a socket, a stream). A run that asks for one more
/// is stopped ("too many live resource handles"). wasmtime's default is about 2^32; 2,000 let
/// a run hold 4 GiB of unsent HTTP bodies (issue 16).
pub const MAX_RESOURCES: usize = 256;

/// Most bytes one `wasi:http` fields object (request or response headers a guest builds) may
/// hold, counted as wasmtime counts them (names, values and their per-entry overhead).
/// wasmtime's default is 128 KiB; a webhook's headers take a few hundred bytes. Adding past
/// it traps ("total size of fields exceeds limit").
pub const MAX_HTTP_FIELDS_BYTES: usize = 8 << 10;

/// Largest write to an outgoing HTTP body stream, and how many such writes the host buffers
/// before the request is sent: a body written but never sent holds at most
/// `(HTTP_BODY_BUFFERED_CHUNKS + 1) * HTTP_BODY_CHUNK_BYTES` = 16 KiB of host memory (wasmtime's
/// default: 2 MiB). A larger body is streamed as the request goes out, chunk by chunk.
pub const HTTP_BODY_CHUNK_BYTES: usize = 8 << 10;
pub const HTTP_BODY_BUFFERED_CHUNKS: usize = 1;

/// The most host memory one handle can hold: an outgoing request's path-with-query and
/// authority (each at most 64 KiB, the `http` crate's URI limit). A fields object holds at most
/// [`MAX_HTTP_FIELDS_BYTES`], an unsent body 16 KiB, a socket's write in flight 64 KiB.
/// Not counted here: what an HTTP connection in flight buffers in hyper (at most 32 per run,
/// the connection budget).
pub const MAX_HELD_BYTES_PER_HANDLE: usize = 128 << 10;

/// The bound on the host memory one run can make the host hold between calls:
/// [`MAX_RESOURCES`] handles of at most [`MAX_HELD_BYTES_PER_HANDLE`] each, 32 MiB; with
/// [`MAX_CONCURRENT_RUNS`] (64) runs at once, 2 GiB. Unsent bodies and fields,
/// the cheap way to hold memory, stay far under it: 256 x 16 KiB = 4 MiB per run.
pub const MAX_HELD_BYTES_PER_RUN: usize = MAX_RESOURCES * MAX_HELD_BYTES_PER_HANDLE;

/// Most TCP sockets one run may create, connected or not: each is a file descriptor of the
/// server (see [`MAX_DESCRIPTORS_PER_RUN`]). Listening is refused, so a run never holds an
/// accepted connection.
/// A socket past the cap fails with `new-socket-limit` and leaves a denial record. (Before,
/// creating a socket was not a "connection": a run held about 2,000, issue 16.)
pub const MAX_SOCKETS_PER_RUN: usize = 8;

/// The file descriptors a program run through `exec` or `target-exec` holds while it runs:
/// three pipes, both ends. A run's guest waits for its program, so it has one at a time.
pub const DESCRIPTORS_PER_PROGRAM: usize = 6;

/// The most file descriptors one run can make the server hold: [`MAX_SOCKETS_PER_RUN`]
/// sockets, [`MAX_CONNECTIONS_PER_RUN`] HTTP connections and one
/// program's pipes, 46.
pub const MAX_DESCRIPTORS_PER_RUN: usize =
    MAX_SOCKETS_PER_RUN + MAX_CONNECTIONS_PER_RUN + DESCRIPTORS_PER_PROGRAM;

/// The open-file limit the server needs: [`MAX_CONCURRENT_RUNS`] runs of
/// [`MAX_DESCRIPTORS_PER_RUN`] (2,944), plus 1,024 for the server's own (its listening
/// socket, database pool, clients, agents' and targets' connections). `lockstep serve` raises
/// its soft limit toward the hard one at start and warns when even that is below this.
pub const OPEN_FILES_NEEDED: u64 =
    (MAX_CONCURRENT_RUNS as u64) * (MAX_DESCRIPTORS_PER_RUN as u64) + 1024;

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

/// Most locals one function may declare (its parameters, at most 1,000, come on top).
/// Cranelift's register allocator grows faster than linearly with the values live at once:
/// one function with 20,000 locals live across a loop (a 490 KB component) took about 100 s
/// to compile (issue 16). The largest in the examples: 271 (CPython), 118 (SpiderMonkey).
pub const MAX_FUNCTION_LOCALS: u64 = 2_000;

/// Largest body of one function, in bytes of wasm code (the examples' largest: 427 KB, in
/// CPython).
pub const MAX_FUNCTION_BODY_BYTES: usize = 1 << 20;

/// Most bytes of function bodies in all of a component's core modules together (the
/// examples: 9.2 MB for JavaScript, 6.5 MB for Python, under 150 KB for Rust).
pub const MAX_CODE_BYTES: usize = 32 << 20;

/// Most of the sum, over all functions, of locals x body bytes: the compile-cost measure
/// (values that may be live x instructions) that bounds many functions just under the
/// per-function caps. The examples: 1.3e8 (JavaScript), 7e7 (Python), 1.2e6 (Rust); the
/// 100-second component: 1e10.
pub const MAX_COMPILE_COST: u64 = 1_000_000_000;

/// Refuses a component whose code would cost too much to compile: a function with more than
/// [`MAX_FUNCTION_LOCALS`] locals or a body over [`MAX_FUNCTION_BODY_BYTES`], more than
/// [`MAX_CODE_BYTES`] of code in all, or a compile cost over [`MAX_COMPILE_COST`]. Walks every
/// core module (nested ones included) with wasmparser, without validating (wasmtime validates
/// when it compiles). Run at upload and at every load, before the compiler or the cache sees
/// the bytes. Code that cannot be read is [`crate::Error::Compile`] (it would not compile
/// either); code over a limit is [`crate::Error::TooCostly`].
pub fn check_code(wasm: &[u8]) -> Result<(), crate::error::Error> {
    let stats = code_stats(wasm).map_err(crate::error::Error::Compile)?;
    within_limits(&stats).map_err(crate::error::Error::TooCostly)
}

fn within_limits(stats: &CodeStats) -> Result<(), String> {
    let split = "split it into smaller functions";
    if let Some((function, locals)) = stats.most_locals
        && locals > MAX_FUNCTION_LOCALS
    {
        return Err(format!(
            "function {function} declares {locals} locals, more than {MAX_FUNCTION_LOCALS}; {split}"
        ));
    }
    if let Some((function, size)) = stats.largest_body
        && size > MAX_FUNCTION_BODY_BYTES
    {
        return Err(format!(
            "function {function} has a {size}-byte body, more than {MAX_FUNCTION_BODY_BYTES}; {split}"
        ));
    }
    if stats.code_bytes > MAX_CODE_BYTES {
        return Err(format!(
            "{} bytes of code, more than {} MiB; a listener needs far less",
            stats.code_bytes,
            MAX_CODE_BYTES >> 20
        ));
    }
    if stats.compile_cost > MAX_COMPILE_COST {
        return Err(format!(
            "its functions' locals x body bytes add up to {}, more than {MAX_COMPILE_COST}; use fewer locals in its large functions",
            stats.compile_cost
        ));
    }
    Ok(())
}

/// What [`check_code`] measures of a component's code.
#[derive(Debug, Default, Clone, Copy)]
pub struct CodeStats {
    /// The function (counted from 1 over all core modules) with the most locals, and how many.
    pub most_locals: Option<(usize, u64)>,
    /// The function with the largest body, and its size in bytes.
    pub largest_body: Option<(usize, usize)>,
    /// Bytes of function bodies in all.
    pub code_bytes: usize,
    /// The sum of locals x body bytes over all functions.
    pub compile_cost: u64,
}

/// Measures `wasm`'s code (every core module, nested ones included).
pub fn code_stats(wasm: &[u8]) -> Result<CodeStats, String> {
    let mut stats = CodeStats::default();
    let mut function = 0;
    for payload in wasmparser::Parser::new(0).parse_all(wasm) {
        let payload = payload.map_err(|e| format!("it cannot be read: {e}"))?;
        let wasmparser::Payload::CodeSectionEntry(body) = payload else {
            continue;
        };
        function += 1;
        let unreadable =
            |e: wasmparser::BinaryReaderError| format!("function {function} cannot be read: {e}");
        let size = body.range().len();
        let mut locals: u64 = 0;
        for entry in body.get_locals_reader().map_err(unreadable)? {
            locals = locals.saturating_add(u64::from(entry.map_err(unreadable)?.0));
        }
        if stats.most_locals.is_none_or(|(_, l)| locals > l) {
            stats.most_locals = Some((function, locals));
        }
        if stats.largest_body.is_none_or(|(_, b)| size > b) {
            stats.largest_body = Some((function, size));
        }
        stats.code_bytes = stats.code_bytes.saturating_add(size);
        stats.compile_cost = stats
            .compile_cost
            .saturating_add(locals.saturating_mul(size as u64));
    }
    Ok(stats)
}

/// Epoch ticks for a timeout, at least one.
pub fn epoch_ticks(timeout: Duration) -> u64 {
    (timeout.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64
}

// What a manifest may ask for, what the pool holds, and what a run may send out.

/// Most listener runs in flight at once (pool slots); a run beyond it fails to instantiate
/// and is reported, never queued unboundedly.
pub const MAX_CONCURRENT_RUNS: u32 = 64;
/// Largest linear memory any listener may have (the manifest's `memory_mib` maximum).
pub const MAX_MEMORY_BYTES: usize = MAX_MEMORY_MIB as usize * 1024 * 1024;
/// Per-instance metadata size; interpreted guests (Python, JavaScript) need more than the
/// default 1 MiB.
pub const MAX_INSTANCE_SIZE: usize = 16 << 20;
/// Deepest wasm stack; deep recursion traps with a stack overflow beyond it.
pub const MAX_WASM_STACK: usize = 1 << 20;

/// Bytes one host call may move from guest to host (arguments, log lines, program input).
pub const HOSTCALL_FUEL: usize = 2 << 20;
/// Margin between the epoch deadline and the outer timeout, so the epoch normally fires first
/// and the outer timeout only catches a guest stuck in a host call.
pub const OUTER_TIMEOUT_MARGIN: Duration = Duration::from_millis(250);

/// Largest `limits.timeout_ms`.
pub const MAX_TIMEOUT_MS: u64 = 60_000;
/// Largest `limits.memory_mib`.
pub const MAX_MEMORY_MIB: u64 = 1024;
/// Largest `limits.output_kib`.
pub const MAX_OUTPUT_KIB: u64 = 1024;

/// Largest `delivery.max_attempts`: how often one post-reset delivery may run, at most (each
/// run within the limits above).
pub const MAX_DELIVERY_ATTEMPTS: u32 = 100;
/// The range of `delivery.max_age_secs`: a minute to a week after the reset's commit.
pub const DELIVERY_AGE_SECS: std::ops::RangeInclusive<u64> = 60..=604_800;

/// Longest argument a host call may pass (before any matching or formatting).
pub const MAX_ARG_BYTES: usize = 4096;
/// Most arguments a host call may pass.
pub const MAX_ARGS: usize = 64;
/// Longest property key a host call may ask for.
pub const MAX_PROP_KEY_BYTES: usize = 64;

/// The most of a veto reason or outcome message that is kept; a listener cannot flood the
/// audit trail or a job record through its answer.
pub const MAX_MESSAGE_BYTES: usize = 4096;

/// Most denial records kept per run; later ones are counted in the last record.
pub const MAX_DENIALS: usize = 64;
/// Longest `requested` or `reason` text of a denial record.
pub const MAX_DENIAL_TEXT: usize = 256;

/// Most connection attempts and HTTP requests one run may make: each holds a file descriptor
/// of the server while it lasts.
pub const MAX_CONNECTIONS_PER_RUN: usize = 32;
