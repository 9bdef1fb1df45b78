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
fn chpasswd_line(login: &str, password: &Secret) -> Result<Zeroizing<Vec<u8>>, ApplyFailure> {
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
    let (command, stdin) = match kind {
        AdminKind::Root => (CHPASSWD, line),
        AdminKind::Sudo => {
            let mut input = Zeroizing::new(Vec::new());
            input.extend_from_slice(admin_password.expose().as_bytes());
            input.push(b'\n');
            input.extend_from_slice(&line);
            (SUDO_CHPASSWD, input)
        }
    };
    let out = admin.run(command, stdin).await?;
    if out.status != 0 {
        let detail = String::from_utf8_lossy(&out.stderr)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .take(3)
            .collect::<Vec<_>>()
            .join(" / ");
        return Err(ApplyFailure::Refused {
            target: target.to_string(),
            command: if kind == AdminKind::Root {
                "chpasswd"
            } else {
                "sudo chpasswd"
            },
            status: out.status,
            detail: if detail.is_empty() {
                "no error output".into()
            } else {
                detail
            },
        });
    }
    Ok(())
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
