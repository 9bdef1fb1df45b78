//! The hash chain: canonical JSON, event hashes, and verification.

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::store::Store;
use crate::store::audit::AuditRow;

/// The `prev_hash` of the first event.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// JSON with object keys sorted at every level and no insignificant whitespace, so the same
/// event always hashes the same whatever serde_json's map order.
pub fn canonical_json(v: &serde_json::Value) -> String {
    let mut out = String::new();
    write_canonical(v, &mut out);
    out
}

fn write_canonical(v: &serde_json::Value, out: &mut String) {
    match v {
        serde_json::Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::Value::String((*k).clone()).to_string());
                out.push(':');
                write_canonical(&map[k.as_str()], out);
            }
            out.push('}');
        }
        serde_json::Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// The hash of a row: SHA-256 over its `prev_hash`, a newline, and the canonical JSON of every
/// other field (including `seq`, so a row moved to another position no longer matches).
pub fn event_hash(row: &AuditRow) -> Result<String> {
    let detail: serde_json::Value = serde_json::from_str(&row.detail).map_err(|e| {
        Error::Internal(format!(
            "audit detail of event {} is not JSON: {e}",
            row.seq
        ))
    })?;
    let body = serde_json::json!({
        "seq": row.seq,
        "id": row.id,
        "at": row.at,
        "actor": row.actor,
        "action": row.action,
        "target": row.target,
        "outcome": row.outcome,
        "source_ip": row.source_ip,
        "detail": detail,
    });
    let mut h = Sha256::new();
    h.update(row.prev_hash.as_bytes());
    h.update(b"\n");
    h.update(canonical_json(&body).as_bytes());
    Ok(hex::encode(h.finalize()))
}

/// Where and why the chain breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainBreak {
    /// The `seq` of the first bad event (for a gap: the first `seq` found after it).
    pub seq: i64,
    pub id: String,
    pub problem: String,
}

impl std::fmt::Display for ChainBreak {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "audit chain broken at event seq {} (id {}): {}",
            self.seq, self.id, self.problem
        )
    }
}

/// Walks the whole chain in `seq` order. `Ok(Ok(n))` when all `n` events are intact,
/// `Ok(Err(break))` naming the first bad one.
pub async fn verify(store: &Store) -> Result<std::result::Result<u64, ChainBreak>> {
    let mut prev_hash = GENESIS_HASH.to_string();
    let mut expected_seq = 1i64;
    let mut count = 0u64;
    loop {
        let rows = crate::store::audit::scan(store.pool(), expected_seq - 1, 1000).await?;
        if rows.is_empty() {
            return Ok(Ok(count));
        }
        for row in rows {
            if let Some(problem) = check_row(&row, expected_seq, &prev_hash) {
                return Ok(Err(ChainBreak {
                    seq: row.seq,
                    id: row.id,
                    problem,
                }));
            }
            prev_hash = row.hash.clone();
            expected_seq += 1;
            count += 1;
        }
    }
}

fn check_row(row: &AuditRow, expected_seq: i64, prev_hash: &str) -> Option<String> {
    if row.seq != expected_seq {
        return Some(format!(
            "expected seq {expected_seq} next but found {}: event(s) were deleted",
            row.seq
        ));
    }
    if row.prev_hash != prev_hash {
        return Some(
            "its prev_hash does not match the previous event's hash: events were deleted, \
             reordered or the previous event was replaced"
                .into(),
        );
    }
    match event_hash(row) {
        Ok(h) if h == row.hash => None,
        Ok(_) => Some("its content does not match its hash: the row was edited".into()),
        Err(e) => Some(format!("it cannot be hashed: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let v: serde_json::Value =
            serde_json::from_str(r#"{"b":1,"a":{"z":[{"y":1,"x":2}],"c":"é"}}"#).unwrap();
        assert_eq!(
            canonical_json(&v),
            r#"{"a":{"c":"é","z":[{"x":2,"y":1}]},"b":1}"#
        );
    }

    fn row(seq: i64, prev: &str) -> AuditRow {
        let mut r = AuditRow {
            seq,
            id: format!("evt_{seq}"),
            at: "2026-01-01T00:00:00.000000Z".into(),
            actor: "user:a".into(),
            action: "x".into(),
            target: "t".into(),
            outcome: "success".into(),
            source_ip: None,
            detail: "{}".into(),
            prev_hash: prev.into(),
            hash: String::new(),
        };
        r.hash = event_hash(&r).unwrap();
        r
    }

    #[test]
    fn each_kind_of_tampering_is_named() {
        let a = row(1, GENESIS_HASH);
        let b = row(2, &a.hash);
        assert_eq!(check_row(&a, 1, GENESIS_HASH), None);
        assert_eq!(check_row(&b, 2, &a.hash), None);

        let mut edited = b.clone();
        edited.actor = "user:mallory".into();
        assert!(check_row(&edited, 2, &a.hash).unwrap().contains("edited"));
        assert!(check_row(&b, 1, GENESIS_HASH).unwrap().contains("deleted"));
        let moved = row(1, "ff");
        assert!(
            check_row(&moved, 1, GENESIS_HASH)
                .unwrap()
                .contains("prev_hash")
        );
    }
}
