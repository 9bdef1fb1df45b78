//! SCRAM-SHA-256 verifiers (RFC 5802, RFC 7677) in PostgreSQL's stored form, computed here so
//! that a database only ever receives the verifier, never the password: its logs
//! (`log_statement`, `log_min_error_statement`) can then show nothing a person could log in
//! with.
//!
//! PostgreSQL takes any `PASSWORD '…'` that does not parse as a verifier as a clear-text
//! password and hashes it itself, silently. [`check`] parses a verifier by the server's rules
//! before it is sent, so a malformed one is refused here instead of becoming someone's
//! password.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// PBKDF2 rounds; PostgreSQL's default (`scram_iterations`).
pub const ITERATIONS: u32 = 4096;
/// Salt bytes; PostgreSQL's default.
const SALT_LEN: usize = 16;
/// The prefix that marks a stored SCRAM-SHA-256 secret.
const PREFIX: &str = "SCRAM-SHA-256$";

/// The verifier of `password` with a fresh random salt:
/// `SCRAM-SHA-256$4096:<salt>$<StoredKey>:<ServerKey>`.
pub fn verifier(password: &str) -> Result<Zeroizing<String>, String> {
    let mut salt = [0u8; SALT_LEN];
    getrandom::fill(&mut salt).map_err(|e| format!("no randomness for a salt: {e}"))?;
    Ok(verifier_with(password, &salt, ITERATIONS))
}

/// The verifier of `password` with `salt` and `iterations`. The password is normalized with
/// SASLprep as PostgreSQL and its clients do, and used as it is where SASLprep refuses it
/// (as they do too).
fn verifier_with(password: &str, salt: &[u8], iterations: u32) -> Zeroizing<String> {
    let prepared: Zeroizing<String> = Zeroizing::new(match stringprep::saslprep(password) {
        Ok(p) => p.into_owned(),
        Err(_) => password.to_string(),
    });
    let mut salted = Zeroizing::new([0u8; 32]);
    pbkdf2::pbkdf2_hmac::<Sha256>(prepared.as_bytes(), salt, iterations, salted.as_mut());
    let key = |label: &[u8]| -> Zeroizing<[u8; 32]> {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(salted.as_ref())
            .expect("HMAC takes a key of any length");
        mac.update(label);
        Zeroizing::new(mac.finalize().into_bytes().into())
    };
    let client_key = key(b"Client Key");
    let stored_key: [u8; 32] = Sha256::digest(client_key.as_ref()).into();
    let server_key = key(b"Server Key");
    Zeroizing::new(format!(
        "{PREFIX}{iterations}:{}${}:{}",
        STANDARD.encode(salt),
        STANDARD.encode(stored_key),
        STANDARD.encode(server_key.as_ref())
    ))
}

/// Whether `verifier` is one PostgreSQL stores as a SCRAM secret (and not as a password):
/// the prefix, a positive iteration count, a salt in base64, two 32-byte keys in base64, and
/// nothing outside base64's alphabet and the separators (so it can sit in a quoted literal).
pub fn check(verifier: &str) -> Result<(), String> {
    let bad = |what: &str| Err(format!("not a SCRAM-SHA-256 verifier: {what}"));
    if !verifier
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"+/=$:-".contains(&b))
    {
        return bad("a character outside base64 and the separators");
    }
    let Some(rest) = verifier.strip_prefix(PREFIX) else {
        return bad("the prefix");
    };
    let Some((params, keys)) = rest.split_once('$') else {
        return bad("no keys");
    };
    let Some((iterations, salt)) = params.split_once(':') else {
        return bad("no salt");
    };
    // 1 to i32::MAX: the server reads it with `strtol` into an int.
    if !iterations.bytes().all(|b| b.is_ascii_digit())
        || !iterations.parse::<i32>().is_ok_and(|n| n > 0)
    {
        return bad("the iteration count");
    }
    if STANDARD.decode(salt).map_or(true, |s| s.is_empty()) {
        return bad("the salt");
    }
    let Some((stored, server)) = keys.split_once(':') else {
        return bad("one key");
    };
    for key in [stored, server] {
        if STANDARD.decode(key).map_or(true, |k| k.len() != 32) {
            return bad("a key");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Computed independently (Python's hashlib.pbkdf2_hmac and hmac) for "pencil" with the
    /// salt of RFC 7677's example.
    #[test]
    fn verifiers_match_an_independent_computation() {
        let salt = STANDARD.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let v = verifier_with("pencil", &salt, 4096);
        assert_eq!(
            v.as_str(),
            "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$\
             WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:\
             wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU="
        );
        check(&v).unwrap();
    }

    #[test]
    fn fresh_verifiers_differ_and_parse() {
        let a = verifier("correct horse").unwrap();
        let b = verifier("correct horse").unwrap();
        assert_ne!(a.as_str(), b.as_str(), "a fresh salt each time");
        check(&a).unwrap();
        assert!(!a.contains("correct"));
    }

    #[test]
    fn anything_postgres_would_take_as_a_password_is_refused() {
        let good = verifier("x").unwrap();
        check(&good).unwrap();
        for bad in [
            "hunter2".to_string(),
            good.replace("SCRAM-SHA-256", "SCRAM-SHA-1"),
            good.replacen("4096", "0", 1),
            good.replacen("4096", "-1", 1),
            good.replacen("4096", "2147483648", 1),
            good.replacen("4096", "", 1),
            format!("{}'; DROP ROLE x; --", good.as_str()),
            good[..good.len() - 4].to_string(),
            good.replacen('$', "", 2),
            format!("{}:AAAA", good.as_str()),
        ] {
            assert!(check(&bad).is_err(), "{bad}");
        }
    }
}
