//! `lockstep-runtime`: where listeners meet the host.
//!
//! Listeners are WebAssembly components that run before or after a password reset. This crate
//! is the wasmtime host that runs them (capability checks, limits, the component cache),
//! shared by the server, the agent and the local test runner: the [`Manifest`], which declares
//! what one listener version may do, and the [`Runtime`], which runs a listener's hooks in a
//! fresh wasmtime store with exactly that, and reports what happened as an [`Invocation`].
//! An approver approves exactly that manifest (by its [`Manifest::digest`]) together with the
//! component, and the host grants nothing the manifest does not list.

pub mod cache;
pub mod engine;
pub mod error;
pub mod host;
pub mod limits;
pub mod listener;
pub mod manifest;
pub mod report;
pub mod signature;

pub use host::{ProgramOutput, RunContext, TargetExec};
pub use listener::{
    Contract, Delivery, LoadedListener, ResetEvent, Runtime, Trigger, allowed_imports,
};
pub use report::{DenialRecord, HookOutcome, Invocation, LogLevel, LogLine, RunFailure};

pub use error::{Error, Problem};
pub use manifest::{
    Capabilities, DeliveryLimits, Denial, Endpoint, ExecRule, Limits, Manifest, Mode, Parameter,
    Phase, Scheme, Secret,
};
