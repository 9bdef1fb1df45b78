//! Checking a password against a `crypt(3)` hash with the system's libcrypt (libxcrypt), which
//! knows every scheme `chpasswd` may write: yescrypt, SHA-512, SHA-256, bcrypt, ...
//!
//! This module holds the agent's only `unsafe`: the call into libcrypt.
#![allow(unsafe_code)]

use std::ffi::{CStr, c_char, c_int, c_void};

use zeroize::Zeroizing;

#[link(name = "crypt")]
unsafe extern "C" {
    /// libxcrypt: `char *crypt_rn(const char *phrase, const char *setting, void *data,
    /// int size)`; returns NULL on failure, else a pointer into `data`.
    fn crypt_rn(
        phrase: *const c_char,
        setting: *const c_char,
        data: *mut c_void,
        size: c_int,
    ) -> *mut c_char;
}

/// At least `sizeof(struct crypt_data)` (32 KiB in libxcrypt); crypt_rn refuses less.
const DATA_SIZE: usize = 64 * 1024;

/// `crypt(password, setting)`: the hash of `password` with the scheme and salt of `setting`
/// (a stored hash works as its own setting). `None` if libcrypt refuses.
pub fn crypt(password: &str, setting: &str) -> Option<Zeroizing<String>> {
    if password.contains('\0') || setting.contains('\0') {
        return None;
    }
    let mut phrase = Zeroizing::new(Vec::with_capacity(password.len() + 1));
    phrase.extend_from_slice(password.as_bytes());
    phrase.push(0);
    let mut setting_c = setting.as_bytes().to_vec();
    setting_c.push(0);
    let mut data = Zeroizing::new(vec![0u8; DATA_SIZE]);
    // SAFETY: `phrase` and `setting_c` are NUL-terminated and live across the call; `data` is a
    // writable buffer of DATA_SIZE bytes (≥ sizeof(struct crypt_data), as crypt_rn requires),
    // and crypt_rn writes only inside it. DATA_SIZE fits in a c_int.
    let out = unsafe {
        crypt_rn(
            phrase.as_ptr().cast(),
            setting_c.as_ptr().cast(),
            data.as_mut_ptr().cast(),
            DATA_SIZE as c_int,
        )
    };
    if out.is_null() {
        return None;
    }
    // SAFETY: on success crypt_rn returns a NUL-terminated string inside `data`, which is
    // still alive; it is copied out before `data` is zeroized and freed.
    let text = unsafe { CStr::from_ptr(out) }.to_str().ok()?.to_string();
    // libxcrypt's failure tokens start with '*'.
    (!text.starts_with('*')).then(|| Zeroizing::new(text))
}

/// True when `password` hashes to `stored` (compared in constant time).
pub fn matches(password: &str, stored: &str) -> bool {
    // Locked (`!…`), disabled (`*`) and empty hashes accept nothing.
    if stored.is_empty() || stored.starts_with('!') || stored.starts_with('*') {
        return false;
    }
    let Some(h) = crypt(password, stored) else {
        return false;
    };
    let (a, b) = (h.as_bytes(), stored.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha512_crypt_round_trips_and_rejects_others() {
        let h = crypt("correct horse", "$6$saltsaltsalt$").unwrap();
        assert!(h.starts_with("$6$saltsaltsalt$"));
        assert!(matches("correct horse", &h));
        assert!(!matches("correct horsE", &h));
        assert!(!matches("correct horse", &format!("!{}", *h)));
        assert!(!matches("x", "*"));
    }

    #[test]
    fn yescrypt_hashes_verify() {
        // A yescrypt hash as Debian's chpasswd writes it (made independently, by Python's
        // crypt module).
        let h = "$y$j9T$F5Jx5fExrKuPp53xLKQ..1$8c0O2L8gFA3jUVvwMFdXpZKM78kTwpdGJswaLb6IRr/";
        assert!(matches("s3cret", h));
        assert!(!matches("s3cre", h));
    }
}
