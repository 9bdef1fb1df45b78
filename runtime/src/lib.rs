//! `lockstep-runtime`: where listeners meet the host.
//!
//! Listeners are WebAssembly components that run before or after a password reset. This crate
//! will hold the wasmtime host that runs them (capability checks, limits, the component cache),
//! shared by the server, the agent and the local test runner. Today it holds the piece every
//! later part depends on: the [`Manifest`], which declares what one listener version may do.
//! An approver approves exactly that manifest (by its [`Manifest::digest`]) together with the
//! component, and the host grants nothing the manifest does not list.

pub mod error;
pub mod manifest;

pub use error::{Error, Problem};
pub use manifest::{
    Capabilities, Denial, Endpoint, ExecRule, Limits, Manifest, Mode, Parameter, Phase, Scheme,
    Secret,
};
