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

use wasmtime_wasi::p2::TcpSocket;
use wasmtime_wasi::p2::bindings::sockets::network::{ErrorCode, IpAddressFamily};
use wasmtime_wasi::p2::bindings::sockets::tcp_create_socket::Host as _;
use wasmtime_wasi_http::{RequestOptions, WasiBody, WasiHttpHooks};

use crate::limits::MAX_SOCKETS_PER_RUN;

use crate::limits::{MAX_CONNECTIONS_PER_RUN, MAX_DENIAL_TEXT, MAX_DENIALS};
use crate::manifest::{Endpoint, Scheme};
use crate::report::{DenialRecord, Redactor};

/// Denials found by the network checks, which run outside `HostState`'s borrow.
pub type SharedDenials = Arc<Mutex<Vec<DenialRecord>>>;

/// Records a refusal: `requested` has the run's granted secrets redacted from the whole text
/// before it is escaped and cut (see [`Redactor::clean`]).
fn record(denials: &SharedDenials, redactor: &Redactor, requested: String, reason: &str) {
    if let Ok(mut d) = denials.lock()
        && d.len() <= MAX_DENIALS
    {
        d.push(DenialRecord {
            capability: "network",
            requested: redactor.clean(requested, false, MAX_DENIAL_TEXT),
            reason: redactor.clean(reason.to_string(), false, MAX_DENIAL_TEXT),
        });
    }
}

/// What a denial records of a request: its method if it is a standard one (any other is the
/// guest's own text, recorded as `non-standard method`), its scheme (`http`, `https`, else
/// `non-standard scheme`), host, port and path (percent-decoded, so a password in it is
/// redacted however it was encoded). Never the query, a header or the body, which is where a
/// listener puts what it sends.
fn describe_request(method: &http::Method, uri: &http::Uri, host: Option<&str>) -> String {
    let method = match method.as_str() {
        m @ ("GET" | "HEAD" | "POST" | "PUT" | "DELETE" | "CONNECT" | "OPTIONS" | "TRACE"
        | "PATCH") => m,
        _ => "non-standard method",
    };
    let scheme = match uri.scheme_str() {
        Some(s @ ("http" | "https")) => s,
        Some(_) => "non-standard scheme",
        None => "?",
    };
    let port = uri
        .port_u16()
        .map(|p| p.to_string())
        .or_else(|| match scheme {
            "http" => Some("80".into()),
            "https" => Some("443".into()),
            _ => None,
        })
        .unwrap_or_else(|| "?".into());
    format!(
        "{method} {scheme}://{}:{port}{}",
        host.unwrap_or("?"),
        percent_decode(uri.path())
    )
}

/// `%XX` sequences decoded (as UTF-8, invalid sequences replaced); anything else kept.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).and_then(|&c| hex(c)),
            b.get(i + 2).and_then(|&c| hex(c)),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Counts a run's connections; refuses once the run has used its share.
#[derive(Debug, Default, Clone)]
pub struct ConnectionBudget(Arc<std::sync::atomic::AtomicUsize>);

impl ConnectionBudget {
    fn take(&self) -> bool {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < MAX_CONNECTIONS_PER_RUN
    }
}

/// The `wasi:sockets` interface whose `create-tcp-socket` is replaced by [`create_tcp_socket`]
/// (the version wasmtime-wasi defines; guests importing an older 0.2 version are matched to it).
pub const TCP_CREATE_SOCKET: &str = "wasi:sockets/tcp-create-socket@0.2.12";

/// `create-tcp-socket`, counted: past [`MAX_SOCKETS_PER_RUN`] sockets in one run it fails with
/// `new-socket-limit` and records a denial; otherwise it is wasi's own.
pub fn create_tcp_socket(
    mut store: wasmtime::StoreContextMut<'_, crate::host::HostState>,
    (family,): (IpAddressFamily,),
) -> wasmtime::Result<(Result<wasmtime::component::Resource<TcpSocket>, ErrorCode>,)> {
    let state = store.data_mut();
    if state.sockets_created >= MAX_SOCKETS_PER_RUN {
        record(
            &state.network_denials,
            &state.redactor,
            "create-tcp-socket".into(),
            &format!(
                "more than {MAX_SOCKETS_PER_RUN} sockets in one run; reuse a connection or close sockets you no longer need"
            ),
        );
        return Ok((Err(ErrorCode::NewSocketLimit),));
    }
    state.sockets_created += 1;
    match wasmtime_wasi::sockets::WasiSocketsView::sockets(state).create_tcp_socket(family) {
        Ok(socket) => Ok((Ok(socket),)),
        Err(e) => Ok((Err(e.downcast()?),)),
    }
}

/// The `wasi:sockets` interface whose `[method]tcp-socket.start-listen` is replaced by
/// [`start_listen`].
pub const TCP: &str = "wasi:sockets/tcp@0.2.12";

/// `start-listen`, refused: a listener reaches out to granted destinations and never serves.
/// wasi's own would open a port on every interface of the server (a socket bound to the
/// wildcard address, which the implicit bind before a connect has to allow), and every
/// connection it accepted would be a descriptor outside the run's socket cap. Refused with
/// `access-denied` and a denial record.
pub fn start_listen(
    mut store: wasmtime::StoreContextMut<'_, crate::host::HostState>,
    (_socket,): (wasmtime::component::Resource<TcpSocket>,),
) -> wasmtime::Result<(Result<(), ErrorCode>,)> {
    let state = store.data_mut();
    record(
        &state.network_denials,
        &state.redactor,
        "tcp listen".into(),
        "a listener may not accept connections; capabilities.network grants outbound destinations only",
    );
    Ok((Err(ErrorCode::AccessDenied),))
}

/// The `wasi:http` hooks: checks each outgoing request, then hands it to wasmtime's sender.
pub struct HttpPolicy {
    pub endpoints: Arc<[Endpoint]>,
    pub denials: SharedDenials,
    pub budget: ConnectionBudget,
    /// The run's granted secrets, redacted from every denial record.
    pub redactor: Redactor,
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
            record(
                &self.denials,
                &self.redactor,
                describe_request(request.method(), uri, host.as_deref()),
                "the destination is not in capabilities.network",
            );
            return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
        }
        if !self.budget.take() {
            record(
                &self.denials,
                &self.redactor,
                describe_request(request.method(), uri, host.as_deref()),
                &format!("more than {MAX_CONNECTIONS_PER_RUN} connections in one run"),
            );
            return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
        }
        wasmtime_wasi_http::default_hooks().send_request(request, options, fut)
    }

    /// A body written but not yet sent holds at most two chunks of host memory (issue 16).
    fn p2_outgoing_body_buffer_chunks(&mut self) -> usize {
        crate::limits::HTTP_BODY_BUFFERED_CHUNKS
    }

    fn p2_outgoing_body_chunk_size(&mut self) -> usize {
        crate::limits::HTTP_BODY_CHUNK_BYTES
    }
}

/// The `wasi:sockets` check: a TCP connection only to a granted `tcp://IP:PORT`.
pub fn socket_check(
    endpoints: Arc<[Endpoint]>,
    denials: SharedDenials,
    budget: ConnectionBudget,
    redactor: Redactor,
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
                &redactor,
                format!("{usage:?} {addr}"),
                "the address is not a tcp:// grant in capabilities.network",
            );
        }
        Box::pin(async move { allowed })
    }
}
