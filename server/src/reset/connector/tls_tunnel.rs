//! A pinned, capped TLS session to a target, handed to a client library as a plain local
//! stream: for protocols whose client crate cannot take a certificate verifier or bound what
//! it reads (LDAP), TLS is done here (`tls_pin::handshake`, `capped::Capped`) and the crate
//! speaks its messages over one end of a Unix socket pair, relayed to the session by a task
//! that ends with the exchange's lifetime. No port is opened and no other process can reach
//! the pair.

use std::time::Duration;

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

/// Connects to `host:port`, completes TLS against `pinned` (any certificate when `None`),
/// and relays between the session and the returned local end for at most `lifetime`; the
/// target may send at most `cap` bytes in all.
pub async fn open(
    host: &str,
    port: u16,
    pinned: Option<&String>,
    cap: u64,
    lifetime: Duration,
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
    let (mut session, certificate) =
        tls_pin::handshake(Capped::new(socket, cap), host, pinned, target).await?;
    let (ours, theirs) =
        std::os::unix::net::UnixStream::pair().map_err(|e| unreachable(e.to_string()))?;
    ours.set_nonblocking(true)
        .map_err(|e| unreachable(e.to_string()))?;
    let mut ours =
        tokio::net::UnixStream::from_std(ours).map_err(|e| unreachable(e.to_string()))?;
    tokio::spawn(async move {
        let relay = tokio::io::copy_bidirectional(&mut ours, &mut session);
        let _ = tokio::time::timeout(lifetime, relay).await;
    });
    Ok(Tunnel {
        local: theirs,
        certificate,
    })
}
