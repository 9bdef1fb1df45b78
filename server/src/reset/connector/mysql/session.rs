//! One connection to a MySQL or MariaDB server: TCP, the greeting, TLS (required, pinned),
//! a `mysql_native_password` login, then statements.

use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::native_password;
use super::wire::{self, AuthReply, ServerError, WireError};
use super::{ANSWER_CAP, MyEndpoint};
use crate::reset::connector::capped::Capped;
use crate::reset::connector::tls_pin;
use crate::reset::connector::words::clean;
use crate::reset::connector::{TargetFailure, Timeouts};
use crate::vault::Secret;

/// Authentication switches a server may ask for before the login is given up.
const MAX_AUTH_ROUNDS: usize = 3;
/// The plugin every answer is computed with.
const NATIVE: &str = "mysql_native_password";

/// MySQL's "Access denied for user" (a wrong password, or no such account from here).
pub const ACCESS_DENIED: u16 = 1045;
/// "Your password has expired": sent only after the password was checked and found right.
pub const PASSWORD_EXPIRED: u16 = 1862;

/// A logged-in session.
pub struct Session {
    stream: TlsStream<Capped<TcpStream>>,
    /// The `SHA256:…` fingerprint of the certificate the server presented.
    pub certificate: String,
}

/// How a login ended, when the server answered it.
pub enum Login {
    /// Logged in (boxed: a TLS session is a kilobyte).
    Session(Box<Session>),
    /// The password is right and has expired: the server closed the session.
    Expired,
}

/// Connects to `endpoint` and logs in as `user`, all within `timeouts.connect`.
pub async fn login(
    endpoint: &MyEndpoint,
    timeouts: &Timeouts,
    user: &str,
    password: &Secret,
) -> Result<Login, TargetFailure> {
    let target = endpoint.label();
    tokio::time::timeout(timeouts.connect, login_now(endpoint, user, password))
        .await
        .map_err(|_| TargetFailure::Timeout {
            target,
            step: "connecting and logging in",
            seconds: timeouts.connect.as_secs(),
        })?
}

async fn login_now(
    endpoint: &MyEndpoint,
    user: &str,
    password: &Secret,
) -> Result<Login, TargetFailure> {
    let target = endpoint.label();
    let unreachable = |reason: String| TargetFailure::Unreachable {
        target: target.clone(),
        reason,
    };
    let protocol = |e: WireError| match e {
        WireError::Io(e) => TargetFailure::Unreachable {
            target: target.clone(),
            reason: clean(e.to_string(), &[]),
        },
        WireError::Malformed(m) => TargetFailure::Protocol {
            target: target.clone(),
            reason: clean(m, &[]),
        },
        WireError::Server(e) => TargetFailure::Unreachable {
            target: target.clone(),
            reason: server_words(&e, &[]),
        },
    };
    let socket = TcpStream::connect((endpoint.host.as_str(), endpoint.port))
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let _ = socket.set_nodelay(true);
    let mut socket = Capped::new(socket, ANSWER_CAP);
    let (seq, greeting) = wire::read_packet(&mut socket).await.map_err(&protocol)?;
    let greeting = wire::parse_greeting(&greeting).map_err(&protocol)?;
    if !greeting.offers_tls() {
        return Err(match &endpoint.pinned_certificate {
            Some(expected) => TargetFailure::TlsGone {
                target,
                expected: expected.clone(),
            },
            None => unreachable(format!(
                "the server ({}) does not offer TLS; Lockstep talks to MySQL and MariaDB over \
                 TLS only: set ssl_cert and ssl_key in the server's configuration",
                clean(greeting.version, &[])
            )),
        });
    }
    let mut seq = seq.wrapping_add(1);
    wire::write_packet(&mut socket, seq, &wire::ssl_request())
        .await
        .map_err(&protocol)?;
    let (mut stream, certificate) = tls_pin::handshake(
        socket,
        &endpoint.host,
        endpoint.pinned_certificate.as_ref(),
        &target,
    )
    .await?;

    // Only ever a native-password answer: to the greeting's nonce first, then to the nonce of
    // a switch to the same plugin. Any other plugin is refused before an answer is sent.
    seq = seq.wrapping_add(1);
    let nonce_of = |nonce: &[u8]| {
        if nonce.len() == native_password::NONCE_LEN {
            Ok(())
        } else {
            // A short or fixed nonce would make the answer replayable.
            Err(TargetFailure::Protocol {
                target: target.clone(),
                reason: format!("a login nonce of {} bytes, not 20", nonce.len()),
            })
        }
    };
    nonce_of(&greeting.nonce)?;
    let answer = native_password::answer(password.expose().as_bytes(), &greeting.nonce);
    let packet = wire::login(user, &answer, NATIVE).map_err(&protocol)?;
    wire::write_packet(&mut stream, seq, &packet)
        .await
        .map_err(&protocol)?;
    for _ in 0..MAX_AUTH_ROUNDS {
        let (got, reply) = wire::read_packet(&mut stream).await.map_err(&protocol)?;
        match wire::parse_auth_reply(&reply).map_err(&protocol)? {
            AuthReply::Ok => {
                return Ok(Login::Session(Box::new(Session {
                    stream,
                    certificate,
                })));
            }
            AuthReply::Err(e) if e.code == ACCESS_DENIED => {
                return Err(TargetFailure::AuthRejected {
                    target,
                    user: user.to_string(),
                });
            }
            AuthReply::Err(e) if e.code == PASSWORD_EXPIRED => return Ok(Login::Expired),
            AuthReply::Err(e) => {
                return Err(TargetFailure::Protocol {
                    target,
                    reason: server_words(&e, &[]),
                });
            }
            AuthReply::Switch { plugin, nonce } if plugin == NATIVE => {
                nonce_of(&nonce)?;
                seq = got.wrapping_add(1);
                let answer = native_password::answer(password.expose().as_bytes(), &nonce);
                wire::write_packet(&mut stream, seq, &answer)
                    .await
                    .map_err(&protocol)?;
            }
            AuthReply::Switch { plugin, .. } => {
                return Err(TargetFailure::Unprovable {
                    target,
                    user: user.to_string(),
                    reason: format!(
                        "the account logs in with the '{}' plugin; Lockstep logs in and sets \
                         passwords only with mysql_native_password (the password itself never \
                         leaves it): set the account to mysql_native_password",
                        clean(plugin, &[])
                    ),
                });
            }
        }
    }
    Err(TargetFailure::Protocol {
        target,
        reason: format!("more than {MAX_AUTH_ROUNDS} authentication switches"),
    })
}

impl Session {
    /// Runs `sql` as one statement: the server's OK, or its error.
    pub async fn run(&mut self, sql: &str) -> Result<Result<(), ServerError>, WireError> {
        wire::write_packet(&mut self.stream, 0, &wire::query(sql)).await?;
        let (_, reply) = wire::read_packet(&mut self.stream).await?;
        wire::parse_statement_reply(&reply)
    }

    /// The account the server matched this login to, as `user@host` (`CURRENT_USER()`):
    /// the most specific host pattern that matched, which need not be the one asked about.
    pub async fn current_user(&mut self) -> Result<String, WireError> {
        wire::write_packet(&mut self.stream, 0, &wire::query("SELECT CURRENT_USER()")).await?;
        let (_, first) = wire::read_packet(&mut self.stream).await?;
        match wire::parse_answer(&first)? {
            wire::Answer::Columns(1) => {}
            wire::Answer::Err(e) => return Err(WireError::Server(e)),
            _ => {
                return Err(WireError::Malformed(
                    "CURRENT_USER() did not answer one column".into(),
                ));
            }
        }
        // The column's definition, then the EOF after it.
        wire::read_packet(&mut self.stream).await?;
        let (_, eof) = wire::read_packet(&mut self.stream).await?;
        if !wire::is_eof(&eof) {
            return Err(WireError::Malformed(
                "more than one column definition".into(),
            ));
        }
        let (_, row) = wire::read_packet(&mut self.stream).await?;
        let value = wire::parse_single_value(&row)?
            .ok_or_else(|| WireError::Malformed("CURRENT_USER() is NULL".into()))?;
        let (_, end) = wire::read_packet(&mut self.stream).await?;
        if !wire::is_eof(&end) {
            return Err(WireError::Malformed("more than one row".into()));
        }
        Ok(String::from_utf8_lossy(&value).into_owned())
    }

    /// Ends the session politely, within a second; a failure here changes nothing.
    pub async fn quit(mut self) {
        let bye = async {
            let _ = wire::write_packet(&mut self.stream, 0, &wire::QUIT).await;
            let _ = tokio::io::AsyncWriteExt::shutdown(&mut self.stream).await;
        };
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), bye).await;
    }
}

/// A server's error in one line: its words, code and SQLSTATE, cleaned of `secrets`.
pub fn server_words(e: &ServerError, secrets: &[&str]) -> String {
    clean(format!("{} ({} {})", e.message, e.code, e.state), secrets)
}
