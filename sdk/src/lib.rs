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
//! It targets contract `lockstep:listener@0.2.0`; hosts that serve 0.2.0 also run components
//! built with earlier SDKs (0.1.0).

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
    Delivery, Event, HostError, Phase, PostOutcome, PreOutcome, Trigger,
};

/// A password reset listener. Implement the hooks for the phases in your manifest.
pub trait Listener {
    /// Before the password changes: return [`PreOutcome::Veto`] to stop this account's reset.
    fn pre_reset(event: Event) -> PreOutcome {
        let _ = event;
        PreOutcome::Proceed
    }

    /// After the new password is committed: the outcome is recorded, never undone. Answer
    /// [`PostOutcome::Retry`] when another try may work (a receiver down, a timeout): the host
    /// runs the hook again later with the same [`Event::delivery`] id and the next attempt
    /// number, within the manifest's `[delivery]` limits.
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

/// A trigger's name as in the WIT and the API (`manual`, `check-in`, ...).
pub fn trigger_name(t: Trigger) -> &'static str {
    match t {
        Trigger::Manual => "manual",
        Trigger::Bulk => "bulk",
        Trigger::Scheduled => "scheduled",
        Trigger::CheckIn => "check-in",
        Trigger::ReverseSync => "reverse-sync",
        Trigger::Api => "api",
    }
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

/// Outbound HTTP through `wasi:http` (grant: `capabilities.network` with the exact
/// `scheme://host:port`). A request to anything else fails with `HttpRequestDenied`.
#[cfg(target_arch = "wasm32")]
pub mod http {
    use wasi::http::outgoing_handler;
    use wasi::http::types::{ErrorCode, Fields, Method, OutgoingBody, OutgoingRequest, Scheme};
    use wasi::io::streams::StreamError;

    /// A response: status, headers (as received, in order), and the body up to `max_body`
    /// bytes. Redirects are not followed: a listener that follows `location` makes a new
    /// request, which the host checks against the manifest like any other.
    #[derive(Debug, Clone)]
    pub struct Response {
        pub status: u16,
        pub headers: Vec<(String, Vec<u8>)>,
        pub body: Vec<u8>,
    }

    impl Response {
        /// The first value of header `name` (case-insensitive), as text.
        pub fn header(&self, name: &str) -> Option<String> {
            self.headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        }
    }

    /// Why a request failed. `Denied` means the manifest does not grant the destination.
    #[derive(Debug, Clone)]
    pub enum Error {
        BadUrl(String),
        Denied,
        Failed(String),
    }

    impl std::fmt::Display for Error {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            match self {
                Error::BadUrl(u) => write!(f, "not an http(s)://host:port/path URL: {u}"),
                Error::Denied => {
                    f.write_str("denied: the destination is not in capabilities.network")
                }
                Error::Failed(why) => write!(f, "failed: {why}"),
            }
        }
    }

    fn failed(e: ErrorCode) -> Error {
        match e {
            ErrorCode::HttpRequestDenied => Error::Denied,
            other => Error::Failed(format!("{other:?}")),
        }
    }

    /// Sends one request. `url` is `http://host:port/path` or `https://...`; headers are
    /// (name, value) pairs.
    pub fn request(
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        max_body: usize,
    ) -> Result<Response, Error> {
        let bad = || Error::BadUrl(url.to_string());
        let (scheme, rest) = url.split_once("://").ok_or_else(bad)?;
        let scheme = match scheme {
            "http" => Scheme::Http,
            "https" => Scheme::Https,
            _ => return Err(bad()),
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let mut fields: Vec<(String, Vec<u8>)> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect();
        // A known length instead of chunked transfer: what most receivers expect.
        if !body.is_empty()
            && !headers
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        {
            fields.push(("content-length".into(), body.len().to_string().into_bytes()));
        }
        let fields =
            Fields::from_list(&fields).map_err(|e| Error::Failed(format!("bad header: {e:?}")))?;
        let req = OutgoingRequest::new(fields);
        let method = match method {
            "GET" => Method::Get,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "PATCH" => Method::Patch,
            other => Method::Other(other.to_string()),
        };
        req.set_method(&method)
            .map_err(|_| Error::Failed("bad method".into()))?;
        req.set_scheme(Some(&scheme)).map_err(|_| bad())?;
        req.set_authority(Some(authority)).map_err(|_| bad())?;
        req.set_path_with_query(Some(path)).map_err(|_| bad())?;
        let out_body = req
            .body()
            .map_err(|_| Error::Failed("no request body".into()))?;
        let future = outgoing_handler::handle(req, None).map_err(failed)?;
        // A refused request closes the body stream; the response then says why, so a write
        // error is reported only if the response does not explain it.
        let mut write_error = None;
        {
            let stream = out_body
                .write()
                .map_err(|_| Error::Failed("no body stream".into()))?;
            for chunk in body.chunks(4096) {
                if let Err(e) = stream.blocking_write_and_flush(chunk) {
                    write_error = Some(format!("writing the body: {e:?}"));
                    break;
                }
            }
        }
        let _ = OutgoingBody::finish(out_body, None);
        future.subscribe().block();
        let response = match future.get() {
            Some(Ok(Ok(r))) => r,
            Some(Ok(Err(e))) => return Err(failed(e)),
            _ => {
                return Err(Error::Failed(
                    write_error.unwrap_or_else(|| "no response".into()),
                ));
            }
        };
        if let Some(e) = write_error {
            return Err(Error::Failed(e));
        }
        let status = response.status();
        let headers = response.headers().entries();
        let incoming = response
            .consume()
            .map_err(|_| Error::Failed("no response body".into()))?;
        let stream = incoming
            .stream()
            .map_err(|_| Error::Failed("no response stream".into()))?;
        let mut buf = Vec::new();
        loop {
            match stream.blocking_read(64 * 1024) {
                Ok(chunk) => {
                    let room = max_body.saturating_sub(buf.len());
                    buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
                }
                Err(StreamError::Closed) => break,
                Err(e) => return Err(Error::Failed(format!("reading the body: {e:?}"))),
            }
        }
        Ok(Response {
            status,
            headers,
            body: buf,
        })
    }
}
