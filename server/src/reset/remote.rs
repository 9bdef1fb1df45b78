//! Changing a password on a Unix target over SSH: the command per admin kind, the secrets on
//! stdin, the verification by a fresh login.

use zeroize::Zeroizing;

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

/// The command that sets a password on the target. Absolute path: sudo's `secure_path` and a
/// non-interactive login's `PATH` need not include `/usr/sbin`.
const CHPASSWD: &str = "/usr/sbin/chpasswd";
/// `-p ''`: no prompt text in the output; `-S`: the password comes on stdin.
const SUDO_CHPASSWD: &str = "sudo -S -p '' /usr/sbin/chpasswd";

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
        command: &'static str,
        status: u32,
        detail: String,
    },
    /// The login or password cannot be written in chpasswd's `login:password` line.
    #[error("{0}")]
    Unrepresentable(String),
}

/// `login:password\n` for chpasswd, refusing what would split or break the line.
pub fn chpasswd_line(login: &str, password: &Secret) -> Result<Zeroizing<Vec<u8>>, ApplyFailure> {
    if login.is_empty() || login.contains([':', '\n', '\r']) {
        return Err(ApplyFailure::Unrepresentable(format!(
            "login name '{}' cannot be changed with chpasswd",
            login.escape_debug()
        )));
    }
    if password.expose().contains(['\n', '\r', '\0']) {
        return Err(ApplyFailure::Unrepresentable(
            "the new password contains a line break or NUL, which chpasswd cannot take".into(),
        ));
    }
    let mut line = Zeroizing::new(Vec::with_capacity(login.len() + password.len() + 2));
    line.extend_from_slice(login.as_bytes());
    line.push(b':');
    line.extend_from_slice(password.expose().as_bytes());
    line.push(b'\n');
    Ok(line)
}

/// Sets `login`'s password to `new_password` over an admin connection.
pub async fn apply(
    admin: &Connection,
    kind: AdminKind,
    admin_password: &Secret,
    login: &str,
    new_password: &Secret,
    target: &str,
) -> Result<(), ApplyFailure> {
    let line = chpasswd_line(login, new_password)?;
    let mut results = apply_many(
        admin,
        kind,
        admin_password,
        vec![(login.to_string(), line)],
        target,
    )
    .await;
    results
        .pop()
        .unwrap_or_else(|| Err(ApplyFailure::Unrepresentable("no result".into())))
}

/// Sets several accounts' passwords with one `chpasswd` (one process and PAM setup for all).
/// `lines` are `chpasswd_line`s; the answer has one result per line, in order. chpasswd goes
/// on after a line it cannot apply and names it (`(line N, user NAME) password not changed`);
/// when a failure cannot be attributed to lines (sudo refused, chpasswd missing), every line
/// gets it.
pub async fn apply_many(
    admin: &Connection,
    kind: AdminKind,
    admin_password: &Secret,
    lines: Vec<(String, Zeroizing<Vec<u8>>)>,
    target: &str,
) -> Vec<Result<(), ApplyFailure>> {
    let n = lines.len();
    let mut stdin = Zeroizing::new(Vec::new());
    if kind == AdminKind::Sudo {
        stdin.extend_from_slice(admin_password.expose().as_bytes());
        stdin.push(b'\n');
    }
    for (_, line) in &lines {
        stdin.extend_from_slice(line);
    }
    let command = match kind {
        AdminKind::Root => CHPASSWD,
        AdminKind::Sudo => SUDO_CHPASSWD,
    };
    let out = match admin.run(command, stdin).await {
        Ok(out) => out,
        Err(e) => return (0..n).map(|_| Err(ApplyFailure::Ssh(e.clone()))).collect(),
    };
    if out.status == 0 {
        return (0..n).map(|_| Ok(())).collect();
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let refused = |detail: String| ApplyFailure::Refused {
        target: target.to_string(),
        command: if kind == AdminKind::Root {
            "chpasswd"
        } else {
            "sudo chpasswd"
        },
        status: out.status,
        detail,
    };
    // Lines chpasswd names as not changed (1-based, in input order).
    let failed_lines: Vec<usize> = stderr
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
        .map(|(i, (login, _))| {
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
        let pw = Secret::new("s3cret:with:colons".into());
        let line = chpasswd_line("app", &pw).unwrap();
        assert_eq!(&line[..], b"app:s3cret:with:colons\n");
        assert!(chpasswd_line("a:b", &pw).is_err());
        assert!(chpasswd_line("", &pw).is_err());
        let broken = Secret::new("two\nlines".into());
        let e = chpasswd_line("app", &broken).unwrap_err();
        assert!(
            !e.to_string().contains("two"),
            "never echo the password: {e}"
        );
    }
}
