//! Command templates under dual control. A resource type's template runs as root (or through
//! sudo) on every SSH target of the type and reads every new password: it is as powerful as a
//! listener, so it changes the way a listener does. A proposal is a [`ChangeRequest`] naming
//! its approver; approval seals the template with the master key
//! (`inventory::resource_types::command_binding`), and the reset engine checks the seal before
//! every use (`inventory::resource_types::approved_command`).

use serde::Deserialize;

use super::ledger::EntryKind;
use super::{ChangeKind, ChangeRequest, Registry, comment, new_request};
use crate::audit::{self, Actor, NewEvent, Outcome};
use crate::error::{Error, Result};
use crate::inventory::reset_command::ResetCommand;
use crate::inventory::resource_types::{
    self, check_reset_command, command_binding, stored_command,
};
use crate::store::change_requests::ChangeRequestRow;
use crate::store::{self, WriteTx};

/// A change request's subject for a type's template: one pending change per type.
pub(super) const SUBJECT_PREFIX: &str = "reset-command:";

/// `PUT /v1/resource-types/{name}/reset-command`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetCommandChange {
    /// The template (`null`: back to the default, `chpasswd`, or none for the built-in types
    /// whose systems lack it).
    pub reset_command: Option<ResetCommand>,
    /// The administrator (with approve-listeners, independent of you) who must approve it.
    pub approver: String,
    #[serde(default)]
    pub comment: Option<String>,
}

impl Registry {
    /// The command that sets `name`'s passwords: its template when the row's seal holds and is
    /// the one the registry ledger holds for the type, the default when the type has neither a
    /// template nor a ledger entry (`None` when the type has no default either); otherwise the
    /// reason it must not run. A type whose approved
    /// template was deleted does not fall back to the default: its resets stop.
    pub async fn approved_command(
        &self,
        name: &str,
    ) -> Result<std::result::Result<Option<ResetCommand>, String>> {
        let mut checks = 0;
        loop {
            let ledger = match self.ledger().await? {
                Ok(l) => l,
                Err(why) => {
                    return Ok(Err(format!(
                        "the reset command of resource type '{name}' cannot be trusted: {why}"
                    )));
                }
            };
            let judged =
                match resource_types::approved_command(&self.store, &self.vault, name).await? {
                    Ok(sealed) => ledger
                        .check(EntryKind::ResetCommand, name, sealed.seal.as_deref())
                        .map(|()| sealed.command)
                        .map_err(|m| {
                            format!(
                                "{}; it will not run until a second administrator approves a \
                             template again (PUT /v1/resource-types/{name}/reset-command)",
                                m.describe(
                                    &format!("the reset command of resource type '{name}'"),
                                    ledger.generation()
                                )
                            )
                        }),
                    Err(why) => Err(why),
                };
            checks += 1;
            // A refusal while an approval moved the ledger is checked again.
            if judged.is_ok()
                || checks >= super::integrity::RECHECKS
                || !self.ledger_moved(&ledger).await?
            {
                return Ok(judged);
            }
        }
    }

    /// Proposes a new command template for resource type `name`; it takes effect when the
    /// approver approves.
    pub async fn propose_reset_command(
        &self,
        actor: &Actor,
        requester: &str,
        name: &str,
        input: ResetCommandChange,
    ) -> Result<ChangeRequest> {
        check_reset_command(&self.store, name, input.reset_command.as_ref()).await?;
        if let Some(p) = self.approver_problem(requester, &input.approver).await? {
            return Err(Error::validation("approver", p));
        }
        let request_comment = comment("comment", input.comment)?;
        let proposed = serde_json::to_string(&input.reset_command)
            .map_err(|e| Error::Internal(e.to_string()))?;
        let mut row = new_request(
            ChangeKind::ResetCommand,
            &format!("{SUBJECT_PREFIX}{name}"),
            requester,
            &input.approver,
            request_comment,
        );
        row.reset_command = Some(proposed);
        let mut tx = self.store.begin_write().await?;
        let cr = self
            .open_request(&mut tx, actor, ChangeKind::ResetCommand, row)
            .await?;
        tx.commit().await?;
        Ok(cr)
    }

    /// Applies an approved template change inside the decision's transaction: the template and
    /// its seal are written together, and the change is audited with the template. Returns the
    /// type's name and the new seal (`None`: back to the default) for the registry ledger.
    pub(super) async fn apply_reset_command(
        &self,
        tx: &mut WriteTx,
        cr: &ChangeRequestRow,
        approver: &str,
    ) -> Result<std::result::Result<(String, Option<String>), String>> {
        let Some(name) = cr.subject.strip_prefix(SUBJECT_PREFIX) else {
            return Ok(Err("the change names no resource type".into()));
        };
        let proposed: Option<ResetCommand> = cr
            .reset_command
            .as_deref()
            .and_then(|t| serde_json::from_str(t).ok())
            .ok_or_else(|| Error::Internal("reset-command change without a template".into()))?;
        // Re-checked: the type may have changed kind or gone since the request.
        if let Err(e) = check_reset_command(&self.store, name, proposed.as_ref()).await {
            return Ok(Err(e.to_string()));
        }
        let json = stored_command(proposed.as_ref())?;
        let seal = match &json {
            Some(j) => Some(self.vault.attest(&command_binding(name, j))?),
            None => None,
        };
        if !store::resource_types::set_reset_command(
            tx.conn(),
            name,
            json.as_deref(),
            seal.as_deref(),
        )
        .await?
        {
            return Ok(Err(format!("resource type '{name}' is gone")));
        }
        audit::append(
            tx,
            NewEvent {
                actor: &Actor::system(),
                action: "resource-type.reset-command",
                target: name,
                outcome: Outcome::Success,
                // Templates hold placeholders, never a secret.
                detail: serde_json::json!({
                    "reset_command": proposed, "change_request": cr.id,
                    "requested_by": cr.requested_by, "approved_by": approver,
                }),
            },
        )
        .await?;
        Ok(Ok((name.to_string(), seal)))
    }
}
