//! The agent request header (`Authorization: Lockstep-Agent ID:UNIX:NONCE:SIGNATURE`,
//! `SignedRequest::parse`), which the server reads from every agent call before anything else,
//! and the agent public key text (`auth::decode_public_key`).
//!
//! Checks, beyond not panicking:
//! - a header that parses has an agent id and a nonce of 1 to 64 bytes without `:`;
//! - against a fixed agent, its key and one request, only the genuine header verifies;
//! - the parsed fields round-trip: a header `auth::authorization` writes for them parses back
//!   to the same fields and verifies for exactly that request (not another method, path or
//!   body, nor outside the clock window);
//! - a public key that decodes encodes back to the same key.
#![no_main]

use std::sync::OnceLock;

use ed25519_dalek::SigningKey;
use libfuzzer_sys::fuzz_target;
use lockstep_agent_protocol::auth::{self, AuthError, MAX_CLOCK_SKEW_SECS, SCHEME, SignedRequest};

const AGENT: &str = "agt_0190f3c2a1b47e5f9d2c";
const NONCE: &str = "6f1c2e9a4b7d3f80";
const UNIX: i64 = 1_767_225_600;
const METHOD: &str = "POST";
const PATH: &str = "/v1/agent/tasks/task-1/result";
const BODY: &[u8] = br#"{"session":"s-1","outcome":"succeeded","message":"done"}"#;

fn key() -> &'static SigningKey {
    static K: OnceLock<SigningKey> = OnceLock::new();
    K.get_or_init(|| SigningKey::from_bytes(&[7; 32]))
}

fn other_key() -> &'static SigningKey {
    static K: OnceLock<SigningKey> = OnceLock::new();
    K.get_or_init(|| SigningKey::from_bytes(&[8; 32]))
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(pk) = auth::decode_public_key(text) {
        assert_eq!(
            auth::decode_public_key(&auth::encode_public_key(&pk)),
            Some(pk)
        );
    }
    let req = match SignedRequest::parse(text) {
        Ok(r) => r,
        Err(e) => {
            assert!(matches!(e, AuthError::Malformed(_)), "{e:?}");
            assert!(e.to_string().starts_with("malformed agent authorization: "));
            return;
        }
    };
    for field in [&req.agent_id, &req.nonce] {
        assert!(
            (1..=64).contains(&field.len()) && !field.contains(':'),
            "{field:?}"
        );
    }
    // The server verifies with the key enrolled under the header's agent id (the id itself is
    // not in the signed message: it picks the key). Another id has another key.
    let pk = key().verifying_key();
    let enrolled = if req.agent_id == AGENT {
        pk
    } else {
        other_key().verifying_key()
    };
    if req.verify(&enrolled, UNIX, METHOD, PATH, BODY).is_ok() {
        assert_eq!(
            (req.agent_id.as_str(), req.unix, req.nonce.as_str()),
            (AGENT, UNIX, NONCE),
            "a header that was not the agent's verified"
        );
    }

    // The fields round-trip through a header signed for them.
    let header = auth::authorization(
        &req.agent_id,
        key(),
        METHOD,
        PATH,
        req.unix,
        &req.nonce,
        BODY,
    );
    assert!(header.starts_with(SCHEME));
    let back = SignedRequest::parse(&header).unwrap_or_else(|e| {
        panic!("a header authorization() wrote does not parse: {e}: {header:?}")
    });
    assert_eq!(
        (&back.agent_id, back.unix, &back.nonce),
        (&req.agent_id, req.unix, &req.nonce)
    );
    assert_eq!(back.verify(&pk, req.unix, METHOD, PATH, BODY), Ok(()));
    assert_eq!(
        back.verify(&pk, req.unix, "GET", PATH, BODY),
        Err(AuthError::BadSignature)
    );
    assert_eq!(
        back.verify(&pk, req.unix, METHOD, "/v1/agent/discovery", BODY),
        Err(AuthError::BadSignature)
    );
    assert_eq!(
        back.verify(&pk, req.unix, METHOD, PATH, b"{}"),
        Err(AuthError::BadSignature)
    );
    if let Some(late) = req.unix.checked_add(MAX_CLOCK_SKEW_SECS + 1) {
        assert!(matches!(
            back.verify(&pk, late, METHOD, PATH, BODY),
            Err(AuthError::Skew { .. })
        ));
    }
});
