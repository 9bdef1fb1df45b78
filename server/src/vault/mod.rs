//! The vault: seals and opens secrets with AES-256-GCM under a master key kept outside the
//! database.
//!
//! **Invariant:** this is the only module that touches master-key bytes. Everything stored is a
//! [`Sealed`] record: the id of the key that sealed it, a random 96-bit nonce, and the ciphertext
//! with its tag. The associated data binds a ciphertext to its row and column (e.g.
//! `account:acc_…:password`), so a sealed value copied onto another row fails to open. The
//! database alone reveals no secret.

mod master_key;
mod secret;

pub use master_key::{MasterKey, MasterKeySource, load_or_create_master_key};
pub use secret::Secret;

use std::collections::HashMap;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// A secret as stored: never plaintext.
#[derive(Clone, PartialEq, Eq)]
pub struct Sealed {
    pub key_id: String,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

impl std::fmt::Debug for Sealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealed")
            .field("key_id", &self.key_id)
            .field("ciphertext_len", &self.ciphertext.len())
            .finish_non_exhaustive()
    }
}

/// Holds the master keys: the current one seals, any known one opens (so a key can be rotated
/// by adding the new key and re-sealing at leisure).
pub struct Vault {
    current: String,
    keys: HashMap<String, MasterKey>,
}

impl Vault {
    pub fn new(current: MasterKey) -> Vault {
        let id = current.id().to_string();
        let mut keys = HashMap::new();
        keys.insert(id.clone(), current);
        Vault { current: id, keys }
    }

    /// Id of the key that seals new secrets.
    pub fn current_key_id(&self) -> &str {
        &self.current
    }

    /// Seals `plaintext`, bound to `aad` (which names the row and column it belongs to).
    pub fn seal(&self, plaintext: &[u8], aad: &str) -> Result<Sealed> {
        let key = &self.keys[&self.current];
        let cipher = Aes256Gcm::new_from_slice(key.bytes())
            .map_err(|_| Error::Crypto("master key has the wrong length".into()))?;
        let mut nonce = [0u8; 12];
        getrandom::fill(&mut nonce)
            .map_err(|e| Error::Crypto(format!("no randomness for a nonce: {e}")))?;
        let ciphertext = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| Error::Crypto("encryption failed".into()))?;
        Ok(Sealed {
            key_id: self.current.clone(),
            nonce: nonce.to_vec(),
            ciphertext,
        })
    }

    /// Opens a sealed record. Fails if the key is unknown, the record was altered, or it was
    /// sealed for another `aad`.
    pub fn open(&self, sealed: &Sealed, aad: &str) -> Result<Zeroizing<Vec<u8>>> {
        let key = self.keys.get(&sealed.key_id).ok_or_else(|| {
            Error::Crypto(format!(
                "secret was sealed with master key '{}', which this server does not have",
                sealed.key_id
            ))
        })?;
        if sealed.nonce.len() != 12 {
            return Err(Error::Crypto("stored nonce has the wrong length".into()));
        }
        let cipher = Aes256Gcm::new_from_slice(key.bytes())
            .map_err(|_| Error::Crypto("master key has the wrong length".into()))?;
        cipher
            .decrypt(
                Nonce::from_slice(&sealed.nonce),
                Payload {
                    msg: &sealed.ciphertext,
                    aad: aad.as_bytes(),
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| Error::Crypto("stored secret failed authentication (altered row?)".into()))
    }

    /// Attests `binding` (a statement such as "this listener version was approved"): an
    /// AES-GCM tag over it under the current master key, as `KEYID.NONCE.TAG` (hex). Someone who
    /// can edit the database but lacks the master key cannot make an attestation that
    /// [`Vault::check_attestation`] accepts, nor move one onto another binding.
    pub fn attest(&self, binding: &str) -> Result<String> {
        let s = self.seal(b"", binding)?;
        Ok(format!(
            "{}.{}.{}",
            s.key_id,
            hex::encode(&s.nonce),
            hex::encode(&s.ciphertext)
        ))
    }

    /// True when `attestation` was made by [`Vault::attest`] for exactly `binding`.
    pub fn check_attestation(&self, binding: &str, attestation: &str) -> bool {
        let mut parts = attestation.rsplitn(3, '.');
        let (Some(tag), Some(nonce), Some(key_id)) = (parts.next(), parts.next(), parts.next())
        else {
            return false;
        };
        let (Ok(nonce), Ok(ciphertext)) = (hex::decode(nonce), hex::decode(tag)) else {
            return false;
        };
        let sealed = Sealed {
            key_id: key_id.to_string(),
            nonce,
            ciphertext,
        };
        self.open(&sealed, binding)
            .is_ok_and(|plain| plain.is_empty())
    }

    /// A keyed fingerprint of `data` for `purpose` (HMAC-SHA256 under the current master key),
    /// hex. Equal inputs give equal fingerprints, so reuse can be detected, but without the
    /// master key a fingerprint cannot be checked against guesses.
    pub fn fingerprint(&self, purpose: &str, data: &[u8]) -> Result<String> {
        use hmac::{KeyInit, Mac};
        let key = &self.keys[&self.current];
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key.bytes())
            .map_err(|_| Error::Crypto("master key has the wrong length".into()))?;
        mac.update(purpose.as_bytes());
        mac.update(&[0]);
        mac.update(data);
        Ok(hex::encode(mac.finalize().into_bytes()))
    }

    /// True when this vault holds the master key with id `key_id`.
    pub fn knows_key(&self, key_id: &str) -> bool {
        self.keys.contains_key(key_id)
    }

    /// A message authentication code over `data` for `purpose`: HMAC-SHA-256 under a key
    /// derived from the current master key for that purpose alone (HKDF-SHA-256-Expand with the
    /// master key as the pseudorandom key and `lockstep:PURPOSE` as the info), hex. Returns the
    /// id of the master key it used and the tag. Without the master key no one can compute a
    /// tag that [`Vault::check_mac`] accepts, and a tag made for one purpose is no use for
    /// another.
    pub fn mac(&self, purpose: &str, data: &[u8]) -> Result<(String, String)> {
        use hmac::Mac;
        let tag = self.purpose_mac(&self.current, purpose)?.chain_update(data);
        Ok((
            self.current.clone(),
            hex::encode(tag.finalize().into_bytes()),
        ))
    }

    /// Checks a tag made by [`Vault::mac`] under master key `key_id`, in constant time. An
    /// error when this vault does not have that key (the caller cannot tell either way).
    pub fn check_mac(&self, key_id: &str, purpose: &str, data: &[u8], tag: &str) -> Result<bool> {
        if !self.knows_key(key_id) {
            return Err(Error::Crypto(format!(
                "it was authenticated with master key '{key_id}', which this process does not have"
            )));
        }
        use hmac::Mac;
        let Ok(tag) = hex::decode(tag) else {
            return Ok(false);
        };
        let mac = self.purpose_mac(key_id, purpose)?.chain_update(data);
        Ok(mac.verify_slice(&tag).is_ok())
    }

    /// HMAC-SHA-256 keyed with the purpose's derived key (the derived key never leaves here).
    fn purpose_mac(&self, key_id: &str, purpose: &str) -> Result<hmac::Hmac<sha2::Sha256>> {
        use hmac::{KeyInit, Mac};
        let master = self
            .keys
            .get(key_id)
            .ok_or_else(|| Error::Crypto(format!("no master key '{key_id}' in this process")))?;
        let wrong = |_| Error::Crypto("master key has the wrong length".into());
        // HKDF-Expand, one block: T(1) = HMAC(PRK, info || 0x01).
        let mut expand =
            hmac::Hmac::<sha2::Sha256>::new_from_slice(master.bytes()).map_err(wrong)?;
        expand.update(b"lockstep:");
        expand.update(purpose.as_bytes());
        expand.update(&[1]);
        let derived = Zeroizing::new(expand.finalize().into_bytes());
        hmac::Hmac::<sha2::Sha256>::new_from_slice(&derived[..]).map_err(wrong)
    }

    pub fn seal_secret(&self, secret: &Secret, aad: &str) -> Result<Sealed> {
        self.seal(secret.expose().as_bytes(), aad)
    }

    pub fn open_secret(&self, sealed: &Sealed, aad: &str) -> Result<Secret> {
        let bytes = self.open(sealed, aad)?;
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| Error::Crypto("stored secret is not UTF-8".into()))?;
        Ok(Secret::new(text.to_string()))
    }
}

/// The associated data for an account's password.
pub fn account_password_aad(account_id: &str) -> String {
    format!("account:{account_id}:password")
}

/// The AAD of a reset item's pending password, and of one kept from it for a target that may
/// still take it. It binds the item and its account: a sealed value moved to another item, or
/// an item or kept row re-pointed at another account (to have Lockstep try one account's
/// password on another account's target), does not open.
pub fn reset_pending_aad(item_id: &str, account_id: &str) -> String {
    format!("reset-item:{item_id}:account:{account_id}:pending")
}

/// The AAD of a password given with a reset request, bound like [`reset_pending_aad`].
pub fn reset_given_aad(item_id: &str, account_id: &str) -> String {
    format!("reset-item:{item_id}:account:{account_id}:given")
}

/// The AAD of a password a post-reset delivery keeps for its listener (`which`: `old` or
/// `new`). It binds the delivery, its item, account and listener: a sealed value moved to
/// another delivery or slot, or a delivery re-pointed at another item, account or listener
/// (to hand an approved listener a password its own resets never give it), does not open.
pub fn delivery_password_aad(
    delivery_id: &str,
    item_id: &str,
    account_id: &str,
    listener: &str,
    which: &str,
) -> String {
    format!("delivery:{delivery_id}:{item_id}:{account_id}:{listener}:{which}-password")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vault() -> Vault {
        Vault::new(MasterKey::from_bytes([7u8; 32]))
    }

    #[test]
    fn seal_then_open_round_trips() {
        let v = vault();
        let s = v.seal(b"hunter2", "account:a:password").unwrap();
        assert_eq!(&*v.open(&s, "account:a:password").unwrap(), b"hunter2");
        assert!(!s.ciphertext.windows(7).any(|w| w == b"hunter2"));
    }

    #[test]
    fn each_seal_uses_a_fresh_nonce() {
        let v = vault();
        let a = v.seal(b"same", "x").unwrap();
        let b = v.seal(b"same", "x").unwrap();
        assert_ne!(a.nonce, b.nonce);
        assert_ne!(a.ciphertext, b.ciphertext);
    }

    #[test]
    fn an_attestation_holds_only_for_its_binding_and_key() {
        let v = vault();
        let a = v.attest("listener:l1:v1:abc").unwrap();
        assert!(v.check_attestation("listener:l1:v1:abc", &a));
        assert!(!v.check_attestation("listener:l1:v1:abd", &a));
        assert!(!v.check_attestation("listener:l1:v1:abc", "garbage"));
        let mut flipped = a.clone();
        let last = if flipped.ends_with('0') { '1' } else { '0' };
        flipped.pop();
        flipped.push(last);
        assert!(!v.check_attestation("listener:l1:v1:abc", &flipped));
        let other = Vault::new(MasterKey::from_bytes([8u8; 32]));
        assert!(!other.check_attestation("listener:l1:v1:abc", &a));
    }

    #[test]
    fn a_mac_holds_only_for_its_purpose_data_and_key() {
        let v = vault();
        let (key_id, tag) = v.mac("audit-chain", b"event 1").unwrap();
        assert_eq!(key_id, v.current_key_id());
        assert!(
            v.check_mac(&key_id, "audit-chain", b"event 1", &tag)
                .unwrap()
        );
        assert!(
            !v.check_mac(&key_id, "audit-chain", b"event 2", &tag)
                .unwrap()
        );
        assert!(
            !v.check_mac(&key_id, "audit-checkpoint", b"event 1", &tag)
                .unwrap()
        );
        assert!(
            !v.check_mac(&key_id, "audit-chain", b"event 1", "zz")
                .unwrap()
        );
        // Not the plain fingerprint under the master key: the key is derived per purpose.
        assert_ne!(tag, v.fingerprint("audit-chain", b"event 1").unwrap());
        let other = Vault::new(MasterKey::from_bytes([8u8; 32]));
        let err = other
            .check_mac(&key_id, "audit-chain", b"event 1", &tag)
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not have"), "{err}");
        let (_, other_tag) = other.mac("audit-chain", b"event 1").unwrap();
        assert_ne!(other_tag, tag);
    }

    #[test]
    fn a_ciphertext_moved_to_another_row_does_not_open() {
        let v = vault();
        let s = v.seal(b"pw", "account:a:password").unwrap();
        assert!(v.open(&s, "account:b:password").is_err());
    }

    #[test]
    fn a_flipped_bit_is_detected() {
        let v = vault();
        let mut s = v.seal(b"pw", "x").unwrap();
        s.ciphertext[0] ^= 1;
        assert!(matches!(v.open(&s, "x"), Err(Error::Crypto(_))));
    }

    #[test]
    fn another_master_key_cannot_open() {
        let s = vault().seal(b"pw", "x").unwrap();
        let other = Vault::new(MasterKey::from_bytes([8u8; 32]));
        let err = other.open(&s, "x").unwrap_err().to_string();
        assert!(err.contains("does not have"), "{err}");
    }
}
