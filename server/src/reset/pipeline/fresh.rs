//! A fresh reset: pre-listeners, the new password sealed into the item before the target is
//! touched, the apply, the verifying login, the commit.

use lockstep_runtime::manifest::Phase;
use std::sync::Arc;

use super::lease::{lease_of, still_held};
use super::{Engine, MAX_GENERATED_ATTEMPTS, Subject, is_pinned, state};
use crate::audit::{self, Actor, NewEvent, Outcome};
use crate::error::{Error, Result};
use crate::inventory::resource_types::ResetMethod;
use crate::reset::connector::{
    Admin, ApplyFailure, Connector, Held, KeyRecorder, TargetFailure, TargetKey,
};
use crate::reset::history_purpose;
use crate::reset::settings::get_settings;
use crate::reset::target::SshTargetExec;
use crate::states::TaskState;
use crate::store::resets::ItemRow;
use crate::store::{self};
use crate::vault::{Secret, account_password_aad, reset_given_aad, reset_pending_aad};

impl Engine {
    /// A reset from the start: choose the password, ask the pre-reset listeners, journal the
    /// pending password, apply, verify, commit.
    pub(super) async fn fresh(self: Arc<Self>, item: ItemRow, mut s: Subject) -> Result<()> {
        let mut listeners: Vec<serde_json::Value> = Vec::new();
        self.step(&item, state::PRE_LISTENERS, None, &listeners, item.attempts)
            .await?;
        let given = match store::resets::given(self.store.pool(), &item.id).await? {
            Some(sealed) => Some(
                self.vault
                    .open_secret(&sealed, &reset_given_aad(&item.id, &item.account_id))?,
            ),
            None => None,
        };
        let mut new = match &given {
            Some(pw) => Secret::new(pw.expose().to_string()),
            None => self.fresh_password(&s).await?,
        };
        let mut old = self.old_password(&s.account.id).await?;
        if let Some(why) = s.unreachable() {
            return self
                .step(&item, state::FAILED, Some(&why), &listeners, item.attempts)
                .await;
        }
        let by_connector = s.by_connector();
        let over_ssh = by_connector && s.method == ResetMethod::Ssh;
        // Where the change goes, for the target's concurrency limit; a resource that does
        // not say where its server is fails here, before anything runs.
        let label = if by_connector {
            match self.connector(s.method, &s.resource, &s.settings, &s.command) {
                Ok(c) => c.label(),
                Err(why) => {
                    return self
                        .step(&item, state::FAILED, Some(&why), &listeners, item.attempts)
                        .await;
                }
            }
        } else {
            s.endpoint().label()
        };
        if over_ssh {
            // The template runs as root on the target: only the approved one, sealed.
            match self
                .registry
                .approved_command(&s.resource.resource_type)
                .await?
            {
                Ok(Some(command)) => s.command = command,
                // No template and no default: a setup gap, not tampering.
                Ok(None) => {
                    let why =
                        crate::inventory::resource_types::no_command(&s.resource.resource_type);
                    return self
                        .step(&item, state::FAILED, Some(&why), &listeners, item.attempts)
                        .await;
                }
                Err(why) => {
                    tracing::error!(resource_type = %s.resource.resource_type, "ALERT: {why}");
                    audit::record(
                        &self.store,
                        NewEvent {
                            actor: &Actor::system(),
                            action: "resource-type.integrity",
                            target: &s.resource.resource_type,
                            outcome: Outcome::Failure,
                            detail: serde_json::json!({ "item": item.id, "reason": why }),
                        },
                    )
                    .await?;
                    return self
                        .step(&item, state::FAILED, Some(&why), &listeners, item.attempts)
                        .await;
                }
            }
        }
        let admin = if by_connector {
            match self.admin(&s).await {
                Ok(a) => Some(a),
                Err(why) => {
                    return self
                        .step(&item, state::FAILED, Some(&why), &listeners, item.attempts)
                        .await;
                }
            }
        } else {
            None
        };

        // Pre-reset listeners, in order; any veto (or a listener that cannot answer) stops it.
        let target = admin.as_ref().filter(|_| over_ssh).map(|a| {
            Arc::new(SshTargetExec::new(
                self.admins.clone(),
                s.endpoint(),
                a.login.clone(),
                a.password.clone(),
            ))
        });
        let vetoed = self
            .run_listeners(
                &item,
                &s,
                Phase::PreReset,
                &old,
                &new,
                target.clone(),
                &mut listeners,
            )
            .await?;
        if let Some(why) = vetoed {
            return self
                .step(&item, state::VETOED, Some(&why), &listeners, item.attempts)
                .await;
        }

        // From here on the target is touched: respect its concurrency limit.
        let _slot = self
            .target_slots(&label)
            .acquire_owned()
            .await
            .map_err(|_| Error::Internal("target slots closed".into()))?;
        let mut attempts = item.attempts;
        // Whether a command carrying `new` was cut off: it may still apply it later, so `new`
        // is then never discarded, only kept.
        let mut sent_by_interrupted = false;
        loop {
            attempts += 1;
            self.write_pending(&item, &new, &listeners, attempts)
                .await?;
            if let Some(agent) = s.via_agent() {
                let task = self
                    .apply_via_agent(&item, &s, agent, &new, attempts)
                    .await?;
                match TaskState::parse(&task.state) {
                    // The agent set the password and checked the account accepts it.
                    Some(TaskState::Succeeded) => {
                        self.step(&item, state::APPLIED, None, &listeners, attempts)
                            .await?;
                        self.step(&item, state::VERIFIED, None, &listeners, attempts)
                            .await?;
                        return self
                            .commit(item, s, new, Some(old), listeners, attempts)
                            .await;
                    }
                    Some(TaskState::Refused)
                        if given.is_none() && attempts < MAX_GENERATED_ATTEMPTS =>
                    {
                        new = self.fresh_password(&s).await?;
                        continue;
                    }
                    _ => {
                        return self
                            .agent_ended(item, task, listeners, attempts, given.is_none())
                            .await;
                    }
                }
            }
            let Some(admin) = &admin else {
                // Vault only: nothing to apply or verify.
                return self
                    .commit(item, s, new, Some(old), listeners, attempts)
                    .await;
            };
            let failure = match self.apply(&s, admin, &new).await {
                Ok(()) => break,
                // The target's policy refused a generated password and changed nothing: try a
                // fresh one (keeping this one if an interrupted command may still apply it).
                Err(ApplyFailure::PolicyRefused { .. })
                    if given.is_none() && attempts < MAX_GENERATED_ATTEMPTS =>
                {
                    if sent_by_interrupted {
                        self.keep(&item, &new).await?;
                        sent_by_interrupted = false;
                    }
                    new = self.fresh_password(&s).await?;
                    continue;
                }
                // Refused every time: a person must look at the target's policy.
                Err(e @ ApplyFailure::PolicyRefused { .. }) if given.is_none() => {
                    let why = format!(
                        "the target refused {attempts} generated passwords by its policy and \
                         still has the stored one; a person must look: {e}"
                    );
                    return self
                        .step_keeping(
                            &item,
                            state::PARKED,
                            Some(&why),
                            &listeners,
                            attempts,
                            sent_by_interrupted,
                        )
                        .await;
                }
                // Nothing reached the target this time: the reset fails cleanly (keeping `new`
                // if an earlier, interrupted attempt carried it and may still apply it).
                Err(e) if !e.may_have_changed() => {
                    return self
                        .step_keeping(
                            &item,
                            state::FAILED,
                            Some(&e.to_string()),
                            &listeners,
                            attempts,
                            sent_by_interrupted,
                        )
                        .await;
                }
                Err(e) => e,
            };
            // The command may have set the password whatever it said: before anything is
            // retried, regenerated or discarded, the target shows which password it holds.
            // If it cannot be asked, the item stays in flight with its pending password and
            // is reconciled when its lease runs out.
            if s.unpinned() {
                s = self.refresh_pin(s).await?;
            }
            // A command that was cut off may still be running on the target (a chpasswd
            // working through a batch): its answer is asked until it stops changing.
            let running = matches!(
                failure,
                ApplyFailure::Interrupted(_) | ApplyFailure::Abandoned
            );
            let held = match self.ask_target(&item, &s, &new, &mut old, running).await? {
                Ok(held) => held,
                Err(e @ TargetFailure::Unprovable { .. }) => {
                    let why = format!(
                        "the change may have been applied ({failure}) and {e}; both passwords \
                         are kept for a person to check"
                    );
                    return self
                        .out_of_sync(&item, &s, &why, &listeners, attempts)
                        .await;
                }
                Err(e) => {
                    return Err(Error::Conflict(format!(
                        "{}: the change may have been applied ({failure}) and the target cannot \
                         be asked which password it holds ({e}); both are kept and it is asked \
                         again",
                        item.id
                    )));
                }
            };
            match held {
                Held::New => {
                    tracing::info!(item = %item.id, error = %failure, "the change was applied although its command failed");
                    self.step(&item, state::APPLIED, None, &listeners, attempts)
                        .await?;
                    self.step(&item, state::VERIFIED, None, &listeners, attempts)
                        .await?;
                    return self
                        .commit(item, s, new, Some(old), listeners, attempts)
                        .await;
                }
                Held::Neither => {
                    let why = format!(
                        "the target accepts neither the stored nor the new password after: \
                         {failure}; both are kept for a person to check"
                    );
                    return self
                        .out_of_sync(&item, &s, &why, &listeners, attempts)
                        .await;
                }
                Held::Old => {}
            }
            // The target holds the old password now. `new` can go unless a command carrying
            // it was cut off (it may still apply it): then it is kept.
            let generated = given.is_none();
            sent_by_interrupted |= matches!(
                failure,
                ApplyFailure::Interrupted(_) | ApplyFailure::Abandoned
            );
            match failure {
                ApplyFailure::Refused { .. } if generated && attempts < MAX_GENERATED_ATTEMPTS => {
                    // The target's own rules refused a generated password: try a fresh one.
                    if sent_by_interrupted {
                        self.keep(&item, &new).await?;
                        sent_by_interrupted = false;
                    }
                    new = self.fresh_password(&s).await?;
                }
                ApplyFailure::Interrupted(_) | ApplyFailure::Abandoned
                    if attempts < MAX_GENERATED_ATTEMPTS => {}
                // A command cut off before it applied may still be running on the target
                // and apply its input later: the same password was retried, and it stays
                // sealed in the item instead of being discarded.
                e @ (ApplyFailure::Interrupted(_) | ApplyFailure::Abandoned) => {
                    let why = format!(
                        "{e}; the target still accepts the stored password after {attempts} \
                         tries; the new one is kept with this item in case the interrupted \
                         command applies it later"
                    );
                    return self
                        .step_keeping(&item, state::FAILED, Some(&why), &listeners, attempts, true)
                        .await;
                }
                e => {
                    let parked = matches!(e, ApplyFailure::Refused { .. }) && generated;
                    let to = if parked { state::PARKED } else { state::FAILED };
                    let why = if parked {
                        format!(
                            "the target refused {attempts} generated passwords and still accepts \
                             the stored one; a person must look: {e}"
                        )
                    } else {
                        format!(
                            "{e}; the target still accepts the stored password, nothing changed"
                        )
                    };
                    return self
                        .step_keeping(
                            &item,
                            to,
                            Some(&why),
                            &listeners,
                            attempts,
                            sent_by_interrupted,
                        )
                        .await;
                }
            }
        }
        self.step(&item, state::APPLIED, None, &listeners, attempts)
            .await?;
        // The target's key was pinned by this apply if none was: verify against the pin.
        let s = if s.unpinned() {
            self.refresh_pin(s).await?
        } else {
            s
        };
        match self.accepts(&s, &s.account.login_name, &new).await {
            Ok(true) => {
                self.step(&item, state::VERIFIED, None, &listeners, attempts)
                    .await?;
                self.commit(item, s, new, Some(old), listeners, attempts)
                    .await
            }
            // The change was acknowledged but the new password does not log in: find out what
            // the target holds now.
            _ => {
                self.settle(item, s, new, old, listeners, attempts, false)
                    .await
            }
        }
    }

    /// A generated password that satisfies the policy and was not used recently.
    pub(super) async fn fresh_password(&self, s: &Subject) -> Result<Secret> {
        let recent =
            store::resets::recent_history(self.store.pool(), &s.account.id, s.policy.history)
                .await?;
        loop {
            let pw = s.policy.generate()?;
            let fp = self
                .vault
                .fingerprint(&history_purpose(&s.account.id), pw.expose().as_bytes())?;
            if !recent.contains(&fp) {
                return Ok(pw);
            }
        }
    }

    pub(super) async fn write_pending(
        &self,
        item: &ItemRow,
        new: &Secret,
        listeners: &[serde_json::Value],
        attempts: i64,
    ) -> Result<()> {
        let sealed = self
            .vault
            .seal_secret(new, &reset_pending_aad(&item.id, &item.account_id))?;
        let now = crate::time::now();
        let mut tx = self.store.begin_write().await?;
        store::resets::set_pending(tx.conn(), &item.id, Some(&sealed)).await?;
        store::resets::clear_given(tx.conn(), &item.id).await?;
        let listeners = serde_json::Value::Array(listeners.to_vec()).to_string();
        let written = store::resets::set_state(
            tx.conn(),
            &item.id,
            lease_of(item),
            state::PENDING_WRITTEN,
            None,
            &listeners,
            attempts,
            &now,
        )
        .await?;
        still_held(item, written)?;
        tx.commit().await
    }

    /// Changes the password on the target through the admin account, with the resource's
    /// connector; the key the target shows is pinned at first use before anything is sent.
    pub(super) async fn apply(
        &self,
        s: &Subject,
        admin: &Admin,
        new: &Secret,
    ) -> std::result::Result<(), ApplyFailure> {
        // Unpinned when the item was claimed: another connection (or a person) may have
        // pinned a key since, which this connection must then be checked against before it
        // sends the admin's password.
        let fresh;
        let settings = if s.unpinned() {
            fresh = get_settings(&self.store, &s.resource.id)
                .await
                .map_err(|e| ApplyFailure::Unrepresentable(e.to_string()))?;
            &fresh
        } else {
            &s.settings
        };
        let connector = self
            .connector(s.method, &s.resource, settings, &s.command)
            .map_err(ApplyFailure::Unrepresentable)?;
        let keys = PinAtFirstUse {
            engine: self,
            resource_id: &s.resource.id,
            pinned: is_pinned(s.method, settings),
        };
        connector
            .apply(admin, &s.account.login_name, new, &keys)
            .await
    }

    /// Records the key a target showed at first use, unless one was recorded meanwhile; then
    /// the recorded one must be this one (two connections of one bulk job that met different
    /// keys at first use: the second sends nothing).
    async fn pin(&self, resource_id: &str, key: &TargetKey) -> Result<()> {
        let mut tx = self.store.begin_write().await?;
        let (offered, pinned) = match key {
            TargetKey::SshHostKey(k) => {
                store::reset_settings::pin_host_key(tx.conn(), resource_id, k).await?;
                (
                    k,
                    store::reset_settings::pinned_host_key(tx.conn(), resource_id).await?,
                )
            }
            TargetKey::TlsCertificate(c) => {
                store::reset_settings::pin_tls_certificate(tx.conn(), resource_id, c).await?;
                (
                    c,
                    store::reset_settings::pinned_tls_certificate(tx.conn(), resource_id).await?,
                )
            }
        };
        tx.commit().await?;
        match pinned {
            Some(p) if p == *offered => Ok(()),
            Some(p) => {
                tracing::error!(resource = %resource_id, pinned = %p, offered = %offered, "ALERT: two connections to one target met different keys at first use");
                Err(Error::Conflict(format!(
                    "the target showed {offered} but {p} was pinned by another connection at \
                     first use; one of them was not the target: check the resource's pinned key"
                )))
            }
            None => Err(Error::Internal(
                "the resource's reset settings are gone; the key was not pinned".into(),
            )),
        }
    }

    /// Logs in to the reset's target as `login` with `password`, with its connector.
    pub(super) async fn accepts(
        &self,
        s: &Subject,
        login: &str,
        password: &Secret,
    ) -> std::result::Result<bool, String> {
        let connector = self.connector(s.method, &s.resource, &s.settings, &s.command)?;
        connector
            .accepts(login, password)
            .await
            .map_err(|e| e.to_string())
    }

    /// Re-reads the settings (the host key may have been pinned just now).
    pub(super) async fn refresh_pin(&self, mut s: Subject) -> Result<Subject> {
        s.settings = get_settings(&self.store, &s.resource.id).await?;
        Ok(s)
    }

    /// Commits the new password to the vault (one transaction with its history and audit
    /// event), then hands the item to the post-reset listeners.
    pub(super) async fn commit(
        self: Arc<Self>,
        item: ItemRow,
        s: Subject,
        new: Secret,
        old: Option<Secret>,
        listeners: Vec<serde_json::Value>,
        attempts: i64,
    ) -> Result<()> {
        let sealed = self
            .vault
            .seal_secret(&new, &account_password_aad(&s.account.id))?;
        let fp = self
            .vault
            .fingerprint(&history_purpose(&s.account.id), new.expose().as_bytes())?;
        let now = crate::time::now();
        let mut tx = self.store.begin_write().await?;
        store::accounts::set_password(tx.conn(), &s.account.id, &sealed, &now).await?;
        store::resets::add_history(tx.conn(), &s.account.id, &fp, &now).await?;
        store::resets::set_pending(tx.conn(), &item.id, None).await?;
        let record = serde_json::Value::Array(listeners.clone()).to_string();
        let written = store::resets::set_state(
            tx.conn(),
            &item.id,
            lease_of(&item),
            state::COMMITTED,
            None,
            &record,
            attempts,
            &now,
        )
        .await?;
        still_held(&item, written)?;
        audit::append(
            &mut tx,
            NewEvent {
                actor: &Actor::system(),
                action: "account.password.reset",
                target: &s.account.id,
                outcome: Outcome::Success,
                detail: serde_json::json!({
                    "job": item.job_id,
                    "item": item.id,
                    "applied_remotely": s.remote(),
                    "attempts": attempts,
                }),
            },
        )
        .await?;
        tx.commit().await?;
        let mut item = item;
        item.state = state::COMMITTED.into();
        item.listeners = record;
        item.attempts = attempts;
        self.post_phase(item, s, old).await
    }
}

/// What a connector records the target's key with during an apply: nothing to do when the
/// resource has a pin (the connection was checked against it), else [`Engine::pin`].
struct PinAtFirstUse<'e> {
    engine: &'e Engine,
    resource_id: &'e str,
    pinned: bool,
}

impl KeyRecorder for PinAtFirstUse<'_> {
    fn record<'a>(
        &'a self,
        key: &'a TargetKey,
    ) -> std::pin::Pin<Box<dyn Future<Output = std::result::Result<(), String>> + Send + 'a>> {
        Box::pin(async move {
            if self.pinned {
                return Ok(());
            }
            self.engine
                .pin(self.resource_id, key)
                .await
                .map_err(|e| format!("{e}; nothing was sent"))
        })
    }
}
