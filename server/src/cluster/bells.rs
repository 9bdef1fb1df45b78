//! Wake-ups across nodes. When a node queues work (a reset job, a task for an agent) or
//! records an agent's report, it rings the waiters in its own process at once and, on
//! PostgreSQL, every other node through `NOTIFY`: a node's listener rings its own waiters in
//! turn. The database stays the truth: a bell only says "look now", and every waiter still
//! re-reads the database now and then, so a bell lost with a dropped connection costs a delay,
//! never work.

use std::sync::{Arc, OnceLock};

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio_util::sync::CancellationToken;

use crate::store::{self, Store};

/// The longest id a bell carries: the server's ids (`agt_…`, `rst_…-N`) are far shorter.
const MAX_ID: usize = 80;
/// Work bells closer together than this wake the workers once: woken workers claim until
/// nothing is left, so a burst (or a flood rung by someone with a database login) costs one
/// round of claims.
const WORK_BELL_GAP: std::time::Duration = std::time::Duration::from_millis(50);

/// What a bell asks the waiters to look at again.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Bell {
    /// Reset items to claim.
    Work,
    /// Tasks for this agent (its long-poll answers at once).
    Agent(String),
    /// A result for this agent task (the reset waiting for it goes on).
    Task(String),
}

impl Bell {
    fn encode(&self) -> String {
        match self {
            Bell::Work => "work".into(),
            Bell::Agent(id) => format!("agent:{id}"),
            Bell::Task(id) => format!("task:{id}"),
        }
    }

    /// A payload another node rang; `None` for one this version does not know, or whose id
    /// is not one the server makes (anyone who can connect to the database can ring).
    fn decode(payload: &str) -> Option<Bell> {
        let id_ok = |id: &str| {
            (1..=MAX_ID).contains(&id.len())
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        };
        match payload.split_once(':') {
            None if payload == "work" => Some(Bell::Work),
            Some(("agent", id)) if id_ok(id) => Some(Bell::Agent(id.into())),
            Some(("task", id)) if id_ok(id) => Some(Bell::Task(id.into())),
            _ => None,
        }
    }
}

/// The sending side, shared by whoever rings. Until [`start`] connects it (and always on
/// SQLite) a bell reaches only this process's waiters.
#[derive(Default)]
pub struct Bells {
    out: OnceLock<UnboundedSender<Bell>>,
}

impl Bells {
    /// Rings `bell` on the other nodes (this process's waiters are rung by the caller).
    pub fn ring_others(&self, bell: Bell) {
        if let Some(out) = self.out.get() {
            let _ = out.send(bell);
        }
    }
}

/// Connects `bells` to the other nodes on PostgreSQL: a task sends what is rung here, and a
/// listener hands what other nodes ring to `here` (which rings this process's waiters). Both
/// end with `stop`. Nothing to do on SQLite.
pub fn start(
    store: &Store,
    database_url: &str,
    bells: &Bells,
    here: Arc<dyn Fn(Bell) + Send + Sync>,
    stop: CancellationToken,
) {
    if store.backend() != store::Backend::Postgres {
        return;
    }
    let (tx, rx) = unbounded_channel();
    if bells.out.set(tx).is_err() {
        return;
    }
    tokio::spawn(send(store.clone(), rx, stop.clone()));
    tokio::spawn(listen(database_url.to_string(), here, stop));
}

/// Sends what is rung here, a batch at a time with duplicates rung once.
async fn send(store: Store, mut rx: UnboundedReceiver<Bell>, stop: CancellationToken) {
    loop {
        let first = tokio::select! {
            _ = stop.cancelled() => return,
            bell = rx.recv() => match bell { Some(b) => b, None => return },
        };
        let mut batch = std::collections::HashSet::from([first]);
        while let Ok(more) = rx.try_recv() {
            batch.insert(more);
        }
        for bell in batch {
            if let Err(e) =
                store::cluster::ring(store.pool(), store.backend(), &bell.encode()).await
            {
                tracing::debug!(error = %e, "could not ring the other nodes");
            }
        }
    }
}

/// Hears what the nodes ring (this one's own bells too, which only wake its waiters twice).
async fn listen(url: String, here: Arc<dyn Fn(Bell) + Send + Sync>, stop: CancellationToken) {
    loop {
        let mut listener = match store::cluster::BellListener::connect(&url).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for other nodes' bells; retrying in 5 s");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(std::time::Duration::from_secs(5)) => continue,
                }
            }
        };
        let mut last_work: Option<tokio::time::Instant> = None;
        loop {
            let payload = tokio::select! {
                _ = stop.cancelled() => return,
                p = listener.recv() => p,
            };
            match payload {
                Ok(p) => match Bell::decode(&p) {
                    Some(Bell::Work) => {
                        let now = tokio::time::Instant::now();
                        if last_work.is_none_or(|t| now.duration_since(t) >= WORK_BELL_GAP) {
                            last_work = Some(now);
                            here(Bell::Work);
                        }
                    }
                    Some(bell) => here(bell),
                    None => {}
                },
                Err(e) => {
                    tracing::warn!(error = %e, "lost the connection that hears other nodes' bells");
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bell_reads_back_as_rung_and_an_unknown_one_is_ignored() {
        for bell in [
            Bell::Work,
            Bell::Agent("agt_1".into()),
            Bell::Task("rst_1-1".into()),
        ] {
            assert_eq!(Bell::decode(&bell.encode()), Some(bell));
        }
        let long = format!("agent:{}", "a".repeat(MAX_ID + 1));
        for unknown in [
            "",
            "agent:",
            "worker",
            "job:1",
            "task",
            "agent:a b",
            "task:x;y",
            &long,
        ] {
            assert_eq!(Bell::decode(unknown), None, "{unknown}");
        }
    }
}
