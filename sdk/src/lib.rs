//! `lockstep-sdk`: the guest side of the Lockstep listener contract (`wit/listener.wit`).
//!
//! A listener is a type that implements [`Listener`] (one method per hook, each with a
//! harmless default) and is exported once with [`export_listener!`]. Host calls are plain
//! functions in [`props`], [`secrets`], [`exec`], [`target_exec`] and [`log`]; each returns a
//! [`HostError::Denied`] when the listener's manifest does not grant it, so a listener can
//! report that instead of crashing.
//!
//! ```ignore
//! use lockstep_sdk::{Event, Listener, PostOutcome, export_listener, exec, log};
//!
//! struct Restart;
//!
//! impl Listener for Restart {
//!     fn post_reset(event: Event) -> PostOutcome {
//!         let unit = event.parameters.first().cloned().unwrap_or_default();
//!         match exec::run("/usr/bin/systemctl", &["restart", &unit]) {
//!             Ok(out) if out.status == 0 => PostOutcome::Success(format!("restarted {unit}")),
//!             Ok(out) => PostOutcome::Failure(format!("systemctl exited {}", out.status)),
//!             Err(e) => PostOutcome::Failure(lockstep_sdk::describe(&e)),
//!         }
//!     }
//! }
//!
//! export_listener!(Restart);
//! ```
//!
//! Build with `cargo build --target wasm32-wasip2 --release`; the `.wasm` file is the component.

/// The bindings generated from `wit/listener.wit`. Most listeners need only the re-exports
/// at the crate root.
#[allow(clippy::too_many_arguments)] // generated canonical-ABI glue
pub mod bindings {
    wit_bindgen::generate!({
        world: "listener",
        path: "../wit",
        pub_export_macro: true,
        export_macro_name: "export_listener_bindings",
        default_bindings_module: "lockstep_sdk::bindings",
    });
}

pub use bindings::lockstep::listener::exec::Output;
pub use bindings::lockstep::listener::types::{
    Event, HostError, Phase, PostOutcome, PreOutcome, Trigger,
};

/// A password reset listener. Implement the hooks for the phases in your manifest.
pub trait Listener {
    /// Before the password changes: return [`PreOutcome::Veto`] to stop this account's reset.
    fn pre_reset(event: Event) -> PreOutcome {
        let _ = event;
        PreOutcome::Proceed
    }

    /// After the new password is committed: the outcome is recorded, never undone.
    fn post_reset(event: Event) -> PostOutcome {
        let _ = event;
        PostOutcome::Success(String::new())
    }
}

/// The adapter between [`Listener`] and the generated export trait.
#[doc(hidden)]
pub struct Adapter<L>(std::marker::PhantomData<L>);

impl<L: Listener> bindings::Guest for Adapter<L> {
    fn pre_reset(event: Event) -> PreOutcome {
        L::pre_reset(event)
    }

    fn post_reset(event: Event) -> PostOutcome {
        L::post_reset(event)
    }
}

/// Exports a [`Listener`] as the component's hooks. Use it once, at the crate root.
#[macro_export]
macro_rules! export_listener {
    ($listener:ty) => {
        // The generated macro takes a plain identifier.
        type __LockstepListenerAdapter = $crate::Adapter<$listener>;
        $crate::bindings::export_listener_bindings!(__LockstepListenerAdapter with_types_in $crate::bindings);
    };
}

/// A host error as one line of text.
pub fn describe(e: &HostError) -> String {
    match e {
        HostError::Denied(why) => format!("denied: {why}"),
        HostError::Failed(why) => format!("failed: {why}"),
    }
}

/// Resource and account properties (grant: `capabilities.props`).
pub mod props {
    use super::{HostError, bindings::lockstep::listener::props as host};

    /// A resource property such as `IPADDRESS`; `None` when the resource has no value.
    pub fn resource(key: &str) -> Result<Option<String>, HostError> {
        host::resource_property(key)
    }

    /// An account property such as `LOGINNAME`; `None` when the account has no value.
    pub fn account(key: &str) -> Result<Option<String>, HostError> {
        host::account_property(key)
    }
}

/// The account's passwords (grant: `capabilities.secrets`).
pub mod secrets {
    use super::{HostError, bindings::lockstep::listener::secrets as host};

    pub fn old_password() -> Result<String, HostError> {
        host::old_password()
    }

    pub fn new_password() -> Result<String, HostError> {
        host::new_password()
    }
}

/// Programs where the listener runs (grant: `capabilities.exec`).
pub mod exec {
    use super::{HostError, Output, bindings::lockstep::listener::exec as host};

    /// Runs `program` (an absolute path) with `args`, no shell, cleared environment, empty
    /// standard input.
    pub fn run(program: &str, args: &[&str]) -> Result<Output, HostError> {
        run_with_stdin(program, args, &[])
    }

    /// Like [`run`], writing `stdin` to the program's standard input: the way to hand it a
    /// secret (never put one in `args`).
    pub fn run_with_stdin(program: &str, args: &[&str], stdin: &[u8]) -> Result<Output, HostError> {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        host::run(program, &args, stdin)
    }
}

/// Commands on the reset target (grant: `capabilities.target_exec`).
pub mod target_exec {
    use super::{HostError, Output, bindings::lockstep::listener::target_exec as host};

    pub fn run(program: &str, args: &[&str]) -> Result<Output, HostError> {
        run_with_stdin(program, args, &[])
    }

    pub fn run_with_stdin(program: &str, args: &[&str], stdin: &[u8]) -> Result<Output, HostError> {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        host::run(program, &args, stdin)
    }
}

/// Log lines kept with the reset job.
pub mod log {
    use super::bindings::lockstep::listener::log::{Level, write};

    pub fn debug(message: &str) {
        write(Level::Debug, message)
    }

    pub fn info(message: &str) {
        write(Level::Info, message)
    }

    pub fn warn(message: &str) {
        write(Level::Warn, message)
    }

    pub fn error(message: &str) {
        write(Level::Error, message)
    }
}
