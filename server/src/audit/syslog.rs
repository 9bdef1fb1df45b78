//! Forwarding of committed audit events to a syslog collector (RFC 5424), for SIEMs.
//!
//! UDP sends one datagram per event; TCP uses octet-counting framing (RFC 6587) on one kept
//! connection, re-dialled after an error. Forwarding is best effort and off the request path:
//! the database is the record, the collector a copy (and an outside witness that makes a
//! deleted tail of the chain visible).

use std::fmt::Write as _;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpStream, UdpSocket};

use super::Checkpoint;
use crate::error::{Error, Result};
use crate::store::audit::AuditRow;

/// Where to send events: `udp://HOST:PORT` or `tcp://HOST:PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyslogTarget {
    Udp(String),
    Tcp(String),
}

impl std::str::FromStr for SyslogTarget {
    type Err = Error;

    fn from_str(s: &str) -> Result<SyslogTarget> {
        let bad = || {
            Error::Config(format!(
                "invalid syslog target '{s}'; expected udp://HOST:PORT or tcp://HOST:PORT"
            ))
        };
        let (scheme, addr) = s.split_once("://").ok_or_else(bad)?;
        let (_, port) = addr.rsplit_once(':').ok_or_else(bad)?;
        port.parse::<u16>().map_err(|_| bad())?;
        match scheme {
            "udp" => Ok(SyslogTarget::Udp(addr.to_string())),
            "tcp" => Ok(SyslogTarget::Tcp(addr.to_string())),
            _ => Err(bad()),
        }
    }
}

/// Facility 10 (security/authorization, private), severity 5 (notice).
const PRI: u8 = 10 * 8 + 5;
/// Private enterprise number used for the structured-data id (reserved for documentation).
const SD_ID: &str = "lockstep@32473";

fn escape_param(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Formats one event as an RFC 5424 message.
pub fn format_event(row: &AuditRow, hostname: &str) -> String {
    let mut sd = format!("[{SD_ID}");
    for (k, v) in [
        ("seq", row.seq.to_string()),
        ("id", row.id.clone()),
        ("actor", row.actor.clone()),
        ("action", row.action.clone()),
        ("target", row.target.clone()),
        ("outcome", row.outcome.clone()),
        ("src", row.source_ip.clone().unwrap_or_default()),
        ("hash", row.hash.clone()),
    ] {
        let _ = write!(sd, " {k}=\"{}\"", escape_param(&v));
    }
    sd.push(']');
    format!(
        "<{PRI}>1 {} {} lockstep {} AUDIT {sd} {}",
        row.at,
        hostname,
        std::process::id(),
        row.detail
    )
}

/// Formats a checkpoint of the chain's head as an RFC 5424 message (MSGID `CHECKPOINT`); its
/// text is the checkpoint line `lockstep audit verify --checkpoints` reads.
pub fn format_checkpoint(cp: &Checkpoint, hostname: &str) -> String {
    let mut sd = format!("[{SD_ID}");
    for (k, v) in [
        ("seq", cp.seq.to_string()),
        ("hash", cp.hash.clone()),
        ("key", cp.key_id.clone()),
        ("mac", cp.mac.clone()),
    ] {
        let _ = write!(sd, " {k}=\"{}\"", escape_param(&v));
    }
    sd.push(']');
    format!(
        "<{PRI}>1 {} {} lockstep {} CHECKPOINT {sd} {cp}",
        cp.at,
        hostname,
        std::process::id(),
    )
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty() && s.is_ascii() && !s.contains(' '))
        .unwrap_or_else(|| "-".into())
}

/// Sends events to one collector.
pub struct SyslogForwarder {
    target: SyslogTarget,
    hostname: String,
    udp: Option<UdpSocket>,
    tcp: Option<TcpStream>,
}

impl SyslogForwarder {
    pub fn new(target: SyslogTarget) -> SyslogForwarder {
        SyslogForwarder {
            target,
            hostname: hostname(),
            udp: None,
            tcp: None,
        }
    }

    pub async fn send(&mut self, row: &AuditRow) -> std::io::Result<()> {
        let msg = format_event(row, &self.hostname);
        self.send_message(msg).await
    }

    /// Sends a checkpoint of the chain's head.
    pub async fn send_checkpoint(&mut self, cp: &Checkpoint) -> std::io::Result<()> {
        let msg = format_checkpoint(cp, &self.hostname);
        self.send_message(msg).await
    }

    async fn send_message(&mut self, msg: String) -> std::io::Result<()> {
        match &self.target {
            SyslogTarget::Udp(addr) => {
                if self.udp.is_none() {
                    let sock = UdpSocket::bind(if addr.starts_with('[') {
                        "[::]:0"
                    } else {
                        "0.0.0.0:0"
                    })
                    .await?;
                    sock.connect(addr).await?;
                    self.udp = Some(sock);
                }
                if let Some(sock) = &self.udp {
                    sock.send(msg.as_bytes()).await?;
                }
                Ok(())
            }
            SyslogTarget::Tcp(addr) => {
                for attempt in 0..2 {
                    if self.tcp.is_none() {
                        self.tcp = Some(TcpStream::connect(addr).await?);
                    }
                    let framed = format!("{} {msg}", msg.len());
                    if let Some(stream) = &mut self.tcp {
                        match stream.write_all(framed.as_bytes()).await {
                            Ok(()) => return Ok(()),
                            Err(e) if attempt == 1 => return Err(e),
                            Err(_) => self.tcp = None,
                        }
                    }
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_or_explain() {
        assert_eq!(
            "udp://127.0.0.1:514".parse::<SyslogTarget>().unwrap(),
            SyslogTarget::Udp("127.0.0.1:514".into())
        );
        assert!("tcp://[::1]:6514".parse::<SyslogTarget>().is_ok());
        let err = "http://x:1"
            .parse::<SyslogTarget>()
            .unwrap_err()
            .to_string();
        assert!(err.contains("udp://HOST:PORT"));
        assert!("udp://host".parse::<SyslogTarget>().is_err());
    }

    #[test]
    fn messages_follow_rfc5424_and_escape_params() {
        let row = AuditRow {
            seq: 3,
            id: "evt_1".into(),
            at: "2026-01-01T00:00:00.000000Z".into(),
            actor: "user:a\"b]".into(),
            action: "user.create".into(),
            target: "usr_1".into(),
            outcome: "success".into(),
            source_ip: Some("127.0.0.1".into()),
            detail: "{}".into(),
            prev_hash: GENESIS.into(),
            hash: "ab".into(),
            chain_version: super::super::KEYED,
            key_id: Some("k1".into()),
        };
        let m = format_event(&row, "host1");
        assert!(
            m.starts_with("<85>1 2026-01-01T00:00:00.000000Z host1 lockstep "),
            "{m}"
        );
        assert!(m.contains(r#"actor="user:a\"b\]""#), "{m}");
        assert!(m.ends_with("] {}"));
    }

    #[test]
    fn a_checkpoint_message_carries_the_checkpoint_line() {
        let cp = Checkpoint {
            seq: 42,
            hash: "ab".repeat(32),
            at: "2026-01-01T00:00:00.000000Z".into(),
            key_id: "k1".into(),
            mac: "cd".repeat(32),
        };
        let m = format_checkpoint(&cp, "host1");
        assert!(
            m.starts_with("<85>1 2026-01-01T00:00:00.000000Z host1 lockstep "),
            "{m}"
        );
        assert!(m.contains(" CHECKPOINT [lockstep@32473 seq=\"42\""), "{m}");
        assert!(m.ends_with(&cp.to_string()), "{m}");
        let found = Checkpoint::find_all(&m);
        assert_eq!(found, vec![(1, Ok(cp))]);
    }

    const GENESIS: &str = super::super::GENESIS_HASH;
}
