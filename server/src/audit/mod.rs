//! The audit trail: append-only, hash-chained under a key, never a secret.
//!
//! Every event is appended inside the same write transaction as the change it records, so a
//! change and its audit event commit or roll back together. `hash = HMAC-SHA-256(K, "2\n" ||
//! prev_hash || "\n" || canonical JSON of the event)`, with `K` derived from the master key,
//! links each event to the one before; [`verify`] walks the chain and names the first event that
//! was edited, deleted or reordered, which someone who can write the database but lacks the
//! master key cannot hide by recomputing hashes. Events from before the chain was keyed keep
//! their SHA-256 hashes and are sealed by [`key_chain`] (see `chain` for the rules); signed
//! [`Checkpoint`]s of the head go to the log and syslog, so a deleted tail shows too.
//!
//! **Invariant:** event fields are built from identifiers, names and outcomes only. No function
//! here accepts a [`crate::vault::Secret`], and `detail` is built by callers from non-secret
//! values.

mod chain;
mod search;
pub mod syslog;

pub use chain::{
    ChainBreak, ChainReport, Checkpoint, GENESIS_HASH, KEYED, UNKEYED, authentic, keyed_hash,
    read_checkpoints, unkeyed_hash, verify,
};
pub use search::{AuditEvent, Search, list};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::store::audit::AuditRow;
use crate::store::{Store, WriteTx};
use crate::vault::Vault;

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

/// Appends `event` to the chain inside `tx`, authenticated with the store's chain key.
pub async fn append(tx: &mut WriteTx, event: NewEvent<'_>) -> Result<()> {
    let vault = tx.chain_key().ok_or_else(|| {
        Error::Internal(
            "audit: this store has no chain key, so it cannot append events; open it with \
             serve::open_store, which gives it the master key"
                .into(),
        )
    })?;
    let backend = tx.backend();
    let head = crate::store::audit::lock_head(tx.conn(), backend).await?;
    let (prev_seq, prev_hash) = head.map_or((0, GENESIS_HASH.to_string()), |h| (h.seq, h.hash));
    let detail = match &event.detail {
        serde_json::Value::Null => "{}".to_string(),
        v @ serde_json::Value::Object(_) => lockstep_canonical_json::to_string(v),
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
        chain_version: KEYED,
        key_id: None,
    };
    let (key_id, hash) = keyed_hash(&vault, &row)?;
    row.key_id = Some(key_id);
    row.hash = hash;
    crate::store::audit::insert(tx.conn(), &row).await?;
    tx.record_audit(row);
    Ok(())
}

/// Keys the chain when a store is opened with a master key, before anything else is appended:
/// - an empty chain, or one whose newest event is keyed with this master key: nothing to do;
/// - newest event keyed with another master key: refused (the process was given the wrong
///   key, and would extend the chain under a key its verifiers do not expect);
/// - only unkeyed events (written before the upgrade): one keyed event `audit.chain.keyed` is
///   appended. Its MAC covers the last unkeyed event's hash, so rewriting any of them from
///   then on is detected at that event;
/// - unkeyed events after keyed ones: someone without the key wrote them. They are left for
///   `lockstep audit verify` to name (logged now); they are never sealed.
pub async fn key_chain(store: &Store) -> Result<()> {
    let mut tx = store.begin_write().await?;
    let vault = tx
        .chain_key()
        .ok_or_else(|| Error::Internal("audit: key_chain needs a store with a chain key".into()))?;
    let backend = tx.backend();
    let Some(head) = crate::store::audit::lock_head(tx.conn(), backend).await? else {
        return Ok(());
    };
    if head.chain_version >= KEYED {
        return match head.key_id.as_deref() {
            Some(k) if vault.knows_key(k) => Ok(()),
            other => Err(Error::Config(format!(
                "audit chain: its newest event (seq {}) is keyed with master key '{}', but this \
                 process has master key '{}'; give it the master key the database was written \
                 with (--master-key-file or LOCKSTEP_MASTER_KEY)",
                head.seq,
                other.unwrap_or("(none)"),
                vault.current_key_id()
            ))),
        };
    }
    let keyed = crate::store::audit::count_keyed(tx.conn()).await?;
    if keyed > 0 {
        tracing::error!(
            head = head.seq,
            "audit chain: the newest events were written without the chain key after the chain \
             was keyed; they are not sealed. Run `lockstep audit verify` to see where"
        );
        return Ok(());
    }
    append(
        &mut tx,
        NewEvent {
            actor: &Actor::system(),
            action: "audit.chain.keyed",
            target: "audit-chain",
            outcome: Outcome::Success,
            detail: serde_json::json!({
                "unkeyed_events": head.seq,
                "last_unkeyed_hash": head.hash,
                "key_id": vault.current_key_id(),
            }),
        },
    )
    .await?;
    tx.commit().await?;
    tracing::info!(
        unkeyed_events = head.seq,
        "audit chain keyed: the events written before this version are sealed by event {}",
        head.seq + 1
    );
    Ok(())
}

/// A signed checkpoint of the chain's head as it is now, if the chain has any event.
pub async fn checkpoint(store: &Store, vault: &Vault) -> Result<Option<Checkpoint>> {
    match crate::store::audit::head(store.pool()).await? {
        Some((seq, hash)) => Ok(Some(Checkpoint::make(vault, seq, &hash)?)),
        None => Ok(None),
    }
}

/// The newest checkpoint this process wrote, for `GET /v1/audit/verify`: a tail deleted
/// behind the running server's back shows against it.
#[derive(Debug, Default)]
pub struct LastCheckpoint(std::sync::Mutex<Option<Checkpoint>>);

impl LastCheckpoint {
    pub fn set(&self, c: Checkpoint) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(c);
    }

    pub fn get(&self) -> Option<Checkpoint> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Appends one event in a transaction of its own (for events with no other change: a denial,
/// a retrieval).
pub async fn record(store: &Store, event: NewEvent<'_>) -> Result<()> {
    let mut tx = store.begin_write().await?;
    append(&mut tx, event).await?;
    tx.commit().await
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::vault::MasterKey;

    fn vault(byte: u8) -> Arc<Vault> {
        Arc::new(Vault::new(MasterKey::from_bytes([byte; 32])))
    }

    /// A migrated SQLite store with no chain key, as the database of a version before the
    /// keyed chain would be after the migration added its columns.
    async fn unkeyed_store(dir: &tempfile::TempDir) -> (String, Store) {
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        (url.clone(), Store::open(&url).await.unwrap())
    }

    /// Appends an event the way versions before the keyed chain did: SHA-256, no key.
    async fn append_unkeyed(store: &Store, target: &str) {
        let mut tx = store.begin_write().await.unwrap();
        let backend = tx.backend();
        let head = crate::store::audit::lock_head(tx.conn(), backend)
            .await
            .unwrap();
        let (seq, prev_hash) = head.map_or((0, GENESIS_HASH.to_string()), |h| (h.seq, h.hash));
        let mut row = AuditRow {
            seq: seq + 1,
            id: crate::time::new_id("evt"),
            at: crate::time::now(),
            actor: "user:old".into(),
            action: "resource.create".into(),
            target: target.into(),
            outcome: "success".into(),
            source_ip: None,
            detail: "{}".into(),
            prev_hash,
            hash: String::new(),
            chain_version: UNKEYED,
            key_id: None,
        };
        row.hash = unkeyed_hash(&row).unwrap();
        crate::store::audit::insert(tx.conn(), &row).await.unwrap();
        tx.commit().await.unwrap();
    }

    async fn keyed(url: &str, v: &Arc<Vault>) -> Store {
        let mut store = Store::open(url).await.unwrap();
        store.set_chain_key(v.clone());
        key_chain(&store).await.unwrap();
        store
    }

    async fn record_one(store: &Store, target: &str) {
        record(
            store,
            NewEvent {
                actor: &Actor::system(),
                action: "test.event",
                target,
                outcome: Outcome::Success,
                detail: serde_json::json!({}),
            },
        )
        .await
        .unwrap();
    }

    async fn sql(url: &str, statement: &str) {
        crate::store::tamper(url, statement).await.unwrap();
    }

    /// Recomputes the unkeyed hashes of events `from..=to`, as an attacker without the key can.
    async fn rehash_unkeyed(store: &Store, url: &str, from: i64, to: i64) {
        let rows = crate::store::audit::scan(store.pool(), 0, 1000, true)
            .await
            .unwrap();
        let mut prev = rows[(from - 2) as usize].hash.clone();
        for mut r in rows.into_iter().filter(|r| (from..=to).contains(&r.seq)) {
            r.prev_hash = prev.clone();
            r.hash = unkeyed_hash(&r).unwrap();
            sql(
                url,
                &format!(
                    "UPDATE audit_events SET prev_hash = '{}', hash = '{}' WHERE seq = {}",
                    r.prev_hash, r.hash, r.seq
                ),
            )
            .await;
            prev = r.hash;
        }
    }

    #[tokio::test]
    async fn events_from_before_the_keyed_chain_are_sealed_once_at_open_and_keep_verifying() {
        let dir = tempfile::tempdir().unwrap();
        let (url, old) = unkeyed_store(&dir).await;
        for t in ["a", "b", "c"] {
            append_unkeyed(&old, t).await;
        }
        old.close().await;
        let v = vault(1);

        let store = keyed(&url, &v).await;
        let report = verify(&store, &v, &[]).await.unwrap().unwrap();
        assert_eq!((report.events, report.unkeyed), (4, 3));
        let seal = &crate::store::audit::scan(store.pool(), 3, 1, true)
            .await
            .unwrap()[0];
        assert_eq!(seal.action, "audit.chain.keyed");
        assert_eq!(seal.chain_version, KEYED);
        assert!(
            seal.detail.contains("\"unkeyed_events\":3"),
            "{}",
            seal.detail
        );
        record_one(&store, "d").await;
        store.close().await;

        // Opening again seals nothing more.
        let store = keyed(&url, &v).await;
        let report = verify(&store, &v, &[]).await.unwrap().unwrap();
        assert_eq!((report.events, report.unkeyed), (5, 3));

        // An unkeyed event edited and the unkeyed chain recomputed up to the seal: the seal
        // names it.
        sql(
            &url,
            "UPDATE audit_events SET actor = 'user:mallory' WHERE seq = 2",
        )
        .await;
        rehash_unkeyed(&store, &url, 2, 3).await;
        let b = verify(&store, &v, &[]).await.unwrap().unwrap_err();
        assert_eq!(b.seq, 4, "{b}");
        assert!(b.problem.contains("which it seals"), "{b}");
        store.close().await;
    }

    #[tokio::test]
    async fn unkeyed_events_after_the_seal_are_named_and_never_sealed() {
        let dir = tempfile::tempdir().unwrap();
        let (url, old) = unkeyed_store(&dir).await;
        append_unkeyed(&old, "a").await;
        old.close().await;
        let v = vault(1);
        let store = keyed(&url, &v).await;
        record_one(&store, "b").await;
        // Someone without the key appends an event the old way.
        append_unkeyed(&store, "forged").await;
        let b = verify(&store, &v, &[]).await.unwrap().unwrap_err();
        assert_eq!(b.seq, 4, "{b}");
        assert!(b.problem.contains("without the chain key"), "{b}");
        store.close().await;
        // A restart does not seal it: it is still named.
        let store = keyed(&url, &v).await;
        let b = verify(&store, &v, &[]).await.unwrap().unwrap_err();
        assert_eq!(b.seq, 4, "{b}");
        store.close().await;
    }

    #[tokio::test]
    async fn a_chain_keyed_with_another_master_key_is_refused_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let (url, fresh) = unkeyed_store(&dir).await;
        fresh.close().await;
        let store = keyed(&url, &vault(1)).await;
        record_one(&store, "a").await;
        store.close().await;
        let mut store = Store::open(&url).await.unwrap();
        let other = vault(2);
        store.set_chain_key(other.clone());
        let err = key_chain(&store).await.unwrap_err().to_string();
        assert!(err.contains("keyed with master key"), "{err}");
        assert!(err.contains(other.current_key_id()), "{err}");
        store.close().await;
    }

    #[tokio::test]
    async fn a_database_from_before_the_migration_verifies_as_unkeyed() {
        let dir = tempfile::tempdir().unwrap();
        let (url, old) = unkeyed_store(&dir).await;
        append_unkeyed(&old, "a").await;
        append_unkeyed(&old, "b").await;
        old.close().await;
        // Undo migration 0013, as the schema was before it.
        sql(&url, "ALTER TABLE audit_events DROP COLUMN key_id").await;
        sql(&url, "ALTER TABLE audit_events DROP COLUMN chain_version").await;
        sql(&url, "DELETE FROM _sqlx_migrations WHERE version = 13").await;
        let store = Store::open_existing(&url).await.unwrap();
        let v = vault(1);
        let report = verify(&store, &v, &[]).await.unwrap().unwrap();
        assert_eq!((report.events, report.unkeyed), (2, 2));
        store.close().await;
        // Opening it with a key migrates and seals.
        let store = keyed(&url, &v).await;
        let report = verify(&store, &v, &[]).await.unwrap().unwrap();
        assert_eq!((report.events, report.unkeyed), (3, 2));
        store.close().await;
    }

    #[tokio::test]
    async fn a_store_without_a_chain_key_cannot_append() {
        let dir = tempfile::tempdir().unwrap();
        let (_, store) = unkeyed_store(&dir).await;
        let err = record(
            &store,
            NewEvent {
                actor: &Actor::system(),
                action: "test.event",
                target: "t",
                outcome: Outcome::Success,
                detail: serde_json::json!({}),
            },
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(err.contains("no chain key"), "{err}");
        store.close().await;
    }
}
