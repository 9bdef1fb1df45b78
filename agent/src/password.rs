//! Changing and checking a local password. The password goes to `chpasswd` on its stdin only
//! (never argv or environment) and is checked against `shadow` with libcrypt.

use std::process::Stdio;

use lockstep_agent_protocol::messages::{Outcome, Password};
use tokio::io::AsyncWriteExt;
use zeroize::Zeroizing;

use crate::accounts;
use crate::config::AccountsConfig;
use crate::crypt;

/// Whether `login` is an account this agent manages: one discovery reports (the configured
/// UID range, and root if included). The server cannot make it touch any other.
fn managed(cfg: &AccountsConfig, login: &str) -> Result<bool, String> {
    accounts::local_accounts(cfg)
        .map(|all| all.iter().any(|a| a.login_name == login))
        .map_err(|e| e.to_string())
}

/// Whether `login` accepts `password` now.
pub fn accepts(cfg: &AccountsConfig, login: &str, password: &Password) -> Result<bool, String> {
    if !managed(cfg, login)? {
        return Err(format!(
            "'{login}' is not an account this agent manages (see [accounts] in its configuration)"
        ));
    }
    match accounts::shadow_hash(&cfg.shadow_file, login) {
        Ok(Some(h)) => Ok(crypt::matches(password.expose(), &h)),
        Ok(None) => Err(format!(
            "'{login}' has no entry in {}",
            cfg.shadow_file.display()
        )),
        Err(e) => Err(e.to_string()),
    }
}

/// Sets `login`'s password and checks it took. Safe to repeat: a password already in place is
/// not set again (a task handed out twice changes it once).
pub async fn reset(cfg: &AccountsConfig, login: &str, password: &Password) -> (Outcome, String) {
    match managed(cfg, login) {
        Ok(true) => {}
        Ok(false) => {
            return (
                Outcome::Failed,
                format!(
                    "'{login}' is not an account this agent manages (no such account, or outside \
                     the [accounts] UID range of its configuration)"
                ),
            );
        }
        Err(e) => return (Outcome::Failed, e),
    }
    if password.expose().contains(['\n', ':', '\0']) {
        return (
            Outcome::Refused,
            "the password contains a newline, ':' or NUL, which chpasswd cannot take".into(),
        );
    }
    if let Ok(true) = accepts(cfg, login, password) {
        return (
            Outcome::Succeeded,
            "the account already had this password (the task was handed out again)".into(),
        );
    }
    let mut child = match tokio::process::Command::new(&cfg.chpasswd)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            return (
                Outcome::Failed,
                format!("cannot run {}: {e}", cfg.chpasswd.display()),
            );
        }
    };
    let line = Zeroizing::new(format!("{login}:{}\n", password.expose()));
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(line.as_bytes()).await;
        let _ = stdin.shutdown().await;
    }
    drop(line);
    let out = match child.wait_with_output().await {
        Ok(o) => o,
        // It may have changed the password before it was lost.
        Err(e) => {
            return (
                Outcome::Unconfirmed,
                format!("chpasswd did not finish: {e}"),
            );
        }
    };
    if !out.status.success() {
        // chpasswd never echoes the password, but make sure.
        let err = String::from_utf8_lossy(&out.stderr).replace(password.expose(), "[redacted]");
        let err = err.trim();
        // A non-zero exit does not prove nothing changed (a chpasswd can apply the line and
        // fail a later step): the shadow file says which password the account has now.
        return match accepts(cfg, login, password) {
            Ok(true) => (
                Outcome::Succeeded,
                format!(
                    "password set and verified (chpasswd exited {}: {err})",
                    out.status
                ),
            ),
            Ok(false) => (
                Outcome::Refused,
                format!("chpasswd refused ({}): {err}", out.status),
            ),
            Err(e) => (
                Outcome::Unconfirmed,
                format!(
                    "chpasswd exited {} and the result cannot be checked: {e}",
                    out.status
                ),
            ),
        };
    }
    // chpasswd succeeded: from here on the password has changed, so anything short of a
    // confirmation leaves it unknown rather than unchanged.
    match accepts(cfg, login, password) {
        Ok(true) => (Outcome::Succeeded, "password set and verified".into()),
        Ok(false) => (
            Outcome::Unconfirmed,
            "chpasswd succeeded but the account does not accept the new password".into(),
        ),
        Err(e) => (
            Outcome::Unconfirmed,
            format!("chpasswd succeeded but the result cannot be checked: {e}"),
        ),
    }
}
