//! The SSH client of agentless resets (russh): connect with a pinned host key, authenticate with
//! a password, run a command with its input on stdin.
//!
//! **Secrets**: passwords travel only as SSH authentication or on a command's stdin, never in a
//! command line; buffers holding them are zeroized.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::ChannelMsg;
use russh::client::{self, Handle};
use russh::keys::{HashAlg, PublicKeyOrCertificate};
use zeroize::Zeroizing;

use super::connector::{TargetFailure, Timeouts};
use crate::vault::Secret;

/// Where to connect and what host key to expect.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    /// `SHA256:…` of the host key recorded at first use; `None` accepts and reports the key.
    pub pinned_host_key: Option<String>,
}

impl Endpoint {
    pub fn label(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// Checks the offered host key against the pin and remembers what was offered.
struct PinnedHostKey {
    pinned: Option<String>,
    offered: Arc<Mutex<Option<String>>>,
}

impl client::Handler for PinnedHostKey {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        offered: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let fingerprint = offered
            .public_key()
            .fingerprint(HashAlg::Sha256)
            .to_string();
        let ok = self.pinned.as_deref().is_none_or(|p| p == fingerprint);
        if let Ok(mut o) = self.offered.lock() {
            *o = Some(fingerprint);
        }
        Ok(ok)
    }
}

/// An authenticated connection. Several commands may run on it, one after another or at once.
pub struct Connection {
    handle: Handle<PinnedHostKey>,
    target: String,
    /// The host key's `SHA256:…` fingerprint, to pin at first use.
    pub host_key: String,
    timeouts: Timeouts,
}

/// Bytes kept of what one command prints on each of stdout and stderr; the rest is read and
/// dropped, so a target cannot grow the server's memory by printing.
pub const OUTPUT_CAP: usize = 64 * 1024;

/// Why a command gave no exit status. Which half matters: a command that never started changed
/// nothing; one that was interrupted may have changed anything it was going to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunFailure {
    /// The session could not be opened: the command never reached the target.
    #[error(transparent)]
    NotStarted(TargetFailure),
    /// The command was sent, and the connection broke, the command was killed, or it timed
    /// out before it said how it ended.
    #[error(transparent)]
    Interrupted(TargetFailure),
}

impl RunFailure {
    pub fn failure(&self) -> &TargetFailure {
        match self {
            RunFailure::NotStarted(f) | RunFailure::Interrupted(f) => f,
        }
    }
}

/// What a command printed (each stream at most [`OUTPUT_CAP`] bytes) and how it ended.
#[derive(Debug)]
pub struct Output {
    pub status: u32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

fn config(timeouts: Timeouts) -> Arc<client::Config> {
    Arc::new(client::Config {
        inactivity_timeout: Some(timeouts.command.max(timeouts.connect) * 2),
        keepalive_interval: Some(Duration::from_secs(15)),
        nodelay: true,
        ..Default::default()
    })
}

/// Connects and authenticates `user` with `password`.
pub async fn connect(
    endpoint: &Endpoint,
    user: &str,
    password: &Secret,
    timeouts: Timeouts,
) -> Result<Connection, TargetFailure> {
    let target = endpoint.label();
    let offered = Arc::new(Mutex::new(None));
    let handler = PinnedHostKey {
        pinned: endpoint.pinned_host_key.clone(),
        offered: offered.clone(),
    };
    let timed_out = |step| TargetFailure::Timeout {
        target: target.clone(),
        step,
        seconds: timeouts.connect.as_secs(),
    };
    let attempt = async {
        let handle = client::connect(
            config(timeouts),
            (endpoint.host.as_str(), endpoint.port),
            handler,
        )
        .await;
        let mut handle = match handle {
            Ok(h) => h,
            Err(russh::Error::UnknownKey) => {
                return Err(TargetFailure::HostKeyChanged {
                    target: target.clone(),
                    expected: endpoint.pinned_host_key.clone().unwrap_or_default(),
                    actual: offered
                        .lock()
                        .ok()
                        .and_then(|o| o.clone())
                        .unwrap_or_default(),
                });
            }
            Err(e) => {
                return Err(TargetFailure::Unreachable {
                    target: target.clone(),
                    reason: describe(&e),
                });
            }
        };
        let auth = handle
            .authenticate_password(user, password.expose())
            .await
            .map_err(|e| TargetFailure::Protocol {
                target: target.clone(),
                reason: describe(&e),
            })?;
        if !auth.success() {
            return Err(TargetFailure::AuthRejected {
                target: target.clone(),
                user: user.to_string(),
            });
        }
        Ok(handle)
    };
    let handle = tokio::time::timeout(timeouts.connect, attempt)
        .await
        .map_err(|_| timed_out("connecting"))??;
    let host_key = offered
        .lock()
        .ok()
        .and_then(|o| o.clone())
        .unwrap_or_default();
    Ok(Connection {
        handle,
        target,
        host_key,
        timeouts,
    })
}

/// Whether `needle` occurs in `haystack`.
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// `haystack` without any occurrence of `needle`.
fn remove_all(haystack: &[u8], needle: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(haystack.len());
    let mut i = 0;
    while i < haystack.len() {
        if !needle.is_empty() && haystack[i..].starts_with(needle) {
            i += needle.len();
        } else {
            out.push(haystack[i]);
            i += 1;
        }
    }
    out
}

/// Appends what fits under [`OUTPUT_CAP`].
fn keep(buf: &mut Vec<u8>, data: &[u8]) {
    let room = OUTPUT_CAP.saturating_sub(buf.len());
    buf.extend_from_slice(&data[..data.len().min(room)]);
}

/// A russh error in words, without internals that could help nobody.
fn describe(e: &russh::Error) -> String {
    match e {
        russh::Error::IO(io) => io.to_string(),
        other => other.to_string(),
    }
}

/// A prompt a command may print on stderr before it reads its input (sudo's password prompt,
/// made unique with `-p`): when `marker` appears, `answer` is written first; when it has not
/// appeared after `wait`, the command is taken not to ask, and only the input is written.
pub struct Prompt {
    pub marker: String,
    pub answer: Zeroizing<Vec<u8>>,
    pub wait: Duration,
}

impl Connection {
    /// Runs `command`, writes `stdin` then EOF, and collects the output and exit status.
    /// `stdin` may hold secrets: it is zeroized here after use.
    pub async fn run(
        &self,
        command: &str,
        stdin: Zeroizing<Vec<u8>>,
    ) -> Result<Output, RunFailure> {
        self.run_answering(command, stdin, None).await
    }

    /// [`Connection::run`], answering `prompt` first if the command prints it. The marker is
    /// taken out of the stderr returned.
    pub async fn run_answering(
        &self,
        command: &str,
        stdin: Zeroizing<Vec<u8>>,
        prompt: Option<Prompt>,
    ) -> Result<Output, RunFailure> {
        let protocol = |e: russh::Error| TargetFailure::Protocol {
            target: self.target.clone(),
            reason: describe(&e),
        };
        let started = std::sync::atomic::AtomicBool::new(false);
        let exchange = async {
            let channel = self
                .handle
                .channel_open_session()
                .await
                .map_err(|e| RunFailure::NotStarted(protocol(e)))?;
            started.store(true, std::sync::atomic::Ordering::Relaxed);
            let interrupted = |e| RunFailure::Interrupted(protocol(e));
            channel.exec(true, command).await.map_err(interrupted)?;
            let (mut rx, tx) = channel.split();
            let tx = &tx;
            // What goes to stdin, once it is decided (at once without a prompt).
            let send = |bytes: Zeroizing<Vec<u8>>| {
                Box::pin(async move {
                    if !bytes.is_empty() {
                        // russh takes its own copy of the bytes; ours is zeroized when dropped.
                        tx.data(&bytes[..]).await?;
                    }
                    tx.eof().await
                })
            };
            let (marker, wait) = match &prompt {
                Some(p) => (Some(p.marker.clone()), p.wait),
                None => (None, Duration::ZERO),
            };
            let mut answer = prompt.map(|p| p.answer);
            let mut input = Some(stdin);
            let mut write = match marker {
                None => Some(send(input.take().unwrap_or_default())),
                Some(_) => None,
            };
            let no_prompt = tokio::time::sleep(wait);
            tokio::pin!(no_prompt);
            let mut writing = write.is_some();
            let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
            let mut status = None;
            loop {
                tokio::select! {
                    r = async { write.as_mut().expect("writing").await }, if writing => {
                        writing = false;
                        r.map_err(interrupted)?;
                    }
                    () = &mut no_prompt, if write.is_none() => {
                        write = Some(send(input.take().unwrap_or_default()));
                        writing = true;
                    }
                    msg = rx.wait() => match msg {
                        Some(ChannelMsg::Data { data }) => keep(&mut stdout, &data),
                        Some(ChannelMsg::ExtendedData { data, ext: 1 }) => {
                            keep(&mut stderr, &data);
                            if write.is_none()
                                && let Some(m) = &marker
                                && contains(&stderr, m.as_bytes())
                            {
                                let mut first = answer.take().unwrap_or_default();
                                first.extend_from_slice(&input.take().unwrap_or_default());
                                write = Some(send(first));
                                writing = true;
                            }
                        }
                        Some(ChannelMsg::ExitStatus { exit_status }) => status = Some(exit_status),
                        Some(ChannelMsg::ExitSignal { signal_name, .. }) => {
                            return Err(RunFailure::Interrupted(TargetFailure::Protocol {
                                target: self.target.clone(),
                                reason: format!("the command was killed by signal {signal_name:?}"),
                            }));
                        }
                        Some(ChannelMsg::Failure) => {
                            return Err(RunFailure::Interrupted(TargetFailure::Protocol {
                                target: self.target.clone(),
                                reason: "the server refused to run the command".into(),
                            }));
                        }
                        Some(ChannelMsg::Close) | None => break,
                        Some(_) => {}
                    },
                }
            }
            let status = status.ok_or_else(|| {
                RunFailure::Interrupted(TargetFailure::Protocol {
                    target: self.target.clone(),
                    reason: "the command ended without an exit status".into(),
                })
            })?;
            if let Some(m) = &marker {
                stderr = remove_all(&stderr, m.as_bytes());
            }
            Ok(Output {
                status,
                stdout,
                stderr,
            })
        };
        tokio::time::timeout(self.timeouts.command, exchange)
            .await
            .map_err(|_| {
                let timeout = TargetFailure::Timeout {
                    target: self.target.clone(),
                    step: "running a command",
                    seconds: self.timeouts.command.as_secs(),
                };
                if started.load(std::sync::atomic::Ordering::Relaxed) {
                    RunFailure::Interrupted(timeout)
                } else {
                    RunFailure::NotStarted(timeout)
                }
            })?
    }

    /// Whether the session is gone (the server closed it, the network failed, a timeout).
    pub fn is_closed(&self) -> bool {
        self.handle.is_closed()
    }

    /// Says goodbye; errors do not matter any more at this point.
    pub async fn close(self) {
        let _ = self
            .handle
            .disconnect(russh::Disconnect::ByApplication, "", "en")
            .await;
    }
}
