//! `lockstep-agent enroll`: make a key, spend the one-time token, write the configuration.

use std::path::{Path, PathBuf};

use lockstep_agent_protocol::messages::{EnrollRequest, EnrollResponse, Password};

use crate::client::Client;
use crate::config::{AgentConfig, parse_fingerprint};
use crate::error::{Error, Result};
use crate::keyfile;

pub struct EnrollArgs {
    pub server: String,
    pub fingerprint: String,
    pub token: Password,
    pub config: PathBuf,
    pub state_dir: PathBuf,
    pub poll_interval_secs: u64,
    /// Publisher keys to pin (hex); kept from an existing file when none are given.
    pub publisher_keys: Vec<String>,
}

pub async fn enroll(args: EnrollArgs) -> Result<EnrollResponse> {
    let pin = parse_fingerprint(&args.fingerprint)?;
    for k in &args.publisher_keys {
        lockstep_runtime::signature::parse_public_key(k).map_err(|e| {
            Error::Config(format!(
                "--publisher-key: {e}; give the FILE.pub that `lockstep keygen` wrote"
            ))
        })?;
    }
    // A new key replaces the old one only once the server has accepted it: a mistyped or
    // expired token leaves a working agent as it was.
    let key_path = args.state_dir.join("agent.key");
    let new_key_path = args.state_dir.join("agent.key.new");
    let key = keyfile::create(&new_key_path)?;
    let client = Client::new(&args.server, pin, None, key.clone())?;
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    let done: EnrollResponse = client
        .post(
            lockstep_agent_protocol::ENROLL_PATH,
            &EnrollRequest {
                token: args.token,
                public_key: lockstep_agent_protocol::auth::encode_public_key(&key.verifying_key()),
                hostname,
                version: env!("CARGO_PKG_VERSION").into(),
            },
        )
        .await
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&new_key_path);
        })?;
    std::fs::rename(&new_key_path, &key_path)
        .map_err(Error::io(format!("cannot write {}", key_path.display())))?;
    // Keep an existing file's account settings (UID range, paths) and pinned publisher keys
    // across re-enrollment.
    let existing = AgentConfig::load(&args.config).ok();
    let publisher_keys = if args.publisher_keys.is_empty() {
        existing
            .as_ref()
            .map(|c| c.publisher_keys.clone())
            .unwrap_or_default()
    } else {
        args.publisher_keys
    };
    let accounts = existing.map(|c| c.accounts).unwrap_or_default();
    AgentConfig {
        server: args.server.trim_end_matches('/').to_string(),
        fingerprint: hex::encode(pin),
        agent_id: done.agent_id.clone(),
        owner: done.owner.clone(),
        poll_interval_secs: args.poll_interval_secs,
        state_dir: args.state_dir,
        publisher_keys,
        accounts,
    }
    .save(&args.config)?;
    Ok(done)
}

/// Reads the enrollment token from a file (`-` for stdin) or `LOCKSTEP_ENROLL_TOKEN`.
pub fn read_token(file: Option<&Path>) -> Result<Password> {
    let text = match file {
        Some(p) if p == Path::new("-") => {
            let mut s = String::new();
            std::io::stdin()
                .read_line(&mut s)
                .map_err(Error::io("cannot read the token from stdin"))?;
            s
        }
        Some(p) => {
            std::fs::read_to_string(p).map_err(Error::io(format!("cannot read {}", p.display())))?
        }
        None => std::env::var("LOCKSTEP_ENROLL_TOKEN").map_err(|_| {
            Error::Config(
                "give the enrollment token with --token-file FILE (or - for stdin) or in \
                 LOCKSTEP_ENROLL_TOKEN"
                    .into(),
            )
        })?,
    };
    let t = text.trim();
    if t.is_empty() {
        return Err(Error::Config("the enrollment token is empty".into()));
    }
    Ok(Password::new(t.to_string()))
}
