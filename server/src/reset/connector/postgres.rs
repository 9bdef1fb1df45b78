//! The PostgreSQL connector: `ALTER ROLE … PASSWORD` as the resource's admin role, with a
//! SCRAM-SHA-256 verifier computed here ([`super::scram`]) so the server never receives the
//! password; a password is checked by logging in as the role, afresh.
//!
//! **Where.** The resource's `url` (`postgres://host[:port][/database]`, no credentials), or
//! else its IP address (or name) on port 5432 and the database `postgres`. Accounts are
//! checked by connecting to that database, so they need `CONNECT` on it.
//!
//! **TLS, always, pinned; SCRAM bound to it.** The connection must be TLS, its leaf
//! certificate pinned at first use like an SSH host key (`tls_certificate` in the reset
//! settings), and every login SCRAM-SHA-256-PLUS (channel binding required): no password
//! goes out in clear or as md5 to whoever answers (`password` or `md5` in `pg_hba.conf`, or an
//! impostor at first use), a server that checks no password (`trust`) proves nothing, and a
//! relay in the middle fails. Notices the server sends are dropped, never logged.
//!
//! **Bounded.** Everything the server sends on one connection is capped at [`ANSWER_CAP`]
//! bytes (a reset needs a few hundred): a hostile server cannot grow this process's memory.

use std::task::Poll;

use tokio::net::TcpStream;
use tokio_postgres::config::{ChannelBinding, SslMode};
use tokio_postgres::error::SqlState;
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres_rustls::MakeRustlsConnect;
use zeroize::Zeroizing;

use super::capped::Capped;
use super::server_url;
use super::tls_pin::{Offered, PinVerifier};
use super::words::clean;
use super::{
    Admin, ApplyFailure, Connector, KeyRecorder, TargetFailure, TargetKey, Timeouts, scram,
};
use crate::vault::Secret;

/// Bytes one connection may receive from the server, handshake and answers together.
pub const ANSWER_CAP: u64 = 1024 * 1024;
/// The longest role name PostgreSQL keeps (`NAMEDATALEN - 1`); a longer one is silently cut,
/// so it could name another role.
const MAX_ROLE_NAME: usize = 63;
/// The database connected to when the resource's URL names none.
const DEFAULT_DATABASE: &str = "postgres";
/// PostgreSQL's port when the resource names none.
const DEFAULT_PORT: u16 = 5432;

/// Where a PostgreSQL server is, and the certificate it must present.
#[derive(Debug, Clone)]
pub struct PgEndpoint {
    pub host: String,
    pub port: u16,
    pub database: String,
    /// `SHA256:…` of the leaf certificate recorded at first use; `None` accepts and reports.
    pub pinned_certificate: Option<String>,
}

impl PgEndpoint {
    /// The endpoint of a resource: its `url` when set, else `host` on the default port.
    pub fn new(
        url: Option<&str>,
        host: &str,
        pinned_certificate: Option<String>,
    ) -> Result<PgEndpoint, String> {
        let Some(url) = url else {
            return Ok(PgEndpoint {
                host: host.to_string(),
                port: DEFAULT_PORT,
                database: DEFAULT_DATABASE.into(),
                pinned_certificate,
            });
        };
        let (host, port, database) = parse_url(url)?;
        Ok(PgEndpoint {
            host,
            port,
            database,
            pinned_certificate,
        })
    }

    pub fn label(&self) -> String {
        server_url::label(&self.host, self.port)
    }
}

/// `postgres://host[:port][/database]` (or `postgresql://`), refusing credentials, query
/// options and a socket path: the admin's credential comes from the vault only.
pub fn parse_url(text: &str) -> Result<(String, u16, String), String> {
    let hint = "write it as postgres://host[:port][/database]";
    let url = server_url::parse(
        text,
        &["postgres", "postgresql"],
        "PostgreSQL",
        DEFAULT_PORT,
        hint,
    )?;
    let database = url.path.trim_start_matches('/');
    if database.contains('/') {
        return Err(format!("the url: one database name only; {hint}"));
    }
    let database = if database.is_empty() {
        DEFAULT_DATABASE.to_string()
    } else {
        percent_decode(database)
            .ok_or_else(|| "the url: the database name is not UTF-8 text".to_string())?
    };
    Ok((url.host, url.port, database))
}

/// `%XX` escapes of a URL path segment, as UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok().filter(|d| !d.contains('\0'))
}

/// A PostgreSQL server whose roles' passwords are set and checked.
pub struct PostgresConnector {
    pub endpoint: PgEndpoint,
    pub timeouts: Timeouts,
}

/// `name` as a quoted identifier: the role named exactly so, whatever it contains.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A role name that PostgreSQL keeps exactly as written, or why not.
fn role_name(login: &str) -> Result<&str, String> {
    if login.is_empty() || login.contains('\0') {
        return Err(format!(
            "role name '{}' cannot be used: it is empty or holds NUL",
            login.escape_debug()
        ));
    }
    if login.len() > MAX_ROLE_NAME {
        return Err(format!(
            "role name '{}' is longer than PostgreSQL's {MAX_ROLE_NAME} bytes: the server would \
             cut it and could change another role",
            login.escape_debug()
        ));
    }
    Ok(login)
}

impl PostgresConnector {
    /// An authenticated session as `user`, over pinned TLS with SCRAM bound to the channel;
    /// the certificate offered.
    async fn connect(
        &self,
        user: &str,
        password: &Secret,
    ) -> Result<(tokio_postgres::Client, Option<String>), TargetFailure> {
        let target = self.label();
        let unreachable = |reason: String| TargetFailure::Unreachable {
            target: target.clone(),
            reason,
        };
        let (tls, offered) =
            PinVerifier::config(self.endpoint.pinned_certificate.clone()).map_err(&unreachable)?;
        let mut make = MakeRustlsConnect::new(tls);
        let tls = <MakeRustlsConnect as MakeTlsConnect<Capped<TcpStream>>>::make_tls_connect(
            &mut make,
            &self.endpoint.host,
        )
        .map_err(|e| unreachable(format!("TLS setup: {e}")))?;
        let mut config = tokio_postgres::Config::new();
        // Channel binding required: no password goes out in clear or as md5 (to a server, or
        // an impostor at first use, that asks for them), a server that asks for none (`trust`)
        // proves nothing, and a relay in the middle fails.
        config
            .user(user)
            .password(password.expose().as_bytes())
            .dbname(&self.endpoint.database)
            .application_name("lockstep")
            .ssl_mode(SslMode::Require)
            .channel_binding(ChannelBinding::Require);
        let session = async {
            let socket = TcpStream::connect((self.endpoint.host.as_str(), self.endpoint.port))
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            let _ = socket.set_nodelay(true);
            let stream = Capped::new(socket, ANSWER_CAP);
            config
                .connect_raw(stream, tls)
                .await
                .map_err(|e| self.connect_failure(user, &e, &offered))
        };
        let (client, mut connection) = tokio::time::timeout(self.timeouts.connect, session)
            .await
            .map_err(|_| TargetFailure::Timeout {
                target: target.clone(),
                step: "connecting and logging in",
                seconds: self.timeouts.connect.as_secs(),
            })??;
        // The session is driven here, not by `Connection`'s own future, which writes every
        // notice the server sends into this process's log (a hostile server's words, or a
        // trigger quoting the statement). It lives at most as long as one exchange may.
        let lifetime = self.timeouts.connect + self.timeouts.command * 2;
        tokio::spawn(async move {
            let drive = std::future::poll_fn(|cx| {
                loop {
                    match connection.poll_message(cx) {
                        // Notices and notifications: dropped.
                        Poll::Ready(Some(Ok(_))) => continue,
                        Poll::Ready(Some(Err(_)) | None) => return Poll::Ready(()),
                        Poll::Pending => return Poll::Pending,
                    }
                }
            });
            let _ = tokio::time::timeout(lifetime, drive).await;
        });
        let offered = offered.lock().unwrap_or_else(|p| p.into_inner()).clone();
        Ok((client, offered))
    }

    /// What a failed connect means: a changed certificate (or TLS gone where one is
    /// pinned), a refused password, or a server that could not be reached or spoken to.
    fn connect_failure(
        &self,
        user: &str,
        e: &tokio_postgres::Error,
        offered: &Offered,
    ) -> TargetFailure {
        let target = self.label();
        let offered = offered.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let words = server_words(e, &[]);
        let no_tls = words.contains("does not support TLS");
        if let Some(expected) = &self.endpoint.pinned_certificate {
            match &offered {
                Some(actual) if actual != expected => {
                    return TargetFailure::CertificateChanged {
                        target,
                        expected: expected.clone(),
                        actual: actual.clone(),
                    };
                }
                None if no_tls => {
                    return TargetFailure::TlsGone {
                        target,
                        expected: expected.clone(),
                    };
                }
                _ => {}
            }
        }
        match e.code() {
            Some(c) if *c == SqlState::INVALID_PASSWORD => TargetFailure::AuthRejected {
                target,
                user: user.to_string(),
            },
            Some(_) => TargetFailure::Protocol {
                target,
                reason: words,
            },
            None if no_tls => TargetFailure::Unreachable {
                target,
                reason: format!(
                    "{words}; Lockstep talks to PostgreSQL over TLS only: turn on ssl in the \
                     server's postgresql.conf"
                ),
            },
            None if words.contains("channel binding") => TargetFailure::Unprovable {
                target,
                user: user.to_string(),
                reason: format!(
                    "{words}: the server asked for a way of logging in without SCRAM channel \
                     binding (trust, password, md5, ldap, pam or radius in pg_hba.conf, an \
                     md5-stored password, a pooler such as PgBouncer in between, PostgreSQL \
                     before 11, or a certificate signed with Ed25519 or RSA-PSS); Lockstep \
                     logs in only with SCRAM-SHA-256-PLUS, so use scram-sha-256 for this host \
                     and a SCRAM password for '{user}'"
                ),
            },
            None => TargetFailure::Unreachable {
                target,
                reason: words,
            },
        }
    }
}

/// Whether a statement error proves the statement did not commit: an ERROR (not FATAL or
/// PANIC, which end the session, possibly after the commit) of a class raised while the
/// statement is checked or run, before its commit.
fn rolled_back(db: &tokio_postgres::error::DbError) -> bool {
    use tokio_postgres::error::Severity;
    let before_commit = [
        "0A", // feature not supported
        "0L", // invalid grantor
        "0P", // invalid role specification
        "22", // data exception
        "25", // invalid transaction state
        "28", // invalid authorization
        "42", // syntax error or access rule violation (no such role, permission denied)
    ];
    db.parsed_severity() == Some(Severity::Error)
        && before_commit
            .iter()
            .any(|c| db.code().code().starts_with(c))
}

/// The error and its causes in one line (the server's own message where there is one), with
/// every `secret` and anything shaped like a SCRAM verifier taken out *before* it is cut to
/// a few hundred bytes (a secret straddling the cut could not be found after), and without
/// control characters.
fn server_words(e: &tokio_postgres::Error, secrets: &[&str]) -> String {
    let text = match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                text.push_str(": ");
                text.push_str(&s.to_string());
                source = s.source();
            }
            text
        }
    };
    clean(text, secrets)
}

impl Connector for PostgresConnector {
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
        let role = role_name(login).map_err(ApplyFailure::Unrepresentable)?;
        if new.expose().contains('\0') {
            return Err(ApplyFailure::Unrepresentable(
                "the new password contains NUL, which PostgreSQL cannot take".into(),
            ));
        }
        // PostgreSQL stores anything that does not parse as a verifier as the password
        // itself: a malformed one never leaves here.
        let verifier = scram::verifier(new.expose())
            .and_then(|v| scram::check(&v).map(|()| v))
            .map_err(ApplyFailure::Unrepresentable)?;
        let statement = Zeroizing::new(format!(
            "ALTER ROLE {} PASSWORD '{}'",
            quote_ident(role),
            verifier.as_str()
        ));
        let (client, offered) = self.connect(&admin.login, &admin.password).await?;
        // Required TLS: a session always has a certificate; it is pinned (or checked against
        // the pin another connection recorded meanwhile) before the statement goes out.
        let Some(offered) = offered else {
            return Err(ApplyFailure::Unrepresentable(format!(
                "{}: a session without a certificate; nothing was sent",
                self.label()
            )));
        };
        keys.record(&TargetKey::TlsCertificate(offered))
            .await
            .map_err(ApplyFailure::Unrepresentable)?;
        let target = self.label();
        // Not the admin's password: it is never sent in clear, so it could reach the server's
        // words only through a name someone chose, and redacting it would confirm a guess.
        let secrets = [verifier.as_str(), new.expose()];
        let sent = tokio::time::timeout(self.timeouts.command, client.batch_execute(&statement));
        match sent.await {
            Ok(Ok(())) => Ok(()),
            // An error raised before the commit: the statement rolled back, nothing changed.
            Ok(Err(e)) if e.as_db_error().is_some_and(rolled_back) => Err(ApplyFailure::Rejected {
                target,
                reason: server_words(&e, &secrets),
            }),
            // Anything else (a FATAL after the commit, a broken connection) may have come
            // after the statement committed: the target is asked.
            Ok(Err(e)) => Err(ApplyFailure::Interrupted(TargetFailure::Protocol {
                target,
                reason: server_words(&e, &secrets),
            })),
            Err(_) => Err(ApplyFailure::Interrupted(TargetFailure::Timeout {
                target,
                step: "ALTER ROLE",
                seconds: self.timeouts.command.as_secs(),
            })),
        }
    }

    async fn accepts(&self, login: &str, password: &Secret) -> Result<bool, TargetFailure> {
        // A name the server would cut or refuse proves nothing either way.
        role_name(login).map_err(|reason| TargetFailure::Protocol {
            target: self.label(),
            reason,
        })?;
        match self.connect(login, password).await {
            Ok(_) => Ok(true),
            Err(TargetFailure::AuthRejected { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_a_server_and_a_database_and_nothing_secret() {
        assert_eq!(
            parse_url("postgres://db.example:6543/app").unwrap(),
            ("db.example".into(), 6543, "app".into())
        );
        assert_eq!(
            parse_url("postgresql://127.0.0.1").unwrap(),
            ("127.0.0.1".into(), 5432, "postgres".into())
        );
        assert_eq!(parse_url("postgres://[::1]:5/d").unwrap().0, "::1");
        for bad in [
            "postgres://admin:pw@db/app",
            "postgres://admin@db/app",
            "mysql://db/app",
            "postgres:///var/run/postgresql",
            "postgres://db/app?sslmode=disable",
            "postgres://db/a/b",
            "not a url",
            "postgres://admin:s3cret w@db:99999/app",
        ] {
            let e = parse_url(bad).unwrap_err();
            assert!(!e.contains("pw") && !e.contains("s3cret"), "{e}");
        }
    }

    #[test]
    fn role_names_are_quoted_and_bounded() {
        assert_eq!(quote_ident(r#"we"ird"#), r#""we""ird""#);
        assert!(role_name(&"a".repeat(63)).is_ok());
        assert!(role_name(&"a".repeat(64)).is_err());
        assert!(role_name("").is_err());
        assert!(role_name("a\0b").is_err());
    }
}
