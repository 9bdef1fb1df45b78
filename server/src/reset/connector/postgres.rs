//! The PostgreSQL connector: `ALTER ROLE … PASSWORD` as the resource's admin role, with a
//! SCRAM-SHA-256 verifier computed here ([`super::scram`]) so the server never receives the
//! password; a password is checked by logging in as the role, afresh.
//!
//! **Where.** The resource's `url` (`postgres://host[:port][/database]`, no credentials), or
//! else its IP address (or name) on port 5432 and the database `postgres`. Accounts are
//! checked by connecting to that database, so they need `CONNECT` on it.
//!
//! **TLS, always, pinned.** The connection must be TLS: without it, a server (or whoever
//! answers in its place) that asks for `password` authentication gets the admin's password in
//! clear, and the verifier could be read off the wire. The leaf certificate is pinned at first
//! use like an SSH host key (`tls_certificate` in the reset settings); SCRAM uses channel
//! binding (`SCRAM-SHA-256-PLUS`) when the server offers it, so a relay in the middle fails.
//!
//! **Bounded.** Everything the server sends on one connection is capped at [`ANSWER_CAP`]
//! bytes (a reset needs a few hundred): a hostile server cannot grow this process's memory.

use std::io;
use std::pin::Pin as StdPin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_postgres::config::{ChannelBinding, SslMode};
use tokio_postgres::error::SqlState;
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres_rustls::MakeRustlsConnect;
use zeroize::Zeroizing;

use super::tls_pin::{Offered, PinVerifier};
use super::{Admin, Applied, ApplyFailure, Connector, Pin, TargetFailure, Timeouts, scram};
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
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// `postgres://host[:port][/database]` (or `postgresql://`), refusing credentials, query
/// options and a socket path: the admin's credential comes from the vault only.
pub fn parse_url(text: &str) -> Result<(String, u16, String), String> {
    let hint = "write it as postgres://host[:port][/database]";
    let url = url::Url::parse(text).map_err(|e| format!("the url: {e}; {hint}"))?;
    if !matches!(url.scheme(), "postgres" | "postgresql") {
        return Err(format!(
            "the url: the scheme must be postgres:// for a PostgreSQL resource; {hint}"
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "url of a PostgreSQL resource: credentials do not belong in it (the admin account \
             of the reset settings logs in); {hint}"
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("the url: no options are read from it; {hint}"));
    }
    let host = match url.host() {
        Some(url::Host::Domain(d)) if !d.is_empty() => d.to_string(),
        Some(url::Host::Ipv4(a)) => a.to_string(),
        Some(url::Host::Ipv6(a)) => a.to_string(),
        _ => return Err(format!("the url: no host; {hint}")),
    };
    let database = url.path().trim_start_matches('/');
    if database.contains('/') {
        return Err(format!("the url: one database name only; {hint}"));
    }
    let database = if database.is_empty() {
        DEFAULT_DATABASE.to_string()
    } else {
        percent_decode(database)
            .ok_or_else(|| "the url: the database name is not UTF-8 text".to_string())?
    };
    Ok((host, url.port().unwrap_or(DEFAULT_PORT), database))
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
    /// An authenticated session as `user`, over pinned TLS; the certificate offered, if any.
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
        config
            .user(user)
            .password(password.expose().as_bytes())
            .dbname(&self.endpoint.database)
            .application_name("lockstep")
            .ssl_mode(SslMode::Require)
            .channel_binding(ChannelBinding::Prefer);
        let session = async {
            let socket = TcpStream::connect((self.endpoint.host.as_str(), self.endpoint.port))
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            let _ = socket.set_nodelay(true);
            let stream = Capped {
                inner: socket,
                left: ANSWER_CAP,
            };
            config
                .connect_raw(stream, tls)
                .await
                .map_err(|e| self.connect_failure(user, &e, &offered))
        };
        let (client, connection) = tokio::time::timeout(self.timeouts.connect, session)
            .await
            .map_err(|_| TargetFailure::Timeout {
                target: target.clone(),
                step: "connecting and logging in",
                seconds: self.timeouts.connect.as_secs(),
            })??;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "postgres connection ended");
            }
        });
        let offered = offered.lock().unwrap_or_else(|p| p.into_inner()).clone();
        Ok((client, offered))
    }

    /// What a failed connect means: a changed certificate, a refused password, or a server
    /// that could not be reached or spoken to.
    fn connect_failure(
        &self,
        user: &str,
        e: &tokio_postgres::Error,
        offered: &Offered,
    ) -> TargetFailure {
        let target = self.label();
        let offered = offered.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let (Some(expected), Some(actual)) = (&self.endpoint.pinned_certificate, &offered)
            && expected != actual
        {
            return TargetFailure::CertificateChanged {
                target,
                expected: expected.clone(),
                actual: actual.clone(),
            };
        }
        match e.code() {
            Some(c) if *c == SqlState::INVALID_PASSWORD => TargetFailure::AuthRejected {
                target,
                user: user.to_string(),
            },
            Some(_) => TargetFailure::Protocol {
                target,
                reason: server_words(e),
            },
            None if offered.is_none() && e.to_string().contains("TLS") => {
                TargetFailure::Unreachable {
                    target,
                    reason: format!(
                        "{}; Lockstep talks to PostgreSQL over TLS only: turn on ssl in the \
                         server's postgresql.conf",
                        server_words(e)
                    ),
                }
            }
            None => TargetFailure::Unreachable {
                target,
                reason: server_words(e),
            },
        }
    }
}

/// The error and its causes in one line (the server's own message where there is one), cut
/// to a few hundred bytes and without control characters.
fn server_words(e: &tokio_postgres::Error) -> String {
    let mut text = match e.as_db_error() {
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
    if text.len() > 300 {
        let mut end = 300;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

impl Connector for PostgresConnector {
    fn label(&self) -> String {
        self.endpoint.label()
    }

    async fn apply(&self, admin: &Admin, login: &str, new: &Secret) -> Applied {
        let role = match role_name(login) {
            Ok(r) => r,
            Err(e) => return Applied::failed(ApplyFailure::Unrepresentable(e)),
        };
        if new.expose().contains('\0') {
            return Applied::failed(ApplyFailure::Unrepresentable(
                "the new password contains NUL, which PostgreSQL cannot take".into(),
            ));
        }
        // PostgreSQL stores anything that does not parse as a verifier as the password
        // itself: a malformed one never leaves here.
        let verifier =
            match scram::verifier(new.expose()).and_then(|v| scram::check(&v).map(|()| v)) {
                Ok(v) => v,
                Err(e) => return Applied::failed(ApplyFailure::Unrepresentable(e)),
            };
        let statement = Zeroizing::new(format!(
            "ALTER ROLE {} PASSWORD '{}'",
            quote_ident(role),
            verifier.as_str()
        ));
        let (client, offered) = match self.connect(&admin.login, &admin.password).await {
            Ok(c) => c,
            Err(e) => return Applied::failed(e),
        };
        let target = self.label();
        let sent = tokio::time::timeout(self.timeouts.command, client.batch_execute(&statement));
        let result = match sent.await {
            Ok(Ok(())) => Ok(()),
            // The server answered with an error: the statement rolled back, nothing changed.
            Ok(Err(e)) if e.as_db_error().is_some() => Err(ApplyFailure::Rejected {
                target,
                reason: server_words(&e).replace(verifier.as_str(), "[redacted]"),
            }),
            // The connection broke after the statement went out: it may have committed.
            Ok(Err(e)) => Err(ApplyFailure::Interrupted(TargetFailure::Protocol {
                target,
                reason: server_words(&e).replace(verifier.as_str(), "[redacted]"),
            })),
            Err(_) => Err(ApplyFailure::Interrupted(TargetFailure::Timeout {
                target,
                step: "ALTER ROLE",
                seconds: self.timeouts.command.as_secs(),
            })),
        };
        Applied {
            pin: offered.map(Pin::TlsCertificate),
            result,
        }
    }

    async fn accepts(&self, login: &str, password: &Secret) -> Result<bool, TargetFailure> {
        if role_name(login).is_err() {
            return Ok(false);
        }
        match self.connect(login, password).await {
            Ok(_) => Ok(true),
            Err(TargetFailure::AuthRejected { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// A stream that fails once the peer has sent more than `left` bytes.
struct Capped<S> {
    inner: S,
    left: u64,
}

impl<S: AsyncRead + Unpin> AsyncRead for Capped<S> {
    fn poll_read(
        mut self: StdPin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.left == 0 {
            return Poll::Ready(Err(io::Error::other(format!(
                "the server sent more than {ANSWER_CAP} bytes on one connection"
            ))));
        }
        let before = buf.filled().len();
        let this = &mut *self;
        let r = StdPin::new(&mut this.inner).poll_read(cx, buf);
        let got = (buf.filled().len() - before) as u64;
        this.left = this.left.saturating_sub(got);
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Capped<S> {
    fn poll_write(
        mut self: StdPin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        StdPin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: StdPin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        StdPin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: StdPin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        StdPin::new(&mut self.inner).poll_shutdown(cx)
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
