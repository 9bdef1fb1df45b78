//! What an LDAP server may send the client crate: whole messages, checked before the crate
//! parses them. `ldap3`'s BER parser descends once per nesting level without a limit, so a
//! message nested tens of thousands deep (a few hundred kilobytes) would overflow a worker's
//! stack and abort the whole process; it also buffers a message of any announced length.
//! [`next_message`] passes a message on only when it is one definite-length SEQUENCE of at
//! most [`MAX_MESSAGE`] bytes, nested at most [`MAX_DEPTH`] deep, every element inside its
//! parent.

/// The largest message passed on (a bind, search or modify answer is a few hundred bytes).
pub const MAX_MESSAGE: usize = 64 * 1024;
/// The deepest nesting passed on, the message itself included (an LDAP answer nests about
/// six deep).
pub const MAX_DEPTH: usize = 16;

/// An element's header at the front of `b`: (tag, content length, header length), `None`
/// when `b` ends inside it.
fn header(b: &[u8]) -> Result<Option<(u8, usize, usize)>, String> {
    let (Some(&tag), Some(&first)) = (b.first(), b.get(1)) else {
        return Ok(None);
    };
    if tag & 0x1F == 0x1F {
        return Err("a BER tag of more than one byte".into());
    }
    if first < 0x80 {
        return Ok(Some((tag, usize::from(first), 2)));
    }
    // Windows writes every length in 4 bytes (`84 00 00 00 7D`), however short.
    let n = usize::from(first & 0x7F);
    if n == 0 || n > 4 {
        return Err("a BER length that is indefinite or longer than 4 bytes".into());
    }
    let Some(bytes) = b.get(2..2 + n) else {
        return Ok(None);
    };
    let len = bytes.iter().fold(0usize, |l, &x| (l << 8) | usize::from(x));
    Ok(Some((tag, len, 2 + n)))
}

/// The length of the whole, well-formed message at the front of `buf`; `None` while more
/// bytes are needed; an error when it is not one this client accepts.
pub fn next_message(buf: &[u8]) -> Result<Option<usize>, String> {
    let Some((tag, len, hdr)) = header(buf)? else {
        return Ok(None);
    };
    if tag != 0x30 {
        return Err(format!("an LDAP message that begins with {tag:#04x}"));
    }
    if len > MAX_MESSAGE {
        return Err(format!(
            "an LDAP message of {len} bytes, more than the {MAX_MESSAGE} passed on"
        ));
    }
    let total = hdr + len;
    let Some(content) = buf.get(hdr..total) else {
        return Ok(None);
    };
    check_nesting(content)?;
    Ok(Some(total))
}

/// Walks `content` without recursion: every element inside its parent, at most
/// [`MAX_DEPTH`] constructed elements deep.
fn check_nesting(content: &[u8]) -> Result<(), String> {
    let mut ends = vec![content.len()];
    let mut pos = 0;
    loop {
        while ends.last() == Some(&pos) {
            ends.pop();
        }
        let Some(&end) = ends.last() else {
            return Ok(());
        };
        let (tag, len, hdr) = header(&content[pos..end])?
            .ok_or_else(|| "an element cut off by the end of its parent".to_string())?;
        let body_end = pos + hdr + len;
        if body_end > end {
            return Err("an element longer than its parent".into());
        }
        if tag & 0x20 != 0 {
            if ends.len() >= MAX_DEPTH {
                return Err(format!("elements nested more than {MAX_DEPTH} deep"));
            }
            ends.push(body_end);
            pos += hdr;
        } else {
            pos = body_end;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bind answer: SEQUENCE { 1, [APPLICATION 1] { ENUMERATED 0, "", "" } }.
    const BIND_OK: [u8; 14] = [
        0x30, 0x0C, 0x02, 0x01, 0x01, 0x61, 0x07, 0x0A, 0x01, 0x00, 0x04, 0x00, 0x04, 0x00,
    ];

    #[test]
    fn whole_messages_pass_and_partial_ones_wait() {
        assert_eq!(next_message(&BIND_OK), Ok(Some(14)));
        let mut two = BIND_OK.to_vec();
        two.extend_from_slice(&BIND_OK[..5]);
        assert_eq!(next_message(&two), Ok(Some(14)));
        for n in 0..BIND_OK.len() {
            assert_eq!(next_message(&BIND_OK[..n]), Ok(None), "{n}");
        }
    }

    #[test]
    fn nesting_is_counted_to_the_limit_and_no_further() {
        // `depth` SEQUENCEs inside each other, the message included.
        let nested = |depth: usize| {
            let mut m: Vec<u8> = Vec::new();
            for _ in 0..depth {
                let mut outer = vec![0x30, u8::try_from(m.len()).unwrap()];
                outer.extend_from_slice(&m);
                m = outer;
            }
            m
        };
        assert!(next_message(&nested(MAX_DEPTH)).is_ok());
        assert!(next_message(&nested(MAX_DEPTH + 1)).is_err());
    }

    #[test]
    fn a_nesting_bomb_is_refused_without_recursion() {
        // 50,000 constructed elements inside each other, each claiming the rest.
        let depth = 50_000;
        let mut bomb = Vec::new();
        for i in 0..depth {
            let rest = (depth - i - 1) * 5;
            bomb.push(0x30);
            bomb.push(0x83);
            bomb.extend_from_slice(&(rest as u32).to_be_bytes()[1..]);
        }
        let mut message = vec![0x30, 0x83];
        message.extend_from_slice(&(bomb.len() as u32).to_be_bytes()[1..]);
        message.extend_from_slice(&bomb);
        // Longer than a message may be: refused before it is even all read.
        assert!(next_message(&message[..10]).is_err());
        // The same, small enough to be read: refused for its depth.
        let mut deep = Vec::new();
        for i in 0..40usize {
            deep.push(0x30);
            deep.push(u8::try_from((40 - i - 1) * 2).unwrap());
        }
        let mut small = vec![0x30, u8::try_from(deep.len()).unwrap()];
        small.extend_from_slice(&deep);
        assert!(next_message(&small).unwrap_err().contains("nested"));
    }

    #[test]
    fn malformed_framing_is_refused() {
        assert!(next_message(&[0x04, 0x00]).is_err());
        assert!(next_message(&[0x30, 0x80]).is_err());
        assert!(next_message(&[0x30, 0x85, 0, 0, 0, 0, 1]).is_err());
        // Windows' long form of a short length passes.
        let windows = [0x30, 0x84, 0, 0, 0, 0x03, 0x02, 0x01, 0x01];
        assert_eq!(next_message(&windows), Ok(Some(9)));
        assert_eq!(next_message(&windows[..7]), Ok(None));
        assert!(
            next_message(&[0x30, 0x84, 0, 0x01, 0, 0x01]).is_err(),
            "over 64 KiB"
        );
        assert!(next_message(&[0x30, 0x03, 0x04, 0x05, 0x00]).is_err());
        assert!(next_message(&[0x3F, 0x00]).is_err());
    }
}
