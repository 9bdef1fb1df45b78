//! The agent's ed25519 key: made at enrollment, kept in `STATE_DIR/agent.key` (mode 0600,
//! base64 of the 32-byte seed). Only its public half ever leaves the machine.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::SigningKey;
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// Makes a new key and writes it (replacing any old one).
pub fn create(path: &Path) -> Result<SigningKey> {
    let mut seed = Zeroizing::new([0u8; 32]);
    getrandom::fill(&mut seed[..]).map_err(|e| Error::Config(format!("no randomness: {e}")))?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(Error::io(format!("cannot create {}", dir.display())))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(Error::io(format!("cannot restrict {}", dir.display())))?;
    }
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(Error::io(format!("cannot write {}", path.display())))?;
    let text = Zeroizing::new(STANDARD.encode(&seed[..]));
    f.write_all(text.as_bytes())
        .map_err(Error::io(format!("cannot write {}", path.display())))?;
    Ok(SigningKey::from_bytes(&seed))
}

/// Reads the key; refuses a file others can read.
pub fn load(path: &Path) -> Result<SigningKey> {
    let meta = std::fs::metadata(path).map_err(Error::io(format!(
        "cannot read the agent key {}; enroll again",
        path.display()
    )))?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(Error::Config(format!(
            "{} is readable by other users; `chmod 600` it (or enroll again)",
            path.display()
        )));
    }
    let text = Zeroizing::new(
        std::fs::read_to_string(path)
            .map_err(Error::io(format!("cannot read {}", path.display())))?,
    );
    let bytes = Zeroizing::new(
        STANDARD
            .decode(text.trim())
            .map_err(|_| Error::Config(format!("{} is not an agent key", path.display())))?,
    );
    let seed: [u8; 32] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| Error::Config(format!("{} is not an agent key", path.display())))?;
    Ok(SigningKey::from_bytes(&seed))
}

#[cfg(test)]
mod tests {
    #[test]
    fn keys_round_trip_and_stay_private() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state/agent.key");
        let k = super::create(&p).unwrap();
        assert_eq!(super::load(&p).unwrap().to_bytes(), k.to_bytes());
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(super::load(&p).is_err());
    }
}
