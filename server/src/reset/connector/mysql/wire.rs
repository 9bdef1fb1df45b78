//! The few parts of the MySQL client/server protocol the connector speaks (the same on
//! MariaDB): packets, the server's greeting, the TLS request, the login answer, an
//! authentication switch, one statement and its OK or ERR.
//!
//! Written here because no maintained client takes a custom certificate verifier, and the
//! certificate must be pinned like an SSH host key (`../tls_pin.rs`). Everything is parsed
//! from bounded packets ([`MAX_PACKET`]); a packet that does not fit, a multi-packet, or an
//! answer the protocol does not allow here ends the connection as
//! [`WireError::Malformed`] (never a `LOCAL INFILE` request honoured, never a result read).

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use zeroize::Zeroizing;

/// The largest packet accepted from a server (a greeting is ~100 bytes, an error message at
/// most 512 characters): a server cannot make this process hold more.
pub const MAX_PACKET: usize = 8 * 1024;

/// Capability flags (`include/mysql_com.h`).
pub mod caps {
    pub const LONG_PASSWORD: u32 = 0x0000_0001;
    pub const PROTOCOL_41: u32 = 0x0000_0200;
    pub const SSL: u32 = 0x0000_0800;
    pub const TRANSACTIONS: u32 = 0x0000_2000;
    pub const SECURE_CONNECTION: u32 = 0x0000_8000;
    pub const PLUGIN_AUTH: u32 = 0x0008_0000;
}

/// What this client asks for: 4.1 packets, TLS, 20-byte answers and named auth plugins;
/// never multiple statements, `LOCAL INFILE` or a default database.
pub const CLIENT_CAPS: u32 = caps::LONG_PASSWORD
    | caps::PROTOCOL_41
    | caps::SSL
    | caps::TRANSACTIONS
    | caps::SECURE_CONNECTION
    | caps::PLUGIN_AUTH;

/// What the server must offer besides TLS (every MySQL since 5.5, every MariaDB).
const REQUIRED_CAPS: u32 = caps::PROTOCOL_41 | caps::SECURE_CONNECTION | caps::PLUGIN_AUTH;

/// utf8mb4_general_ci: user names are sent as UTF-8.
const CHARSET: u8 = 45;
/// The largest packet this client would send (it sends a few hundred bytes).
const CLIENT_MAX_PACKET: u32 = 1 << 24;

/// Why an exchange failed.
#[derive(Debug)]
pub enum WireError {
    /// The connection broke or was closed.
    Io(std::io::Error),
    /// The server sent something this client does not accept; `.0` says what.
    Malformed(String),
    /// The server answered with an ERR packet.
    Server(ServerError),
}

impl From<std::io::Error> for WireError {
    fn from(e: std::io::Error) -> Self {
        WireError::Io(e)
    }
}

/// An ERR packet: the server's code, SQLSTATE and message (its own words, not yet cleaned).
#[derive(Debug, Clone)]
pub struct ServerError {
    pub code: u16,
    pub state: String,
    pub message: String,
}

/// The server's first packet.
#[derive(Debug)]
pub struct Greeting {
    pub version: String,
    pub capabilities: u32,
    pub nonce: Vec<u8>,
    pub plugin: String,
}

impl Greeting {
    pub fn offers_tls(&self) -> bool {
        self.capabilities & caps::SSL != 0
    }
}

/// What the server answered to a login answer.
#[derive(Debug)]
pub enum AuthReply {
    /// Logged in.
    Ok,
    /// Refused, or failed otherwise.
    Err(ServerError),
    /// Answer again with another plugin and a new nonce.
    Switch { plugin: String, nonce: Vec<u8> },
}

/// Reads one packet: its sequence number and payload.
pub async fn read_packet<S: AsyncRead + Unpin>(s: &mut S) -> Result<(u8, Vec<u8>), WireError> {
    let mut header = [0u8; 4];
    s.read_exact(&mut header).await?;
    let len = u32::from_le_bytes([header[0], header[1], header[2], 0]) as usize;
    if len > MAX_PACKET {
        return Err(WireError::Malformed(format!(
            "a packet of {len} bytes, more than the {MAX_PACKET} this client reads"
        )));
    }
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload).await?;
    Ok((header[3], payload))
}

/// Writes one packet (payloads here are far below the 16 MiB that would need splitting).
pub async fn write_packet<S: AsyncWrite + Unpin>(
    s: &mut S,
    seq: u8,
    payload: &[u8],
) -> Result<(), WireError> {
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|l| *l < 0xFF_FFFF)
        .ok_or_else(|| WireError::Malformed("a packet too long to send".into()))?;
    let mut frame = Zeroizing::new(Vec::with_capacity(payload.len() + 4));
    frame.extend_from_slice(&len.to_le_bytes()[..3]);
    frame.push(seq);
    frame.extend_from_slice(payload);
    s.write_all(&frame).await?;
    s.flush().await?;
    Ok(())
}

/// A cursor over a payload that fails, rather than panics, past its end.
struct Reader<'a> {
    bytes: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn short(&self) -> WireError {
        WireError::Malformed(format!("a {} that ends early", self.what))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.bytes.len() < n {
            return Err(self.short());
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, WireError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    /// Up to the next NUL (consumed), or to the end when there is none.
    fn nul_terminated(&mut self) -> &'a [u8] {
        match self.bytes.iter().position(|b| *b == 0) {
            Some(at) => {
                let s = &self.bytes[..at];
                self.bytes = &self.bytes[at + 1..];
                s
            }
            None => std::mem::take(&mut self.bytes),
        }
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// An ERR packet's fields (the payload starts with 0xFF).
pub fn parse_err(payload: &[u8]) -> Result<ServerError, WireError> {
    let mut r = Reader {
        bytes: payload,
        what: "error packet",
    };
    r.take(1)?;
    let code = r.u16()?;
    let state = if r.bytes.first() == Some(&b'#') {
        r.take(1)?;
        // Five letters and digits, or nothing: a server's bytes are not passed on as a state.
        let raw = r.take(5)?;
        if raw.iter().all(u8::is_ascii_alphanumeric) {
            text(raw)
        } else {
            String::new()
        }
    } else {
        String::new()
    };
    Ok(ServerError {
        code,
        state,
        message: text(r.bytes),
    })
}

/// The greeting (protocol 10), or the ERR a server sends instead (too many connections, a
/// blocked host).
pub fn parse_greeting(payload: &[u8]) -> Result<Greeting, WireError> {
    if payload.first() == Some(&0xFF) {
        return Err(WireError::Server(parse_err(payload)?));
    }
    let mut r = Reader {
        bytes: payload,
        what: "greeting",
    };
    let protocol = r.u8()?;
    if protocol != 10 {
        return Err(WireError::Malformed(format!(
            "a greeting of protocol version {protocol} (not a MySQL or MariaDB server, or one \
             older than 4.1)"
        )));
    }
    let version = text(r.nul_terminated());
    r.take(4)?; // connection id
    let mut nonce = r.take(8)?.to_vec();
    r.take(1)?; // filler
    let lower = r.u16()?;
    r.u8()?; // character set
    r.u16()?; // status
    let upper = r.u16()?;
    let capabilities = u32::from(lower) | (u32::from(upper) << 16);
    if capabilities & REQUIRED_CAPS != REQUIRED_CAPS {
        return Err(WireError::Malformed(format!(
            "server {version} lacks 4.1 authentication (capabilities {capabilities:#x})"
        )));
    }
    let nonce_len = usize::from(r.u8()?);
    r.take(10)?; // reserved (MariaDB's extended capabilities: not asked for)
    // The rest of the nonce: max(13, len - 8) bytes, the last a NUL.
    let rest = r.take(nonce_len.saturating_sub(8).max(13))?;
    nonce.extend_from_slice(&rest[..rest.len() - 1]);
    let plugin = text(r.nul_terminated());
    Ok(Greeting {
        version,
        capabilities,
        nonce,
        plugin,
    })
}

/// The first 32 bytes of a login packet, alone: "switch to TLS now".
pub fn ssl_request() -> Vec<u8> {
    let mut p = Vec::with_capacity(32);
    p.extend_from_slice(&CLIENT_CAPS.to_le_bytes());
    p.extend_from_slice(&CLIENT_MAX_PACKET.to_le_bytes());
    p.push(CHARSET);
    p.extend_from_slice(&[0u8; 23]);
    p
}

/// The login packet: who, the answer to the nonce, and the plugin that computed it.
pub fn login(user: &str, answer: &[u8], plugin: &str) -> Result<Zeroizing<Vec<u8>>, WireError> {
    let answer_len = u8::try_from(answer.len())
        .map_err(|_| WireError::Malformed("a login answer too long to send".into()))?;
    let mut p = Zeroizing::new(ssl_request());
    p.extend_from_slice(user.as_bytes());
    p.push(0);
    p.push(answer_len);
    p.extend_from_slice(answer);
    p.extend_from_slice(plugin.as_bytes());
    p.push(0);
    Ok(p)
}

/// A server's answer to a login answer.
pub fn parse_auth_reply(payload: &[u8]) -> Result<AuthReply, WireError> {
    match payload.first() {
        Some(0x00) => Ok(AuthReply::Ok),
        Some(0xFF) => Ok(AuthReply::Err(parse_err(payload)?)),
        // A lone 0xFE asks for the pre-4.1 hash, which is as good as none.
        Some(0xFE) if payload.len() > 1 => {
            let mut r = Reader {
                bytes: &payload[1..],
                what: "authentication switch",
            };
            let plugin = text(r.nul_terminated());
            // The nonce, NUL-terminated by most servers.
            let nonce = r.bytes.strip_suffix(&[0]).unwrap_or(r.bytes).to_vec();
            Ok(AuthReply::Switch { plugin, nonce })
        }
        Some(0xFE) => Err(WireError::Malformed(
            "the server asked for the pre-4.1 password hash, which Lockstep never sends".into(),
        )),
        Some(b) => Err(WireError::Malformed(format!(
            "an answer to a login that begins with {b:#04x} (more authentication data for a \
             plugin Lockstep did not choose)"
        ))),
        None => Err(WireError::Malformed("an empty answer to a login".into())),
    }
}

/// The packet that runs `sql` as one statement (`COM_QUERY`).
pub fn query(sql: &str) -> Zeroizing<Vec<u8>> {
    let mut p = Zeroizing::new(Vec::with_capacity(sql.len() + 1));
    p.push(0x03);
    p.extend_from_slice(sql.as_bytes());
    p
}

/// The packet that ends a session (`COM_QUIT`).
pub const QUIT: [u8; 1] = [0x01];

/// A statement's answer: `Ok(())` for OK, the server's error for ERR; anything else (a
/// result set, a `LOCAL INFILE` request) is not an answer to a password change.
pub fn parse_statement_reply(payload: &[u8]) -> Result<Result<(), ServerError>, WireError> {
    match payload.first() {
        Some(0x00) => Ok(Ok(())),
        Some(0xFF) => Ok(Err(parse_err(payload)?)),
        Some(0xFB) => Err(WireError::Malformed(
            "the server asked to read a local file, which this client never sends".into(),
        )),
        Some(b) => Err(WireError::Malformed(format!(
            "an answer to a statement that begins with {b:#04x}, not OK or an error"
        ))),
        None => Err(WireError::Malformed(
            "an empty answer to a statement".into(),
        )),
    }
}

/// What a statement answered: OK, an error, or the start of a result set (its column count).
pub enum Answer {
    Ok,
    Err(ServerError),
    Columns(u64),
}

/// The first packet of a statement's answer when a result set may follow (`SELECT`).
pub fn parse_answer(payload: &[u8]) -> Result<Answer, WireError> {
    match payload.first() {
        Some(0x00) => Ok(Answer::Ok),
        Some(0xFF) => Ok(Answer::Err(parse_err(payload)?)),
        Some(0xFB) => Err(WireError::Malformed(
            "the server asked to read a local file, which this client never sends".into(),
        )),
        Some(_) => {
            let mut r = Reader {
                bytes: payload,
                what: "column count",
            };
            let n = lenenc_int(&mut r)?;
            if !r.bytes.is_empty() {
                return Err(WireError::Malformed(
                    "a column count with trailing bytes".into(),
                ));
            }
            Ok(Answer::Columns(n))
        }
        None => Err(WireError::Malformed(
            "an empty answer to a statement".into(),
        )),
    }
}

/// Whether a packet is the EOF that ends column definitions or rows (no `DEPRECATE_EOF`).
pub fn is_eof(payload: &[u8]) -> bool {
    payload.first() == Some(&0xFE) && payload.len() < 9
}

/// A text-protocol row of one column: its value (`None` for NULL).
pub fn parse_single_value(payload: &[u8]) -> Result<Option<Vec<u8>>, WireError> {
    if payload == [0xFB] {
        return Ok(None);
    }
    let mut r = Reader {
        bytes: payload,
        what: "row",
    };
    let len = usize::try_from(lenenc_int(&mut r)?)
        .map_err(|_| WireError::Malformed("a value too long".into()))?;
    let value = r.take(len)?.to_vec();
    if !r.bytes.is_empty() {
        return Err(WireError::Malformed("a row of more than one value".into()));
    }
    Ok(Some(value))
}

/// A length-encoded integer.
fn lenenc_int(r: &mut Reader<'_>) -> Result<u64, WireError> {
    let first = r.u8()?;
    let width = match first {
        0..=0xFA => return Ok(u64::from(first)),
        0xFC => 2,
        0xFD => 3,
        0xFE => 8,
        _ => {
            return Err(WireError::Malformed(format!(
                "a length that begins with {first:#04x}"
            )));
        }
    };
    let mut bytes = [0u8; 8];
    bytes[..width].copy_from_slice(r.take(width)?);
    Ok(u64::from_le_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The greeting MariaDB 10.11 sent on this machine, TLS on.
    fn mariadb_greeting() -> Vec<u8> {
        let mut g = vec![10];
        g.extend_from_slice(b"5.5.5-10.11.19-MariaDB-0+deb12u1-log\0");
        g.extend_from_slice(&7u32.to_le_bytes());
        g.extend_from_slice(b"abcdefgh");
        g.push(0);
        let caps: u32 = 0xF7FE | (0x81BF << 16) | caps::SSL;
        g.extend_from_slice(&(caps as u16).to_le_bytes());
        g.push(45);
        g.extend_from_slice(&2u16.to_le_bytes());
        g.extend_from_slice(&((caps >> 16) as u16).to_le_bytes());
        g.push(21);
        g.extend_from_slice(&[0u8; 10]);
        g.extend_from_slice(b"ijklmnopqrst\0");
        g.extend_from_slice(b"mysql_native_password\0");
        g
    }

    #[test]
    fn a_greeting_gives_the_nonce_the_plugin_and_whether_tls_is_offered() {
        let g = parse_greeting(&mariadb_greeting()).unwrap();
        assert_eq!(g.nonce, b"abcdefghijklmnopqrst");
        assert_eq!(g.plugin, "mysql_native_password");
        assert!(g.offers_tls());
        assert!(g.version.contains("MariaDB"));
    }

    #[test]
    fn every_cut_of_a_greeting_fails_without_a_panic() {
        let g = mariadb_greeting();
        for n in 0..g.len() - 1 {
            let _ = parse_greeting(&g[..n]);
        }
        let mut old = g.clone();
        old[0] = 9;
        assert!(matches!(parse_greeting(&old), Err(WireError::Malformed(_))));
        let e = parse_greeting(b"\xff\x10\x04Too many connections").unwrap_err();
        assert!(matches!(
            e,
            WireError::Server(ServerError { code: 1040, .. })
        ));
    }

    #[test]
    fn errors_carry_code_state_and_words() {
        let e = parse_err(b"\xff\x15\x04#28000Access denied for user 'x'@'h'").unwrap();
        assert_eq!((e.code, e.state.as_str()), (1045, "28000"));
        assert!(e.message.starts_with("Access denied"));
    }

    #[test]
    fn only_ok_and_err_answer_a_statement() {
        assert!(matches!(
            parse_statement_reply(&[0, 0, 0, 2, 0, 0, 0]),
            Ok(Ok(()))
        ));
        assert!(matches!(
            parse_statement_reply(b"\xfbetc/passwd"),
            Err(WireError::Malformed(_))
        ));
        assert!(matches!(
            parse_statement_reply(&[1, 1]),
            Err(WireError::Malformed(_))
        ));
        assert!(matches!(
            parse_auth_reply(&[0xFE]),
            Err(WireError::Malformed(_))
        ));
        match parse_auth_reply(b"\xfemysql_native_password\0abcdefghijklmnopqrst\0").unwrap() {
            AuthReply::Switch { plugin, nonce } => {
                assert_eq!(plugin, "mysql_native_password");
                assert_eq!(nonce, b"abcdefghijklmnopqrst");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_one_value_result_set_parses_and_nothing_else_does() {
        assert!(matches!(parse_answer(&[1]), Ok(Answer::Columns(1))));
        assert!(matches!(
            parse_answer(&[0xFC, 1]),
            Err(WireError::Malformed(_))
        ));
        assert!(is_eof(&[0xFE, 0, 0, 2, 0]));
        assert_eq!(
            parse_single_value(b"\x05app@%").unwrap(),
            Some(b"app@%".to_vec())
        );
        assert_eq!(parse_single_value(&[0xFB]).unwrap(), None);
        assert!(parse_single_value(b"\x05app@").is_err());
        assert!(parse_single_value(b"\x01a\x01b").is_err());
    }

    #[tokio::test]
    async fn a_packet_longer_than_the_cap_is_refused_before_it_is_read() {
        let mut big: &[u8] = &[0xFF, 0xFF, 0xFF, 0];
        assert!(matches!(
            read_packet(&mut big).await,
            Err(WireError::Malformed(_))
        ));
        let mut buf = Vec::new();
        write_packet(&mut buf, 3, b"abc").await.unwrap();
        assert_eq!(buf, [3, 0, 0, 3, b'a', b'b', b'c']);
        let mut r: &[u8] = &buf;
        assert_eq!(read_packet(&mut r).await.unwrap(), (3, b"abc".to_vec()));
    }
}
