//! The agent's configuration file (TOML, default `/etc/lockstep-agent/agent.toml`), written
//! by `lockstep-agent enroll` (and `add-server`) and read by `lockstep-agent run`.
//!
//! The server nodes are a list, each with the pin of its own certificate:
//!
//! ```toml
//! [[servers]]
//! url = "https://lockstep-a.example:7470"
//! fingerprint = "…64 hex digits…"
//! ```
//!
//! A file written before lists existed names one node with top-level `server` and
//! `fingerprint` keys; it is read as a list of that one node.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The default configuration file.
pub const DEFAULT_PATH: &str = "/etc/lockstep-agent/agent.toml";

/// One server node the agent may talk to: its base URL and the SHA-256 of that node's own
/// certificate. A URL is only ever accepted with its own pin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerNode {
    /// `https://HOST:PORT`.
    pub url: String,
    /// SHA-256 of this node's certificate (hex); any other certificate is refused.
    pub fingerprint: String,
}

impl ServerNode {
    /// Checks a node as given on the command line or in the file, and normalizes it (no
    /// trailing `/`; the fingerprint as plain lowercase hex).
    pub fn new(url: &str, fingerprint: &str) -> Result<ServerNode> {
        let url = url.trim().trim_end_matches('/');
        let host = url.strip_prefix("https://").unwrap_or_default();
        if host.is_empty() || host.contains(char::is_whitespace) {
            return Err(Error::Config(format!(
                "server URL '{url}': not https://HOST:PORT; the agent talks only TLS"
            )));
        }
        let pin = parse_fingerprint(fingerprint)?;
        Ok(ServerNode {
            url: url.to_string(),
            fingerprint: hex::encode(pin),
        })
    }

    /// The pinned certificate digest.
    pub fn pin(&self) -> Result<[u8; 32]> {
        parse_fingerprint(&self.fingerprint)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(try_from = "RawConfig")]
pub struct AgentConfig {
    /// Set by enrollment.
    pub agent_id: String,
    /// The user that owns this machine's resource on the server (set by the enrollment token).
    pub owner: String,
    /// The longest wait between attempts when no server node can be reached (seconds). Tasks
    /// arrive over a long-poll at once; this only bounds the reconnect backoff.
    pub poll_interval_secs: u64,
    /// Holds `agent.key` (mode 0600).
    pub state_dir: PathBuf,
    /// The listener publishers this agent trusts: ed25519 public keys, hex (the contents of a
    /// `lockstep keygen` `FILE.pub`). An agent-mode listener runs only when its signature over
    /// component and manifest verifies with one of them, whatever the server says; with none,
    /// no listener runs here.
    pub publisher_keys: Vec<String>,
    /// The server nodes, tried in this order (round robin when one cannot be reached); at
    /// least one. Nodes of one deployment share its database, so the agent's identity is the
    /// same on all of them.
    pub servers: Vec<ServerNode>,
    pub accounts: AccountsConfig,
}

/// The file as written: the node list, or the single `server` and `fingerprint` of files
/// written before the list existed.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    server: Option<String>,
    fingerprint: Option<String>,
    #[serde(default)]
    servers: Vec<ServerNode>,
    agent_id: String,
    owner: String,
    #[serde(default = "default_poll_interval")]
    poll_interval_secs: u64,
    state_dir: PathBuf,
    #[serde(default)]
    publisher_keys: Vec<String>,
    #[serde(default)]
    accounts: AccountsConfig,
}

impl TryFrom<RawConfig> for AgentConfig {
    type Error = String;

    fn try_from(raw: RawConfig) -> std::result::Result<AgentConfig, String> {
        let listed = match (raw.server, raw.fingerprint) {
            (Some(_), _) | (_, Some(_)) if !raw.servers.is_empty() => {
                return Err(
                    "both a top-level `server`/`fingerprint` and [[servers]] entries; \
                            keep one: move the single server into a [[servers]] entry"
                        .into(),
                );
            }
            (Some(url), Some(fingerprint)) => vec![ServerNode { url, fingerprint }],
            (Some(_), None) | (None, Some(_)) => {
                return Err(
                    "`server` and `fingerprint` go together; give both, or list the \
                            nodes as [[servers]] entries with url and fingerprint"
                        .into(),
                );
            }
            (None, None) => raw.servers,
        };
        let servers = check_servers(&listed).map_err(|e| e.to_string())?;
        if !(1..=3600).contains(&raw.poll_interval_secs) {
            return Err("poll_interval_secs must be 1 to 3600".into());
        }
        Ok(AgentConfig {
            agent_id: raw.agent_id,
            owner: raw.owner,
            poll_interval_secs: raw.poll_interval_secs,
            state_dir: raw.state_dir,
            publisher_keys: raw.publisher_keys,
            servers,
            accounts: raw.accounts,
        })
    }
}

/// Checks and normalizes a node list: at least one node, each URL with a valid pin, no URL
/// twice (one URL has one certificate).
pub fn check_servers(nodes: &[ServerNode]) -> Result<Vec<ServerNode>> {
    if nodes.is_empty() {
        return Err(Error::Config(
            "no server: add a [[servers]] entry with url and fingerprint (or enroll again)".into(),
        ));
    }
    let mut out: Vec<ServerNode> = Vec::with_capacity(nodes.len());
    for (i, n) in nodes.iter().enumerate() {
        let node = ServerNode::new(&n.url, &n.fingerprint)
            .map_err(|e| Error::Config(format!("servers[{i}]: {e}")))?;
        if out.iter().any(|o| o.url == node.url) {
            return Err(Error::Config(format!(
                "servers[{i}]: {} is listed twice; each node once, with its own fingerprint",
                node.url
            )));
        }
        out.push(node);
    }
    Ok(out)
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
        AgentConfig::parse(&text, &path.display().to_string())
    }

    /// Reads the file's text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<AgentConfig> {
        toml::from_str(text).map_err(|e| {
            Error::Config(format!(
                "{origin}: {}; fix the file (docs/agents.md lists its keys) or enroll again",
                e.to_string().trim_end()
            ))
        })
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

    const PIN_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const PIN_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    fn parsed(text: &str) -> Result<AgentConfig> {
        AgentConfig::parse(text, "agent.toml")
    }

    fn error_of(text: &str) -> String {
        parsed(text).expect_err("refused").to_string()
    }

    /// The file `enroll` wrote before node lists existed, byte for byte.
    fn single_server_file() -> String {
        format!(
            "server = \"https://lockstep.example:7470\"\nfingerprint = \"{PIN_A}\"\n\
             agent_id = \"agt_1\"\nowner = \"alice\"\npoll_interval_secs = 60\n\
             state_dir = \"/var/lib/lockstep-agent\"\npublisher_keys = []\n\n\
             [accounts]\nuid_min = 1000\nuid_max = 60000\ninclude_root = true\n\
             passwd_file = \"/etc/passwd\"\nshadow_file = \"/etc/shadow\"\n\
             chpasswd = \"/usr/sbin/chpasswd\"\n"
        )
    }

    #[test]
    fn a_single_server_file_still_loads_as_a_list_of_one() {
        let cfg = parsed(&single_server_file()).unwrap();
        assert_eq!(
            cfg.servers,
            [ServerNode {
                url: "https://lockstep.example:7470".into(),
                fingerprint: PIN_A.into(),
            }]
        );
        assert_eq!(cfg.agent_id, "agt_1");
        assert_eq!(cfg.accounts.uid_min, 1000);
        // Saved again, it is a list, and reads back the same.
        let again = parsed(&toml::to_string_pretty(&cfg).unwrap()).unwrap();
        assert_eq!(again.servers, cfg.servers);
        assert_eq!(again.poll_interval_secs, 60);
    }

    #[test]
    fn a_list_of_nodes_loads_in_order_normalized() {
        let cfg = parsed(&format!(
            "agent_id = \"agt_1\"\nowner = \"alice\"\nstate_dir = \"/s\"\n\
             [[servers]]\nurl = \"https://a.example:7470/\"\nfingerprint = \"SHA256:{}\"\n\
             [[servers]]\nurl = \"https://b.example:7470\"\nfingerprint = \"{PIN_B}\"\n",
            PIN_A.to_uppercase()
        ))
        .unwrap();
        let urls: Vec<&str> = cfg.servers.iter().map(|s| s.url.as_str()).collect();
        assert_eq!(urls, ["https://a.example:7470", "https://b.example:7470"]);
        assert_eq!(cfg.servers[0].fingerprint, PIN_A);
        assert_eq!(cfg.servers[1].pin().unwrap(), [0xbb; 32]);
        assert_eq!(cfg.poll_interval_secs, 60, "the default");
    }

    #[test]
    fn bad_node_entries_are_refused_clearly() {
        let base = "agent_id = \"agt_1\"\nowner = \"alice\"\nstate_dir = \"/s\"\n";
        let node =
            |url: &str, fp: &str| format!("[[servers]]\nurl = \"{url}\"\nfingerprint = \"{fp}\"\n");
        for (text, says) in [
            (base.to_string(), "no server"),
            (
                format!("{base}{}", node("http://a:1", PIN_A)),
                "servers[0]: server URL 'http://a:1': not https://HOST:PORT",
            ),
            (
                format!(
                    "{base}{}{}",
                    node("https://a:1", PIN_A),
                    node("https://b:1", "abcd")
                ),
                "servers[1]: 'abcd' is not a SHA-256 fingerprint",
            ),
            (
                format!(
                    "{base}{}{}",
                    node("https://a:1", PIN_A),
                    node("https://a:1/", PIN_B)
                ),
                "servers[1]: https://a:1 is listed twice",
            ),
            (
                format!(
                    "server = \"https://a:1\"\nfingerprint = \"{PIN_A}\"\n{base}{}",
                    node("https://b:1", PIN_B)
                ),
                "keep one",
            ),
            (
                format!("server = \"https://a:1\"\n{base}"),
                "`server` and `fingerprint` go together",
            ),
            (
                format!("{base}[[servers]]\nurl = \"https://a:1\"\n"),
                "missing field `fingerprint`",
            ),
            (
                format!(
                    "{base}[[servers]]\nurl = \"https://a:1\"\nfingerprint = \"{PIN_A}\"\npin = \"x\"\n"
                ),
                "unknown field `pin`",
            ),
            (
                format!(
                    "poll_interval_secs = 0\n{base}{}",
                    node("https://a:1", PIN_A)
                ),
                "poll_interval_secs must be 1 to 3600",
            ),
        ] {
            let e = error_of(&text);
            assert!(e.starts_with("agent.toml: "), "{e}");
            assert!(e.contains(says), "{e}\nshould say: {says}\nfor:\n{text}");
            assert!(e.ends_with("or enroll again"), "{e}");
        }
    }
}
