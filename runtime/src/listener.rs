//! Loading a listener (compile or load from cache, refuse ungranted imports, pre-link) and
//! running one hook in a fresh store.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::{Component, Linker};
use wasmtime::{Engine, Store, Trap};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;

use crate::cache::ComponentCache;
use crate::error::Error;
use crate::host::bindings::lockstep::listener::types as wit;
use crate::host::bindings::{Listener, ListenerPre};
use crate::host::bindings_v0_1::lockstep::listener::types as wit_v0_1;
use crate::host::bindings_v0_1::{Listener as ListenerV0_1, ListenerPre as ListenerPreV0_1};
use crate::host::network::{HttpPolicy, socket_check};
use crate::host::{HostState, RunContext};
use crate::limits::{HOSTCALL_FUEL, MAX_DENIALS, MAX_MESSAGE_BYTES, OUTER_TIMEOUT_MARGIN};
use crate::limits::{SummedLimiter, epoch_ticks};
use crate::manifest::{Endpoint, Manifest, Phase, Scheme};
use crate::report::{DenialRecord, HookOutcome, Invocation, RunFailure};

/// What started the reset (matches the WIT `trigger` enum).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Manual,
    Bulk,
    Scheduled,
    CheckIn,
    ReverseSync,
    Api,
}

impl Trigger {
    /// From the name a reset job records (`manual`, `bulk`, `scheduled`, `check-in`,
    /// `reverse-sync`, `api`); any other name is a manual reset.
    pub fn from_job(name: &str) -> Trigger {
        match name {
            "bulk" => Trigger::Bulk,
            "scheduled" => Trigger::Scheduled,
            "check-in" => Trigger::CheckIn,
            "reverse-sync" => Trigger::ReverseSync,
            "api" => Trigger::Api,
            _ => Trigger::Manual,
        }
    }
}

/// The reset a hook is called for.
#[derive(Debug, Clone)]
pub struct ResetEvent {
    pub job_id: String,
    pub trigger: Trigger,
    pub resource_type: String,
    /// The listener's additional parameters, in order.
    pub parameters: Vec<String>,
    /// Which delivery and attempt a post-reset run is (contract 0.2.0; a 0.1.0 component is
    /// not told). `None` for pre-reset runs.
    pub delivery: Option<Delivery>,
}

/// One attempt of a post-reset delivery: every attempt of a delivery has the same `id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub id: String,
    /// Counts from 1.
    pub attempt: u32,
}

/// The versions of `lockstep:listener` this host serves. A component is built against one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contract {
    /// `wit/v0.1.0/listener.wit`: no delivery id, no `retry` answer.
    V0_1,
    /// `wit/listener.wit`, the current one.
    V0_2,
}

impl Contract {
    pub fn as_str(self) -> &'static str {
        match self {
            Contract::V0_1 => "0.1.0",
            Contract::V0_2 => "0.2.0",
        }
    }

    /// The contract a component's imports name (`lockstep:listener/…@VERSION`); `None` when
    /// it imports no Lockstep interface, or a version this host does not serve.
    fn of_imports<'a>(names: impl Iterator<Item = &'a str>) -> Result<Option<Contract>, Error> {
        let mut found = None;
        for name in names {
            let Some(version) = name
                .strip_prefix("lockstep:listener/")
                .and_then(|rest| rest.split_once('@'))
                .map(|(_, v)| v)
            else {
                continue;
            };
            let contract = match version {
                "0.1.0" => Contract::V0_1,
                "0.2.0" => Contract::V0_2,
                other => {
                    return Err(Error::Link(format!(
                        "it imports {name}, and this host serves lockstep:listener 0.1.0 and \
                         0.2.0, not {other}; build it against one of those"
                    )));
                }
            };
            if found.is_some_and(|f| f != contract) {
                return Err(Error::Link(
                    "it imports lockstep:listener interfaces of two versions; build it against \
                     one"
                    .into(),
                ));
            }
            found = Some(contract);
        }
        Ok(found)
    }
}

/// A pre-linked component of either contract.
#[derive(Clone)]
enum Pre {
    V0_1(ListenerPreV0_1<HostState>),
    V0_2(ListenerPre<HostState>),
}

/// Interfaces every listener may import: the standard WASI pieces a compiled guest's runtime
/// needs (clocks, random, stdio, environment, exit, and the filesystem with nothing opened),
/// plus the Lockstep types and log. Anything else must be granted.
const ALWAYS_ALLOWED: &[&str] = &[
    "wasi:io/error",
    "wasi:io/poll",
    "wasi:io/streams",
    "wasi:clocks/wall-clock",
    "wasi:clocks/monotonic-clock",
    "wasi:random/random",
    "wasi:random/insecure",
    "wasi:random/insecure-seed",
    "wasi:cli/environment",
    "wasi:cli/exit",
    "wasi:cli/stdin",
    "wasi:cli/stdout",
    "wasi:cli/stderr",
    "wasi:cli/terminal-input",
    "wasi:cli/terminal-output",
    "wasi:cli/terminal-stdin",
    "wasi:cli/terminal-stdout",
    "wasi:cli/terminal-stderr",
    "wasi:filesystem/types",
    "wasi:filesystem/preopens",
    // Sockets may be imported by any listener: Rust's std links them with any networking, and
    // interpreted guests (CPython, StarlingMonkey) always do. Every use is refused at run time
    // unless it matches a `tcp://IP:PORT` grant; UDP and name lookups are always refused.
    "wasi:sockets/network",
    "wasi:sockets/instance-network",
    "wasi:sockets/tcp",
    "wasi:sockets/tcp-create-socket",
    "wasi:sockets/udp",
    "wasi:sockets/udp-create-socket",
    "wasi:sockets/ip-name-lookup",
    "lockstep:listener/types",
    "lockstep:listener/log",
];

/// The interfaces (without `@version`) `manifest` lets a component import.
pub fn allowed_imports(manifest: &Manifest) -> Vec<&'static str> {
    let caps = manifest.capabilities();
    let mut allowed = ALWAYS_ALLOWED.to_vec();
    if !caps.props.is_empty() {
        allowed.push("lockstep:listener/props");
    }
    if !caps.secrets.is_empty() {
        allowed.push("lockstep:listener/secrets");
    }
    if !caps.exec.is_empty() {
        allowed.push("lockstep:listener/exec");
    }
    if !caps.target_exec.is_empty() {
        allowed.push("lockstep:listener/target-exec");
        // target-exec's signature reuses exec's `output` record.
        allowed.push("lockstep:listener/exec");
    }
    let endpoints = manifest.endpoints();
    if endpoints
        .iter()
        .any(|e| matches!(e.scheme, Scheme::Http | Scheme::Https))
    {
        allowed.extend(["wasi:http/types", "wasi:http/outgoing-handler"]);
    }
    allowed
}

/// The grant an interface needs, for error messages.
fn grant_for(import: &str) -> &'static str {
    match import {
        "lockstep:listener/props" => "capabilities.props",
        "lockstep:listener/secrets" => "capabilities.secrets",
        "lockstep:listener/exec" => "capabilities.exec",
        "lockstep:listener/target-exec" => "capabilities.target_exec",
        i if i.starts_with("wasi:http/") || i.starts_with("wasi:sockets/") => {
            "capabilities.network"
        }
        _ => "a capability Lockstep does not offer",
    }
}

/// The listener host: one engine, one linker, an optional compiled-component cache.
pub struct Runtime {
    engine: Engine,
    linker: Arc<Linker<HostState>>,
    cache: Option<ComponentCache>,
}

/// A listener version ready to run: its manifest and its pre-linked component.
#[derive(Clone)]
pub struct LoadedListener {
    manifest: Arc<Manifest>,
    /// `capabilities.network`, parsed once at load: every run checks against it.
    endpoints: Arc<[Endpoint]>,
    pre: Pre,
    digest: String,
}

impl Runtime {
    /// Builds the engine, starts its epoch ticker, links the host interfaces, and opens the
    /// compiled-component cache in `cache_dir` (none: compile on every load).
    pub fn new(cache_dir: Option<&std::path::Path>) -> Result<Runtime, Error> {
        let engine = crate::engine::build_engine()?;
        crate::engine::start_epoch_ticker(&engine);
        let mut linker: Linker<HostState> = Linker::new(&engine);
        let link =
            |e: wasmtime::Error| Error::Engine(format!("cannot link host interfaces: {e:#}"));
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(link)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).map_err(link)?;
        // Creating a TCP socket is counted (each is a file descriptor): wasi's own
        // `create-tcp-socket` is replaced by one that checks the run's socket cap first.
        // Listening is refused outright: a listener never serves (and an accepted connection
        // would be a descriptor outside that cap).
        linker.allow_shadowing(true);
        linker
            .instance(crate::host::network::TCP_CREATE_SOCKET)
            .and_then(|mut i| {
                i.func_wrap("create-tcp-socket", crate::host::network::create_tcp_socket)
            })
            .map_err(link)?;
        linker
            .instance(crate::host::network::TCP)
            .and_then(|mut i| {
                i.func_wrap(
                    "[method]tcp-socket.start-listen",
                    crate::host::network::start_listen,
                )
            })
            .map_err(link)?;
        linker.allow_shadowing(false);
        Listener::add_to_linker::<HostState, wasmtime::component::HasSelf<HostState>>(
            &mut linker,
            |s| s,
        )
        .map_err(link)?;
        ListenerV0_1::add_to_linker::<HostState, wasmtime::component::HasSelf<HostState>>(
            &mut linker,
            |s| s,
        )
        .map_err(link)?;
        let cache = cache_dir
            .map(|d| ComponentCache::open(d, &engine))
            .transpose()?;
        Ok(Runtime {
            engine,
            linker: Arc::new(linker),
            cache,
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Compiles (or loads from the cache) a component and checks it against its manifest:
    /// it must be a component, import nothing the manifest does not grant, and export both
    /// hooks of the `lockstep:listener` world of the version it imports (0.1.0 or 0.2.0).
    pub fn load(&self, wasm: &[u8], manifest: Manifest) -> Result<LoadedListener, Error> {
        let endpoints: Arc<[Endpoint]> = manifest.endpoints().into();
        for e in endpoints.iter() {
            if e.scheme == Scheme::Tcp && e.host.parse::<std::net::IpAddr>().is_err() {
                return Err(Error::Unsupported(format!(
                    "capabilities.network: '{e}' names a host, but listeners get no DNS; grant tcp:// by IP address"
                )));
            }
        }
        if !manifest.capabilities().dirs.is_empty() {
            return Err(Error::Unsupported(
                "capabilities.dirs: host directories are not available in this Lockstep version"
                    .into(),
            ));
        }
        if wasm.len() < 8 || wasm[..4] != *b"\0asm" {
            return Err(Error::NotAComponent(
                "it does not start with the WebAssembly magic bytes".into(),
            ));
        }
        if wasm[4..8] != [0x0d, 0x00, 0x01, 0x00] {
            return Err(Error::NotAComponent(
                "it is a core WebAssembly module, not a component; build for wasm32-wasip2 or run `wasm-tools component new`"
                    .into(),
            ));
        }
        // Before the compiler or the cache: compile time is bounded by what the code declares.
        crate::limits::check_code(wasm)?;
        let component = match self.cache.as_ref().and_then(|c| c.load(&self.engine, wasm)) {
            Some(c) => c,
            None => {
                let c = Component::new(&self.engine, wasm)
                    .map_err(|e| Error::Compile(format!("{e:#}")))?;
                if let Some(cache) = &self.cache {
                    // A full or read-only disk costs the next load a compile, nothing more.
                    let _ = cache.store(wasm, &c);
                }
                c
            }
        };
        let allowed = allowed_imports(&manifest);
        let imports: Vec<String> = component
            .component_type()
            .imports(&self.engine)
            .map(|(name, _)| name.to_string())
            .collect();
        let contract = Contract::of_imports(imports.iter().map(String::as_str))?;
        for (name, _) in component.component_type().imports(&self.engine) {
            let interface = name.split('@').next().unwrap_or(name);
            if !allowed.contains(&interface) {
                return Err(Error::UngrantedImport {
                    import: name.to_string(),
                    grant: grant_for(interface),
                });
            }
        }
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| Error::Link(format!("{e:#}")))?;
        // A component that imports no Lockstep interface says no version: the exports decide.
        let pre = match contract {
            Some(Contract::V0_1) => ListenerPreV0_1::new(pre).map(Pre::V0_1),
            Some(Contract::V0_2) => ListenerPre::new(pre.clone()).map(Pre::V0_2),
            None => ListenerPre::new(pre.clone())
                .map(Pre::V0_2)
                .or_else(|_| ListenerPreV0_1::new(pre).map(Pre::V0_1)),
        }
        .map_err(|e| Error::Link(format!("{e:#}")))?;
        let digest = manifest.digest();
        Ok(LoadedListener {
            manifest: Arc::new(manifest),
            endpoints,
            pre,
            digest,
        })
    }
}

impl LoadedListener {
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The manifest's digest (what an approval binds, with the component's digest).
    pub fn manifest_digest(&self) -> &str {
        &self.digest
    }

    /// The contract the component was built against.
    pub fn contract(&self) -> Contract {
        match self.pre {
            Pre::V0_1(_) => Contract::V0_1,
            Pre::V0_2(_) => Contract::V0_2,
        }
    }

    /// Runs one hook in a fresh store, within the manifest's limits. Never panics and never
    /// returns early on a guest's misbehaviour: every failure is in [`Invocation::outcome`].
    ///
    /// The run keeps only the passwords its manifest grants ([`RunContext::granted`]); every
    /// text it produces leaves through [`crate::report::Redactor::clean`] (those passwords
    /// redacted from the whole text, then escaped, then cut).
    pub async fn run(&self, phase: Phase, event: &ResetEvent, ctx: RunContext) -> Invocation {
        let started = Instant::now();
        let ctx = ctx.granted(&self.manifest);
        let redactor = ctx.redactor();
        let limits = self.manifest.limits();
        let timeout = Duration::from_millis(limits.timeout_ms);
        let output_cap = (limits.output_kib as usize) * 1024;
        let stdout = MemoryOutputPipe::new(output_cap);
        let stderr = MemoryOutputPipe::new(output_cap);
        let endpoints = self.endpoints.clone();
        let network_denials = crate::host::network::SharedDenials::default();
        let budget = crate::host::network::ConnectionBudget::default();
        let wasi = WasiCtxBuilder::new()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(endpoints.iter().any(|e| e.scheme == Scheme::Tcp))
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            // A synchronous host call is not interrupted by the deadline: bound its work.
            .max_random_size(crate::limits::MAX_RANDOM_BYTES)
            .socket_addr_check(socket_check(
                endpoints.clone(),
                network_denials.clone(),
                budget.clone(),
                redactor.clone(),
            ))
            .build();
        let state = HostState {
            wasi,
            table: wasmtime::component::ResourceTable::new(),
            limiter: SummedLimiter::new((limits.memory_mib as usize) << 20),
            manifest: self.manifest.clone(),
            ctx,
            redactor: redactor.clone(),
            deadline: started + timeout,
            denials: Vec::new(),
            denials_dropped: 0,
            logs: Vec::new(),
            log_bytes: 0,
            logs_dropped_bytes: 0,
            stdout,
            stderr,
            http: {
                let mut http = wasmtime_wasi_http::WasiHttpCtx::new();
                http.set_field_size_limit(crate::limits::MAX_HTTP_FIELDS_BYTES);
                http
            },
            sockets_created: 0,
            http_policy: HttpPolicy {
                endpoints,
                denials: network_denials.clone(),
                budget,
                redactor: redactor.clone(),
            },
            network_denials,
        };
        let engine = match &self.pre {
            Pre::V0_1(p) => p.engine(),
            Pre::V0_2(p) => p.engine(),
        };
        let mut store = Store::new(engine, state);
        store.limiter(|s| &mut s.limiter);
        store.set_epoch_deadline(epoch_ticks(timeout));
        store.epoch_deadline_trap();
        store.set_hostcall_fuel(HOSTCALL_FUEL);
        store
            .data_mut()
            .table
            .set_max_capacity(crate::limits::MAX_RESOURCES);

        let outcome = if !self.manifest.phases().contains(&phase) {
            Err(RunFailure::Instantiate(format!(
                "the manifest does not declare the {} phase",
                phase.as_str()
            )))
        } else {
            let call = async {
                match &self.pre {
                    Pre::V0_2(pre) => {
                        let listener = pre.instantiate_async(&mut store).await?;
                        call_v0_2(&listener, &mut store, phase, event).await
                    }
                    Pre::V0_1(pre) => {
                        let listener = pre.instantiate_async(&mut store).await?;
                        call_v0_1(&listener, &mut store, phase, event).await
                    }
                }
            };
            match tokio::time::timeout(timeout + OUTER_TIMEOUT_MARGIN, call).await {
                Ok(Ok(outcome)) => Ok(outcome),
                Ok(Err(e)) => Err(classify(&e, store.data(), timeout, limits.memory_mib)),
                Err(_) => Err(RunFailure::Timeout { limit: timeout }),
            }
        };

        let state = store.data_mut();
        let mut denials = std::mem::take(&mut state.denials);
        if let Ok(mut found) = state.network_denials.lock() {
            denials.append(&mut found);
        }
        let dropped = state.denials_dropped + denials.len().saturating_sub(MAX_DENIALS) as u64;
        denials.truncate(MAX_DENIALS);
        if dropped > 0 {
            denials.push(DenialRecord {
                capability: "many",
                requested: format!("{dropped} more denied call(s)"),
                reason: "not recorded one by one".into(),
            });
        }
        let logs = std::mem::take(&mut state.logs);
        let logs_dropped_bytes = state.logs_dropped_bytes;
        // Whatever the guest wrote or answered: no granted password (redacted from the whole
        // text before it is cut), no control characters, bounded.
        let text =
            |p: &MemoryOutputPipe| redactor.clean_stream(&p.contents(), output_cap, output_cap);
        let (stdout, stderr) = (text(&state.stdout), text(&state.stderr));
        let answer = |m: String| redactor.clean(m, false, MAX_MESSAGE_BYTES);
        let outcome = outcome.map(|o| match o {
            HookOutcome::Veto(m) => HookOutcome::Veto(answer(m)),
            HookOutcome::Success(m) => HookOutcome::Success(answer(m)),
            HookOutcome::Failure(m) => HookOutcome::Failure(answer(m)),
            HookOutcome::Retry(m) => HookOutcome::Retry(answer(m)),
            HookOutcome::Proceed => HookOutcome::Proceed,
        });
        // Dropping the store returns its pool slot. Measured: dropping it on another thread
        // instead made runs slower on two cores (docs/performance.md).
        drop(store);
        let elapsed = started.elapsed();
        Invocation {
            outcome,
            stdout,
            stderr,
            denials,
            logs,
            logs_dropped_bytes,
            elapsed,
        }
    }
}

/// Calls one hook of a current (0.2.0) component.
async fn call_v0_2(
    listener: &Listener,
    store: &mut Store<HostState>,
    phase: Phase,
    event: &ResetEvent,
) -> wasmtime::Result<HookOutcome> {
    let wit_event = wit::Event {
        job_id: event.job_id.clone(),
        trigger: match event.trigger {
            Trigger::Manual => wit::Trigger::Manual,
            Trigger::Bulk => wit::Trigger::Bulk,
            Trigger::Scheduled => wit::Trigger::Scheduled,
            Trigger::CheckIn => wit::Trigger::CheckIn,
            Trigger::ReverseSync => wit::Trigger::ReverseSync,
            Trigger::Api => wit::Trigger::Api,
        },
        phase: match phase {
            Phase::PreReset => wit::Phase::PreReset,
            Phase::PostReset => wit::Phase::PostReset,
        },
        resource_type: event.resource_type.clone(),
        parameters: event.parameters.clone(),
        delivery: event.delivery.as_ref().map(|d| wit::Delivery {
            id: d.id.clone(),
            attempt: d.attempt,
        }),
    };
    Ok(match phase {
        Phase::PreReset => match listener.call_pre_reset(store, &wit_event).await? {
            wit::PreOutcome::Proceed => HookOutcome::Proceed,
            wit::PreOutcome::Veto(r) => HookOutcome::Veto(r),
        },
        Phase::PostReset => match listener.call_post_reset(store, &wit_event).await? {
            wit::PostOutcome::Success(m) => HookOutcome::Success(m),
            wit::PostOutcome::Failure(m) => HookOutcome::Failure(m),
            wit::PostOutcome::Retry(m) => HookOutcome::Retry(m),
        },
    })
}

/// Calls one hook of a 0.1.0 component: the same event without its delivery, which that
/// contract cannot carry; its two post-reset answers mean what they always meant.
async fn call_v0_1(
    listener: &ListenerV0_1,
    store: &mut Store<HostState>,
    phase: Phase,
    event: &ResetEvent,
) -> wasmtime::Result<HookOutcome> {
    let wit_event = wit_v0_1::Event {
        job_id: event.job_id.clone(),
        trigger: match event.trigger {
            Trigger::Manual => wit_v0_1::Trigger::Manual,
            Trigger::Bulk => wit_v0_1::Trigger::Bulk,
            Trigger::Scheduled => wit_v0_1::Trigger::Scheduled,
            Trigger::CheckIn => wit_v0_1::Trigger::CheckIn,
            Trigger::ReverseSync => wit_v0_1::Trigger::ReverseSync,
            Trigger::Api => wit_v0_1::Trigger::Api,
        },
        phase: match phase {
            Phase::PreReset => wit_v0_1::Phase::PreReset,
            Phase::PostReset => wit_v0_1::Phase::PostReset,
        },
        resource_type: event.resource_type.clone(),
        parameters: event.parameters.clone(),
    };
    Ok(match phase {
        Phase::PreReset => match listener.call_pre_reset(store, &wit_event).await? {
            wit_v0_1::PreOutcome::Proceed => HookOutcome::Proceed,
            wit_v0_1::PreOutcome::Veto(r) => HookOutcome::Veto(r),
        },
        Phase::PostReset => match listener.call_post_reset(store, &wit_event).await? {
            wit_v0_1::PostOutcome::Success(m) => HookOutcome::Success(m),
            wit_v0_1::PostOutcome::Failure(m) => HookOutcome::Failure(m),
        },
    })
}

/// Turns a wasmtime error from instantiation or a call into a [`RunFailure`].
fn classify(
    e: &wasmtime::Error,
    state: &HostState,
    timeout: Duration,
    memory_mib: u64,
) -> RunFailure {
    if state.limiter.memory_exceeded {
        return RunFailure::MemoryLimit {
            limit_mib: memory_mib,
        };
    }
    if state.limiter.table_exceeded {
        return RunFailure::Trap(format!(
            "table limit of {} elements reached",
            crate::limits::MAX_TABLE_ELEMENTS
        ));
    }
    if let Some(wasmtime::component::ResourceTableError::Full) =
        e.downcast_ref::<wasmtime::component::ResourceTableError>()
    {
        return RunFailure::Trap(format!(
            "resource limit: more than {} live resource handles (HTTP requests, bodies, fields, \
             streams, pollables, sockets) in one run; drop each one when done with it",
            crate::limits::MAX_RESOURCES
        ));
    }
    if let Some(trap) = e.downcast_ref::<Trap>() {
        return match trap {
            Trap::Interrupt => RunFailure::Timeout { limit: timeout },
            Trap::StackOverflow => RunFailure::Trap("stack overflow (recursion too deep)".into()),
            Trap::UnreachableCodeReached => {
                RunFailure::Trap("the listener panicked or aborted".into())
            }
            other => RunFailure::Trap(other.to_string()),
        };
    }
    if e.downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
        .is_some()
    {
        return RunFailure::Instantiate(format!("too many listener runs at once: {e}"));
    }
    // The cause only: the wasm backtrace around it is long, and it quotes function names
    // from the component's own name section, which a hostile author writes.
    RunFailure::Trap(
        state
            .redactor
            .clean(e.root_cause().to_string(), false, MAX_MESSAGE_BYTES),
    )
}

#[cfg(test)]
mod tests {
    use super::Trigger;

    #[test]
    fn every_trigger_a_job_records_reaches_listeners_as_itself() {
        for (name, trigger) in [
            ("manual", Trigger::Manual),
            ("bulk", Trigger::Bulk),
            ("scheduled", Trigger::Scheduled),
            ("check-in", Trigger::CheckIn),
            ("reverse-sync", Trigger::ReverseSync),
            ("api", Trigger::Api),
            ("anything else", Trigger::Manual),
        ] {
            assert_eq!(Trigger::from_job(name), trigger, "{name}");
        }
    }
}
