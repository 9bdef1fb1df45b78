//! API tokens: `lst_` + 32 random bytes (base64url). Only the SHA-256 of a token is stored, so
//! a copy of the database cannot be used to call the API.

use base64::Engine;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::error::{Error, Result};

pub const PREFIX: &str = "lst_";
/// One-time activation codes (a user's first credential): `lsa_` + 32 random bytes.
pub const ACTIVATION_PREFIX: &str = "lsa_";

/// A new token's text. Shown to its owner once, then only its hash exists.
pub fn generate() -> Result<Zeroizing<String>> {
    generate_with(PREFIX)
}

/// `prefix` + 32 random bytes, base64url.
pub fn generate_with(prefix: &str) -> Result<Zeroizing<String>> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| Error::Crypto(format!("no randomness: {e}")))?;
    Ok(Zeroizing::new(format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )))
}

/// The stored form of a token: lowercase hex SHA-256.
pub fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn tokens_are_unique_and_prefixed() {
        let a = super::generate().unwrap();
        let b = super::generate().unwrap();
        assert!(a.starts_with("lst_") && a.len() == 4 + 43);
        assert_ne!(*a, *b);
        assert_eq!(super::hash(&a).len(), 64);
    }
}
