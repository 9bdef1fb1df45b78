//! Request signatures: every call of an enrolled agent carries
//!
//! ```text
//! Authorization: Lockstep-Agent AGENT_ID:UNIX_SECONDS:NONCE:SIGNATURE
//! ```
//!
//! where SIGNATURE is the agent's ed25519 signature (base64url, no padding) over
//! `"lockstep-agent-request-v1\n" METHOD "\n" PATH_AND_QUERY "\n" UNIX_SECONDS "\n" NONCE "\n"
//! hex(SHA-256(body))`. The server holds only the public key, so a copy of its database cannot
//! impersonate an agent; the timestamp bounds replays to [`MAX_CLOCK_SKEW_SECS`], and every
//! request an agent may repeat (a poll, a result report) is harmless to repeat.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use sha2::{Digest, Sha256};

/// The scheme word of the `Authorization` header.
pub const SCHEME: &str = "Lockstep-Agent";
/// How far the agent's clock may be from the server's.
pub const MAX_CLOCK_SKEW_SECS: i64 = 300;

fn message(method: &str, path_and_query: &str, unix: i64, nonce: &str, body: &[u8]) -> Vec<u8> {
    format!(
        "lockstep-agent-request-v1\n{method}\n{path_and_query}\n{unix}\n{nonce}\n{}",
        hex::encode(Sha256::digest(body))
    )
    .into_bytes()
}

/// The `Authorization` header value for one request.
pub fn authorization(
    agent_id: &str,
    key: &SigningKey,
    method: &str,
    path_and_query: &str,
    unix: i64,
    nonce: &str,
    body: &[u8],
) -> String {
    let sig = key.sign(&message(method, path_and_query, unix, nonce, body));
    format!(
        "{SCHEME} {agent_id}:{unix}:{nonce}:{}",
        URL_SAFE_NO_PAD.encode(sig.to_bytes())
    )
}

/// A parsed (not yet verified) `Authorization` header.
#[derive(Debug, Clone)]
pub struct SignedRequest {
    pub agent_id: String,
    pub unix: i64,
    pub nonce: String,
    signature: Signature,
}

/// Why a header was refused; each message says what to fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    Malformed(&'static str),
    Skew { by_secs: i64 },
    BadSignature,
}

impl std::fmt::Display for AuthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuthError::Malformed(m) => write!(f, "malformed agent authorization: {m}"),
            AuthError::Skew { by_secs } => write!(
                f,
                "the agent's clock is {by_secs} s away from the server's (at most \
                 {MAX_CLOCK_SKEW_SECS} s allowed); synchronize its clock"
            ),
            AuthError::BadSignature => write!(f, "the request signature does not verify"),
        }
    }
}

impl SignedRequest {
    /// Parses `Lockstep-Agent ID:UNIX:NONCE:SIG`.
    pub fn parse(header: &str) -> Result<SignedRequest, AuthError> {
        let rest = header
            .strip_prefix(SCHEME)
            .and_then(|r| r.strip_prefix(' '))
            .ok_or(AuthError::Malformed(
                "expected 'Lockstep-Agent ID:TIME:NONCE:SIGNATURE'",
            ))?;
        let mut parts = rest.trim().split(':');
        let (Some(id), Some(unix), Some(nonce), Some(sig), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(AuthError::Malformed("expected four ':'-separated fields"));
        };
        if id.is_empty() || id.len() > 64 || nonce.is_empty() || nonce.len() > 64 {
            return Err(AuthError::Malformed("agent id or nonce of a wrong length"));
        }
        let unix = unix
            .parse::<i64>()
            .map_err(|_| AuthError::Malformed("the time is not a number of seconds"))?;
        let sig = URL_SAFE_NO_PAD
            .decode(sig)
            .ok()
            .and_then(|b| <[u8; 64]>::try_from(b.as_slice()).ok())
            .ok_or(AuthError::Malformed(
                "the signature is not 64 base64url bytes",
            ))?;
        Ok(SignedRequest {
            agent_id: id.to_string(),
            unix,
            nonce: nonce.to_string(),
            signature: Signature::from_bytes(&sig),
        })
    }

    /// Checks the time window and the signature over this request.
    pub fn verify(
        &self,
        key: &VerifyingKey,
        now_unix: i64,
        method: &str,
        path_and_query: &str,
        body: &[u8],
    ) -> Result<(), AuthError> {
        let skew = now_unix.abs_diff(self.unix);
        if skew > MAX_CLOCK_SKEW_SECS.unsigned_abs() {
            return Err(AuthError::Skew {
                by_secs: i64::try_from(skew).unwrap_or(i64::MAX),
            });
        }
        key.verify(
            &message(method, path_and_query, self.unix, &self.nonce, body),
            &self.signature,
        )
        .map_err(|_| AuthError::BadSignature)
    }
}

/// An agent public key as text (standard base64 of the 32 bytes).
pub fn encode_public_key(key: &VerifyingKey) -> String {
    base64::engine::general_purpose::STANDARD.encode(key.as_bytes())
}

/// Parses [`encode_public_key`]'s text.
pub fn decode_public_key(text: &str) -> Option<VerifyingKey> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .ok()?;
    VerifyingKey::from_bytes(&<[u8; 32]>::try_from(bytes.as_slice()).ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> SigningKey {
        SigningKey::from_bytes(&[b; 32])
    }

    #[test]
    fn a_signed_request_verifies_and_nothing_else_does() {
        let k = key(7);
        let h = authorization("agt_1", &k, "POST", "/v1/x?a=1", 1000, "n1", b"body");
        let r = SignedRequest::parse(&h).unwrap();
        assert_eq!(r.agent_id, "agt_1");
        let pk = k.verifying_key();
        assert_eq!(r.verify(&pk, 1010, "POST", "/v1/x?a=1", b"body"), Ok(()));
        // Any change of method, path, body or key breaks it.
        assert_eq!(
            r.verify(&pk, 1010, "GET", "/v1/x?a=1", b"body"),
            Err(AuthError::BadSignature)
        );
        assert_eq!(
            r.verify(&pk, 1010, "POST", "/v1/x?a=2", b"body"),
            Err(AuthError::BadSignature)
        );
        assert_eq!(
            r.verify(&pk, 1010, "POST", "/v1/x?a=1", b"bodY"),
            Err(AuthError::BadSignature)
        );
        assert_eq!(
            r.verify(&key(8).verifying_key(), 1010, "POST", "/v1/x?a=1", b"body"),
            Err(AuthError::BadSignature)
        );
        // Outside the clock window.
        assert_eq!(
            r.verify(
                &pk,
                1000 + MAX_CLOCK_SKEW_SECS + 1,
                "POST",
                "/v1/x?a=1",
                b"body"
            ),
            Err(AuthError::Skew {
                by_secs: MAX_CLOCK_SKEW_SECS + 1
            })
        );
    }

    #[test]
    fn malformed_headers_are_refused_with_a_reason() {
        for h in [
            "Bearer abc",
            "Lockstep-Agent a:b:c",
            "Lockstep-Agent a:notanumber:n:sig",
            "Lockstep-Agent a:1:n:c2ln",
            "Lockstep-Agent a:1:n:s:extra",
        ] {
            assert!(
                matches!(SignedRequest::parse(h), Err(AuthError::Malformed(_))),
                "{h}"
            );
        }
    }

    #[test]
    fn public_keys_round_trip() {
        let pk = key(3).verifying_key();
        assert_eq!(decode_public_key(&encode_public_key(&pk)), Some(pk));
        assert_eq!(decode_public_key("not base64"), None);
    }
}
