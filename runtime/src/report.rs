//! What one listener run produced: its answer, every denial, its log lines and output, and
//! how long it took. The caller (the reset engine, the test runner) records and audits it.

use std::time::Duration;

/// The most of a veto reason or outcome message that is kept; a listener cannot flood the
/// audit trail or a job record through its answer.
pub const MAX_MESSAGE_BYTES: usize = 4096;

/// What a hook answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookOutcome {
    /// Pre-reset: go ahead.
    Proceed,
    /// Pre-reset: stop this account's reset, with the reason.
    Veto(String),
    /// Post-reset: done, with a message.
    Success(String),
    /// Post-reset: it did not work, with a message.
    Failure(String),
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
    /// The answer as reset records name it (`proceed`, `veto`, `success`, `failure`, or
    /// `stopped` when the run gave none) and its message.
    pub fn verdict(&self) -> (&'static str, String) {
        match &self.outcome {
            Ok(HookOutcome::Proceed) => ("proceed", String::new()),
            Ok(HookOutcome::Veto(m)) => ("veto", m.clone()),
            Ok(HookOutcome::Success(m)) => ("success", m.clone()),
            Ok(HookOutcome::Failure(m)) => ("failure", m.clone()),
            Err(f) => ("stopped", f.to_string()),
        }
    }
}

/// Most denial records kept per run; later ones are counted in the last record.
pub const MAX_DENIALS: usize = 64;
/// Longest `requested` or `reason` text of a denial record.
pub const MAX_DENIAL_TEXT: usize = 256;

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

/// Replaces every occurrence of each non-empty secret in `s` with `[redacted]`.
pub fn redact(s: String, secrets: &[&str]) -> String {
    let mut s = s;
    for secret in secrets.iter().filter(|x| !x.is_empty()) {
        if s.contains(secret) {
            s = s.replace(secret, "[redacted]");
        }
    }
    s
}

/// Cuts `s` to at most `max` bytes on a character boundary, marking the cut.
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
        assert_eq!(
            super::redact("pw=hunter2!".into(), &["hunter2", ""]),
            "pw=[redacted]!"
        );
    }
}
