//! What one listener run produced: its answer, every denial, its log lines and output, and
//! how long it took. The caller (the reset engine, the test runner) records and audits it.

use std::sync::Arc;
use std::time::Duration;

use zeroize::Zeroizing;

/// What a hook answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookOutcome {
    /// Pre-reset: go ahead.
    Proceed,
    /// Pre-reset: stop this account's reset, with the reason.
    Veto(String),
    /// Post-reset: done, with a message.
    Success(String),
    /// Post-reset: it did not work, and another try would not mend it, with a message.
    Failure(String),
    /// Post-reset (contract 0.2.0): it did not work, but may on another try (a receiver down,
    /// a timeout), with a message. The caller decides whether and when to run it again.
    Retry(String),
}

/// Why a run produced no answer. In every case the store was dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunFailure {
    /// The wall-clock limit (`limits.timeout_ms`) passed: CPU spin or a stuck host call.
    Timeout { limit: Duration },
    /// It tried to grow its memory past `limits.memory_mib`.
    MemoryLimit { limit_mib: u64 },
    /// It trapped: a panic, stack exhaustion, an unreachable instruction, ...
    Trap(String),
    /// It could not be instantiated (a missing import, pool exhaustion, ...).
    Instantiate(String),
}

impl std::fmt::Display for RunFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunFailure::Timeout { limit } => write!(f, "timed out after {} ms", limit.as_millis()),
            RunFailure::MemoryLimit { limit_mib } => {
                write!(f, "exceeded its memory limit of {limit_mib} MiB")
            }
            RunFailure::Trap(why) => write!(f, "trapped: {why}"),
            RunFailure::Instantiate(why) => write!(f, "could not start: {why}"),
        }
    }
}

/// A host call refused because the manifest does not grant it. Goes to the audit trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DenialRecord {
    /// The capability asked for: `props`, `secrets`, `exec`, `target-exec`, `network`.
    pub capability: &'static str,
    /// What was asked, without any secret: a property key, a secret's name, a program and its
    /// arguments, an address.
    pub requested: String,
    /// Why it was refused.
    pub reason: String,
}

impl std::fmt::Display for DenialRecord {
    /// `capability: requested (reason)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} ({})",
            self.capability, self.requested, self.reason
        )
    }
}

/// Log levels, as in the WIT `log` interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

impl LogLevel {
    /// The level's name as the WIT spells it: `debug`, `info`, `warn`, `error`.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

/// One line the listener logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub level: LogLevel,
    pub message: String,
}

/// Everything one run produced.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub outcome: Result<HookOutcome, RunFailure>,
    pub denials: Vec<DenialRecord>,
    pub logs: Vec<LogLine>,
    /// Log bytes dropped because the output limit was reached.
    pub logs_dropped_bytes: u64,
    /// What the guest wrote to stdout and stderr (capped).
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Invocation {
    /// The answer as reset records name it (`proceed`, `veto`, `success`, `failure`, `retry`,
    /// or `stopped` when the run gave none) and its message.
    pub fn verdict(&self) -> (&'static str, String) {
        match &self.outcome {
            Ok(HookOutcome::Proceed) => ("proceed", String::new()),
            Ok(HookOutcome::Veto(m)) => ("veto", m.clone()),
            Ok(HookOutcome::Success(m)) => ("success", m.clone()),
            Ok(HookOutcome::Failure(m)) => ("failure", m.clone()),
            Ok(HookOutcome::Retry(m)) => ("retry", m.clone()),
            Err(f) => ("stopped", f.to_string()),
        }
    }
}

/// Escapes control characters (as `\u{..}`, or `\n` and `\t` where `keep_lines` is false) so
/// a listener cannot forge log lines or send terminal escapes to whoever reads its output.
pub fn sanitize(s: &str, keep_lines: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\n' | '\t' if keep_lines => out.push(c),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control()
                || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}') =>
            {
                out.push_str(&format!("\\u{{{:x}}}", c as u32))
            }
            c => out.push(c),
        }
    }
    out
}

/// What replaces a secret in text that leaves a run.
pub const REDACTED: &str = "[redacted]";

/// The secrets one run was granted, and the one way text leaves a run ([`Redactor::clean`]):
/// every secret is replaced by [`REDACTED`] in the whole text first, then control characters
/// are escaped, then the text is cut to its limit. Redaction before the cut matters: a secret
/// straddling the cut would no longer match once cut, and its first part would be kept.
///
/// It holds only the secrets the run's manifest grants (`RunContext` drops the others when a
/// run starts). The listener knows those values, so what is redacted tells it nothing;
/// redacting a value it may not read would itself answer "was that the password?", to the
/// listener through a denial's text, or to whoever reads the record.
#[derive(Clone, Default)]
pub struct Redactor {
    /// Non-empty, longest first, so a secret that contains another is redacted whole.
    secrets: Arc<[Zeroizing<String>]>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Redactor({} secret(s))", self.secrets.len())
    }
}

impl Redactor {
    /// A redactor for `secrets` (empty ones are ignored).
    pub fn new(secrets: impl IntoIterator<Item = Zeroizing<String>>) -> Redactor {
        let mut secrets: Vec<Zeroizing<String>> =
            secrets.into_iter().filter(|s| !s.is_empty()).collect();
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        Redactor {
            secrets: secrets.into(),
        }
    }

    /// True when `text` contains one of the secrets.
    pub fn holds_secret(&self, text: &str) -> bool {
        self.secrets.iter().any(|s| text.contains(s.as_str()))
    }

    /// `text` with every occurrence of each secret replaced by [`REDACTED`]. Only for text
    /// that is cut afterwards, if at all: the exits use [`Redactor::clean`].
    pub fn redact(&self, text: String) -> String {
        let mut text = text;
        for secret in self.secrets.iter() {
            if text.contains(secret.as_str()) {
                text = text.replace(secret.as_str(), REDACTED);
            }
        }
        text
    }

    /// The one way text leaves a run (answers, log lines, denial records, failure reasons):
    /// secrets redacted from the whole text, control characters escaped (`\n` and `\t` kept
    /// where `keep_lines`), then cut to at most `max` bytes plus a note of the cut.
    pub fn clean(&self, text: String, keep_lines: bool, max: usize) -> String {
        truncate(sanitize(&self.redact(text), keep_lines), max)
    }

    /// [`Redactor::clean`] for what a stream kept of a guest's output (stdout, stderr), which
    /// stops at `capacity` bytes. When the stream is full it may have cut a secret, so a tail
    /// that begins a secret is redacted too, before anything else. Lines are kept.
    pub fn clean_stream(&self, bytes: &[u8], capacity: usize, max: usize) -> String {
        let partial = if bytes.len() >= capacity {
            self.partial_tail(bytes)
        } else {
            0
        };
        let mut text = String::from_utf8_lossy(&bytes[..bytes.len() - partial]).into_owned();
        if partial > 0 {
            text.push_str(REDACTED);
        }
        self.clean(text, true, max)
    }

    /// Length of the longest tail of `bytes` that is the beginning (not the whole) of a
    /// secret. Compared as bytes: a cut can fall inside a character.
    fn partial_tail(&self, bytes: &[u8]) -> usize {
        self.secrets
            .iter()
            .filter_map(|s| {
                let s = s.as_bytes();
                (1..s.len().min(bytes.len() + 1))
                    .rev()
                    .find(|&n| bytes.ends_with(&s[..n]))
            })
            .max()
            .unwrap_or(0)
    }
}

/// Cuts `s` to at most `max` bytes on a character boundary, marking the cut. Text that leaves
/// a run is cut only by [`Redactor::clean`], after redaction; public for text that holds no
/// secret of a run (an agent's report, already scrubbed by the agent's own runtime).
pub fn truncate(mut s: String, max: usize) -> String {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    let dropped = s.len() - end;
    s.truncate(end);
    s.push_str(&format!("… [{dropped} bytes cut]"));
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn truncation_respects_char_boundaries() {
        let s = "é".repeat(10);
        let t = super::truncate(s, 5);
        assert!(t.starts_with("éé"));
        assert!(t.contains("bytes cut"));
        assert_eq!(super::truncate("short".into(), 10), "short");
    }

    #[test]
    fn sanitize_escapes_controls_and_redact_hides_secrets() {
        assert_eq!(super::sanitize("a\nb\x1b[31m", false), "a\\nb\\u{1b}[31m");
        assert_eq!(super::sanitize("a\nb", true), "a\nb");
        let r = redactor(&["hunter2", ""]);
        assert_eq!(r.redact("pw=hunter2!".into()), "pw=[redacted]!");
        assert!(r.holds_secret("xhunter2x") && !r.holds_secret("hunter"));
        // A secret that contains another is redacted whole, whatever the grant order.
        let r = redactor(&["abc", "abcdef"]);
        assert_eq!(r.redact("abcdef abc".into()), "[redacted] [redacted]");
    }

    fn redactor(secrets: &[&str]) -> super::Redactor {
        super::Redactor::new(secrets.iter().map(|s| s.to_string().into()))
    }

    /// Text cut at `max` bytes with a secret straddling the cut keeps no part of the secret,
    /// wherever the cut falls inside it.
    #[test]
    fn clean_redacts_before_it_cuts() {
        let secret = "Straddle-Pw-9";
        let r = redactor(&[secret]);
        for max in [16, 17, 20, 27, 28] {
            for before in (max - secret.len() + 1)..max {
                let text = format!("{}{secret}{}", "a".repeat(before), "z".repeat(40));
                let out = r.clean(text, false, max);
                let kept = out.split('…').next().unwrap().trim_start_matches('a');
                assert!(
                    kept.starts_with(super::REDACTED) || super::REDACTED.starts_with(kept),
                    "max {max}, before {before}: {out}"
                );
            }
        }
    }

    /// A stream full to its capacity may have cut a secret; its tail is redacted, even when
    /// the cut falls inside a character.
    #[test]
    fn a_full_stream_keeps_no_beginning_of_a_secret() {
        let secret = "Pässwort-1";
        let r = redactor(&[secret]);
        for kept in 1..secret.len() {
            let mut bytes = b"out: ".to_vec();
            bytes.extend_from_slice(&secret.as_bytes()[..kept]);
            let cap = bytes.len();
            let out = r.clean_stream(&bytes, cap, cap + 32);
            assert_eq!(out, "out: [redacted]", "{kept} bytes of the secret kept");
        }
        // Not full: nothing was cut, a tail like the secret's start is the guest's own text.
        assert_eq!(r.clean_stream(b"out: P", 64, 64), "out: P");
        assert_eq!(
            r.clean_stream("Pässwort-1 and P".as_bytes(), 16, 64),
            "[redacted] and [redacted]"
        );
    }
}
