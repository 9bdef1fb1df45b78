//! The JSON bodies exchanged with the server. Passwords travel only inside TLS to a server
//! whose certificate the agent pinned, and are held in [`Password`], which zeroizes itself and
//! never prints.

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// A password in a message: zeroized on drop, `[redacted]` in `Debug`.
#[derive(Clone)]
pub struct Password(Zeroizing<String>);

impl Serialize for Password {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Password {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Password, D::Error> {
        String::deserialize(d).map(Password::new)
    }
}

impl Password {
    pub fn new(text: String) -> Password {
        Password(Zeroizing::new(text))
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// `POST /v1/agent/enroll`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    /// The one-time enrollment token.
    pub token: Password,
    /// The agent's ed25519 public key (`auth::encode_public_key`).
    pub public_key: String,
    pub hostname: String,
    /// The agent's version.
    pub version: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct EnrollResponse {
    pub agent_id: String,
    /// The user that will own the agent's resource.
    pub owner: String,
}

/// `POST /v1/agent/discovery`: the machine and its local accounts.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Discovery {
    pub hostname: String,
    /// `ID VERSION_ID` from os-release, e.g. `debian 12`.
    pub os: String,
    /// The machine's non-loopback addresses.
    pub addresses: Vec<String>,
    pub accounts: Vec<LocalAccount>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalAccount {
    pub login_name: String,
    pub uid: u32,
    /// The GECOS field, when set.
    pub description: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct DiscoveryResult {
    pub resource_id: String,
    /// Accounts added by this discovery.
    pub added: Vec<String>,
    /// Accounts the server already had.
    pub known: usize,
}

/// One task for the agent (`GET /v1/agent/tasks/next`).
#[derive(Debug, Serialize, Deserialize)]
pub struct Task {
    pub id: String,
    /// 1 on first hand-out; more when a dead agent's task is handed out again.
    pub attempt: i64,
    #[serde(flatten)]
    pub work: Work,
}

/// What a task asks for.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Work {
    /// Set `login_name`'s password to `password` and check the account accepts it.
    Reset {
        login_name: String,
        password: Password,
    },
    /// Check whether `login_name` accepts `password`.
    Verify {
        login_name: String,
        password: Password,
    },
    /// Run an agent-mode listener here, in the agent's own runtime.
    Listener(Box<ListenerWork>),
}

/// An agent-mode listener run: the server checked the listener's signature, approval and
/// association; the agent checks the component against `component_sha256` before loading it.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerWork {
    pub name: String,
    pub version: String,
    /// `pre-reset` or `post-reset`.
    pub phase: String,
    /// Fetch from `component_path(component_sha256)` unless cached.
    pub component_sha256: String,
    /// The approved manifest (TOML).
    pub manifest: String,
    /// The publisher's signature over component and manifest (the `.sig` JSON of
    /// `lockstep listener sign`). The agent checks it against the publisher keys it pinned
    /// itself; the server cannot vouch for a listener.
    pub signature: String,
    pub job_id: String,
    /// `manual`, `bulk`, `scheduled` or `api`.
    pub trigger: String,
    pub resource_type: String,
    pub parameters: Vec<String>,
    pub resource: std::collections::BTreeMap<String, String>,
    pub account: std::collections::BTreeMap<String, String>,
    /// Present only when the manifest grants `old-password`.
    pub old_password: Option<Password>,
    /// Present only when the manifest grants `new-password`.
    pub new_password: Option<Password>,
    /// A post-reset run is one attempt of a delivery: its id and the attempt's number, told to
    /// the listener (contract 0.2.0's `event.delivery`) so it can be idempotent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<DeliveryRef>,
}

/// One attempt of a post-reset delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryRef {
    /// The delivery's id (`dlv_…`), the same on every attempt.
    pub id: String,
    /// The attempt's number, from 1.
    pub attempt: u32,
}

/// How an agent-mode listener run ended.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerReport {
    /// `proceed`, `veto`, `success`, `failure`, `retry` (a post-reset run worth trying again)
    /// or `stopped` (trapped, timed out, ...).
    pub outcome: String,
    pub message: String,
    /// Each refused capability call: `capability: requested (reason)`.
    pub denials: Vec<String>,
    pub elapsed_ms: f64,
}

/// How a task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Reset: the password is set and verified. Verify: the password is accepted.
    Succeeded,
    /// Reset: the system refused the password (its own rules). Verify: not accepted.
    Refused,
    /// The agent could not do it and changed nothing (the account is not one it manages, a
    /// command could not start, ...).
    Failed,
    /// Reset: the password was changed but the change could not be confirmed; the machine's
    /// password is unknown, so the server keeps both for a person to check.
    Unconfirmed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Refused => "refused",
            Outcome::Failed => "failed",
            Outcome::Unconfirmed => "unconfirmed",
        }
    }
}

/// `POST /v1/agent/tasks/{id}/result`. Reporting the same task twice records it once.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskResult {
    /// The agent process's session (from its polls).
    pub session: String,
    pub outcome: Outcome,
    /// What happened, for people; never a secret.
    pub message: String,
    /// A listener task's run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listener: Option<ListenerReport>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ResultReceipt {
    /// False when the task already had a result (a repeated report): nothing changed.
    pub recorded: bool,
    pub state: String,
}
