//! TLS to a target, trusted the way SSH host keys are: the leaf certificate's fingerprint is
//! recorded at first use and must match from then on. Targets (database servers, directory
//! servers) mostly carry certificates of a private CA or self-signed ones, which a web-PKI
//! check would refuse, and which a pin checks better than a CA would: a certificate the
//! target's own CA issued to an impostor does not match.
//!
//! The handshake's signatures are still verified against the presented certificate (rustls'
//! own algorithms), so a peer that replays the pinned certificate without its key fails.

use std::sync::{Arc, Mutex};

use base64::Engine as _;
use rustls::DigitallySignedStruct;
use rustls::SignatureScheme;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use sha2::{Digest, Sha256};

use super::TargetFailure;

/// The `SHA256:…` fingerprint of a certificate (unpadded base64, as OpenSSH writes host keys).
pub fn fingerprint(der: &[u8]) -> String {
    format!(
        "SHA256:{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(Sha256::digest(der))
    )
}

/// Whether `text` has the shape of a [`fingerprint`].
pub fn is_fingerprint(text: &str) -> bool {
    text.strip_prefix("SHA256:").is_some_and(|b| {
        base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(b)
            .is_ok_and(|d| d.len() == 32)
    })
}

/// Where a handshake leaves the fingerprint of the certificate the target offered.
pub type Offered = Arc<Mutex<Option<String>>>;

/// Accepts the pinned certificate only, or any certificate when none is pinned; remembers the
/// fingerprint offered either way.
#[derive(Debug)]
pub struct PinVerifier {
    pinned: Option<String>,
    offered: Offered,
    provider: Arc<CryptoProvider>,
}

impl PinVerifier {
    /// A rustls client configuration for a target with `pinned` (or none yet), and where the
    /// offered fingerprint is written.
    pub fn config(pinned: Option<String>) -> Result<(rustls::ClientConfig, Offered), String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let offered = Arc::new(Mutex::new(None));
        let verifier = PinVerifier {
            pinned,
            offered: offered.clone(),
            provider: provider.clone(),
        };
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        Ok((config, offered))
    }
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let offered = fingerprint(end_entity.as_ref());
        let matches = self.pinned.as_deref().is_none_or(|p| p == offered);
        *self.offered.lock().unwrap_or_else(|p| p.into_inner()) = Some(offered);
        if matches {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
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
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
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

/// A TLS client handshake over `stream` to a target whose certificate must match `pinned`
/// (any certificate when none is pinned yet): the session and the fingerprint of the
/// certificate it presented. A different certificate is
/// [`TargetFailure::CertificateChanged`]; any other failure, [`TargetFailure::Unreachable`].
/// Nothing is sent over the session before this returns.
pub async fn handshake<S>(
    stream: S,
    host: &str,
    pinned: Option<&String>,
    target: &str,
) -> Result<(tokio_rustls::client::TlsStream<S>, String), TargetFailure>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let unreachable = |reason: String| TargetFailure::Unreachable {
        target: target.to_string(),
        reason,
    };
    let (config, offered) = PinVerifier::config(pinned.cloned()).map_err(&unreachable)?;
    // The pin, not the name, is what is checked: a name rustls cannot take is sent as none.
    let name = ServerName::try_from(host.to_string()).unwrap_or(ServerName::IpAddress(
        std::net::Ipv4Addr::UNSPECIFIED.into(),
    ));
    let session = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, stream)
        .await;
    let offered = offered.lock().unwrap_or_else(|p| p.into_inner()).clone();
    match (session, offered) {
        (Ok(s), Some(actual)) => Ok((s, actual)),
        (Err(_), Some(actual)) if pinned.is_some_and(|p| *p != actual) => {
            Err(TargetFailure::CertificateChanged {
                target: target.to_string(),
                expected: pinned.cloned().unwrap_or_default(),
                actual,
            })
        }
        (Err(e), _) => Err(unreachable(super::words::clean(
            format!("TLS handshake: {e}"),
            &[],
        ))),
        (Ok(_), None) => Err(unreachable("TLS without a certificate".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_have_one_shape() {
        let f = fingerprint(b"certificate");
        assert!(is_fingerprint(&f), "{f}");
        assert!(!is_fingerprint("SHA256:short"));
        assert!(!is_fingerprint(&f.replace("SHA256:", "MD5:")));
    }
}
