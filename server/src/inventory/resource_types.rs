//! Resource types: how a type's passwords are reset, and which listener execution modes it
//! allows (the reference product's rules; `docs/api.md`, "Resource types").

use serde::{Deserialize, Serialize};

use crate::audit::{self, Actor, NewEvent, Outcome};
use crate::error::{Error, FieldProblem, Result};
use crate::inventory::reset_command::ResetCommand;
use crate::store::resource_types::ResourceTypeRow;
use crate::store::{self, Store};

/// How a password change reaches the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ResetMethod {
    /// Agentless, over SSH with a command template.
    Ssh,
    /// Agentless, as the resource's admin role over PostgreSQL's protocol
    /// (`reset/connector/postgres.rs`).
    Postgres,
    /// Agentless, as the resource's admin account over MySQL's protocol (MySQL and MariaDB;
    /// `reset/connector/mysql/`).
    Mysql,
    /// Agentless, as the resource's admin account over LDAPS (Active Directory;
    /// `reset/connector/active_directory.rs`).
    ActiveDirectory,
    /// Through the resource's `lockstep-agent`.
    Agent,
    /// In the vault only; listeners still run.
    Local,
}

impl ResetMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            ResetMethod::Ssh => "ssh",
            ResetMethod::Postgres => "postgres",
            ResetMethod::Mysql => "mysql",
            ResetMethod::ActiveDirectory => "active-directory",
            ResetMethod::Agent => "agent",
            ResetMethod::Local => "local",
        }
    }

    /// Whether the server itself sets passwords with this method (through a connector).
    pub fn has_connector(self) -> bool {
        match self {
            ResetMethod::Ssh
            | ResetMethod::Postgres
            | ResetMethod::Mysql
            | ResetMethod::ActiveDirectory => true,
            ResetMethod::Agent | ResetMethod::Local => false,
        }
    }

    /// The method a stored row names (an unknown one reads as `local`: nothing is applied).
    pub(crate) fn parse(s: &str) -> ResetMethod {
        match s {
            "ssh" => ResetMethod::Ssh,
            "postgres" => ResetMethod::Postgres,
            "mysql" => ResetMethod::Mysql,
            "active-directory" => ResetMethod::ActiveDirectory,
            "agent" => ResetMethod::Agent,
            _ => ResetMethod::Local,
        }
    }
}

/// Where a listener runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ExecutionMode {
    Agentless,
    Agent,
    Gateway,
}

impl ExecutionMode {
    /// The name as the API and manifests write it.
    pub const fn as_str(self) -> &'static str {
        match self {
            ExecutionMode::Agentless => "agentless",
            ExecutionMode::Agent => "agent",
            ExecutionMode::Gateway => "gateway",
        }
    }

    /// The mode named `text`, if any.
    pub fn parse(text: &str) -> Option<ExecutionMode> {
        [
            ExecutionMode::Agentless,
            ExecutionMode::Agent,
            ExecutionMode::Gateway,
        ]
        .into_iter()
        .find(|m| m.as_str() == text)
    }
}

/// Built-in SSH types whose systems have no `chpasswd`: without a template of their own,
/// their resets fail with the fix instead of running a command that cannot exist.
const NO_CHPASSWD_TYPES: &[&str] = &[
    "Mac",
    "Solaris",
    "HPUX",
    "CiscoIOS",
    "CiscoPIX",
    "CiscoCatOS",
    "HPiLO",
];

/// The command an SSH type runs without a template of its own: `chpasswd`, except on the
/// built-in types whose systems have none (a custom type is its creator's choice).
pub fn default_command(type_name: &str, builtin: bool) -> Option<ResetCommand> {
    (!(builtin && NO_CHPASSWD_TYPES.contains(&type_name))).then(ResetCommand::chpasswd)
}

/// Types whose listeners may run in agent mode (the reference product's rule).
const AGENT_TYPES: &[&str] = &[
    "Windows",
    "WindowsDomain",
    "Linux",
    "Mac",
    "Solaris",
    "HPUX",
    "AIX",
];
/// Types whose listeners may not run through a gateway (the reference product's rule).
const NO_GATEWAY_TYPES: &[&str] = &["Kubernetes", "CiscoIOS", "CiscoPIX", "CiscoCatOS", "HPiLO"];

/// The listener execution modes allowed for a type.
pub fn allowed_modes(type_name: &str) -> Vec<ExecutionMode> {
    let mut modes = vec![ExecutionMode::Agentless];
    if AGENT_TYPES.contains(&type_name) {
        modes.push(ExecutionMode::Agent);
    }
    if !NO_GATEWAY_TYPES.contains(&type_name) {
        modes.push(ExecutionMode::Gateway);
    }
    modes
}

/// The built-in types: (name, reset method, description).
pub const BUILTIN_TYPES: &[(&str, ResetMethod, &str)] = &[
    (
        "Linux",
        ResetMethod::Ssh,
        "Linux server, reset over SSH with chpasswd",
    ),
    (
        "Mac",
        ResetMethod::Ssh,
        "macOS, reset over SSH with its approved command template",
    ),
    (
        "Solaris",
        ResetMethod::Ssh,
        "Oracle Solaris, reset over SSH with its approved command template",
    ),
    (
        "HPUX",
        ResetMethod::Ssh,
        "HP-UX, reset over SSH with its approved command template",
    ),
    ("AIX", ResetMethod::Ssh, "IBM AIX, reset over SSH"),
    (
        "Windows",
        ResetMethod::Agent,
        "Windows server or workstation, reset by its agent",
    ),
    (
        "WindowsDomain",
        ResetMethod::ActiveDirectory,
        "Active Directory domain: unicodePwd over LDAPS as the admin account, verified by bind",
    ),
    (
        "Kubernetes",
        ResetMethod::Local,
        "Kubernetes; vault-only reset, listeners update the cluster",
    ),
    ("CiscoIOS", ResetMethod::Ssh, "Cisco IOS network device"),
    ("CiscoPIX", ResetMethod::Ssh, "Cisco PIX firewall"),
    ("CiscoCatOS", ResetMethod::Ssh, "Cisco CatOS switch"),
    ("HPiLO", ResetMethod::Ssh, "HP Integrated Lights-Out"),
    (
        "MySQL",
        ResetMethod::Mysql,
        "MySQL or MariaDB database: ALTER USER as the admin account over TLS, verified by login",
    ),
    (
        "PostgreSQL",
        ResetMethod::Postgres,
        "PostgreSQL database: ALTER ROLE as the admin role over TLS, verified by login",
    ),
    (
        "Oracle",
        ResetMethod::Local,
        "Oracle database; vault-only reset, listeners apply it",
    ),
    (
        "MSSQL",
        ResetMethod::Local,
        "Microsoft SQL Server; vault-only reset, listeners apply it",
    ),
    (
        "Generic",
        ResetMethod::Local,
        "Anything else: vault-only reset, listeners apply it",
    ),
];

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ResourceType {
    pub name: String,
    pub builtin: bool,
    pub reset_method: ResetMethod,
    pub description: String,
    /// Listener execution modes allowed for resources of this type.
    pub listener_modes: Vec<ExecutionMode>,
    /// How passwords are set over SSH (`ssh` types only): the type's own template, or the
    /// default, `chpasswd` (none for the built-in types whose systems have no chpasswd: Mac,
    /// Solaris, HPUX, CiscoIOS, CiscoPIX, CiscoCatOS, HPiLO).
    pub reset_command: Option<ResetCommand>,
}

impl From<ResourceTypeRow> for ResourceType {
    fn from(r: ResourceTypeRow) -> ResourceType {
        let reset_method = ResetMethod::parse(&r.reset_method);
        // Only this server writes the column, from a validated template.
        let stored = r
            .reset_command
            .as_deref()
            .and_then(|json| serde_json::from_str(json).ok());
        ResourceType {
            reset_command: (reset_method == ResetMethod::Ssh)
                .then(|| stored.or_else(|| default_command(&r.name, r.builtin != 0)))
                .flatten(),
            listener_modes: allowed_modes(&r.name),
            reset_method,
            builtin: r.builtin != 0,
            name: r.name,
            description: r.description,
        }
    }
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewResourceType {
    /// 1–64 letters, digits, `_` or `-`, starting with a letter.
    pub name: String,
    pub reset_method: ResetMethod,
    #[serde(default)]
    pub description: String,
    /// Refused: a type starts with `chpasswd`; its own template is proposed with
    /// `PUT /v1/resource-types/{name}/reset-command` and needs a second administrator.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub reset_command: Option<serde_json::Value>,
}

pub async fn seed_builtin(store: &Store) -> Result<()> {
    let mut tx = store.begin_write().await?;
    for (name, method, description) in BUILTIN_TYPES {
        let row = ResourceTypeRow {
            name: name.to_string(),
            builtin: 1,
            reset_method: method.as_str().to_string(),
            description: description.to_string(),
            created_at: crate::time::now(),
            reset_command: None,
            reset_command_seal: None,
        };
        store::resource_types::insert_builtin_if_absent(tx.conn(), &row).await?;
    }
    tx.commit().await
}

pub async fn list(store: &Store) -> Result<Vec<ResourceType>> {
    Ok(store::resource_types::list(store.pool())
        .await?
        .into_iter()
        .map(Into::into)
        .collect())
}

pub async fn get(store: &Store, name: &str) -> Result<ResourceType> {
    store::resource_types::get(store.pool(), name)
        .await?
        .map(Into::into)
        .ok_or_else(|| Error::NotFound {
            what: "resource type",
            id: name.to_string(),
        })
}

pub async fn create(store: &Store, actor: &Actor, input: NewResourceType) -> Result<ResourceType> {
    let mut problems = Vec::new();
    let n = &input.name;
    let valid = n.len() <= 64
        && n.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !valid {
        problems.push(FieldProblem::new(
            "name",
            "must be 1 to 64 letters, digits, '_' or '-', starting with a letter",
        ));
    }
    super::fields::check_text("description", Some(&input.description), 500, &mut problems);
    if input.reset_command.is_some() {
        problems.push(FieldProblem::new(
            "reset_command",
            "a command template runs as root on every target of the type, so it needs a second \
             administrator: create the type, then propose it with PUT \
             /v1/resource-types/{name}/reset-command",
        ));
    }
    if !problems.is_empty() {
        return Err(Error::Validation(problems));
    }
    let row = ResourceTypeRow {
        name: input.name,
        builtin: 0,
        reset_method: input.reset_method.as_str().to_string(),
        description: input.description,
        created_at: crate::time::now(),
        reset_command: None,
        reset_command_seal: None,
    };
    let mut tx = store.begin_write().await?;
    store::resource_types::insert(tx.conn(), &row)
        .await
        .map_err(|e| {
            if store::is_unique_violation(&e) {
                Error::Conflict(format!(
                    "a resource type named '{}' already exists",
                    row.name
                ))
            } else {
                e.into()
            }
        })?;
    audit::append(
        &mut tx,
        NewEvent {
            actor,
            action: "resource-type.create",
            target: &row.name,
            outcome: Outcome::Success,
            detail: serde_json::json!({ "reset_method": row.reset_method }),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(row.into())
}

/// A template as the `reset_command` column stores it (JSON; `None`: the default).
pub fn stored_command(command: Option<&ResetCommand>) -> Result<Option<String>> {
    command
        .map(|c| serde_json::to_string(c).map_err(|e| Error::Internal(e.to_string())))
        .transpose()
}

/// What the master key's seal over a type's approved template binds: the type and the exact
/// stored JSON.
pub fn command_binding(name: &str, stored: &str) -> String {
    format!("reset-command\n{name}\n{stored}")
}

/// Checks that `command` may become `name`'s template (`None`: back to `chpasswd`): the type
/// exists, runs commands (`ssh`), and the template is valid.
pub async fn check_reset_command(
    store: &Store,
    name: &str,
    command: Option<&ResetCommand>,
) -> Result<()> {
    let t = get(store, name).await?;
    if t.reset_method != ResetMethod::Ssh {
        return Err(Error::Conflict(format!(
            "resource type '{name}' is reset with method '{}', which runs no command",
            t.reset_method.as_str()
        )));
    }
    if let Some(c) = command {
        let problems = c.problems("reset_command");
        if !problems.is_empty() {
            return Err(Error::Validation(problems));
        }
    }
    Ok(())
}

/// A type's command as its row holds it, once the row's own seal held.
#[derive(Debug, Clone)]
pub struct SealedCommand {
    /// `None`: the type has no template and no default (its systems have no chpasswd).
    pub command: Option<ResetCommand>,
    /// The seal over the type's own template; `None`: the type has none and uses the default.
    /// `registry` compares it with the registry ledger before the command runs.
    pub seal: Option<String>,
}

/// The command that sets `name`'s passwords, if its stored template matches its seal:
/// the default when the type has none (`chpasswd`, or none at all for the built-in types
/// whose systems lack it), the template when the master key's seal over it holds,
/// and otherwise the reason it must not run (an edited or unapproved row). Whether that seal
/// is the approval in force is the registry's to say (`Registry::approved_command`).
pub async fn approved_command(
    store: &Store,
    vault: &crate::vault::Vault,
    name: &str,
) -> Result<std::result::Result<SealedCommand, String>> {
    let row = store::resource_types::get(store.pool(), name)
        .await?
        .ok_or_else(|| Error::NotFound {
            what: "resource type",
            id: name.to_string(),
        })?;
    let Some(json) = row.reset_command else {
        return Ok(Ok(SealedCommand {
            command: default_command(name, row.builtin != 0),
            seal: None,
        }));
    };
    let Some(seal) = row
        .reset_command_seal
        .filter(|seal| vault.check_attestation(&command_binding(name, &json), seal))
    else {
        return Ok(Err(format!(
            "the reset command of resource type '{name}' does not match its approval (edited \
             in the database, or saved before approvals); it will not run until a second \
             administrator approves it again (PUT /v1/resource-types/{name}/reset-command)"
        )));
    };
    Ok(serde_json::from_str(&json)
        .map(|command| SealedCommand {
            command: Some(command),
            seal: Some(seal),
        })
        .map_err(|_| format!("the approved reset command of '{name}' cannot be read")))
}

pub async fn delete(store: &Store, actor: &Actor, name: &str) -> Result<()> {
    let t = get(store, name).await?;
    if t.builtin {
        return Err(Error::Conflict(format!(
            "'{name}' is a built-in resource type and cannot be deleted"
        )));
    }
    let used = store::resource_types::count_resources(store.pool(), name).await?;
    if used > 0 {
        return Err(Error::Conflict(format!(
            "resource type '{name}' is used by {used} resource(s); delete or retype them first"
        )));
    }
    if t.reset_method == ResetMethod::Ssh
        && store::resource_types::get(store.pool(), name)
            .await?
            .is_some_and(|row| row.reset_command.is_some())
    {
        // Its approval is in the registry ledger; it leaves the way it came, approved.
        return Err(Error::Conflict(format!(
            "resource type '{name}' has its own approved reset command; propose going back to \
             the default first (PUT /v1/resource-types/{name}/reset-command with \
             \"reset_command\": null), then delete the type"
        )));
    }
    let listeners = store::resource_types::count_listeners(store.pool(), name).await?;
    if listeners > 0 {
        return Err(Error::Conflict(format!(
            "resource type '{name}' is associated with {listeners} listener(s); change their \
             associations first (PUT /v1/listeners/NAME/association)"
        )));
    }
    let mut tx = store.begin_write().await?;
    store::resource_types::delete_custom(tx.conn(), name).await?;
    audit::append(
        &mut tx,
        NewEvent {
            actor,
            action: "resource-type.delete",
            target: name,
            outcome: Outcome::Success,
            detail: serde_json::Value::Null,
        },
    )
    .await?;
    tx.commit().await
}

/// Why a type without a template and without a default runs nothing, with the fix.
pub fn no_command(name: &str) -> String {
    format!(
        "resource type '{name}' has no reset command: its systems have no chpasswd, and \
         Lockstep has no connector for them; propose a command template \
         (PUT /v1/resource-types/{name}/reset-command, approved by a second administrator; \
         docs/resets.md has examples), or reset the vault only (\"apply_remote\": false)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listener_modes_follow_seed_000_section_4_8() {
        assert_eq!(
            allowed_modes("Linux"),
            vec![
                ExecutionMode::Agentless,
                ExecutionMode::Agent,
                ExecutionMode::Gateway
            ]
        );
        assert_eq!(allowed_modes("Kubernetes"), vec![ExecutionMode::Agentless]);
        assert_eq!(
            allowed_modes("MySQL"),
            vec![ExecutionMode::Agentless, ExecutionMode::Gateway]
        );
    }
}
