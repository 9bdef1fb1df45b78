//! A target's own words (an error message, a refusal) made safe to store, show and audit.

/// The longest a target's words are kept.
const MAX_WORDS: usize = 300;
/// Hex digits after a `*` that are taken for (a piece of) a native-password hash.
const MIN_HASH_PIECE: usize = 8;

/// `text` without `secrets` or anything shaped like a password hash a connector sends (a
/// SCRAM verifier, a `mysql_native_password` hash), then cut to [`MAX_WORDS`] bytes and
/// without control characters: redacted before it is cut, so no secret straddles the cut.
pub fn clean(mut text: String, secrets: &[&str]) -> String {
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        text = text.replace(secret, "[redacted]");
    }
    while let Some(at) = text.find("SCRAM-SHA-256$") {
        let end = text[at..]
            .find(|c: char| c.is_whitespace() || c == '\'' || c == '"')
            .map_or(text.len(), |n| at + n);
        text.replace_range(at..end, "[redacted]");
    }
    // A native-password hash, or a piece of one (a server quoting a statement cuts it), in
    // either case: `*` and 8 or more hex digits.
    let mut from = 0;
    while let Some(n) = text[from..].find('*') {
        let at = from + n;
        let digits = text[at + 1..]
            .bytes()
            .take_while(u8::is_ascii_hexdigit)
            .count();
        if digits >= MIN_HASH_PIECE {
            text.replace_range(at..at + 1 + digits, "[redacted]");
        }
        from = at + 1;
    }
    if text.len() > MAX_WORDS {
        let mut end = MAX_WORDS;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reset::connector::mysql::native_password;
    use crate::reset::connector::scram;

    #[test]
    fn a_target_s_words_lose_secrets_before_they_are_cut() {
        let verifier = scram::verifier("pw").unwrap();
        // A verifier straddling the 300-byte cut would leave its salt and key behind if it
        // were cut first.
        let text = format!(
            "{}ALTER ROLE x PASSWORD '{}' and Admin-Pw-1\x1b[2J",
            "x".repeat(280),
            verifier.as_str()
        );
        let words = clean(text, &["Admin-Pw-1"]);
        assert!(
            !words.contains("SCRAM-SHA-256$") && !words.contains("4096:"),
            "{words}"
        );
        assert!(words.len() <= 300 && !words.contains('\x1b'), "{words}");
        let other = clean("note: SCRAM-SHA-256$4096:abc$def:ghi end".into(), &[]);
        assert_eq!(other, "note: [redacted] end");
    }

    #[test]
    fn native_password_hashes_are_taken_out_in_either_case() {
        let hash = native_password::stored_hash(b"pw");
        let text = format!(
            "near 'AS '{}' at line 1 *x* and {}",
            hash.as_str(),
            hash.to_ascii_lowercase()
        );
        let words = clean(text, &[]);
        assert_eq!(words, "near 'AS '[redacted]' at line 1 *x* and [redacted]");
        // MySQL quotes at most 80 characters of a statement it cannot parse.
        let cut = format!("near 'mysql_native_password AS '{}' at line 1", &hash[..38]);
        assert_eq!(
            clean(cut, &[]),
            "near 'mysql_native_password AS '[redacted]' at line 1"
        );
        assert_eq!(clean("*1234567 *beef".into(), &[]), "*1234567 *beef");
    }
}
