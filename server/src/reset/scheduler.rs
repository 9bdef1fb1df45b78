//! Scheduled rotation: accounts whose password is older than their policy's `max_age_days`
//! are rotated by a bulk job the server starts itself.

use super::jobs::{self, Job, MAX_JOB_ACCOUNTS, NewJob};
use crate::audit::Actor;
use crate::error::{Error, Result};
use crate::store::{self, Store};
use crate::vault::Vault;

/// Starts one job for every account past its maximum age, if there is any. Servers sharing a
/// database agree through the job's idempotency key (one per `bucket`): only one starts it.
pub async fn rotate_due(store: &Store, vault: &Vault, bucket: &str) -> Result<Option<Job>> {
    let now = crate::time::now();
    let due = store::resets::due_for_rotation(store.pool(), &now, MAX_JOB_ACCOUNTS as i64).await?;
    if due.is_empty() {
        return Ok(None);
    }
    let spec = NewJob {
        kind: "bulk",
        trigger: "scheduled",
        user: "system",
        reason: "scheduled rotation: the password is older than its policy's maximum age".into(),
        apply_remote: true,
        // `#` never appears in a user name, so no user's key can collide with this one.
        key: Some(format!("#scheduler\n{bucket}")),
        password: None,
        notify: Vec::new(),
    };
    match jobs::create(store, vault, &Actor::system(), spec, due).await {
        Ok((job, _)) => Ok(Some(job)),
        // Another server started this bucket's job.
        Err(Error::Conflict(_)) => Ok(None),
        Err(e) => Err(e),
    }
}
