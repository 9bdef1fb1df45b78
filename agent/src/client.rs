//! The agent's only connection: HTTPS to the server, accepting exactly the pinned certificate,
//! every request signed with the agent's key (see `lockstep_agent_protocol::auth`).

use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Accepts the server's certificate only if its SHA-256 is the pinned one. The pin replaces
/// the CA check (the server's certificate is self-signed); signatures are still verified.
#[derive(Debug)]
struct PinnedCertificate {
    pin: [u8; 32],
    provider: Arc<CryptoProvider>,
}

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
            "the server's certificate has fingerprint {} but {} is pinned; this is not the \
             server you enrolled with (or its certificate changed: enroll again)",
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
        if got == self.pin {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::Other(rustls::OtherError(Arc::new(PinMismatch {
                    expected: hex::encode(self.pin),
                    got: hex::encode(got),
                }))),
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

/// The error chain of a failed request in one line (reqwest hides the TLS cause otherwise);
/// a refused certificate is said plainly.
fn describe(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let tls = s
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .or_else(|| s.downcast_ref::<rustls::Error>());
        if let Some(rustls::Error::InvalidCertificate(rustls::CertificateError::Other(o))) = tls {
            return o.0.to_string();
        }
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// A connection to one server.
pub struct Client {
    http: reqwest::Client,
    base: String,
    agent_id: Option<String>,
    key: SigningKey,
}

impl Client {
    pub fn new(
        base: &str,
        pin: [u8; 32],
        agent_id: Option<String>,
        key: SigningKey,
    ) -> Result<Client> {
        if !base.starts_with("https://") {
            return Err(Error::Config(format!(
                "the server URL must start with https:// (got '{base}'): the agent talks only TLS"
            )));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Config(format!("TLS setup: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedCertificate { pin, provider }))
            .with_no_client_auth();
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("lockstep-agent/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Transport(describe(&e)))?;
        Ok(Client {
            http,
            base: base.trim_end_matches('/').to_string(),
            agent_id,
            key,
        })
    }

    /// A request, signed when the agent is enrolled.
    fn signed_request(
        &self,
        method: reqwest::Method,
        path_and_query: &str,
        body: &[u8],
        timeout: Duration,
    ) -> Result<reqwest::RequestBuilder> {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path_and_query}", self.base))
            .timeout(timeout);
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
                    method.as_str(),
                    path_and_query,
                    now,
                    &hex::encode(nonce),
                    body,
                ),
            );
        }
        Ok(req)
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
            Some(b) => serde_json::to_vec(b).map_err(|e| Error::Transport(e.to_string()))?,
            None => Vec::new(),
        };
        let mut req = self.signed_request(method, path_and_query, &bytes, timeout)?;
        if body.is_some() {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(bytes);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| Error::Transport(describe(&e)))?;
        let status = resp.status();
        if status == reqwest::StatusCode::NO_CONTENT {
            return Ok(None);
        }
        let text = resp
            .text()
            .await
            .map_err(|e| Error::Transport(describe(&e)))?;
        if !status.is_success() {
            let detail = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v.get("detail").and_then(|d| d.as_str()).map(str::to_string))
                .unwrap_or(text);
            return Err(Error::Refused {
                status: status.as_u16(),
                detail,
            });
        }
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| Error::Transport(format!("the server's answer is not understood: {e}")))
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
        let resp = self
            .signed_request(reqwest::Method::GET, path, &[], Duration::from_secs(120))?
            .send()
            .await
            .map_err(|e| Error::Transport(describe(&e)))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(Error::Refused {
                status: status.as_u16(),
                detail: resp.text().await.unwrap_or_default(),
            });
        }
        Ok(resp
            .bytes()
            .await
            .map_err(|e| Error::Transport(describe(&e)))?
            .to_vec())
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
