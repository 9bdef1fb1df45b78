//! `lockstep-agent enroll`: make a key, spend the one-time token, write the configuration;
//! `lockstep-agent add-server`: one more node of the same deployment in the configuration.

use std::path::{Path, PathBuf};

use lockstep_agent_protocol::messages::{EnrollRequest, EnrollResponse, Password};

use crate::client::{Client, check_pin};
use crate::config::{AgentConfig, ServerNode, check_servers};
use crate::error::{Error, Result};
use crate::keyfile;

pub struct EnrollArgs {
    /// The nodes, each with its own pin; the token is spent on the first.
    pub servers: Vec<ServerNode>,
    pub token: Password,
    pub config: PathBuf,
    pub state_dir: PathBuf,
    pub poll_interval_secs: u64,
    /// Publisher keys to pin (hex); kept from an existing file when none are given.
    pub publisher_keys: Vec<String>,
}

pub async fn enroll(args: EnrollArgs) -> Result<EnrollResponse> {
    let servers = check_servers(&args.servers)?;
    for k in &args.publisher_keys {
        lockstep_runtime::signature::parse_public_key(k).map_err(|e| {
            Error::Config(format!(
                "--publisher-key: {e}; give the FILE.pub that `lockstep keygen` wrote"
            ))
        })?;
    }
    // The other nodes' pins are checked before the one-time token is spent: a mistyped
    // fingerprint is refused while enrolling again is still free.
    for node in &servers[1..] {
        check_node(node).await?;
    }
    // A new key replaces the old one only once the server has accepted it: a mistyped or
    // expired token leaves a working agent as it was.
    let key_path = args.state_dir.join("agent.key");
    let new_key_path = args.state_dir.join("agent.key.new");
    let key = keyfile::create(&new_key_path)?;
    let client = Client::new(&servers[..1], None, key.clone())?;
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
        servers,
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

/// Checks that `node` shows its pinned certificate. One that cannot be reached now is only
/// warned about (it may not be up yet; the agent passes over it until it is); one that shows
/// another certificate is refused.
async fn check_node(node: &ServerNode) -> Result<()> {
    match check_pin(node).await {
        Ok(()) => Ok(()),
        Err(e @ Error::Unreachable { .. }) => {
            eprintln!("warning: {e}; its certificate is not checked now");
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Adds `node` to the configuration at `path` (after the nodes it has), once its certificate
/// checks out; returns the node list as written. A URL already listed with the same pin is
/// left as it is; with another pin it is refused (re-pinning a URL is enrolling again).
pub async fn add_server(path: &Path, node: ServerNode) -> Result<Vec<ServerNode>> {
    let mut cfg = AgentConfig::load(path)?;
    let node = check_servers(std::slice::from_ref(&node))?.remove(0);
    if let Some(known) = cfg.servers.iter().find(|s| s.url == node.url) {
        if known.fingerprint == node.fingerprint {
            return Ok(cfg.servers);
        }
        return Err(Error::Config(format!(
            "add-server: {} is already listed with fingerprint {}; a URL keeps the pin it was \
             added with (remove its [[servers]] entry from {} first if its certificate really \
             changed)",
            node.url,
            known.fingerprint,
            path.display()
        )));
    }
    check_node(&node).await?;
    cfg.servers.push(node);
    cfg.save(path)?;
    Ok(cfg.servers)
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
