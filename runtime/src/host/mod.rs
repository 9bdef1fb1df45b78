//! The host side of `wit/listener.wit`: the per-run state a [`wasmtime::Store`] carries, and
//! one module per Lockstep capability. Each capability checks the manifest on every call;
//! a refusal returns `host-error::denied` to the guest and leaves a [`DenialRecord`] for the
//! audit trail. Adding a capability is one module here plus one entry in
//! [`crate::listener::allowed_imports`].

mod exec;
mod log;
pub(crate) mod network;
mod props;
mod secrets;
mod target_exec;
mod v0_1;

pub use exec::{ProgramOutput, run_program};

use bindings::lockstep::listener::exec::Output;

impl ProgramOutput {
    /// What the guest gets back: the output, or a failure when the deadline stopped it.
    fn into_guest(self, stopped: impl FnOnce() -> String) -> Result<Output, HostError> {
        if self.timed_out {
            return Err(HostError::Failed(stopped()));
        }
        Ok(Output {
            status: self.status,
            stdout: self.stdout,
            stderr: self.stderr,
        })
    }
}
pub use target_exec::TargetExec;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use zeroize::Zeroizing;

use crate::limits::SummedLimiter;
use crate::limits::{MAX_DENIAL_TEXT, MAX_DENIALS};
use crate::manifest::{Manifest, Secret};
use crate::report::{DenialRecord, LogLine, Redactor};

/// Bindings generated from `wit/listener.wit`: the current contract, `0.2.0`.
pub mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "listener",
        // Only the host calls that wait on something are async; props, secrets and log
        // answer from the store, and a plain call skips a boxed future per call.
        imports: {
            "lockstep:listener/exec.run": async,
            "lockstep:listener/target-exec.run": async,
        },
        exports: { default: async },
    });
}

/// Bindings generated from `wit/v0.1.0/listener.wit`: the first contract, frozen. Its host
/// calls are served by the current ones (`v0_1.rs`), so both versions get the same checks.
pub mod bindings_v0_1 {
    wasmtime::component::bindgen!({
        path: "../wit/v0.1.0",
        world: "listener",
        imports: {
            "lockstep:listener/exec.run": async,
            "lockstep:listener/target-exec.run": async,
        },
        exports: { default: async },
    });
}

use bindings::lockstep::listener::types::HostError;

/// What a run may be told about the reset it serves. Passwords are zeroized when the run
/// ends. A run keeps only the passwords its manifest grants ([`RunContext::granted`], applied
/// when the run starts): no host call can compare, redact or return one it does not grant.
#[derive(Default)]
pub struct RunContext {
    /// Resource properties by key (`RESOURCENAME`, `IPADDRESS`, custom columns, ...).
    pub resource: BTreeMap<String, String>,
    /// Account properties by key (`LOGINNAME`, ...).
    pub account: BTreeMap<String, String>,
    pub old_password: Option<Zeroizing<String>>,
    pub new_password: Option<Zeroizing<String>>,
    /// The reset's connection to its target, for `target-exec`; `None` outside a reset.
    pub target: Option<Arc<dyn TargetExec>>,
}

impl RunContext {
    /// The context with every password `manifest` does not grant dropped (and zeroized).
    /// A host that held an ungranted password would be tempted to compare the listener's
    /// text with it (a command line, a text to redact), and every such comparison answers
    /// "was that the password?" to a listener that may not read it.
    pub fn granted(mut self, manifest: &Manifest) -> RunContext {
        if !manifest.allows_secret(Secret::OldPassword) {
            self.old_password = None;
        }
        if !manifest.allows_secret(Secret::NewPassword) {
            self.new_password = None;
        }
        self
    }

    /// The redactor for this context's passwords (after [`RunContext::granted`]: only the
    /// granted ones).
    pub fn redactor(&self) -> Redactor {
        Redactor::new(
            [&self.old_password, &self.new_password]
                .into_iter()
                .flatten()
                .cloned(),
        )
    }
}

/// Everything one store carries.
pub struct HostState {
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) limiter: SummedLimiter,
    pub(crate) manifest: Arc<Manifest>,
    pub(crate) ctx: RunContext,
    /// The granted passwords, for [`Redactor::clean`] on every text that leaves the run.
    pub(crate) redactor: Redactor,
    pub(crate) deadline: Instant,
    pub(crate) denials: Vec<DenialRecord>,
    pub(crate) denials_dropped: u64,
    pub(crate) logs: Vec<LogLine>,
    pub(crate) log_bytes: usize,
    pub(crate) logs_dropped_bytes: u64,
    pub(crate) stdout: MemoryOutputPipe,
    pub(crate) stderr: MemoryOutputPipe,
    pub(crate) http: wasmtime_wasi_http::WasiHttpCtx,
    pub(crate) http_policy: network::HttpPolicy,
    pub(crate) network_denials: network::SharedDenials,
    /// TCP sockets this run created (at most [`crate::limits::MAX_SOCKETS_PER_RUN`]).
    pub(crate) sockets_created: usize,
}

impl HostState {
    /// Records a refusal (bounded in count and size, control characters escaped, never a
    /// granted secret) and returns the error the guest sees.
    fn deny(&mut self, capability: &'static str, requested: String, reason: String) -> HostError {
        let requested = self.redactor.clean(requested, false, MAX_DENIAL_TEXT);
        let reason = self.redactor.clean(reason, false, MAX_DENIAL_TEXT);
        let message = format!("{capability}: {reason}");
        if self.denials.len() < MAX_DENIALS {
            self.denials.push(DenialRecord {
                capability,
                requested,
                reason,
            });
        } else {
            self.denials_dropped += 1;
        }
        HostError::Denied(message)
    }

    /// The one check before `exec` and `target-exec` run anything: no granted password on the
    /// command line (argv is readable by every user of the machine, `/proc/PID/cmdline`,
    /// `ps`; secrets go on stdin), then the manifest's rule for this capability.
    ///
    /// Only granted passwords are compared: the listener knows them, so this refusal tells it
    /// nothing. A value equal to a password it may not read is an argument like any other,
    /// refused or run as the rule says, with the same answer and the same record as any other
    /// argument (the run does not hold that password, see [`RunContext::granted`]).
    fn authorize_program(
        &mut self,
        capability: &'static str,
        program: &str,
        args: &[String],
    ) -> Result<(), HostError> {
        if self.redactor.holds_secret(program) || args.iter().any(|a| self.redactor.holds_secret(a))
        {
            return Err(self.deny(
                capability,
                "[arguments containing a password]".into(),
                "a password may not be passed on a command line; write it to the program's standard input".into(),
            ));
        }
        let allowed = match capability {
            "exec" => self.manifest.exec_allowed(program, args),
            _ => self.manifest.target_exec_allowed(program, args),
        };
        allowed.map_err(|denial| {
            self.deny(
                capability,
                format!("{program} {args:?}"),
                denial.to_string(),
            )
        })
    }

    /// Time left before the run's deadline, for a program the run starts.
    fn remaining(&self) -> std::time::Duration {
        self.deadline
            .saturating_duration_since(std::time::Instant::now())
    }

    /// Bytes of output (logs, program output) one run may keep.
    fn output_cap(&self) -> usize {
        (self.manifest.limits().output_kib as usize) * 1024
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl wasmtime_wasi_http::WasiHttpView for HostState {
    fn http(&mut self) -> wasmtime_wasi_http::WasiHttpCtxView<'_> {
        wasmtime_wasi_http::WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.http_policy,
        }
    }
}

impl bindings::lockstep::listener::types::Host for HostState {}
