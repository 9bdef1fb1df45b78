//! `mysql_native_password`, the one way Lockstep logs in to MySQL and MariaDB and the form in
//! which it sets passwords there: the server stores `*` and the upper-case hex of
//! SHA1(SHA1(password)), and a login answers a 20-byte nonce with
//! SHA1(password) XOR SHA1(nonce ‖ SHA1(SHA1(password))).
//!
//! The stored form is computed here and sent as `IDENTIFIED WITH mysql_native_password AS
//! '*…'`: MariaDB writes `IDENTIFIED BY 'clear'` verbatim into its general and slow logs,
//! failed statements included, while a hash is all it can log of this one.

use sha1::{Digest, Sha1};
use zeroize::Zeroizing;

/// The length of the nonce a server sends and of every answer.
pub const NONCE_LEN: usize = 20;

/// `*` and the 40 upper-case hex digits of SHA1(SHA1(`password`)), as `mysql.user` holds it.
pub fn stored_hash(password: &[u8]) -> Zeroizing<String> {
    let stage1 = Zeroizing::new(Sha1::digest(password));
    let stage2 = Sha1::digest(stage1.as_slice());
    Zeroizing::new(format!("*{}", hex::encode_upper(stage2)))
}

/// Whether `text` has the shape of a [`stored_hash`].
pub fn is_stored_hash(text: &str) -> bool {
    text.len() == 41
        && text.starts_with('*')
        && text[1..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
}

/// The login answer to `nonce` for `password` (empty for an empty password, as servers
/// expect).
pub fn answer(password: &[u8], nonce: &[u8]) -> Zeroizing<Vec<u8>> {
    if password.is_empty() {
        return Zeroizing::new(Vec::new());
    }
    let stage1 = Zeroizing::new(Sha1::digest(password));
    let stage2 = Sha1::digest(stage1.as_slice());
    let mut h = Sha1::new();
    h.update(nonce);
    h.update(stage2);
    let mask = h.finalize();
    Zeroizing::new(stage1.iter().zip(mask.iter()).map(|(a, b)| a ^ b).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stored_form_is_the_servers_own() {
        // `SELECT PASSWORD('Start-1')` on MariaDB 10.11.
        assert_eq!(
            stored_hash(b"Start-1").as_str(),
            "*FE8A92E933068BE2A64F2ABA10E93DA2CD68E9DA"
        );
        assert!(is_stored_hash(&stored_hash(b"x")));
        assert!(!is_stored_hash("*fe8a92e933068be2a64f2aba10e93da2cd68e9da"));
        assert!(!is_stored_hash("FE8A92E933068BE2A64F2ABA10E93DA2CD68E9DA0"));
    }

    #[test]
    fn an_answer_unmasks_to_the_stage_one_hash_with_the_stored_one() {
        // What the server does: SHA1(answer XOR SHA1(nonce ‖ stage2)) must equal stage2.
        let nonce = [7u8; NONCE_LEN];
        let a = answer(b"pw", &nonce);
        let stage2 = hex::decode(&stored_hash(b"pw")[1..]).unwrap();
        let mut h = Sha1::new();
        h.update(nonce);
        h.update(&stage2);
        let mask = h.finalize();
        let stage1: Vec<u8> = a.iter().zip(mask.iter()).map(|(x, y)| x ^ y).collect();
        assert_eq!(Sha1::digest(&stage1).as_slice(), stage2.as_slice());
        assert!(answer(b"", &nonce).is_empty());
    }
}
