//! `lockstep-agent run`: register the machine, then hold one long-poll open to the server and
//! do each task as it arrives. A node that cannot be reached is passed over for the next one of
//! the list (`client`); when none can be, the agent reconnects with capped exponential backoff
//! and jitter. Results are reported until a node has them (reports are idempotent, so one that
//! failed on a dying node is sent again to the next).

use std::sync::Arc;
use std::time::Duration;

use lockstep_agent_protocol::messages::{
    DiscoveryResult, ListenerReport, Outcome, ResultReceipt, Task, TaskResult, Work,
};
use tokio::sync::Semaphore;

use crate::client::Client;
use crate::config::AgentConfig;
use crate::error::{Error, Result};
use crate::listener::ListenerHost;
use crate::{accounts, keyfile, password};

/// How long each long-poll asks the server to hold.
const HOLD: Duration = Duration::from_secs(25);
/// Tasks run at once (chpasswd serializes on the shadow lock anyway).
const CONCURRENT_TASKS: usize = 4;

/// Exponential backoff from 0.5 s, capped at the configured poll interval, with full jitter
/// in its upper half so a fleet does not reconnect in step after a server restart.
struct Backoff {
    failures: u32,
    cap: Duration,
}

impl Backoff {
    fn reset(&mut self) {
        self.failures = 0;
    }

    fn next(&mut self) -> Duration {
        let base = Duration::from_millis(500)
            .saturating_mul(2u32.saturating_pow(self.failures.min(16)))
            .min(self.cap);
        self.failures += 1;
        let mut r = [0u8; 2];
        let _ = getrandom::fill(&mut r);
        let frac = 0.5 + f64::from(u16::from_le_bytes(r)) / f64::from(u16::MAX) / 2.0;
        base.mul_f64(frac)
    }
}

fn new_session() -> String {
    let mut b = [0u8; 12];
    let _ = getrandom::fill(&mut b);
    hex::encode(b)
}

pub async fn run(cfg: AgentConfig) -> Result<()> {
    let key = keyfile::load(&cfg.key_path())?;
    let client = Arc::new(Client::new(&cfg.servers, Some(cfg.agent_id.clone()), key)?);
    let listeners =
        Arc::new(ListenerHost::new(&cfg.state_dir, &cfg.publisher_keys).map_err(Error::Config)?);
    let cfg = Arc::new(cfg);
    let session = new_session();
    let mut backoff = Backoff {
        failures: 0,
        cap: Duration::from_secs(cfg.poll_interval_secs),
    };
    let servers: Vec<&str> = cfg.servers.iter().map(|s| s.url.as_str()).collect();
    tracing::info!(agent = %cfg.agent_id, servers = %servers.join(" "), session = %session, "lockstep-agent started");

    // Register the machine and its accounts first (again at every start: new accounts appear,
    // nothing is duplicated).
    loop {
        let report = accounts::discover(client.server(), &cfg.accounts)?;
        match client
            .post::<_, DiscoveryResult>(lockstep_agent_protocol::DISCOVERY_PATH, &report)
            .await
        {
            Ok(r) => {
                tracing::info!(resource = %r.resource_id, added = r.added.len(), known = r.known, "discovery registered");
                backoff.reset();
                break;
            }
            Err(e) => wait_after(&e, &mut backoff).await,
        }
    }

    let slots = Arc::new(Semaphore::new(CONCURRENT_TASKS));
    let path = format!(
        "{}?session={session}&wait={}",
        lockstep_agent_protocol::NEXT_TASK_PATH,
        HOLD.as_secs()
    );
    loop {
        // Take a task only when one can start at once.
        let permit = slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::Config("task slots closed".into()))?;
        match client.get_held::<Task>(&path, HOLD).await {
            Ok(Some(task)) => {
                backoff.reset();
                tracing::info!(task = %task.id, attempt = task.attempt, "task started");
                let (client, cfg, session) = (client.clone(), cfg.clone(), session.clone());
                let listeners = listeners.clone();
                tokio::spawn(async move {
                    let id = task.id.clone();
                    let (outcome, message, listener) =
                        perform(&cfg, &listeners, &client, task).await;
                    tracing::info!(task = %id, outcome = outcome.as_str(), %message, "task done");
                    let result = TaskResult {
                        session,
                        outcome,
                        message,
                        listener,
                    };
                    report(&client, &cfg, &id, result).await;
                    drop(permit);
                });
            }
            Ok(None) => backoff.reset(),
            Err(e) => wait_after(&e, &mut backoff).await,
        }
    }
}

async fn wait_after(e: &Error, backoff: &mut Backoff) {
    let d = backoff.next();
    if e.is_authorization() {
        tracing::error!(error = %e, retry_in_ms = d.as_millis() as u64, "the server refuses this agent");
    } else if matches!(e, Error::Certificate { .. }) {
        tracing::error!(error = %e, retry_in_ms = d.as_millis() as u64, "server unreachable: not its pinned certificate; retrying");
    } else {
        tracing::warn!(error = %e, retry_in_ms = d.as_millis() as u64, "server unreachable; retrying");
    }
    tokio::time::sleep(d).await;
}

async fn perform(
    cfg: &AgentConfig,
    listeners: &ListenerHost,
    client: &Client,
    task: Task,
) -> (Outcome, String, Option<ListenerReport>) {
    let (outcome, message) = match task.work {
        Work::Reset {
            login_name,
            password,
        } => password::reset(&cfg.accounts, &login_name, &password).await,
        Work::Verify {
            login_name,
            password,
        } => match password::accepts(&cfg.accounts, &login_name, &password) {
            Ok(true) => (Outcome::Succeeded, "the password is accepted".into()),
            Ok(false) => (Outcome::Refused, "the password is not accepted".into()),
            Err(e) => (Outcome::Failed, e),
        },
        Work::Listener(work) => return listeners.run(client, *work).await,
    };
    (outcome, message, None)
}

/// Reports until the server has the result; a repeated report is harmless.
async fn report(client: &Client, cfg: &AgentConfig, task_id: &str, body: TaskResult) {
    let mut backoff = Backoff {
        failures: 0,
        cap: Duration::from_secs(cfg.poll_interval_secs),
    };
    loop {
        match client
            .post::<_, ResultReceipt>(&lockstep_agent_protocol::result_path(task_id), &body)
            .await
        {
            Ok(r) => {
                if !r.recorded {
                    tracing::info!(task = %task_id, state = %r.state, "the server already had this result");
                }
                return;
            }
            // The task is gone or handed out again: nothing more to say about it.
            Err(Error::Refused {
                status: 404 | 409,
                detail,
            }) => {
                tracing::warn!(task = %task_id, %detail, "result not taken");
                return;
            }
            Err(e) => wait_after(&e, &mut backoff).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_the_cap_with_jitter() {
        let mut b = Backoff {
            failures: 0,
            cap: Duration::from_secs(60),
        };
        let first = b.next();
        assert!(first >= Duration::from_millis(250) && first <= Duration::from_millis(500));
        for _ in 0..20 {
            let d = b.next();
            assert!(d <= Duration::from_secs(60));
        }
        let late = b.next();
        assert!(late >= Duration::from_secs(30), "{late:?}");
        b.reset();
        assert!(b.next() <= Duration::from_millis(500));
    }
}
