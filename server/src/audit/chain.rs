//! The chain: event hashes over the canonical JSON of each event (`lockstep-canonical-json`),
//! unkeyed and keyed, verification and checkpoints.
//!
//! **Versions.** Each event records how its `hash` was made:
//! - version 1 ([`UNKEYED`]): `SHA-256(prev_hash || "\n" || canonical JSON of the event)`. Events
//!   written before the chain was keyed. Anyone who can write the database can recompute these.
//! - version 2 ([`KEYED`]): `HMAC-SHA-256(K, "2\n" || prev_hash || "\n" || canonical JSON)`, where
//!   `K` is derived from master key `key_id` for the purpose `audit-chain` (`Vault::mac`). Without
//!   the master key no one can make a hash that verifies.
//!
//! **Rules** ([`verify`]): unkeyed events may only come before the first keyed event; that first
//! keyed event covers the last unkeyed event's hash with its MAC, so it seals them (rewriting
//! them changes that hash). After it, every event must be keyed: an unkeyed one is a forgery.
//! A chain whose schema has the version column but whose events are all unkeyed is not sealed
//! (a process that opens the store with a master key seals the chain first thing), so it is
//! reported too.
//!
//! **Checkpoints** ([`Checkpoint`]): the head's sequence number and hash at a time, with a MAC
//! (purpose `audit-checkpoint`), written to the server log and to syslog. Deleting the newest
//! events leaves a chain that is intact in itself; a checkpoint that names a later event, or
//! another hash for the same one, shows it.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::store::Store;
use crate::store::audit::AuditRow;
use crate::vault::Vault;

/// The `prev_hash` of the first event.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// `chain_version` of an event hashed with plain SHA-256 (before the chain was keyed).
pub const UNKEYED: i64 = 1;
/// `chain_version` of an event authenticated with HMAC-SHA-256 under a key derived from the
/// master key.
pub const KEYED: i64 = 2;

/// The purpose of the derived key that authenticates events (`Vault::mac`).
const CHAIN_PURPOSE: &str = "audit-chain";
/// The purpose of the derived key that authenticates checkpoints.
const CHECKPOINT_PURPOSE: &str = "audit-checkpoint";

/// What a row's hash covers: its `prev_hash`, a newline, and the canonical JSON of every other
/// field (including `seq`, so a row moved to another position no longer matches).
fn hashed_text(row: &AuditRow) -> Result<String> {
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
    Ok(format!(
        "{}\n{}",
        row.prev_hash,
        lockstep_canonical_json::to_string(&body)
    ))
}

/// The version-1 hash of a row: SHA-256, no key. Only for events written before the chain was
/// keyed.
pub fn unkeyed_hash(row: &AuditRow) -> Result<String> {
    Ok(hex::encode(Sha256::digest(hashed_text(row)?.as_bytes())))
}

/// The version-2 hash of a row under the vault's current master key: (key id, hash).
pub fn keyed_hash(vault: &Vault, row: &AuditRow) -> Result<(String, String)> {
    let text = format!("{KEYED}\n{}", hashed_text(row)?);
    vault.mac(CHAIN_PURPOSE, text.as_bytes())
}

/// Whether `row` is a keyed event whose hash a master key of `vault` made over exactly these
/// fields: written by Lockstep as it stands. (Not whether it is still linked into the chain:
/// [`verify`] walks the links.)
pub fn authentic(vault: &Vault, row: &AuditRow) -> bool {
    let Some(key_id) = &row.key_id else {
        return false;
    };
    if row.chain_version != KEYED {
        return false;
    }
    let Ok(text) = hashed_text(row) else {
        return false;
    };
    let text = format!("{KEYED}\n{text}");
    vault
        .check_mac(key_id, CHAIN_PURPOSE, text.as_bytes(), &row.hash)
        .unwrap_or(false)
}

/// Where and why the chain breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainBreak {
    /// The `seq` of the first bad event (for a gap: the first `seq` found after it; for a
    /// deleted tail: the first missing one).
    pub seq: i64,
    /// Its id (`-` when the event is missing).
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

/// An intact chain, described.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainReport {
    /// Events checked.
    pub events: u64,
    /// Of those, events written before the chain was keyed (sealed by the first keyed event,
    /// or, in a database whose schema predates the keyed chain, not sealed at all).
    pub unkeyed: u64,
    /// Checkpoints the chain was compared with.
    pub checkpoints: usize,
}

/// Walks the whole chain in `seq` order and compares it with `checkpoints` (each already
/// checked with [`Checkpoint::authentic`]). `Ok(Ok(report))` when intact, `Ok(Err(break))`
/// naming the first bad event.
pub async fn verify(
    store: &Store,
    vault: &Vault,
    checkpoints: &[Checkpoint],
) -> Result<std::result::Result<ChainReport, ChainBreak>> {
    let chain_columns = crate::store::audit::has_chain_columns(store.pool()).await?;
    let mut walk = Walk::new(vault, checkpoints);
    loop {
        let rows =
            crate::store::audit::scan(store.pool(), walk.expected_seq - 1, 1000, chain_columns)
                .await?;
        if rows.is_empty() {
            return Ok(walk.finish(chain_columns));
        }
        for row in rows {
            if let Some(problem) = walk.step(&row) {
                return Ok(Err(ChainBreak {
                    seq: row.seq,
                    id: row.id,
                    problem,
                }));
            }
        }
    }
}

/// The state of a walk along the chain.
struct Walk<'a> {
    vault: &'a Vault,
    prev_hash: String,
    expected_seq: i64,
    count: u64,
    unkeyed: u64,
    /// The first keyed event's seq, once seen.
    first_keyed: Option<i64>,
    checkpoints: BTreeMap<i64, Vec<&'a Checkpoint>>,
    checkpoint_count: usize,
}

impl<'a> Walk<'a> {
    fn new(vault: &'a Vault, checkpoints: &'a [Checkpoint]) -> Walk<'a> {
        let mut by_seq: BTreeMap<i64, Vec<&Checkpoint>> = BTreeMap::new();
        for c in checkpoints {
            by_seq.entry(c.seq).or_default().push(c);
        }
        Walk {
            vault,
            prev_hash: GENESIS_HASH.to_string(),
            expected_seq: 1,
            count: 0,
            unkeyed: 0,
            first_keyed: None,
            checkpoints: by_seq,
            checkpoint_count: checkpoints.len(),
        }
    }

    /// Checks the next row; the problem if it is bad.
    fn step(&mut self, row: &AuditRow) -> Option<String> {
        if row.seq != self.expected_seq {
            return Some(format!(
                "expected seq {} next but found {}: event(s) were deleted",
                self.expected_seq, row.seq
            ));
        }
        if row.prev_hash != self.prev_hash {
            return Some(
                if row.chain_version >= KEYED && self.first_keyed.is_none() {
                    "its prev_hash does not match the previous event's hash: the unkeyed events \
                 before it, which it seals, were edited, deleted or reordered"
                        .into()
                } else {
                    "its prev_hash does not match the previous event's hash: events were deleted, \
                 reordered or the previous event was replaced"
                        .into()
                },
            );
        }
        if let Some(problem) = self.check_hash(row) {
            return Some(problem);
        }
        if let Some(cps) = self.checkpoints.remove(&row.seq)
            && let Some(c) = cps.iter().find(|c| c.hash != row.hash)
        {
            return Some(format!(
                "the checkpoint of {} names hash {} for this event, the database {}: the chain \
                 was rewritten after that checkpoint",
                c.at, c.hash, row.hash
            ));
        }
        self.prev_hash = row.hash.clone();
        self.expected_seq += 1;
        self.count += 1;
        None
    }

    fn check_hash(&mut self, row: &AuditRow) -> Option<String> {
        const EDITED: &str = "its content does not match its hash: the row was edited";
        match row.chain_version {
            UNKEYED => {
                if let Some(first) = self.first_keyed {
                    return Some(format!(
                        "it is marked as written without the chain key, but the chain was keyed \
                         from event {first} on: it was forged or rewritten by someone without the \
                         master key"
                    ));
                }
                self.unkeyed += 1;
                match unkeyed_hash(row) {
                    Ok(h) if h == row.hash => None,
                    Ok(_) => Some(EDITED.into()),
                    Err(e) => Some(format!("it cannot be hashed: {e}")),
                }
            }
            KEYED => {
                let Some(key_id) = &row.key_id else {
                    return Some("it is keyed but names no key: the row was edited".into());
                };
                self.first_keyed.get_or_insert(row.seq);
                let text = match hashed_text(row) {
                    Ok(t) => format!("{KEYED}\n{t}"),
                    Err(e) => return Some(format!("it cannot be hashed: {e}")),
                };
                match self
                    .vault
                    .check_mac(key_id, CHAIN_PURPOSE, text.as_bytes(), &row.hash)
                {
                    Ok(true) => None,
                    Ok(false) => Some(format!(
                        "{EDITED} (its keyed hash, which needs the master key to recompute)"
                    )),
                    Err(e) => Some(format!("{e}; verify with that master key")),
                }
            }
            other => Some(format!(
                "it names chain version {other}, which does not exist: the row was edited"
            )),
        }
    }

    fn finish(self, chain_columns: bool) -> std::result::Result<ChainReport, ChainBreak> {
        if let Some(c) = self.checkpoints.values().flatten().max_by_key(|c| c.seq) {
            let end = self.expected_seq - 1;
            return Err(ChainBreak {
                seq: self.expected_seq,
                id: "-".into(),
                problem: format!(
                    "the checkpoint of {} says the chain reached seq {} (hash {}), but it ends \
                     at seq {end}: events {} to {} were deleted",
                    c.at, c.seq, c.hash, self.expected_seq, c.seq
                ),
            });
        }
        if chain_columns && self.count > 0 && self.first_keyed.is_none() {
            return Err(ChainBreak {
                seq: 1,
                id: "-".into(),
                problem: format!(
                    "all {} events are unkeyed and no keyed event seals them; a process that \
                     opens this database with the master key seals its unkeyed events first \
                     thing, so these were written or rewritten without the key (or no server \
                     has started since the upgrade: start one and verify again)",
                    self.count
                ),
            });
        }
        Ok(ChainReport {
            events: self.count,
            unkeyed: self.unkeyed,
            checkpoints: self.checkpoint_count,
        })
    }
}

/// A signed statement of the chain's head: "at `at`, the newest event was `seq` with `hash`".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub seq: i64,
    pub hash: String,
    pub at: String,
    /// The id of the master key whose derived key made `mac`.
    pub key_id: String,
    pub mac: String,
}

/// Marks a checkpoint in a log line or a syslog message.
const CHECKPOINT_TAG: &str = "lockstep-checkpoint v1";

impl Checkpoint {
    fn signed_text(seq: i64, hash: &str, at: &str) -> String {
        format!("checkpoint 1\n{seq}\n{hash}\n{at}")
    }

    /// A checkpoint of (`seq`, `hash`) now.
    pub fn make(vault: &Vault, seq: i64, hash: &str) -> Result<Checkpoint> {
        let at = crate::time::now();
        let (key_id, mac) = vault.mac(
            CHECKPOINT_PURPOSE,
            Self::signed_text(seq, hash, &at).as_bytes(),
        )?;
        Ok(Checkpoint {
            seq,
            hash: hash.to_string(),
            at,
            key_id,
            mac,
        })
    }

    /// True when the vault's master key made this checkpoint's MAC.
    pub fn authentic(&self, vault: &Vault) -> Result<bool> {
        vault.check_mac(
            &self.key_id,
            CHECKPOINT_PURPOSE,
            Self::signed_text(self.seq, &self.hash, &self.at).as_bytes(),
            &self.mac,
        )
    }

    /// Every checkpoint in `text` (a server log, a syslog file), with its line number; a line
    /// that has the checkpoint mark but cannot be read gives the reason instead.
    pub fn find_all(text: &str) -> Vec<(usize, std::result::Result<Checkpoint, String>)> {
        text.lines()
            .enumerate()
            .filter_map(|(i, line)| {
                let at = line.find(CHECKPOINT_TAG)?;
                Some((i + 1, Self::parse(&line[at + CHECKPOINT_TAG.len()..])))
            })
            .collect()
    }

    fn parse(fields: &str) -> std::result::Result<Checkpoint, String> {
        let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
        for token in fields.split_whitespace() {
            let Some((k, v)) = token.split_once('=') else {
                break;
            };
            seen.insert(k, v);
        }
        let get = |k: &str| {
            seen.get(k)
                .copied()
                .filter(|v| !v.is_empty())
                .ok_or_else(|| format!("it has no {k}="))
        };
        let seq = get("seq")?
            .parse::<i64>()
            .map_err(|_| "its seq is not a number".to_string())?;
        Ok(Checkpoint {
            seq,
            hash: get("hash")?.to_string(),
            at: get("at")?.to_string(),
            key_id: get("key")?.to_string(),
            mac: get("mac")?.to_string(),
        })
    }
}

impl std::fmt::Display for Checkpoint {
    /// `lockstep-checkpoint v1 seq=S hash=H at=T key=K mac=M`: one line, for logs and syslog.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{CHECKPOINT_TAG} seq={} hash={} at={} key={} mac={}",
            self.seq, self.hash, self.at, self.key_id, self.mac
        )
    }
}

/// Reads the checkpoints in `text` and keeps the authentic ones; the rest are problems to
/// report (`line N: why`).
pub fn read_checkpoints(vault: &Vault, text: &str) -> (Vec<Checkpoint>, Vec<String>) {
    let mut good = Vec::new();
    let mut problems = Vec::new();
    for (line, found) in Checkpoint::find_all(text) {
        match found {
            Ok(c) => match c.authentic(vault) {
                Ok(true) => good.push(c),
                Ok(false) => problems.push(format!(
                    "line {line}: the checkpoint of seq {} is not signed by this master key: it \
                     was forged or altered",
                    c.seq
                )),
                Err(e) => problems.push(format!("line {line}: checkpoint of seq {}: {e}", c.seq)),
            },
            Err(why) => problems.push(format!(
                "line {line}: a checkpoint that cannot be read: {why}"
            )),
        }
    }
    (good, problems)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vault::MasterKey;

    fn vault() -> Vault {
        Vault::new(MasterKey::from_bytes([3u8; 32]))
    }

    fn bare(seq: i64, prev: &str) -> AuditRow {
        AuditRow {
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
            chain_version: UNKEYED,
            key_id: None,
        }
    }

    fn unkeyed(seq: i64, prev: &str) -> AuditRow {
        let mut r = bare(seq, prev);
        r.hash = unkeyed_hash(&r).unwrap();
        r
    }

    fn keyed(v: &Vault, seq: i64, prev: &str) -> AuditRow {
        let mut r = bare(seq, prev);
        r.chain_version = KEYED;
        let (key_id, hash) = keyed_hash(v, &r).unwrap();
        r.key_id = Some(key_id);
        r.hash = hash;
        r
    }

    /// A chain of `unkeyed_n` unkeyed events then `keyed_n` keyed ones.
    fn chain(v: &Vault, unkeyed_n: i64, keyed_n: i64) -> Vec<AuditRow> {
        let mut rows: Vec<AuditRow> = Vec::new();
        for seq in 1..=unkeyed_n + keyed_n {
            let prev = rows
                .last()
                .map_or(GENESIS_HASH.to_string(), |r| r.hash.clone());
            rows.push(if seq <= unkeyed_n {
                unkeyed(seq, &prev)
            } else {
                keyed(v, seq, &prev)
            });
        }
        rows
    }

    /// Walks `rows` as `verify` does.
    fn walk(
        v: &Vault,
        rows: &[AuditRow],
        checkpoints: &[Checkpoint],
    ) -> std::result::Result<ChainReport, (i64, String)> {
        let mut w = Walk::new(v, checkpoints);
        for r in rows {
            if let Some(p) = w.step(r) {
                return Err((r.seq, p));
            }
        }
        w.finish(true).map_err(|b| (b.seq, b.problem))
    }

    /// What an attacker without the master key does: recompute the unkeyed SHA-256 chain from
    /// `from` on, optionally marking the rows as unkeyed.
    fn recompute_unkeyed(rows: &mut [AuditRow], from: usize, mark_unkeyed: bool) {
        for i in from..rows.len() {
            if i > 0 {
                rows[i].prev_hash = rows[i - 1].hash.clone();
            }
            if mark_unkeyed {
                rows[i].chain_version = UNKEYED;
                rows[i].key_id = None;
            }
            rows[i].hash = unkeyed_hash(&rows[i]).unwrap();
        }
    }

    #[test]
    fn a_keyed_chain_verifies_and_each_kind_of_tampering_is_named() {
        let v = vault();
        let rows = chain(&v, 0, 4);
        assert_eq!(
            walk(&v, &rows, &[]),
            Ok(ChainReport {
                events: 4,
                unkeyed: 0,
                checkpoints: 0
            })
        );

        let mut edited = rows.clone();
        edited[1].actor = "user:mallory".into();
        let (seq, p) = walk(&v, &edited, &[]).unwrap_err();
        assert_eq!(seq, 2);
        assert!(p.contains("does not match its hash"), "{p}");

        let mut deleted = rows.clone();
        deleted.remove(1);
        assert!(walk(&v, &deleted, &[]).unwrap_err().1.contains("deleted"));

        let mut moved = rows.clone();
        moved.swap(1, 2);
        assert_eq!(walk(&v, &moved, &[]).unwrap_err().0, 3);

        let mut version = rows.clone();
        version[2].chain_version = 7;
        assert!(walk(&v, &version, &[]).unwrap_err().1.contains("version 7"));
    }

    #[test]
    fn recomputing_the_sha256_chain_no_longer_hides_an_edit() {
        let v = vault();
        for mark_unkeyed in [false, true] {
            let mut rows = chain(&v, 0, 6);
            rows[3].target = "forged".into();
            recompute_unkeyed(&mut rows, 3, mark_unkeyed);
            let (seq, p) = walk(&v, &rows, &[]).unwrap_err();
            assert_eq!(seq, 4, "mark_unkeyed={mark_unkeyed}: {p}");
        }
        // Rewriting every event as unkeyed leaves nothing sealed: reported at the first one.
        let mut rows = chain(&v, 0, 3);
        rows[0].target = "forged".into();
        recompute_unkeyed(&mut rows, 0, true);
        let (seq, p) = walk(&v, &rows, &[]).unwrap_err();
        assert_eq!(seq, 1);
        assert!(p.contains("no keyed event seals them"), "{p}");
    }

    #[test]
    fn unkeyed_events_verify_before_the_first_keyed_event_which_seals_them() {
        let v = vault();
        let rows = chain(&v, 3, 2);
        assert_eq!(
            walk(&v, &rows, &[]),
            Ok(ChainReport {
                events: 5,
                unkeyed: 3,
                checkpoints: 0
            })
        );
        // An unkeyed event edited and its unkeyed successors recomputed: the seal no longer
        // matches.
        let mut rows2 = rows.clone();
        rows2[1].actor = "user:mallory".into();
        recompute_unkeyed(&mut rows2[..3], 1, false);
        let (seq, p) = walk(&v, &rows2, &[]).unwrap_err();
        assert_eq!(seq, 4);
        assert!(p.contains("which it seals"), "{p}");
        // ... and moving the seal onto the new hash breaks its MAC.
        rows2[3].prev_hash = rows2[2].hash.clone();
        let (seq, p) = walk(&v, &rows2, &[]).unwrap_err();
        assert_eq!(seq, 4);
        assert!(p.contains("master key to recompute"), "{p}");
    }

    #[test]
    fn another_master_key_cannot_vouch_for_the_chain() {
        let rows = chain(&vault(), 0, 2);
        let other = Vault::new(MasterKey::from_bytes([4u8; 32]));
        let (seq, p) = walk(&other, &rows, &[]).unwrap_err();
        assert_eq!(seq, 1);
        assert!(p.contains("does not have"), "{p}");
    }

    #[test]
    fn a_schema_without_the_version_column_is_all_unkeyed_and_says_so() {
        let v = vault();
        let rows = chain(&v, 3, 0);
        let mut w = Walk::new(&v, &[]);
        for r in &rows {
            assert_eq!(w.step(r), None);
        }
        assert_eq!(
            w.finish(false),
            Ok(ChainReport {
                events: 3,
                unkeyed: 3,
                checkpoints: 0
            })
        );
    }

    #[test]
    fn checkpoints_round_trip_through_text_and_catch_a_deleted_tail() {
        let v = vault();
        let rows = chain(&v, 0, 5);
        let cp = Checkpoint::make(&v, 5, &rows[4].hash).unwrap();
        let log = format!(
            "2026-01-01T00:00:00Z  INFO lockstep_server::audit: {cp}\n<85>1 - h lockstep 1 CHECKPOINT - {cp}\nnoise\n"
        );
        let (found, problems) = read_checkpoints(&v, &log);
        assert_eq!(found, vec![cp.clone(), cp.clone()]);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(walk(&v, &rows, &found).map(|r| r.checkpoints), Ok(2));

        // The newest two events deleted: the chain is intact in itself, not against the
        // checkpoint.
        assert!(walk(&v, &rows[..3], &[]).is_ok());
        let (seq, p) = walk(&v, &rows[..3], &found).unwrap_err();
        assert_eq!(seq, 4);
        assert!(p.contains("reached seq 5") && p.contains("deleted"), "{p}");

        // A rewritten event at the checkpoint's seq.
        let mut other = rows.clone();
        other[4] = keyed(&v, 5, &rows[3].hash);
        other[4].outcome = "failure".into();
        let (_, hash) = keyed_hash(&v, &other[4]).unwrap();
        other[4].hash = hash;
        let (seq, p) = walk(&v, &other, &found).unwrap_err();
        assert_eq!(seq, 5);
        assert!(p.contains("rewritten after that checkpoint"), "{p}");

        // Forged or mangled checkpoint lines are refused, never trusted.
        let mut forged = cp.clone();
        forged.seq = 9;
        let other_key = Vault::new(MasterKey::from_bytes([4u8; 32]));
        let theirs = Checkpoint::make(&other_key, 9, &rows[4].hash).unwrap();
        let text = format!("{forged}\n{theirs}\nlockstep-checkpoint v1 seq=x\n");
        let (found, problems) = read_checkpoints(&v, &text);
        assert!(found.is_empty());
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].contains("not signed"), "{problems:?}");
        assert!(problems[1].contains("does not have"), "{problems:?}");
        assert!(problems[2].contains("cannot be read"), "{problems:?}");
    }
}
