//! Password policies: what a password must look like, a generator that always satisfies the
//! policy, and the check applied to passwords a person gives.

use serde::{Deserialize, Serialize};

use crate::error::{Error, FieldProblem, Result};
use crate::vault::Secret;

const LOWER: &str = "abcdefghijklmnopqrstuvwxyz";
const UPPER: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ";
const DIGITS: &str = "0123456789";
/// Printable ASCII punctuation except characters that commonly break scripts and quoting on
/// targets (`'`, `"`, `` ` ``, `\`, `:` which chpasswd splits on, and space).
const SYMBOLS: &str = "!#$%&()*+,-./;<=>?@[]^_{|}~";

/// Longest password a policy may ask for.
pub const MAX_LENGTH: i64 = 128;

/// A password policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordPolicy {
    /// Letters, digits, `-` and `_`; 1–64 characters.
    pub name: String,
    /// Shortest password accepted (8–128).
    #[serde(default = "defaults::min_length")]
    pub min_length: i64,
    /// Length of generated passwords (at least `min_length`, at most 128).
    #[serde(default = "defaults::generated_length")]
    pub generated_length: i64,
    #[serde(default = "defaults::yes")]
    pub require_lowercase: bool,
    #[serde(default = "defaults::yes")]
    pub require_uppercase: bool,
    #[serde(default = "defaults::yes")]
    pub require_digits: bool,
    #[serde(default = "defaults::yes")]
    pub require_symbols: bool,
    /// Characters never generated and refused in given passwords.
    #[serde(default)]
    pub excluded_characters: String,
    /// The last N passwords of an account may not be used again (0–100).
    #[serde(default = "defaults::history")]
    pub history: i64,
    /// Rotate passwords older than this many days (1–3650); none: no maximum age.
    #[serde(default)]
    pub max_age_days: Option<i64>,
}

mod defaults {
    pub fn min_length() -> i64 {
        12
    }
    pub fn generated_length() -> i64 {
        24
    }
    pub fn yes() -> bool {
        true
    }
    pub fn history() -> i64 {
        5
    }
}

/// The policy every resource follows unless told otherwise.
pub fn default_policy() -> PasswordPolicy {
    PasswordPolicy {
        name: "default".into(),
        min_length: defaults::min_length(),
        generated_length: defaults::generated_length(),
        require_lowercase: true,
        require_uppercase: true,
        require_digits: true,
        require_symbols: true,
        excluded_characters: String::new(),
        history: defaults::history(),
        max_age_days: None,
    }
}

impl PasswordPolicy {
    /// The character classes in use, each without the excluded characters: (name, characters,
    /// required).
    fn classes(&self) -> [(&'static str, Vec<char>, bool); 4] {
        let keep = |set: &str| -> Vec<char> {
            set.chars()
                .filter(|c| !self.excluded_characters.contains(*c))
                .collect()
        };
        [
            ("lowercase letter", keep(LOWER), self.require_lowercase),
            ("uppercase letter", keep(UPPER), self.require_uppercase),
            ("digit", keep(DIGITS), self.require_digits),
            ("symbol", keep(SYMBOLS), self.require_symbols),
        ]
    }

    /// Every problem with the policy itself.
    pub fn validate(&self) -> Result<()> {
        let mut p = Vec::new();
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 64
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !name_ok {
            p.push(FieldProblem::new(
                "name",
                "1 to 64 letters, digits, '-' or '_'",
            ));
        }
        if !(8..=MAX_LENGTH).contains(&self.min_length) {
            p.push(FieldProblem::new("min_length", "must be 8 to 128"));
        }
        if self.generated_length < self.min_length || self.generated_length > MAX_LENGTH {
            p.push(FieldProblem::new(
                "generated_length",
                "must be at least min_length and at most 128",
            ));
        }
        if !(0..=100).contains(&self.history) {
            p.push(FieldProblem::new("history", "must be 0 to 100"));
        }
        if let Some(d) = self.max_age_days
            && !(1..=3650).contains(&d)
        {
            p.push(FieldProblem::new("max_age_days", "must be 1 to 3650"));
        }
        if self.excluded_characters.chars().count() > 94 {
            p.push(FieldProblem::new(
                "excluded_characters",
                "at most 94 characters",
            ));
        }
        let classes = self.classes();
        for (name, chars, required) in &classes {
            if *required && chars.is_empty() {
                p.push(FieldProblem::new(
                    "excluded_characters",
                    format!("excludes every {name}, but the policy requires one"),
                ));
            }
        }
        if classes.iter().all(|(_, _, required)| !required) {
            p.push(FieldProblem::new(
                "require_lowercase",
                "require at least one character class",
            ));
        }
        if p.is_empty() {
            Ok(())
        } else {
            Err(Error::Validation(p))
        }
    }

    /// Why `password` does not satisfy this policy (never echoing it); empty when it does.
    pub fn problems(&self, password: &Secret) -> Vec<String> {
        let pw = password.expose();
        let mut out = Vec::new();
        let len = pw.chars().count() as i64;
        if len < self.min_length {
            out.push(format!(
                "must be at least {} characters long",
                self.min_length
            ));
        }
        if len > MAX_LENGTH {
            out.push(format!("must be at most {MAX_LENGTH} characters long"));
        }
        if pw.chars().any(|c| c.is_control()) {
            out.push("must not contain control characters or line breaks".into());
        }
        if pw.chars().any(|c| self.excluded_characters.contains(c)) {
            out.push("contains a character the policy excludes".into());
        }
        for (name, chars, required) in self.classes() {
            if required && !pw.chars().any(|c| chars.contains(&c)) {
                out.push(format!("must contain a {name}"));
            }
        }
        out
    }

    /// A new random password that satisfies the policy: one character of each required class,
    /// the rest from every allowed class, shuffled; all choices uniform from the OS CSPRNG.
    pub fn generate(&self) -> Result<Secret> {
        let classes = self.classes();
        let all: Vec<char> = classes
            .iter()
            .filter(|(_, chars, required)| *required || !chars.is_empty())
            .flat_map(|(_, chars, _)| chars.iter().copied())
            .collect();
        if all.is_empty() {
            return Err(Error::Internal(format!(
                "policy '{}' allows no characters",
                self.name
            )));
        }
        let len = usize::try_from(self.generated_length).unwrap_or(24);
        let mut out: Vec<char> = Vec::with_capacity(len);
        for (_, chars, required) in &classes {
            if *required {
                out.push(chars[uniform(chars.len())?]);
            }
        }
        while out.len() < len {
            out.push(all[uniform(all.len())?]);
        }
        // Fisher–Yates, so the required characters are not always in front.
        for i in (1..out.len()).rev() {
            let j = uniform(i + 1)?;
            out.swap(i, j);
        }
        let pw: String = out.iter().collect();
        zeroize::Zeroize::zeroize(&mut out);
        Ok(Secret::new(pw))
    }
}

/// A uniform index below `n` (rejection sampling: no modulo bias).
fn uniform(n: usize) -> Result<usize> {
    let n = u32::try_from(n).map_err(|_| Error::Internal("alphabet too large".into()))?;
    let zone = u32::MAX - (u32::MAX % n);
    loop {
        let mut b = [0u8; 4];
        getrandom::fill(&mut b)
            .map_err(|e| Error::Crypto(format!("no randomness for a password: {e}")))?;
        let v = u32::from_le_bytes(b);
        if v < zone {
            return Ok((v % n) as usize);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_passwords_always_satisfy_their_policy() {
        let mut strict = default_policy();
        strict.excluded_characters = "0O1lI|".into();
        strict.generated_length = 12;
        strict.min_length = 12;
        strict.validate().unwrap();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..2000 {
            let pw = strict.generate().unwrap();
            assert!(
                strict.problems(&pw).is_empty(),
                "{:?}",
                strict.problems(&pw)
            );
            assert_eq!(pw.expose().chars().count(), 12);
            seen.insert(pw.expose().to_string());
        }
        assert_eq!(seen.len(), 2000, "no repeats");
    }

    #[test]
    fn given_passwords_are_checked_without_being_echoed() {
        let p = default_policy();
        let weak = Secret::new("hunter2".into());
        let problems = p.problems(&weak);
        assert!(problems.iter().any(|m| m.contains("at least 12")));
        assert!(problems.iter().any(|m| m.contains("uppercase")));
        assert!(problems.iter().any(|m| m.contains("symbol")));
        assert!(problems.iter().all(|m| !m.contains("hunter2")));
        assert!(
            p.problems(&Secret::new("Correct-Horse-9-Battery".into()))
                .is_empty()
        );
        assert!(
            !p.problems(&Secret::new("Correct-Horse-9\nBattery".into()))
                .is_empty()
        );
    }

    #[test]
    fn impossible_policies_are_refused() {
        let mut p = default_policy();
        p.excluded_characters = DIGITS.into();
        let e = p.validate().unwrap_err().to_string();
        assert!(e.contains("excludes every digit"), "{e}");
        let mut p = default_policy();
        p.generated_length = 8;
        assert!(p.validate().is_err());
    }
}
