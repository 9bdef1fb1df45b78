//! The signature file (`WASM.sig`, JSON read into `ListenerSignature` by the registry, the
//! agent and `lockstep listener verify`) and the publisher key file (`FILE.pub`,
//! `signature::parse_public_key`).
//!
//! Checks, beyond not panicking:
//! - a signature file that parses writes back to JSON that parses to the same signature;
//! - against a fixed publisher key, component and manifest, nothing verifies but the genuine
//!   signature (same key id, digests and signature bytes), `verify` and `verify_digest`
//!   agree, and no signature verifies under another key;
//! - a public key that parses is the 32 bytes its hex text says.
#![no_main]

use std::sync::OnceLock;

use base64::Engine;
use ed25519_dalek::{SigningKey, VerifyingKey};
use libfuzzer_sys::fuzz_target;
use lockstep_runtime::manifest::Manifest;
use lockstep_runtime::signature::{self, ListenerSignature};
use sha2::{Digest, Sha256};

const COMPONENT: &[u8] = b"\0asm\x0d\0\x01\0lockstep fuzz component";

struct Fixture {
    manifest: Manifest,
    key: VerifyingKey,
    other_key: VerifyingKey,
    genuine: ListenerSignature,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let manifest = Manifest::parse(include_str!("../../listeners/exec-hook/manifest.toml"))
            .expect("the exec-hook manifest parses");
        let signing = SigningKey::from_bytes(&[7; 32]);
        let genuine = signature::sign(&signing, COMPONENT, &manifest);
        Fixture {
            manifest,
            key: signing.verifying_key(),
            other_key: SigningKey::from_bytes(&[8; 32]).verifying_key(),
            genuine,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        check_public_key(text);
    }
    let Ok(sig) = serde_json::from_slice::<ListenerSignature>(data) else {
        return;
    };
    let json = serde_json::to_string(&sig).expect("a signature serializes");
    let again: ListenerSignature = serde_json::from_str(&json).expect("written signature parses");
    assert_eq!(again, sig, "signature file does not round-trip");

    let f = fixture();
    let verified = signature::verify(&sig, &f.key, COMPONENT, &f.manifest);
    let by_digest = signature::verify_digest(&sig, &f.key, &Sha256::digest(COMPONENT), &f.manifest);
    assert_eq!(
        verified.is_ok(),
        by_digest.is_ok(),
        "verify and verify_digest disagree"
    );
    if let Err(e) = &verified {
        assert!(!e.to_string().is_empty());
    } else {
        assert_eq!(sig.version, 1);
        assert_eq!(sig.key_id, f.genuine.key_id);
        assert_eq!(sig.component_sha256, f.genuine.component_sha256);
        assert_eq!(sig.manifest_sha256, f.genuine.manifest_sha256);
        assert_eq!(
            decode_standard(&sig.signature),
            decode_standard(&f.genuine.signature),
            "a signature other than the genuine one verified"
        );
    }
    assert!(
        signature::verify(&sig, &f.other_key, COMPONENT, &f.manifest).is_err(),
        "a signature verified under a key that did not make it"
    );
});

fn check_public_key(text: &str) {
    if let Ok(key) = signature::parse_public_key(text) {
        assert_eq!(
            hex::encode(key.as_bytes()),
            text.trim().to_ascii_lowercase(),
            "a public key is not what its hex says"
        );
        assert_eq!(signature::key_id(&key).len(), 16);
    }
}

/// The signature bytes, decoded as `signature::verify` decodes them.
fn decode_standard(text: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD.decode(text).ok()
}
