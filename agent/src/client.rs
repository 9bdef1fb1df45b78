//! The agent's only connection: HTTPS to the server's nodes, each accepting exactly its own
//! pinned certificate, every request signed with the agent's key (see
//! `lockstep_agent_protocol::auth`; a signature covers method, path, time, nonce and body, not
//! the host, and the nodes share one database, so it verifies on any node). A request goes to
//! the node in use; when that node cannot be reached (or its certificate is not its pin), the
//! same request is tried on the next node of the list, round once; only when every node failed
//! does the caller see the error (and back off before the next round).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ed25519_dalek::SigningKey;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use crate::config::ServerNode;
use crate::error::{Error, Result, status_fails_over};

/// Accepts the server's certificate only if its SHA-256 is the pinned one. The pin replaces
/// the CA check (the server's certificate is self-signed); signatures are still verified.
#[derive(Debug)]
struct PinnedCertificate {
    pin: [u8; 32],
    provider: Arc<CryptoProvider>,
    /// Why the last certificate this node showed was refused, if it was (read when a request
    /// fails: the TLS cause does not survive the HTTP client's error chain in a form that can
    /// be told apart).
    refused: Refusal,
}

/// The pin refusal of one node's last handshake.
type Refusal = Arc<std::sync::Mutex<Option<String>>>;

/// Why a certificate was refused, shown to the person running the agent (rustls prints it
/// with `Debug`, so both say the same).
struct PinMismatch {
    expected: String,
    got: String,
}

impl std::fmt::Display for PinMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the server's certificate has fingerprint {} but {} is pinned for this URL; this is \
             not the server you pinned (or its certificate changed: enroll again, or fix its \
             [[servers]] entry in agent.toml)",
            self.got, self.expected
        )
    }
}

impl std::fmt::Debug for PinMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for PinMismatch {}

impl ServerCertVerifier for PinnedCertificate {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let got: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
        let mut refused = self.refused.lock().unwrap_or_else(|p| p.into_inner());
        if got == self.pin {
            *refused = None;
            Ok(ServerCertVerified::assertion())
        } else {
            let why = PinMismatch {
                expected: hex::encode(self.pin),
                got: hex::encode(got),
            };
            *refused = Some(why.to_string());
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::Other(rustls::OtherError(Arc::new(why))),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The error chain of a failed request in one line (reqwest hides the TLS cause otherwise),
/// and whether the node's certificate was refused (said plainly then).
fn describe(e: &reqwest::Error) -> (String, bool) {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let tls = s
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .or_else(|| s.downcast_ref::<rustls::Error>());
        if let Some(rustls::Error::InvalidCertificate(rustls::CertificateError::Other(o))) = tls {
            return (o.0.to_string(), true);
        }
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    (text, false)
}

/// The order in which one request tries `len` nodes: the node in use first, then round the
/// list once.
pub fn attempt_order(in_use: usize, len: usize) -> impl Iterator<Item = usize> {
    (0..len).map(move |k| (in_use + k) % len)
}

/// One server node: its base URL and an HTTPS client that accepts only its pinned certificate.
struct Node {
    http: reqwest::Client,
    base: String,
    /// Set while the node shows a certificate other than its pin.
    refused: Refusal,
}

impl Node {
    fn new(node: &ServerNode) -> Result<Node> {
        let pin = node.pin()?;
        if !node.url.starts_with("https://") {
            return Err(Error::Config(format!(
                "the server URL must start with https:// (got '{}'): the agent talks only TLS",
                node.url
            )));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let refused = Refusal::default();
        let tls = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Config(format!("TLS setup: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedCertificate {
                pin,
                provider,
                refused: refused.clone(),
            }))
            .with_no_client_auth();
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .connect_timeout(Duration::from_secs(10))
            // Only this node, only over TLS: a redirect could take a signed request elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .https_only(true)
            .user_agent(concat!("lockstep-agent/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Config(format!("HTTP client setup: {}", describe(&e).0)))?;
        Ok(Node {
            http,
            base: node.url.trim_end_matches('/').to_string(),
            refused,
        })
    }

    /// A request that got no answer from this node.
    fn failure(&self, e: &reqwest::Error) -> Error {
        let node = self.base.clone();
        let refused = self
            .refused
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        match (describe(e), refused) {
            ((problem, true), _) | (_, Some(problem)) => Error::Certificate { node, problem },
            ((problem, false), None) => Error::Unreachable { node, problem },
        }
    }
}

/// What one request sends; built again (signed afresh, with a new nonce) for each node tried.
struct Request<'a> {
    method: reqwest::Method,
    path_and_query: &'a str,
    body: Option<&'a [u8]>,
    timeout: Duration,
}

/// The connection to the server: its nodes, the one in use, and the agent's key.
pub struct Client {
    nodes: Vec<Node>,
    /// The node requests go to first: the last one that answered.
    in_use: AtomicUsize,
    /// The node last logged as in use (`usize::MAX`: none yet).
    announced: AtomicUsize,
    agent_id: Option<String>,
    key: SigningKey,
}

impl Client {
    /// A client of `nodes` (at least one), in that order.
    pub fn new(nodes: &[ServerNode], agent_id: Option<String>, key: SigningKey) -> Result<Client> {
        if nodes.is_empty() {
            return Err(Error::Config(
                "no server node to talk to; enroll with --server and --fingerprint".into(),
            ));
        }
        Ok(Client {
            nodes: nodes.iter().map(Node::new).collect::<Result<_>>()?,
            in_use: AtomicUsize::new(0),
            announced: AtomicUsize::new(usize::MAX),
            agent_id,
            key,
        })
    }

    /// The URL of the node in use.
    pub fn server(&self) -> &str {
        &self.nodes[self.in_use.load(Ordering::Relaxed) % self.nodes.len()].base
    }

    /// The request for one node, signed when the agent is enrolled.
    fn build(&self, node: &Node, r: &Request<'_>) -> Result<reqwest::RequestBuilder> {
        let mut req = node
            .http
            .request(
                r.method.clone(),
                format!("{}{}", node.base, r.path_and_query),
            )
            .timeout(r.timeout);
        let body = r.body.unwrap_or_default();
        if let Some(id) = &self.agent_id {
            let mut nonce = [0u8; 12];
            getrandom::fill(&mut nonce)
                .map_err(|e| Error::Transport(format!("no randomness: {e}")))?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0);
            req = req.header(
                reqwest::header::AUTHORIZATION,
                lockstep_agent_protocol::auth::authorization(
                    id,
                    &self.key,
                    r.method.as_str(),
                    r.path_and_query,
                    now,
                    &hex::encode(nonce),
                    body,
                ),
            );
        }
        if r.body.is_some() {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_vec());
        }
        Ok(req)
    }

    /// Sends `r` to the node in use and, while nodes cannot be reached, to the next ones in
    /// turn; returns the first answer and its node's URL, or the last node's error.
    async fn send(&self, r: &Request<'_>) -> Result<(reqwest::Response, &Node)> {
        let len = self.nodes.len();
        let mut last = None;
        for (k, i) in attempt_order(self.in_use.load(Ordering::Relaxed), len).enumerate() {
            let node = &self.nodes[i];
            let answer = match self.build(node, r)?.send().await {
                Ok(resp) if status_fails_over(resp.status().as_u16()) => {
                    let status = resp.status().as_u16();
                    let text = resp.text().await.unwrap_or_default();
                    Err(refusal(
                        status,
                        &format!("{}: {}", node.base, problem_detail(text)),
                    ))
                }
                Ok(resp) => Ok(resp),
                Err(e) => Err(node.failure(&e)),
            };
            match answer {
                Ok(resp) => {
                    // Only a node that served the request becomes the node in use: one that
                    // answers with a refusal about the request is left as it was.
                    if resp.status().is_success() {
                        self.in_use.store(i, Ordering::Relaxed);
                        if self.announced.swap(i, Ordering::Relaxed) != i {
                            tracing::info!(node = %node.base, of = len, "using server node {}", node.base);
                        }
                    }
                    return Ok((resp, node));
                }
                Err(e) if !e.fails_over() => return Err(e),
                Err(e) => {
                    // The last node of the round fails to the caller, which backs off.
                    if k + 1 < len {
                        let next = &self.nodes[(i + 1) % len].base;
                        match e {
                            Error::Certificate { .. } => {
                                tracing::error!(error = %e, next = %next, "server node refused: not its pinned certificate; trying the next node")
                            }
                            Error::Refused { .. } => {
                                tracing::warn!(error = %e, next = %next, "server node cannot serve this agent now; trying the next node")
                            }
                            _ => {
                                tracing::warn!(error = %e, next = %next, "server node unreachable; trying the next node")
                            }
                        }
                    }
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| Error::Transport("no server node".into())))
    }

    /// One request: signed when the agent is enrolled; `None` for 204.
    async fn call<B: Serialize, R: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path_and_query: &str,
        body: Option<&B>,
        timeout: Duration,
    ) -> Result<Option<R>> {
        let bytes = match body {
            Some(b) => Some(serde_json::to_vec(b).map_err(|e| Error::Transport(e.to_string()))?),
            None => None,
        };
        let (resp, node) = self
            .send(&Request {
                method,
                path_and_query,
                body: bytes.as_deref(),
                timeout,
            })
            .await?;
        let status = resp.status();
        if status == reqwest::StatusCode::NO_CONTENT {
            return Ok(None);
        }
        let text = resp.text().await.map_err(|e| node.failure(&e))?;
        if !status.is_success() {
            return Err(refusal(status.as_u16(), &problem_detail(text)));
        }
        serde_json::from_str(&text).map(Some).map_err(|e| {
            Error::Transport(format!(
                "{}: the server's answer is not understood: {e}",
                node.base
            ))
        })
    }

    pub async fn post<B: Serialize, R: DeserializeOwned>(&self, path: &str, body: &B) -> Result<R> {
        self.call(
            reqwest::Method::POST,
            path,
            Some(body),
            Duration::from_secs(30),
        )
        .await?
        .ok_or_else(|| Error::Transport(format!("{path} answered with no body")))
    }

    /// A signed GET of raw bytes (a listener component).
    pub async fn get_bytes(&self, path: &str) -> Result<Vec<u8>> {
        let (resp, node) = self
            .send(&Request {
                method: reqwest::Method::GET,
                path_and_query: path,
                body: None,
                timeout: Duration::from_secs(120),
            })
            .await?;
        let status = resp.status();
        if !status.is_success() {
            return Err(Error::Refused {
                status: status.as_u16(),
                detail: resp.text().await.unwrap_or_default(),
            });
        }
        Ok(resp.bytes().await.map_err(|e| node.failure(&e))?.to_vec())
    }

    /// A GET that may hold for `hold` (the long-poll).
    pub async fn get_held<R: DeserializeOwned>(
        &self,
        path: &str,
        hold: Duration,
    ) -> Result<Option<R>> {
        self.call::<(), R>(
            reqwest::Method::GET,
            path,
            None,
            hold + Duration::from_secs(15),
        )
        .await
    }
}

/// The `detail` of a problem document, else the whole answer.
fn problem_detail(text: String) -> String {
    serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v.get("detail").and_then(|d| d.as_str()).map(str::to_string))
        .unwrap_or(text)
}

fn refusal(status: u16, detail: &str) -> Error {
    Error::Refused {
        status,
        detail: detail.to_string(),
    }
}

/// Whether `node` answers TLS with its pinned certificate (any HTTP answer to an unsigned
/// `GET /healthz` will do). `Err(Certificate)` when it shows another certificate,
/// `Err(Unreachable)` when it cannot be reached.
pub async fn check_pin(node: &ServerNode) -> Result<()> {
    let n = Node::new(node)?;
    n.http
        .get(format!("{}/healthz", n.base))
        .timeout(Duration::from_secs(15))
        .send()
        .await
        .map(drop)
        .map_err(|e| n.failure(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_go_round_the_list_once_from_the_node_in_use() {
        let order = |in_use, len| attempt_order(in_use, len).collect::<Vec<_>>();
        assert_eq!(order(0, 1), [0]);
        assert_eq!(order(0, 3), [0, 1, 2]);
        assert_eq!(order(1, 3), [1, 2, 0]);
        assert_eq!(order(2, 3), [2, 0, 1]);
    }

    #[test]
    fn only_what_another_node_may_answer_differently_sends_the_request_on() {
        let node = || "https://a:1".to_string();
        let on = |e: Error| e.fails_over();
        assert!(on(Error::Unreachable {
            node: node(),
            problem: "connection refused".into()
        }));
        assert!(on(Error::Certificate {
            node: node(),
            problem: "fingerprint differs".into()
        }));
        // A node that cannot serve (its database gone, a proxy before a dead node), or that
        // refuses the agent (its clock off, another source address, another deployment).
        for status in [401, 403, 500, 502, 503, 504] {
            assert!(on(Error::Refused {
                status,
                detail: String::new()
            }));
            assert!(status_fails_over(status));
        }
        // About the request itself: every node of one database answers it alike.
        for status in [400, 404, 409, 413, 422] {
            assert!(!on(Error::Refused {
                status,
                detail: String::new()
            }));
            assert!(!status_fails_over(status));
        }
        assert!(!on(Error::Transport("not understood".into())));
    }

    #[tokio::test]
    async fn a_dead_node_is_passed_over_and_each_node_keeps_its_own_pin() {
        // Two ports nothing listens on: every node fails, each with its own URL named.
        let dead = || {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let port = l.local_addr().unwrap().port();
            drop(l);
            format!("https://127.0.0.1:{port}")
        };
        let nodes = [
            ServerNode::new(&dead(), &"aa".repeat(32)).unwrap(),
            ServerNode::new(&dead(), &"bb".repeat(32)).unwrap(),
        ];
        let key = SigningKey::from_bytes(&[7; 32]);
        let client = Client::new(&nodes, Some("agt_1".into()), key).unwrap();
        let e = client
            .get_held::<serde_json::Value>("/v1/agent/tasks/next", Duration::from_secs(1))
            .await
            .expect_err("nobody listens");
        // The error is the last node's: both were tried, in order.
        assert!(
            matches!(&e, Error::Unreachable { node, .. } if *node == nodes[1].url),
            "{e}"
        );
        assert!(e.fails_over());
        assert_eq!(
            client.server(),
            nodes[0].url,
            "no node answered: the first stays in use"
        );
        assert!(matches!(
            check_pin(&nodes[0]).await,
            Err(Error::Unreachable { .. })
        ));
    }
}
