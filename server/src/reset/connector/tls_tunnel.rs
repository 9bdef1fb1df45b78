//! A pinned, capped TLS session to a target, handed to a client library as a plain local
//! stream: for protocols whose client crate cannot take a certificate verifier or bound what
//! it reads (LDAP), TLS is done here (`tls_pin::handshake`, `capped::Capped`) and the crate
//! speaks its messages over one end of a Unix socket pair, relayed to the session by a task
//! that ends with the exchange's lifetime. No port is opened and no other process can reach
//! the pair.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::TargetFailure;
use super::capped::Capped;
use super::tls_pin;

/// An open session: the end for the client crate, and the certificate the target showed.
pub struct Tunnel {
    pub local: std::os::unix::net::UnixStream,
    /// The `SHA256:…` fingerprint of the certificate the target presented.
    pub certificate: String,
}

/// Splits the front message off what the target sent: its length when it is whole and may be
/// passed on, `None` while more is needed, an error to end the session.
pub type Framing = fn(&[u8]) -> Result<Option<usize>, String>;

/// Connects to `host:port`, completes TLS against `pinned` (any certificate when `None`),
/// and relays between the session and the returned local end for at most `lifetime`: what
/// the client sends as it is, what the target sends only as whole messages `framing`
/// accepts (the first it refuses ends the session). The target may send at most `cap` bytes
/// in all.
pub async fn open(
    host: &str,
    port: u16,
    pinned: Option<&String>,
    cap: u64,
    lifetime: Duration,
    framing: Framing,
    target: &str,
) -> Result<Tunnel, TargetFailure> {
    let unreachable = |reason: String| TargetFailure::Unreachable {
        target: target.to_string(),
        reason,
    };
    let socket = TcpStream::connect((host, port))
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let _ = socket.set_nodelay(true);
    let (session, certificate) =
        tls_pin::handshake(Capped::new(socket, cap), host, pinned, target).await?;
    let (ours, theirs) =
        std::os::unix::net::UnixStream::pair().map_err(|e| unreachable(e.to_string()))?;
    ours.set_nonblocking(true)
        .map_err(|e| unreachable(e.to_string()))?;
    let ours = tokio::net::UnixStream::from_std(ours).map_err(|e| unreachable(e.to_string()))?;
    let target = target.to_string();
    tokio::spawn(async move {
        let (mut from_client, mut to_client) = ours.into_split();
        let (mut from_target, mut to_target) = tokio::io::split(session);
        let up = async {
            let copied = tokio::io::copy(&mut from_client, &mut to_target).await;
            // The client is done sending: the target still answers what it sent.
            let _ = to_target.shutdown().await;
            copied
        };
        let down = relay_messages(&mut from_target, &mut to_client, framing);
        tokio::pin!(up, down);
        let relayed = tokio::time::timeout(lifetime, async {
            tokio::select! {
                _ = &mut up => down.await,
                // The target closed or sent what is not passed on: the session ends.
                ended = &mut down => ended,
            }
        })
        .await;
        if let Ok(Err(why)) = relayed {
            tracing::warn!(peer = %target, "ended a session the target sent this on: {why}");
        }
    });
    Ok(Tunnel {
        local: theirs,
        certificate,
    })
}

/// Passes on what `from` sends, message by message as `framing` splits it; ends at the
/// first message it refuses, or when either side closes.
async fn relay_messages<R, W>(from: &mut R, to: &mut W, framing: Framing) -> Result<(), String>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut pending: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = from.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Ok(());
        }
        pending.extend_from_slice(&chunk[..n]);
        while let Some(len) = framing(&pending)? {
            to.write_all(&pending[..len])
                .await
                .map_err(|e| e.to_string())?;
            pending.drain(..len);
        }
    }
}
