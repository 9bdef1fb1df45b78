//! Changing a password on a target over SSH: the resource type's command template
//! ([`ResetCommand`]) run as root or through `sudo -S`, the secrets on stdin, the verification
//! by a fresh login.

use zeroize::Zeroizing;

use super::command::ResetCommand;
use super::ssh::{self, Connection, Endpoint, SshFailure, Timeouts};
use crate::vault::Secret;

/// How the administrative account changes other accounts' passwords.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminKind {
    /// The admin is root: `chpasswd` directly.
    Root,
    /// The admin may `sudo`: `sudo -S` reads the admin's own password first, on stdin.
    Sudo,
}

/// `sudo -S` reads the admin's own password on stdin; `-p ''`: no prompt text in the output.
const SUDO: &str = "sudo -S -p ''";

/// Why a change was not applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyFailure {
    #[error(transparent)]
    Ssh(#[from] SshFailure),
    /// The command ran and failed; `detail` is its error output (never holds a secret: secrets
    /// only ever went to its stdin).
    #[error("{target}: {command} exited with status {status}: {detail}")]
    Refused {
        target: String,
        command: String,
        status: u32,
        detail: String,
    },
    /// The login or password cannot be written in the command's input.
    #[error("{0}")]
    Unrepresentable(String),
}

/// One account's part of a command run: its login, the bytes it adds to the program's stdin,
/// and its password, kept to take it back out of whatever the program prints.
pub struct AccountInput {
    pub login: String,
    bytes: Zeroizing<Vec<u8>>,
    password: Secret,
}

/// Shows the login only: the input and the password are secret.
impl std::fmt::Debug for AccountInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountInput")
            .field("login", &self.login)
            .finish_non_exhaustive()
    }
}

impl AccountInput {
    /// What this account adds to the program's standard input.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// One account's input for `command`, refusing what would split or break it: line breaks and
/// NUL anywhere, control characters in the login, and for chpasswd a `:` in the login.
pub fn command_input(
    command: &ResetCommand,
    login: &str,
    password: &Secret,
) -> Result<AccountInput, ApplyFailure> {
    if login.is_empty()
        || login.chars().any(char::is_control)
        || (command.is_chpasswd() && login.contains(':'))
    {
        return Err(ApplyFailure::Unrepresentable(format!(
            "login name '{}' cannot be changed with {}",
            login.escape_debug(),
            command.name()
        )));
    }
    if password.expose().contains(['\n', '\r', '\0']) {
        return Err(ApplyFailure::Unrepresentable(format!(
            "the new password contains a line break or NUL, which {} cannot take",
            command.name()
        )));
    }
    Ok(AccountInput {
        login: login.to_string(),
        bytes: command.input(login, password),
        password: password.clone(),
    })
}

/// Sets `login`'s password to `new_password` over an admin connection.
pub async fn apply(
    admin: &Connection,
    kind: AdminKind,
    admin_password: &Secret,
    command: &ResetCommand,
    login: &str,
    new_password: &Secret,
    target: &str,
) -> Result<(), ApplyFailure> {
    let line = command_input(command, login, new_password)?;
    let mut results = apply_many(admin, kind, admin_password, command, vec![line], target).await;
    results
        .pop()
        .unwrap_or_else(|| Err(ApplyFailure::Unrepresentable("no result".into())))
}

/// Sets several accounts' passwords with one run of `command` (one process and PAM setup for
/// all; a command whose arguments name the login gets exactly one). `lines` are
/// [`command_input`]s; the answer has one result per line, in order. chpasswd goes on after a
/// line it cannot apply and names it (`(line N, user NAME) password not changed`); when a
/// failure cannot be attributed to lines (sudo refused, program missing, any other program),
/// every line gets it.
pub async fn apply_many(
    admin: &Connection,
    kind: AdminKind,
    admin_password: &Secret,
    command: &ResetCommand,
    lines: Vec<AccountInput>,
    target: &str,
) -> Vec<Result<(), ApplyFailure>> {
    let n = lines.len();
    let mut stdin = Zeroizing::new(Vec::new());
    if kind == AdminKind::Sudo {
        stdin.extend_from_slice(admin_password.expose().as_bytes());
        stdin.push(b'\n');
    }
    for line in &lines {
        stdin.extend_from_slice(line.bytes());
    }
    debug_assert!(n == 1 || command.batchable());
    let login = lines.first().map(|l| l.login.as_str()).unwrap_or("");
    let line = match kind {
        AdminKind::Root => command.command_line(login),
        AdminKind::Sudo => format!("{SUDO} {}", command.command_line(login)),
    };
    let out = match admin.run(&line, stdin).await {
        Ok(out) => out,
        Err(e) => return (0..n).map(|_| Err(ApplyFailure::Ssh(e.clone()))).collect(),
    };
    if out.status == 0 {
        return (0..n).map(|_| Ok(())).collect();
    }
    // A program may echo what it read (chpasswd does not; a site's own template might): no
    // password of this run reaches a job, the audit trail or a log through its error output.
    let mut stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let admin_secret = (kind == AdminKind::Sudo).then_some(admin_password);
    for secret in lines.iter().map(|l| &l.password).chain(admin_secret) {
        if !secret.expose().is_empty() {
            stderr = stderr.replace(secret.expose(), "[redacted]");
        }
    }
    let refused = |detail: String| ApplyFailure::Refused {
        target: target.to_string(),
        command: match kind {
            AdminKind::Root => command.name().to_string(),
            AdminKind::Sudo => format!("sudo {}", command.name()),
        },
        status: out.status,
        detail,
    };
    // Lines chpasswd names as not changed (1-based, in input order).
    let named_lines = if command.is_chpasswd() {
        stderr.as_ref()
    } else {
        ""
    };
    let failed_lines: Vec<usize> = named_lines
        .lines()
        .filter(|l| l.contains("password not changed"))
        .filter_map(|l| {
            let rest = l.split("(line ").nth(1)?;
            rest.split(',').next()?.trim().parse::<usize>().ok()
        })
        .collect();
    if failed_lines.is_empty() {
        let detail: Vec<&str> = stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .take(3)
            .collect();
        let detail = if detail.is_empty() {
            "no error output".to_string()
        } else {
            detail.join(" / ")
        };
        return (0..n).map(|_| Err(refused(detail.clone()))).collect();
    }
    lines
        .iter()
        .enumerate()
        .map(|(i, AccountInput { login, .. })| {
            if failed_lines.contains(&(i + 1)) {
                let why: Vec<&str> = stderr
                    .lines()
                    .filter(|l| {
                        l.contains(&format!("(user {login})"))
                            || l.contains(&format!("user {login})"))
                    })
                    .collect();
                Err(refused(if why.is_empty() {
                    "password not changed".into()
                } else {
                    why.join(" / ")
                }))
            } else {
                Ok(())
            }
        })
        .collect()
}

/// Logs in as `login` with `password`: `Ok(true)` when accepted, `Ok(false)` when refused.
pub async fn accepts(
    endpoint: &Endpoint,
    login: &str,
    password: &Secret,
    timeouts: Timeouts,
) -> Result<bool, SshFailure> {
    match ssh::connect(endpoint, login, password, timeouts).await {
        Ok(c) => {
            c.close().await;
            Ok(true)
        }
        Err(SshFailure::AuthRejected { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chpasswd_lines_refuse_what_would_break_them() {
        let chpasswd = ResetCommand::chpasswd();
        let pw = Secret::new("s3cret:with:colons".into());
        let line = command_input(&chpasswd, "app", &pw).unwrap();
        assert_eq!(line.bytes(), b"app:s3cret:with:colons\n");
        assert!(command_input(&chpasswd, "a:b", &pw).is_err());
        assert!(command_input(&chpasswd, "", &pw).is_err());
        assert!(command_input(&chpasswd, "a\tb", &pw).is_err());
        let broken = Secret::new("two\nlines".into());
        let e = command_input(&chpasswd, "app", &broken).unwrap_err();
        assert!(
            !e.to_string().contains("two"),
            "never echo the password: {e}"
        );
    }
}
