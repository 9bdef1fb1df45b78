//! Changing a password on a target over SSH: the resource type's command template
//! ([`ResetCommand`]) run as root or through sudo, the secrets on stdin (the login that checks
//! a password is `connector/ssh.rs`).
//!
//! **What a failure means.** Only [`ApplyFailure::may_have_changed`] false says the target is
//! untouched. A command that exited non-zero, timed out or lost its connection may have set
//! the password anyway (`chpasswd` applies every line it can and exits 1 for the others; a
//! template may fail on a later step), so the engine asks the target which password it
//! accepts before it discards anything (`docs/resets.md`, "No password is ever lost").

use zeroize::Zeroizing;

use super::connector::{AdminKind, ApplyFailure};
use super::ssh::{Connection, Prompt, RunFailure};
use crate::inventory::reset_command::ResetCommand;
use crate::vault::Secret;

/// `sudo -S` reads the admin's own password on stdin after printing the `-p` prompt.
const SUDO_WITH_PASSWORD: &str = "sudo -S -p";
/// How long sudo may take to print its prompt before the command is taken to need none.
const SUDO_PROMPT_WAIT: std::time::Duration = std::time::Duration::from_secs(3);
/// `sudo -n` never reads a password: it runs the command, or fails without running it.
const SUDO_WITHOUT_PASSWORD: &str = "sudo -n";
/// Succeeds, without reading anything, exactly when sudo needs no password now.
const SUDO_PROBE: &str = "sudo -n true";

impl From<RunFailure> for ApplyFailure {
    fn from(f: RunFailure) -> ApplyFailure {
        match f {
            RunFailure::NotStarted(e) => ApplyFailure::NotSent(e),
            RunFailure::Interrupted(e) => ApplyFailure::Interrupted(e),
        }
    }
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
    results.pop().unwrap_or(Err(ApplyFailure::Abandoned))
}

/// Whether the sudo admin on `admin` needs a password now: `sudo -n true` succeeds without
/// reading stdin exactly when it does not. Asked before every run, so the admin's password is
/// never written to a sudo that would not read it (and would pass it on to the command).
async fn sudo_needs_password(admin: &Connection) -> Result<bool, ApplyFailure> {
    let out = admin
        .run(SUDO_PROBE, Zeroizing::new(Vec::new()))
        .await
        .map_err(|f| ApplyFailure::NotSent(f.failure().clone()))?;
    Ok(out.status != 0)
}

/// Sets several accounts' passwords with one run of `command` (one process and PAM setup for
/// all; a command whose arguments name the login gets exactly one). `lines` are
/// [`command_input`]s; the answer has one result per line, in order. When the run exits
/// non-zero every line gets an error, because exit status and error output cannot prove which
/// lines were applied (chpasswd goes on after a line it cannot apply, in the target's own
/// language): a line chpasswd names (`(line N, user NAME) password not changed`) gets its own
/// reason, the others the run's first lines of error output. The caller asks the target.
pub async fn apply_many(
    admin: &Connection,
    kind: AdminKind,
    admin_password: &Secret,
    command: &ResetCommand,
    lines: Vec<AccountInput>,
    target: &str,
) -> Vec<Result<(), ApplyFailure>> {
    let n = lines.len();
    let all = |e: ApplyFailure| (0..n).map(|_| Err(e.clone())).collect::<Vec<_>>();
    let sudo_password = match kind {
        AdminKind::Root => false,
        AdminKind::Sudo => match sudo_needs_password(admin).await {
            Ok(needs) => needs,
            Err(e) => return all(e),
        },
    };
    let mut stdin = Zeroizing::new(Vec::new());
    for line in &lines {
        stdin.extend_from_slice(line.bytes());
    }
    debug_assert!(n == 1 || command.batchable());
    let login = lines.first().map(|l| l.login.as_str()).unwrap_or("");
    // A prompt no command prints by chance: the password goes only to a sudo that asks.
    let mut nonce = [0u8; 12];
    let _ = getrandom::fill(&mut nonce);
    let marker = format!("[lockstep-sudo-{}] ", hex::encode(nonce));
    let (line, prompt) = match (kind, sudo_password) {
        (AdminKind::Root, _) => (command.command_line(login), None),
        (AdminKind::Sudo, true) => {
            let mut answer = Zeroizing::new(admin_password.expose().as_bytes().to_vec());
            answer.push(b'\n');
            (
                format!(
                    "{SUDO_WITH_PASSWORD} '{marker}' {}",
                    command.command_line(login)
                ),
                Some(Prompt {
                    marker,
                    answer,
                    wait: SUDO_PROMPT_WAIT,
                }),
            )
        }
        (AdminKind::Sudo, false) => (
            format!("{SUDO_WITHOUT_PASSWORD} {}", command.command_line(login)),
            None,
        ),
    };
    let out = match admin.run_answering(&line, stdin, prompt).await {
        Ok(out) => out,
        Err(e) => return all(e.into()),
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
    // Passwords are out of `stderr` (above) before any of it is cut: a password straddling
    // a cut could not be matched any more.
    let detail: Vec<String> = stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .take(3)
        .map(clip)
        .collect();
    // A line the output does not name gets the run's own words only when no line is named:
    // never another account's reason.
    let detail = if !failed_lines.is_empty() {
        "the run was shared with accounts whose lines were refused; this line was not named"
            .to_string()
    } else if detail.is_empty() {
        "no error output".to_string()
    } else {
        detail.join(" / ")
    };
    lines
        .iter()
        .enumerate()
        .map(|(i, AccountInput { login, .. })| {
            if !failed_lines.contains(&(i + 1)) {
                return Err(refused(detail.clone()));
            }
            let why: Vec<String> = stderr
                .lines()
                .filter(|l| l.contains(&format!("user {login})")))
                .take(3)
                .map(clip)
                .collect();
            Err(refused(if why.is_empty() {
                "password not changed".into()
            } else {
                why.join(" / ")
            }))
        })
        .collect()
}

/// Bytes of one line of a target's error output kept in a reason (job detail, audit).
const REASON_LINE: usize = 240;

/// At most [`REASON_LINE`] bytes of `line` (cut at a character boundary), control
/// characters (terminal escapes a target might print) replaced by `?`.
fn clip(line: &str) -> String {
    let mut end = line.len().min(REASON_LINE);
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    line[..end]
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_from_a_target_are_clipped_and_lose_control_characters() {
        let long = "é".repeat(500);
        let clipped = clip(&long);
        assert!(clipped.len() <= REASON_LINE && clipped.chars().all(|c| c == 'é'));
        assert_eq!(clip("bad\x1b[2Jline\r"), "bad?[2Jline?");
    }

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
