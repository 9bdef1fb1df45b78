//! The master key: 32 random bytes, hex-encoded in a file created with mode 0600 on first
//! start (or given by `--master-key-file`, or as hex in `LOCKSTEP_MASTER_KEY`). It is never
//! written to the database; its id (the first 8 bytes of its SHA-256, hex) is stored beside each
//! ciphertext so a later rotation knows which key opens what.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::error::{Error, Result};

pub struct MasterKey {
    id: String,
    bytes: Zeroizing<[u8; 32]>,
}

impl MasterKey {
    pub fn from_bytes(bytes: [u8; 32]) -> MasterKey {
        let digest = Sha256::digest(bytes);
        MasterKey {
            id: hex::encode(&digest[..8]),
            bytes: Zeroizing::new(bytes),
        }
    }

    /// Parses 64 hex characters (surrounding whitespace ignored).
    pub fn from_hex(text: &str) -> Result<MasterKey> {
        let text = Zeroizing::new(text.trim().to_string());
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text.as_bytes(), &mut bytes).map_err(|_| {
            Error::Config("a master key must be exactly 64 hexadecimal characters".into())
        })?;
        let key = MasterKey::from_bytes(bytes);
        zeroize::Zeroize::zeroize(&mut bytes);
        Ok(key)
    }

    pub fn generate() -> Result<MasterKey> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes)
            .map_err(|e| Error::Crypto(format!("no randomness for a master key: {e}")))?;
        let key = MasterKey::from_bytes(bytes);
        zeroize::Zeroize::zeroize(&mut bytes);
        Ok(key)
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub(super) fn bytes(&self) -> &[u8] {
        &self.bytes[..]
    }
}

/// Loads the master key from `path`, creating it (mode 0600, exclusively) if it does not exist.
/// Refuses a key file that other users can read.
pub fn load_or_create_master_key(path: &Path) -> Result<(MasterKey, bool)> {
    match std::fs::metadata(path) {
        Ok(meta) => {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(Error::Config(format!(
                    "master key file {} is readable by other users (mode {mode:o}); \
                     run `chmod 600 {}`",
                    path.display(),
                    path.display()
                )));
            }
            let text = Zeroizing::new(std::fs::read_to_string(path).map_err(Error::io(
                format!("cannot read master key {}", path.display()),
            ))?);
            let key = MasterKey::from_hex(&text).map_err(|_| {
                Error::Config(format!(
                    "master key file {} does not hold 64 hexadecimal characters",
                    path.display()
                ))
            })?;
            Ok((key, false))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = MasterKey::generate()?;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(Error::io(format!(
                    "cannot create master key {}",
                    path.display()
                )))?;
            let text = Zeroizing::new(format!("{}\n", hex::encode(key.bytes())));
            file.write_all(text.as_bytes())
                .and_then(|_| file.sync_all())
                .map_err(Error::io(format!(
                    "cannot write master key {}",
                    path.display()
                )))?;
            Ok((key, true))
        }
        Err(e) => Err(Error::Io {
            context: format!("cannot stat {}", path.display()),
            source: e,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_with_0600_then_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let (a, created) = load_or_create_master_key(&path).unwrap();
        assert!(created);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (b, created) = load_or_create_master_key(&path).unwrap();
        assert!(!created);
        assert_eq!(a.id(), b.id());
    }

    #[test]
    fn a_world_readable_key_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        load_or_create_master_key(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = load_or_create_master_key(&path).err().unwrap().to_string();
        assert!(err.contains("chmod 600"), "{err}");
    }

    #[test]
    fn bad_hex_is_refused_without_echoing_it() {
        let err = MasterKey::from_hex("zz-not-a-key")
            .err()
            .unwrap()
            .to_string();
        assert!(!err.contains("zz-not-a-key"));
    }
}

/// Where a master key comes from.
#[derive(Debug, Clone)]
pub enum MasterKeySource {
    File(PathBuf),
    /// Hex in the LOCKSTEP_MASTER_KEY environment variable.
    Env,
}

impl MasterKeySource {
    /// An explicit file, else `LOCKSTEP_MASTER_KEY` if set, else `DATA_DIR/master.key`.
    pub fn resolve(file: Option<PathBuf>, data_dir: &Path) -> MasterKeySource {
        match file {
            Some(p) => MasterKeySource::File(p),
            None if std::env::var_os("LOCKSTEP_MASTER_KEY").is_some() => MasterKeySource::Env,
            None => MasterKeySource::File(data_dir.join("master.key")),
        }
    }

    /// The key: read from the environment, or read from (or, the first time, created in) the
    /// file; a created key is logged with a reminder to back it up.
    pub fn load(&self) -> Result<MasterKey> {
        match self {
            MasterKeySource::Env => {
                let text = Zeroizing::new(std::env::var("LOCKSTEP_MASTER_KEY").map_err(|_| {
                    Error::Config("LOCKSTEP_MASTER_KEY is not set or not valid UTF-8".into())
                })?);
                MasterKey::from_hex(&text).map_err(|_| {
                    Error::Config("LOCKSTEP_MASTER_KEY must be 64 hexadecimal characters".into())
                })
            }
            MasterKeySource::File(path) => {
                let (key, created) = load_or_create_master_key(path)?;
                if created {
                    tracing::warn!(
                        path = %path.display(),
                        "created a new master key; back it up apart from the database: without it no stored password can be read"
                    );
                }
                Ok(key)
            }
        }
    }
}
