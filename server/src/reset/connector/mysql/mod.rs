//! The MySQL and MariaDB connector: `ALTER USER … IDENTIFIED WITH mysql_native_password AS
//! '*…'` as the resource's admin account, with the hash computed here
//! ([`native_password::stored_hash`]) so the server never receives the password (MariaDB
//! writes a clear `IDENTIFIED BY` into its general and slow logs, failed statements
//! included); a password is checked by logging in as the account, afresh.
//!
//! **Where.** The resource's `url` (`mysql://host[:port]` or `mariadb://…`, no credentials),
//! or else its IP address (or name) on port 3306. A login is `user` (the account
//! `'user'@'%'`) or `user@host` (the account `'user'@'host'`); the check logs in as `user`
//! from wherever Lockstep runs, so it proves what the server accepts from there.
//!
//! **TLS, always, pinned.** The connection must be TLS, its leaf certificate pinned at first
//! use like an SSH host key (`tls_certificate` in the reset settings): a server that does
//! not offer TLS is refused before anything is sent, and one that stops offering it after a
//! pin is recorded is a [`TargetFailure::TlsGone`]. Logins use `mysql_native_password` only:
//! an account on another plugin (ed25519, caching_sha2_password, PAM) cannot be checked, and
//! setting its password moves it to native passwords.
//!
//! **Bounded.** Every packet is at most [`wire::MAX_PACKET`] bytes and a connection at most
//! [`ANSWER_CAP`] in all; a server that answers a statement with anything but OK or an error
//! (a result set, a request to read a local file) is cut off.

pub mod native_password;
mod session;
pub mod wire;

use zeroize::Zeroizing;

use super::server_url;
use super::{Admin, ApplyFailure, Connector, KeyRecorder, TargetFailure, TargetKey, Timeouts};
use crate::vault::Secret;
use session::{Login, server_words};

/// Bytes one connection may receive from the server, handshake and answers together.
pub const ANSWER_CAP: u64 = 64 * 1024;
/// MySQL's port when the resource names none.
const DEFAULT_PORT: u16 = 3306;
/// The longest user name MariaDB keeps (MySQL's is 32).
const MAX_USER: usize = 80;
/// The longest host part of an account.
const MAX_HOST: usize = 255;

/// Where a MySQL or MariaDB server is, and the certificate it must present.
#[derive(Debug, Clone)]
pub struct MyEndpoint {
    pub host: String,
    pub port: u16,
    /// `SHA256:…` of the leaf certificate recorded at first use; `None` accepts and reports.
    pub pinned_certificate: Option<String>,
}

impl MyEndpoint {
    /// The endpoint of a resource: its `url` when set, else `host` on the default port.
    pub fn new(
        url: Option<&str>,
        host: &str,
        pinned_certificate: Option<String>,
    ) -> Result<MyEndpoint, String> {
        let (host, port) = match url {
            Some(url) => parse_url(url)?,
            None => (host.to_string(), DEFAULT_PORT),
        };
        Ok(MyEndpoint {
            host,
            port,
            pinned_certificate,
        })
    }

    pub fn label(&self) -> String {
        server_url::label(&self.host, self.port)
    }
}

/// `mysql://host[:port]` (or `mariadb://`), refusing credentials, options and a path: the
/// admin's credential comes from the vault only.
pub fn parse_url(text: &str) -> Result<(String, u16), String> {
    let hint = "write it as mysql://host[:port]";
    let url = server_url::parse(
        text,
        &["mysql", "mariadb"],
        "MySQL or MariaDB",
        DEFAULT_PORT,
        hint,
    )?;
    if !matches!(url.path.as_str(), "" | "/") {
        return Err(format!(
            "the url: no database belongs in it (accounts are server-wide); {hint}"
        ));
    }
    Ok((url.host, url.port))
}

/// The account a login names: (user, host), each written only with characters that need
/// no escaping inside a quoted string in any SQL mode.
pub fn account(login: &str) -> Result<(&str, &str), String> {
    let (user, host) = login.split_once('@').unwrap_or((login, "%"));
    let user_ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '$' | '-');
    let host_ok = |c: char| user_ok(c) || matches!(c, '%' | ':' | '/');
    if user.is_empty() || user.len() > MAX_USER || !user.chars().all(user_ok) {
        return Err(format!(
            "login '{}' cannot be used: a MySQL user name here is 1 to {MAX_USER} letters, \
             digits, '_', '.', '$' or '-', optionally followed by @host",
            login.escape_debug()
        ));
    }
    if host.is_empty() || host.len() > MAX_HOST || !host.chars().all(host_ok) {
        return Err(format!(
            "login '{}' cannot be used: the host after '@' is 1 to {MAX_HOST} letters, digits, \
             '_', '.', '-', '%', ':' or '/'",
            login.escape_debug()
        ));
    }
    Ok((user, host))
}

/// Whether an error to `ALTER USER` proves it changed nothing: the statement was refused as
/// it was checked (syntax, privilege, no such account, a plugin or policy refusal, a read-only
/// server) or rolled back whole (deadlock, lock wait). Anything else is asked about.
fn rolled_back(code: u16) -> bool {
    matches!(
        code,
        1044 // no access to the database
            | 1064 // syntax
            | 1142 // no access to the table
            | 1205 // lock wait timeout: rolled back
            | 1213 // deadlock: rolled back
            | 1227 // needs CREATE USER
            | 1290 // --read-only or --skip-grant-tables
            | 1372 // a hash of the wrong length
            | 1470 // a user or host name too long for the server
            | 1396 // no such account
            | 1524 // the plugin is not loaded (MySQL 8.4 and later, by default)
            | 1819 // a password policy refused it
            | 1827 // a hash of the wrong format
            | 3638 // the password history refused it (MySQL)
    )
}

/// A MySQL or MariaDB server whose accounts' passwords are set and checked.
pub struct MysqlConnector {
    pub endpoint: MyEndpoint,
    pub timeouts: Timeouts,
}

impl Connector for MysqlConnector {
    fn label(&self) -> String {
        self.endpoint.label()
    }

    async fn apply(
        &self,
        admin: &Admin,
        login: &str,
        new: &Secret,
        keys: &dyn KeyRecorder,
    ) -> Result<(), ApplyFailure> {
        let (user, host) = account(login).map_err(ApplyFailure::Unrepresentable)?;
        let hash = native_password::stored_hash(new.expose().as_bytes());
        // Never sent malformed: a server might take it some other way.
        if !native_password::is_stored_hash(&hash) {
            return Err(ApplyFailure::Unrepresentable(
                "the password hash came out malformed; nothing was sent".into(),
            ));
        }
        let statement = Zeroizing::new(format!(
            "ALTER USER '{user}'@'{host}' IDENTIFIED WITH mysql_native_password AS '{}'",
            hash.as_str()
        ));
        let target = self.label();
        let (admin_user, _) = account(&admin.login)
            .map_err(|e| ApplyFailure::Unrepresentable(format!("the admin account: {e}")))?;
        let mut session =
            match session::login(&self.endpoint, &self.timeouts, admin_user, &admin.password)
                .await?
            {
                Login::Session(s) => s,
                Login::Expired => {
                    return Err(ApplyFailure::NotSent(TargetFailure::Protocol {
                        target,
                        reason: format!(
                            "the password of the admin account '{}' has expired: set a new one \
                             on the server and in the vault",
                            admin.login
                        ),
                    }));
                }
            };
        // Pinned (or checked against the pin another connection recorded meanwhile) before
        // the statement goes out.
        keys.record(&TargetKey::TlsCertificate(session.certificate.clone()))
            .await
            .map_err(ApplyFailure::Unrepresentable)?;
        let secrets = [hash.as_str(), new.expose()];
        let sent = tokio::time::timeout(self.timeouts.command, session.run(&statement)).await;
        match sent {
            Ok(Ok(Ok(()))) => {
                session.quit().await;
                Ok(())
            }
            Ok(Ok(Err(e))) if rolled_back(e.code) => Err(ApplyFailure::Rejected {
                target,
                reason: server_words(&e, &secrets),
            }),
            Ok(Ok(Err(e))) => Err(ApplyFailure::Interrupted(TargetFailure::Protocol {
                target,
                reason: server_words(&e, &secrets),
            })),
            Ok(Err(e)) => Err(ApplyFailure::Interrupted(TargetFailure::Protocol {
                target,
                reason: wire_words(e, &secrets),
            })),
            Err(_) => Err(ApplyFailure::Interrupted(TargetFailure::Timeout {
                target,
                step: "ALTER USER",
                seconds: self.timeouts.command.as_secs(),
            })),
        }
    }

    async fn accepts(&self, login: &str, password: &Secret) -> Result<bool, TargetFailure> {
        let target = self.label();
        let (user, host) = account(login).map_err(|reason| TargetFailure::Protocol {
            target: target.clone(),
            reason,
        })?;
        // A native-password server never proves who it is: without the pinned certificate,
        // anyone in its place could answer "logged in". (A reset pins it before it verifies.)
        if self.endpoint.pinned_certificate.is_none() {
            return Err(TargetFailure::Unprovable {
                target,
                user: login.to_string(),
                reason: "no TLS certificate is pinned for it, and a MySQL login proves nothing \
                         without one: set tls_certificate in the resource's reset settings \
                         (or run a reset, which pins it at first use)"
                    .into(),
            });
        }
        let mut session = match session::login(&self.endpoint, &self.timeouts, user, password).await
        {
            Ok(Login::Session(s)) => s,
            // Expiry is reported only after the password was found right, but for whichever
            // account the server matched, which an expired session cannot be asked.
            Ok(Login::Expired) => {
                return Err(TargetFailure::Unprovable {
                    target,
                    user: login.to_string(),
                    reason: "the server says the password has expired, without saying which \
                             account it matched"
                        .into(),
                });
            }
            Err(TargetFailure::AuthRejected { .. }) => return Ok(false),
            Err(e) => return Err(e),
        };
        // The server logs a login in as the account whose host pattern matches best, which
        // may be another account of the same user: only a login as this one proves anything.
        let matched = tokio::time::timeout(self.timeouts.command, session.current_user()).await;
        session.quit().await;
        let matched = match matched {
            Ok(Ok(m)) => m,
            Ok(Err(e)) => {
                return Err(TargetFailure::Protocol {
                    target,
                    reason: format!("asking CURRENT_USER(): {}", wire_words(e, &[])),
                });
            }
            Err(_) => {
                return Err(TargetFailure::Timeout {
                    target,
                    step: "CURRENT_USER()",
                    seconds: self.timeouts.command.as_secs(),
                });
            }
        };
        let same = matched
            .split_once('@')
            .is_some_and(|(u, h)| u == user && h.eq_ignore_ascii_case(host));
        if !same {
            return Err(TargetFailure::Unprovable {
                target,
                user: login.to_string(),
                reason: format!(
                    "a login as '{user}' from here is the account '{}', not '{user}'@'{host}'",
                    super::words::clean(matched, &[])
                ),
            });
        }
        Ok(true)
    }
}

/// A failed exchange in one line, cleaned of `secrets`.
fn wire_words(e: wire::WireError, secrets: &[&str]) -> String {
    match e {
        wire::WireError::Io(e) => super::words::clean(e.to_string(), secrets),
        wire::WireError::Malformed(m) => super::words::clean(m, secrets),
        wire::WireError::Server(e) => server_words(&e, secrets),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_a_server_and_nothing_secret() {
        assert_eq!(
            parse_url("mysql://db.example:3307").unwrap(),
            ("db.example".into(), 3307)
        );
        assert_eq!(
            parse_url("mariadb://127.0.0.1/").unwrap(),
            ("127.0.0.1".into(), 3306)
        );
        for bad in [
            "mysql://admin:pw@db",
            "mysql://db/app",
            "mysql://db?ssl-mode=DISABLED",
            "postgres://db",
            "not a url",
        ] {
            let e = parse_url(bad).unwrap_err();
            assert!(!e.contains("pw@"), "{e}");
        }
    }

    #[test]
    fn accounts_are_written_only_with_characters_that_need_no_quoting() {
        assert_eq!(account("app").unwrap(), ("app", "%"));
        assert_eq!(account("app@10.0.0.%").unwrap(), ("app", "10.0.0.%"));
        for bad in [
            "",
            "a'b",
            "a\\b",
            "app@",
            "app@h'; DROP USER x; --",
            "a b",
            &"u".repeat(81),
        ] {
            assert!(account(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_errors_raised_before_a_change_prove_nothing_changed() {
        assert!(rolled_back(1396) && rolled_back(1227) && rolled_back(1213));
        // Lost connection, server shutdown, out of memory: asked.
        assert!(!rolled_back(2013) && !rolled_back(1053) && !rolled_back(1037));
    }
}
