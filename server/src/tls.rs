//! The server's TLS identity: a self-signed certificate made on first start and kept in
//! `DATA_DIR/tls/` (key mode 0600). Clients pin its SHA-256 fingerprint, which is printed at
//! every start and stored in `DATA_DIR/tls/fingerprint`.

use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use base64::Engine;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Lowercase hex SHA-256 of the certificate's DER encoding.
    pub fingerprint: String,
    pub created: bool,
}

/// Loads the certificate in `dir`, or makes one valid for localhost, the loopback addresses,
/// the listen address and this host's name.
pub fn load_or_create(dir: &Path, listen: SocketAddr) -> Result<TlsFiles> {
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    let mut created = false;
    if !cert.exists() || !key.exists() {
        std::fs::create_dir_all(dir)
            .map_err(Error::io(format!("cannot create {}", dir.display())))?;
        let mut names = vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
            "::1".to_string(),
        ];
        if !listen.ip().is_unspecified() && !listen.ip().is_loopback() {
            names.push(listen.ip().to_string());
        }
        if let Ok(h) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
            let h = h.trim();
            if !h.is_empty() && h != "localhost" {
                names.push(h.to_string());
            }
        }
        let made = rcgen::generate_simple_self_signed(names)
            .map_err(|e| Error::Config(format!("cannot generate a TLS certificate: {e}")))?;
        write_file(&key, made.key_pair.serialize_pem().as_bytes(), 0o600)?;
        write_file(&cert, made.cert.pem().as_bytes(), 0o644)?;
        created = true;
    }
    let pem = std::fs::read_to_string(&cert)
        .map_err(Error::io(format!("cannot read {}", cert.display())))?;
    let fingerprint = fingerprint_of_pem(&pem).ok_or_else(|| {
        Error::Config(format!(
            "{} does not hold a PEM certificate",
            cert.display()
        ))
    })?;
    write_file(
        &dir.join("fingerprint"),
        format!("{fingerprint}\n").as_bytes(),
        0o644,
    )?;
    Ok(TlsFiles {
        cert,
        key,
        fingerprint,
        created,
    })
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(Error::io(format!("cannot write {}", path.display())))?;
    f.write_all(bytes)
        .map_err(Error::io(format!("cannot write {}", path.display())))
}

/// SHA-256 (hex) of the first certificate in a PEM text.
pub fn fingerprint_of_pem(pem: &str) -> Option<String> {
    let body: String = pem
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN CERTIFICATE-----"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END CERTIFICATE-----"))
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body.trim())
        .ok()?;
    if der.is_empty() {
        return None;
    }
    Some(hex::encode(Sha256::digest(&der)))
}

#[cfg(test)]
mod tests {
    #[test]
    fn certificate_is_made_once_and_fingerprinted() {
        let dir = tempfile::tempdir().unwrap();
        let listen = "127.0.0.1:0".parse().unwrap();
        let a = super::load_or_create(dir.path(), listen).unwrap();
        assert!(a.created);
        assert_eq!(a.fingerprint.len(), 64);
        let b = super::load_or_create(dir.path(), listen).unwrap();
        assert!(!b.created);
        assert_eq!(a.fingerprint, b.fingerprint);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&a.key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}
