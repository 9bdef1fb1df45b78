//! `lockstep keygen`, `lockstep listener sign` and `lockstep listener verify`: the publisher's
//! side of listener signatures (the format is in `lockstep_runtime::signature`).

use std::path::{Path, PathBuf};

use lockstep_runtime::signature::{self, ListenerSignature};
use reqwest::Method;

use crate::cli::api_client::ApiClient;

use crate::cli::listener_files::{read_bytes, read_manifest, read_text};
use crate::error::{Error, Result};

/// The default signature path: `WASM.sig`.
pub fn default_signature_path(wasm: &Path) -> PathBuf {
    let mut p = wasm.as_os_str().to_owned();
    p.push(".sig");
    PathBuf::from(p)
}

/// Writes a new key pair; returns a line to print.
pub fn keygen(out: &Path) -> Result<String> {
    let public = signature::write_new_key(out)?;
    Ok(format!(
        "wrote {} (secret, mode 0600) and its public key {}.pub; key id {}",
        out.display(),
        out.display(),
        signature::key_id(&public)
    ))
}

/// Signs; returns the signature and where it was written.
pub fn sign(
    wasm: &Path,
    manifest_path: &Path,
    key: &Path,
    out: Option<PathBuf>,
) -> Result<(ListenerSignature, PathBuf)> {
    let bytes = read_bytes(wasm, "component")?;
    let m = read_manifest(manifest_path)?;
    let key = signature::read_signing_key(key)?;
    let sig = signature::sign(&key, &bytes, &m);
    let out = out.unwrap_or_else(|| default_signature_path(wasm));
    let text = serde_json::to_string_pretty(&sig).map_err(|e| Error::Internal(e.to_string()))?;
    std::fs::write(&out, format!("{text}\n"))
        .map_err(Error::io(format!("cannot write {}", out.display())))?;
    Ok((sig, out))
}

/// Verifies; `Ok(Err(reason))` when the signature does not match.
pub fn verify(
    wasm: &Path,
    manifest_path: &Path,
    signature_path: Option<PathBuf>,
    public_key: &Path,
) -> Result<std::result::Result<String, String>> {
    let bytes = read_bytes(wasm, "component")?;
    let m = read_manifest(manifest_path)?;
    let sig_path = signature_path.unwrap_or_else(|| default_signature_path(wasm));
    let sig: ListenerSignature = serde_json::from_slice(&read_bytes(&sig_path, "signature")?)
        .map_err(|e| Error::Config(format!("signature {}: {e}", sig_path.display())))?;
    let key_text = read_text(public_key, "public key")?;
    let key = signature::parse_public_key(&key_text)?;
    Ok(match signature::verify(&sig, &key, &bytes, &m) {
        Ok(()) => Ok(format!(
            "valid: {} {} signed by key {}",
            m.name(),
            m.version(),
            sig.key_id
        )),
        Err(e) => Err(e.to_string()),
    })
}

/// `lockstep listener publish`: what to upload and where.
pub struct Publish {
    pub wasm: PathBuf,
    pub manifest: PathBuf,
    pub key: PathBuf,
    pub approver: String,
    pub association: Option<PathBuf>,
    pub comment: Option<String>,
    pub update: bool,
}

/// Signs and uploads. `Ok(Ok(line))` when the server accepted the change request,
/// `Ok(Err(problem))` when it refused the upload.
pub async fn publish(
    client: &ApiClient,
    p: Publish,
) -> Result<std::result::Result<String, String>> {
    let bytes = read_bytes(&p.wasm, "component")?;
    let manifest_text = read_text(&p.manifest, "manifest")?;
    let m = read_manifest(&p.manifest)?;
    let key = signature::read_signing_key(&p.key)?;
    let sig = signature::sign(&key, &bytes, &m);
    let sig_text = serde_json::to_string(&sig).map_err(|e| Error::Internal(e.to_string()))?;
    let mut form = reqwest::multipart::Form::new()
        .part(
            "component",
            reqwest::multipart::Part::bytes(bytes).file_name("listener.wasm"),
        )
        .text("manifest", manifest_text)
        .text("signature", sig_text)
        .text("approver", p.approver);
    if let Some(path) = &p.association {
        form = form.text("association", read_text(path, "association")?);
    }
    if let Some(c) = p.comment {
        form = form.text("comment", c);
    }
    let request = if p.update {
        client.request(Method::PUT, &format!("/v1/listeners/{}", m.name()))
    } else {
        client.request(Method::POST, "/v1/listeners")
    };
    Ok(client.send(request.multipart(form)).await?.map(|body| {
        format!(
            "uploaded {} {} (signed by key {}); change request {} waits for {}",
            m.name(),
            m.version(),
            sig.key_id,
            body["id"].as_str().unwrap_or("?"),
            body["approver"].as_str().unwrap_or("?"),
        )
    }))
}
