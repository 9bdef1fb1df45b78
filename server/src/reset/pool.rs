//! Admin connections kept open per target, so a job logs in as the admin once per target rather
//! than once per account. Connections idle for a minute are closed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

use super::ssh::{self, Connection, Endpoint, SshFailure, Timeouts};
use crate::vault::Secret;

/// How long an unused admin connection stays open.
const IDLE: Duration = Duration::from_secs(60);

type Slot = Arc<Mutex<Option<(Arc<Connection>, Instant)>>>;

/// One open admin connection per (target, admin, pinned host key).
pub struct AdminPool {
    slots: std::sync::Mutex<HashMap<String, Slot>>,
    timeouts: Timeouts,
}

fn key(endpoint: &Endpoint, user: &str) -> String {
    format!(
        "{}\n{user}\n{}",
        endpoint.label(),
        endpoint.pinned_host_key.as_deref().unwrap_or("")
    )
}

impl AdminPool {
    pub fn new(timeouts: Timeouts) -> AdminPool {
        AdminPool {
            slots: Default::default(),
            timeouts,
        }
    }

    fn slot(&self, key: &str) -> Slot {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.entry(key.to_string()).or_default().clone()
    }

    /// An authenticated admin connection: the open one if it is still alive, else a new one.
    /// The boolean says whether it was reused (a failure on it may just mean it went stale).
    pub async fn get(
        &self,
        endpoint: &Endpoint,
        user: &str,
        password: &Secret,
    ) -> Result<(Arc<Connection>, bool), SshFailure> {
        let slot = self.slot(&key(endpoint, user));
        let mut held = slot.lock().await;
        if let Some((conn, last)) = held.as_mut()
            && !conn.is_closed()
            && last.elapsed() < IDLE
        {
            *last = Instant::now();
            return Ok((conn.clone(), true));
        }
        let conn = Arc::new(ssh::connect(endpoint, user, password, self.timeouts).await?);
        *held = Some((conn.clone(), Instant::now()));
        Ok((conn, false))
    }

    /// Drops the connection for `endpoint` and `user` (after it failed).
    pub async fn forget(&self, endpoint: &Endpoint, user: &str) {
        let slot = self.slot(&key(endpoint, user));
        slot.lock().await.take();
    }

    /// Closes connections idle for longer than a minute.
    pub async fn sweep(&self) {
        let slots: Vec<Slot> = {
            let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            slots.values().cloned().collect()
        };
        for slot in slots {
            let mut held = slot.lock().await;
            if held
                .as_ref()
                .is_some_and(|(_, last)| last.elapsed() >= IDLE)
                && let Some((conn, _)) = held.take()
                && let Ok(conn) = Arc::try_unwrap(conn)
            {
                conn.close().await;
            }
        }
    }
}
