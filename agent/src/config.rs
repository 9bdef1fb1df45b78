//! The agent's configuration file (TOML, default `/etc/lockstep-agent/agent.toml`), written
//! by `lockstep-agent enroll` and read by `lockstep-agent run`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The default configuration file.
pub const DEFAULT_PATH: &str = "/etc/lockstep-agent/agent.toml";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// The server's base URL, `https://HOST:PORT`.
    pub server: String,
    /// SHA-256 of the server certificate (hex); any other certificate is refused.
    pub fingerprint: String,
    /// Set by enrollment.
    pub agent_id: String,
    /// The user that owns this machine's resource on the server (set by the enrollment token).
    pub owner: String,
    /// The longest wait between attempts when the server cannot be reached (seconds). Tasks
    /// arrive over a long-poll at once; this only bounds the reconnect backoff.
    #[serde(default = "default_poll_interval")]
    pub poll_interval_secs: u64,
    /// Holds `agent.key` (mode 0600).
    pub state_dir: PathBuf,
    /// The listener publishers this agent trusts: ed25519 public keys, hex (the contents of a
    /// `lockstep keygen` `FILE.pub`). An agent-mode listener runs only when its signature over
    /// component and manifest verifies with one of them, whatever the server says; with none,
    /// no listener runs here.
    #[serde(default)]
    pub publisher_keys: Vec<String>,
    #[serde(default)]
    pub accounts: AccountsConfig,
}

/// Which local accounts are discovered and how passwords are changed and checked.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountsConfig {
    #[serde(default = "default_uid_min")]
    pub uid_min: u32,
    #[serde(default = "default_uid_max")]
    pub uid_max: u32,
    #[serde(default = "yes")]
    pub include_root: bool,
    #[serde(default = "default_passwd")]
    pub passwd_file: PathBuf,
    #[serde(default = "default_shadow")]
    pub shadow_file: PathBuf,
    #[serde(default = "default_chpasswd")]
    pub chpasswd: PathBuf,
}

impl Default for AccountsConfig {
    fn default() -> Self {
        AccountsConfig {
            uid_min: default_uid_min(),
            uid_max: default_uid_max(),
            include_root: true,
            passwd_file: default_passwd(),
            shadow_file: default_shadow(),
            chpasswd: default_chpasswd(),
        }
    }
}

/// Seed 002: the reference agent polls every 60 seconds; here it is only the backoff cap.
fn default_poll_interval() -> u64 {
    60
}
fn default_uid_min() -> u32 {
    1000
}
fn default_uid_max() -> u32 {
    60000
}
fn yes() -> bool {
    true
}
fn default_passwd() -> PathBuf {
    "/etc/passwd".into()
}
fn default_shadow() -> PathBuf {
    "/etc/shadow".into()
}
fn default_chpasswd() -> PathBuf {
    "/usr/sbin/chpasswd".into()
}

impl AgentConfig {
    pub fn load(path: &Path) -> Result<AgentConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::Config(format!(
                "cannot read {}: {e}; enroll first with `lockstep-agent enroll`",
                path.display()
            ))
        })?;
        let cfg: AgentConfig =
            toml::from_str(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
        if cfg.poll_interval_secs == 0 || cfg.poll_interval_secs > 3600 {
            return Err(Error::Config(format!(
                "{}: poll_interval_secs must be 1 to 3600",
                path.display()
            )));
        }
        Ok(cfg)
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(Error::io(format!("cannot create {}", dir.display())))?;
        }
        let text = toml::to_string_pretty(self)
            .map_err(|e| Error::Config(format!("cannot write the configuration: {e}")))?;
        std::fs::write(path, text).map_err(Error::io(format!("cannot write {}", path.display())))
    }

    pub fn key_path(&self) -> PathBuf {
        self.state_dir.join("agent.key")
    }
}

/// Normalizes a pinned fingerprint: `SHA256:`-prefixed or not, colons or not, any case.
pub fn parse_fingerprint(text: &str) -> Result<[u8; 32]> {
    let t = text.trim();
    let t = t
        .strip_prefix("SHA256:")
        .or_else(|| t.strip_prefix("sha256:"))
        .unwrap_or(t);
    let hexed: String = t.chars().filter(|c| *c != ':').collect();
    hex::decode(&hexed)
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
        .ok_or_else(|| {
            Error::Config(format!(
                "'{text}' is not a SHA-256 fingerprint (64 hex digits; the server prints it at \
                 start and keeps it in DATA_DIR/tls/fingerprint)"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_in_common_spellings() {
        let hexed = "ab".repeat(32);
        let colons = vec!["AB"; 32].join(":");
        for t in [hexed.clone(), format!("SHA256:{hexed}"), colons] {
            assert_eq!(parse_fingerprint(&t).unwrap(), [0xab; 32], "{t}");
        }
        assert!(parse_fingerprint("abcd").is_err());
    }
}
