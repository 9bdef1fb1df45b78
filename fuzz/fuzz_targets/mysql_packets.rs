//! What a MySQL or MariaDB server (or an impostor in its place) sends the MySQL connector
//! (`reset::connector::mysql::wire`): the greeting, the answer to a login, the answer to a
//! statement; and the server's words as they are kept (`reset::connector::words::clean`).
//!
//! Input: the first byte picks the parser, the rest is the payload. For `clean`: the words,
//! then `\0` and a secret.
//!
//! Checks, beyond not panicking:
//! - a greeting that parses has a nonce of at least 8 bytes, 4.1 authentication, and says TLS
//!   is offered exactly when its capabilities carry the TLS flag;
//! - only a payload that begins with 0x00 answers a login or a statement with OK, and a
//!   request to read a local file (0xFB) is never an answer to a statement;
//! - an error packet's SQLSTATE is empty or 5 bytes long;
//! - cleaned words are at most 300 bytes, hold no control character, no native-password hash
//!   or piece of one (`*` and 8 or more hex digits, in either case) and not the secret (one of
//!   8 or more characters that cannot be made from `[redacted]` or `?`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use lockstep_server::reset::connector::mysql::wire::{self, AuthReply, WireError, caps};
use lockstep_server::reset::connector::words::clean;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, payload)) = data.split_first() else {
        return;
    };
    match pick % 4 {
        0 => {
            if let Ok(g) = wire::parse_greeting(payload) {
                assert!(g.nonce.len() >= 8, "{g:?}");
                assert_ne!(g.capabilities & caps::SECURE_CONNECTION, 0);
                assert_eq!(g.offers_tls(), g.capabilities & caps::SSL != 0);
            }
        }
        1 => match wire::parse_auth_reply(payload) {
            Ok(AuthReply::Ok) => assert_eq!(payload[0], 0x00),
            Ok(AuthReply::Err(e)) => assert!(e.state.is_empty() || e.state.len() == 5),
            Ok(AuthReply::Switch { .. }) => assert_eq!(payload[0], 0xFE),
            Err(_) => {}
        },
        2 => match wire::parse_statement_reply(payload) {
            Ok(Ok(())) => assert_eq!(payload[0], 0x00),
            Ok(Err(e)) => assert!(e.state.is_empty() || e.state.len() == 5),
            Err(WireError::Malformed(_)) => {}
            Err(other) => panic!("{other:?}"),
        },
        _ => {
            let text = String::from_utf8_lossy(payload);
            let (words, secret) = text.split_once('\0').unwrap_or((&text, ""));
            let usable = secret.chars().count() >= 8
                && !secret
                    .chars()
                    .any(|c| "[redacted]?".contains(c) || c.is_control());
            let secrets = if usable { vec![secret] } else { Vec::new() };
            let out = clean(words.to_string(), &secrets);
            assert!(out.len() <= 300, "{}", out.len());
            assert!(!out.chars().any(char::is_control), "{out:?}");
            if usable {
                assert!(!out.contains(secret), "{out:?}");
            }
            for (at, _) in out.match_indices('*') {
                let digits = out[at + 1..]
                    .bytes()
                    .take_while(u8::is_ascii_hexdigit)
                    .count();
                assert!(digits < 8, "{out:?}");
            }
        }
    }
});
