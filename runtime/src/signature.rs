//! Publisher signatures: ed25519 over what an approval binds, the component's SHA-256 and the
//! manifest's canonical digest.
//!
//! Signed message: `"lockstep-listener-signature-v1\n" || SHA-256(component) ||
//! SHA-256(canonical manifest)` (32 + 32 raw bytes after the tag). Changing a byte of the
//! component or anything the manifest means invalidates the signature; reformatting the
//! manifest's TOML does not (it has the same canonical bytes).
//!
//! Files: a secret key is the 32-byte seed, hex, in a 0600 file; its public key (hex) goes in
//! `FILE.pub`. A signature is a small JSON document (`WASM.sig`) naming the key and both digests,
//! so a mismatch can say which part changed.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use base64::Engine;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::error::Error;
use crate::manifest::Manifest;

const TAG: &[u8] = b"lockstep-listener-signature-v1\n";

/// The id of a public key: the first 8 bytes of its SHA-256, hex.
pub fn key_id(key: &VerifyingKey) -> String {
    hex::encode(&Sha256::digest(key.as_bytes())[..8])
}

/// Hex SHA-256 of a component.
pub fn component_digest(wasm: &[u8]) -> String {
    hex::encode(Sha256::digest(wasm))
}

fn message(component_sha256: &[u8], manifest_sha256: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(TAG.len() + 64);
    m.extend_from_slice(TAG);
    m.extend_from_slice(component_sha256);
    m.extend_from_slice(manifest_sha256);
    m
}

/// A detached signature, as stored next to a component or uploaded with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerSignature {
    /// Always 1.
    pub version: u32,
    /// The publisher key's id (see [`key_id`]).
    pub key_id: String,
    /// Hex SHA-256 of the component bytes.
    pub component_sha256: String,
    /// Hex SHA-256 of the manifest's canonical bytes ([`Manifest::digest`]).
    pub manifest_sha256: String,
    /// Base64 of the 64-byte ed25519 signature.
    pub signature: String,
}

/// Makes a new key pair; returns the secret seed (zeroized on drop) and the public key.
pub fn generate_key() -> Result<(Zeroizing<[u8; 32]>, VerifyingKey), Error> {
    let mut seed = Zeroizing::new([0u8; 32]);
    getrandom::fill(&mut seed[..]).map_err(|e| Error::Key(format!("no randomness: {e}")))?;
    let public = SigningKey::from_bytes(&seed).verifying_key();
    Ok((seed, public))
}

/// Writes a new key pair: `path` (secret, 0600, never overwritten) and `path.pub`.
pub fn write_new_key(path: &Path) -> Result<VerifyingKey, Error> {
    let (seed, public) = generate_key()?;
    let io = |what: &str| {
        let what = format!("{what} {}", path.display());
        move |e: std::io::Error| Error::Key(format!("{what}: {e}"))
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io("cannot create key file"))?;
    let text = Zeroizing::new(format!("{}\n", hex::encode(&seed[..])));
    f.write_all(text.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(io("cannot write key file"))?;
    let public_path = path.with_extension(match path.extension() {
        Some(e) => format!("{}.pub", e.to_string_lossy()),
        None => "pub".into(),
    });
    std::fs::write(
        &public_path,
        format!("{}\n", hex::encode(public.as_bytes())),
    )
    .map_err(io("cannot write public key next to"))?;
    Ok(public)
}

/// Reads a secret key file written by [`write_new_key`]. Refuses one that others can read.
pub fn read_signing_key(path: &Path) -> Result<SigningKey, Error> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path)
        .map_err(|e| Error::Key(format!("cannot read key {}: {e}", path.display())))?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(Error::Key(format!(
            "key file {} is readable by other users; run `chmod 600 {}`",
            path.display(),
            path.display()
        )));
    }
    let text = Zeroizing::new(
        std::fs::read_to_string(path)
            .map_err(|e| Error::Key(format!("cannot read key {}: {e}", path.display())))?,
    );
    let mut seed = Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(text.trim(), &mut seed[..]).map_err(|_| {
        Error::Key(format!(
            "{} is not a Lockstep secret key (64 hex characters)",
            path.display()
        ))
    })?;
    Ok(SigningKey::from_bytes(&seed))
}

/// Parses a public key: 64 hex characters.
pub fn parse_public_key(text: &str) -> Result<VerifyingKey, Error> {
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut bytes)
        .map_err(|_| Error::Key("a public key is 64 hexadecimal characters".into()))?;
    VerifyingKey::from_bytes(&bytes)
        .map_err(|_| Error::Key("not a valid ed25519 public key".into()))
}

/// Signs a component and its manifest.
pub fn sign(key: &SigningKey, wasm: &[u8], manifest: &Manifest) -> ListenerSignature {
    let component = Sha256::digest(wasm);
    let manifest_digest = Sha256::digest(manifest.canonical_bytes());
    let sig = key.sign(&message(&component, &manifest_digest));
    ListenerSignature {
        version: 1,
        key_id: key_id(&key.verifying_key()),
        component_sha256: hex::encode(component),
        manifest_sha256: hex::encode(manifest_digest),
        signature: base64::engine::general_purpose::STANDARD.encode(sig.to_bytes()),
    }
}

/// Checks `sig` against the component, the manifest and the publisher's key, saying which part
/// does not match.
pub fn verify(
    sig: &ListenerSignature,
    key: &VerifyingKey,
    wasm: &[u8],
    manifest: &Manifest,
) -> Result<(), Error> {
    verify_digest(sig, key, &Sha256::digest(wasm), manifest)
}

/// [`verify`] for a caller that has already hashed the component (`component_sha256`, raw
/// 32 bytes), so a large component is not hashed again.
pub fn verify_digest(
    sig: &ListenerSignature,
    key: &VerifyingKey,
    component_sha256: &[u8],
    manifest: &Manifest,
) -> Result<(), Error> {
    if sig.version != 1 {
        return Err(Error::Key(format!(
            "unknown signature version {}",
            sig.version
        )));
    }
    if sig.key_id != key_id(key) {
        return Err(Error::SignatureInvalid(format!(
            "it was made with key {}, not {}",
            sig.key_id,
            key_id(key)
        )));
    }
    let component = component_sha256;
    if hex::encode(component) != sig.component_sha256 {
        return Err(Error::SignatureInvalid(
            "the component is not the one that was signed".into(),
        ));
    }
    let manifest_digest = Sha256::digest(manifest.canonical_bytes());
    if hex::encode(manifest_digest) != sig.manifest_sha256 {
        return Err(Error::SignatureInvalid(
            "the manifest is not the one that was signed".into(),
        ));
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(&sig.signature)
        .map_err(|_| Error::Key("the signature is not base64".into()))?;
    let raw: [u8; 64] = raw
        .try_into()
        .map_err(|_| Error::Key("the signature is not 64 bytes".into()))?;
    key.verify_strict(
        &message(component, &manifest_digest),
        &Signature::from_bytes(&raw),
    )
    .map_err(|_| Error::SignatureInvalid("the ed25519 signature is wrong".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: &str = "name = \"a\"\nversion = \"1.0.0\"\nphases = [\"pre-reset\"]\nmodes = [\"agentless\"]\nresource_types = [\"Linux\"]\n";

    fn manifest(text: &str) -> Manifest {
        Manifest::parse(text).unwrap()
    }

    #[test]
    fn a_signature_binds_component_and_meaning_of_manifest() {
        let (seed, public) = generate_key().unwrap();
        let key = SigningKey::from_bytes(&seed);
        let wasm = b"\0asm component bytes".to_vec();
        let sig = sign(&key, &wasm, &manifest(M));
        verify(&sig, &public, &wasm, &manifest(M)).unwrap();

        // Same meaning, other formatting: still valid.
        let reformatted = format!("# comment\n{}", M.replace("[\"Linux\"]", "[ \"Linux\" ]"));
        verify(&sig, &public, &wasm, &manifest(&reformatted)).unwrap();

        let mut tampered = wasm.clone();
        tampered[5] ^= 1;
        let err = verify(&sig, &public, &tampered, &manifest(M))
            .unwrap_err()
            .to_string();
        assert!(err.contains("component is not the one"), "{err}");
        let widened = format!("{M}[capabilities]\nsecrets = [\"old-password\"]\n");
        let err = verify(&sig, &public, &wasm, &manifest(&widened))
            .unwrap_err()
            .to_string();
        assert!(err.contains("manifest is not the one"), "{err}");

        let (_, other) = generate_key().unwrap();
        assert!(verify(&sig, &other, &wasm, &manifest(M)).is_err());
        let mut forged = sig.clone();
        forged.signature = base64::engine::general_purpose::STANDARD.encode([7u8; 64]);
        assert!(
            verify(&forged, &public, &wasm, &manifest(M))
                .unwrap_err()
                .to_string()
                .contains("wrong")
        );
    }

    #[test]
    fn key_files_are_private_and_round_trip() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("publisher.key");
        let public = write_new_key(&path).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let key = read_signing_key(&path).unwrap();
        assert_eq!(key.verifying_key(), public);
        let pub_text = std::fs::read_to_string(dir.path().join("publisher.key.pub")).unwrap();
        assert_eq!(parse_public_key(&pub_text).unwrap(), public);
        assert!(
            write_new_key(&path).is_err(),
            "an existing key is never overwritten"
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(
            read_signing_key(&path)
                .unwrap_err()
                .to_string()
                .contains("chmod 600")
        );
    }
}
