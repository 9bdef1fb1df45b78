//! Outbound network: `wasi:http` requests and `wasi:sockets` TCP connections, each checked
//! against `capabilities.network` on the parsed destination (the request URI's scheme, host
//! and port; the socket address), never on a header. DNS is not offered to guests: TCP grants
//! name IP addresses, and HTTP names are resolved by the host only for granted destinations.
//! Redirects are not followed by the host; a guest that follows one makes a new request,
//! which is checked again.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use wasmtime_wasi_http::{RequestOptions, WasiBody, WasiHttpHooks};

use crate::manifest::{Endpoint, Scheme};
use crate::report::DenialRecord;

/// Denials found by the network checks, which run outside `HostState`'s borrow.
pub type SharedDenials = Arc<Mutex<Vec<DenialRecord>>>;

/// Most connection attempts and HTTP requests one run may make: each holds a file descriptor
/// of the server while it lasts.
pub const MAX_CONNECTIONS_PER_RUN: usize = 32;

fn record(denials: &SharedDenials, requested: String, reason: &str) {
    if let Ok(mut d) = denials.lock()
        && d.len() <= crate::report::MAX_DENIALS
    {
        let requested = crate::report::truncate(
            crate::report::sanitize(&requested, false),
            crate::report::MAX_DENIAL_TEXT,
        );
        d.push(DenialRecord {
            capability: "network",
            requested,
            reason: reason.to_string(),
        });
    }
}

/// Counts a run's connections; refuses once the run has used its share.
#[derive(Debug, Default, Clone)]
pub struct ConnectionBudget(Arc<std::sync::atomic::AtomicUsize>);

impl ConnectionBudget {
    fn take(&self) -> bool {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < MAX_CONNECTIONS_PER_RUN
    }
}

/// The `wasi:http` hooks: checks each outgoing request, then hands it to wasmtime's sender.
pub struct HttpPolicy {
    pub endpoints: Arc<[Endpoint]>,
    pub denials: SharedDenials,
    pub budget: ConnectionBudget,
}

type IoFuture = Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>;

impl WasiHttpHooks for HttpPolicy {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: IoFuture,
    ) -> Box<
        dyn Future<Output = wasmtime_wasi_http::Result<(http::Response<WasiBody>, IoFuture)>>
            + Send,
    > {
        let uri = request.uri();
        let scheme = match uri.scheme_str() {
            Some("http") => Some(Scheme::Http),
            Some("https") => Some(Scheme::Https),
            _ => None,
        };
        let host = uri.host().map(|h| {
            h.trim_start_matches('[')
                .trim_end_matches(']')
                .to_ascii_lowercase()
        });
        let port = uri.port_u16().or(match scheme {
            Some(Scheme::Http) => Some(80),
            Some(Scheme::Https) => Some(443),
            _ => None,
        });
        let allowed = match (scheme, &host, port) {
            (Some(s), Some(h), Some(p)) => self
                .endpoints
                .iter()
                .any(|e| e.scheme == s && e.host == *h && e.port == p),
            _ => false,
        };
        if !allowed {
            let requested = format!(
                "{} {}://{}:{}",
                request.method(),
                uri.scheme_str().unwrap_or("?"),
                host.as_deref().unwrap_or("?"),
                port.map(|p| p.to_string()).unwrap_or_else(|| "?".into())
            );
            record(
                &self.denials,
                requested,
                "the destination is not in capabilities.network",
            );
            return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
        }
        if !self.budget.take() {
            record(
                &self.denials,
                format!("{} {uri}", request.method()),
                "more than 32 connections in one run",
            );
            return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
        }
        wasmtime_wasi_http::default_hooks().send_request(request, options, fut)
    }
}

/// The `wasi:sockets` check: a TCP connection only to a granted `tcp://IP:PORT`.
pub fn socket_check(
    endpoints: Arc<[Endpoint]>,
    denials: SharedDenials,
    budget: ConnectionBudget,
) -> impl Fn(
    SocketAddr,
    wasmtime_wasi::sockets::SocketAddrUse,
) -> Pin<Box<dyn Future<Output = bool> + Send + Sync>>
+ Send
+ Sync
+ 'static {
    move |addr, usage| {
        use wasmtime_wasi::sockets::SocketAddrUse;
        let granted = |addr: SocketAddr| {
            endpoints.iter().any(|e| {
                e.scheme == Scheme::Tcp
                    && e.port == addr.port()
                    && e.host.parse::<std::net::IpAddr>().ok() == Some(addr.ip())
            })
        };
        let allowed = match usage {
            SocketAddrUse::TcpConnect => granted(addr) && budget.take(),
            // The implicit bind before a connect asks for the wildcard address and port 0;
            // the connect itself is checked next. Explicit binds and listening are refused.
            SocketAddrUse::TcpBind => {
                addr.ip().is_unspecified()
                    && addr.port() == 0
                    && endpoints.iter().any(|e| e.scheme == Scheme::Tcp)
            }
            _ => false,
        };
        if !allowed {
            record(
                &denials,
                format!("{usage:?} {addr}"),
                "the address is not a tcp:// grant in capabilities.network",
            );
        }
        Box::pin(async move { allowed })
    }
}
