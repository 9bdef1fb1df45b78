//! The audit trail: append-only, hash-chained, never a secret.
//!
//! Every event is appended inside the same write transaction as the change it records, so a
//! change and its audit event commit or roll back together. `hash = SHA-256(prev_hash || "\n" ||
//! canonical JSON of the event)` links each event to the one before; [`verify`] walks the chain
//! and names the first event that was edited, deleted or reordered.
//!
//! **Invariant:** event fields are built from identifiers, names and outcomes only. No function
//! here accepts a [`crate::vault::Secret`], and `detail` is built by callers from non-secret
//! values.

mod chain;
pub mod syslog;

pub use chain::{ChainBreak, GENESIS_HASH, canonical_json, event_hash, verify};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::store::audit::AuditRow;
use crate::store::{Store, WriteTx};

/// Who did something, and from where.
#[derive(Debug, Clone)]
pub struct Actor {
    /// `user:NAME`, `cli:NAME` (the admin command line) or `system`.
    pub name: String,
    pub source_ip: Option<String>,
}

impl Actor {
    pub fn user(name: &str, source_ip: Option<String>) -> Actor {
        Actor {
            name: format!("user:{name}"),
            source_ip,
        }
    }

    /// The local command line, named by the operating-system user running it.
    pub fn cli() -> Actor {
        use std::os::unix::fs::MetadataExt;
        let who = std::env::var("USER")
            .or_else(|_| std::env::var("LOGNAME"))
            .or_else(|_| std::fs::metadata("/proc/self").map(|m| format!("uid{}", m.uid())))
            .unwrap_or_else(|_| "unknown".into());
        Actor {
            name: format!("cli:{who}"),
            source_ip: None,
        }
    }

    /// The server itself (an integrity check, a scheduled job).
    pub fn system() -> Actor {
        Actor {
            name: "system".into(),
            source_ip: None,
        }
    }

    pub fn anonymous(source_ip: Option<String>) -> Actor {
        Actor {
            name: "anonymous".into(),
            source_ip,
        }
    }
}

/// How an audited action ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Success,
    Denied,
    Failure,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Denied => "denied",
            Outcome::Failure => "failure",
        }
    }
}

/// An event about to be appended.
#[derive(Debug, Clone)]
pub struct NewEvent<'a> {
    pub actor: &'a Actor,
    /// Dotted verb, e.g. `account.password.retrieve`.
    pub action: &'a str,
    /// The id or name of what was acted on.
    pub target: &'a str,
    pub outcome: Outcome,
    /// Extra non-secret facts (a reason, changed field names, a denial's privilege).
    pub detail: serde_json::Value,
}

/// Appends `event` to the chain inside `tx`.
pub async fn append(tx: &mut WriteTx, event: NewEvent<'_>) -> Result<()> {
    let backend = tx.backend();
    let head = crate::store::audit::lock_head(tx.conn(), backend).await?;
    let (prev_seq, prev_hash) = head.unwrap_or((0, GENESIS_HASH.to_string()));
    let detail = match &event.detail {
        serde_json::Value::Null => "{}".to_string(),
        v @ serde_json::Value::Object(_) => canonical_json(v),
        _ => return Err(Error::Internal("audit detail must be a JSON object".into())),
    };
    let mut row = AuditRow {
        seq: prev_seq + 1,
        id: crate::time::new_id("evt"),
        at: crate::time::now(),
        actor: event.actor.name.clone(),
        action: event.action.to_string(),
        target: event.target.to_string(),
        outcome: event.outcome.as_str().to_string(),
        source_ip: event.actor.source_ip.clone(),
        detail,
        prev_hash,
        hash: String::new(),
    };
    row.hash = event_hash(&row)?;
    crate::store::audit::insert(tx.conn(), &row).await?;
    tx.record_audit(row);
    Ok(())
}

/// Appends one event in a transaction of its own (for events with no other change: a denial,
/// a retrieval).
pub async fn record(store: &Store, event: NewEvent<'_>) -> Result<()> {
    let mut tx = store.begin_write().await?;
    append(&mut tx, event).await?;
    tx.commit().await
}
