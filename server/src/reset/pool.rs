//! Admin connections kept open per target, so a job logs in as the admin once per target rather
//! than once per account. Connections idle for a minute are closed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

use super::connector::{TargetFailure, Timeouts};
use super::ssh::{self, Connection, Endpoint};
use crate::vault::Secret;

/// How long an unused admin connection stays open.
const IDLE: Duration = Duration::from_secs(60);

type Slot = Arc<Mutex<Option<(Arc<Connection>, Instant)>>>;

/// One open admin connection per (target, admin, pinned host key, admin password): a
/// connection is reused only by a caller that could have opened it itself. Two resources with
/// the same host, port and login but different stored passwords never share a session.
pub struct AdminPool {
    slots: std::sync::Mutex<HashMap<String, Slot>>,
    timeouts: Timeouts,
    /// Keys the password's part of a slot's name (HMAC-SHA-256 under a key made at start that
    /// never leaves this process): the map holds no password, nor a hash that could be guessed.
    key: [u8; 32],
}

impl AdminPool {
    fn key(&self, endpoint: &Endpoint, user: &str, password: &Secret) -> String {
        use hmac::{KeyInit, Mac};
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.key)
            .expect("HMAC takes a key of any length");
        mac.update(password.expose().as_bytes());
        let credential = mac.finalize().into_bytes();
        format!(
            "{}\n{user}\n{}\n{}",
            endpoint.label(),
            endpoint.pinned_host_key.as_deref().unwrap_or(""),
            hex::encode(credential)
        )
    }
}

impl AdminPool {
    pub fn new(timeouts: Timeouts) -> AdminPool {
        let mut key = [0u8; 32];
        // Without randomness the key is zeros: slots are still told apart by the password.
        let _ = getrandom::fill(&mut key);
        AdminPool {
            slots: Default::default(),
            timeouts,
            key,
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
    ) -> Result<(Arc<Connection>, bool), TargetFailure> {
        let slot = self.slot(&self.key(endpoint, user, password));
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

    /// Drops the connection for `endpoint`, `user` and `password` (after it failed).
    pub async fn forget(&self, endpoint: &Endpoint, user: &str, password: &Secret) {
        let slot = self.slot(&self.key(endpoint, user, password));
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
