//! `lockstep listener test`: runs one hook of a listener locally, against a sample event file,
//! through the same runtime and capability checks the server uses. This is how listener
//! developers iterate without a server.

use std::collections::BTreeMap;
use std::path::Path;

use lockstep_runtime::{Delivery, Invocation, Phase, ResetEvent, RunContext, Runtime, Trigger};
use serde::{Deserialize, Serialize};

use crate::cli::listener_files::{read_bytes, read_manifest, read_text};
use crate::error::{Error, Result};

/// The sample event file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SampleEvent {
    /// `pre-reset` or `post-reset`.
    pub phase: String,
    #[serde(default = "default_trigger")]
    pub trigger: String,
    #[serde(default = "default_job")]
    pub job_id: String,
    pub resource_type: String,
    #[serde(default)]
    pub parameters: Vec<String>,
    #[serde(default)]
    pub resource: BTreeMap<String, String>,
    #[serde(default)]
    pub account: BTreeMap<String, String>,
    #[serde(default)]
    pub secrets: SampleSecrets,
    /// A post-reset run's delivery id (default `local-test`) and attempt (default 1).
    pub delivery_id: Option<String>,
    pub attempt: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SampleSecrets {
    pub old_password: Option<String>,
    pub new_password: Option<String>,
}

fn default_trigger() -> String {
    "manual".into()
}

fn default_job() -> String {
    "local-test".into()
}

/// What the command prints with `--json`.
#[derive(Debug, Serialize)]
pub struct Report {
    pub listener: String,
    pub phase: String,
    /// `proceed`, `veto`, `success`, `failure`, `retry`, or `stopped` (timeout, trap, limit).
    pub outcome: String,
    pub message: String,
    pub denials: Vec<String>,
    pub logs: Vec<String>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed_ms: f64,
}

fn parse_event(text: &str, path: &Path) -> Result<(Phase, ResetEvent, RunContext)> {
    let e: SampleEvent = toml::from_str(text).map_err(|err| {
        Error::Config(format!("event file {}: {}", path.display(), err.message()))
    })?;
    let phase = match e.phase.as_str() {
        "pre-reset" => Phase::PreReset,
        "post-reset" => Phase::PostReset,
        other => {
            return Err(Error::Config(format!(
                "event file: phase '{other}' must be pre-reset or post-reset"
            )));
        }
    };
    let trigger = match e.trigger.as_str() {
        "manual" => Trigger::Manual,
        "bulk" => Trigger::Bulk,
        "scheduled" => Trigger::Scheduled,
        "check-in" => Trigger::CheckIn,
        "reverse-sync" => Trigger::ReverseSync,
        "api" => Trigger::Api,
        other => {
            return Err(Error::Config(format!(
                "event file: trigger '{other}' must be manual, bulk, scheduled, check-in, reverse-sync or api"
            )));
        }
    };
    let delivery = (phase == Phase::PostReset).then(|| Delivery {
        id: e.delivery_id.unwrap_or_else(|| "local-test".into()),
        attempt: e.attempt.unwrap_or(1).max(1),
    });
    let event = ResetEvent {
        job_id: e.job_id,
        trigger,
        resource_type: e.resource_type,
        parameters: e.parameters,
        delivery,
    };
    let ctx = RunContext {
        resource: e.resource,
        account: e.account,
        old_password: e.secrets.old_password.map(Into::into),
        new_password: e.secrets.new_password.map(Into::into),
        target: None,
    };
    Ok((phase, event, ctx))
}

/// Loads and runs the listener; returns the report and whether the hook let the reset go on.
pub async fn run(wasm: &Path, manifest: &Path, event: &Path) -> Result<(Report, bool)> {
    let manifest = read_manifest(manifest)?;
    let (phase, event, ctx) = parse_event(&read_text(event, "event file")?, event)?;
    let bytes = read_bytes(wasm, "component")?;
    let runtime = Runtime::new(None)?;
    let name = format!("{} {}", manifest.name(), manifest.version());
    let listener = runtime.load(&bytes, manifest)?;
    let inv = listener.run(phase, &event, ctx).await;
    Ok(report(name, phase, inv))
}

fn report(listener: String, phase: Phase, inv: Invocation) -> (Report, bool) {
    let (outcome, message) = inv.verdict();
    let ok = matches!(outcome, "proceed" | "success");
    let report = Report {
        listener,
        phase: phase.as_str().to_string(),
        outcome: outcome.to_string(),
        message,
        denials: inv.denials.iter().map(ToString::to_string).collect(),
        // The level is normalised, the text is shown as the listener logged it.
        logs: inv
            .logs
            .iter()
            .map(|l| format!("{}: {}", l.level.as_str(), l.message))
            .collect(),
        stdout: inv.stdout,
        stderr: inv.stderr,
        elapsed_ms: inv.elapsed.as_secs_f64() * 1e3,
    };
    (report, ok)
}

/// The report for people.
pub fn render(r: &Report) -> String {
    let mut out = format!("{} ({}): {}", r.listener, r.phase, r.outcome);
    if !r.message.is_empty() {
        out.push_str(&format!(": {}", r.message));
    }
    out.push_str(&format!("\ntime: {:.2} ms\n", r.elapsed_ms));
    let section = |out: &mut String, title: &str, lines: &[String]| {
        if !lines.is_empty() {
            out.push_str(&format!("{title}:\n"));
            for l in lines {
                out.push_str(&format!("  {l}\n"));
            }
        }
    };
    section(&mut out, "denied", &r.denials);
    section(&mut out, "log", &r.logs);
    for (title, text) in [("stdout", &r.stdout), ("stderr", &r.stderr)] {
        if !text.is_empty() {
            out.push_str(&format!("{title}:\n{}\n", text.trim_end()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use lockstep_runtime::{HookOutcome, Invocation, LogLevel, LogLine, Phase};

    #[test]
    fn log_lines_are_shown_as_logged() {
        let line = |level, message: &str| LogLine {
            level,
            message: message.into(),
        };
        let inv = Invocation {
            outcome: Ok(HookOutcome::Proceed),
            denials: Vec::new(),
            logs: vec![
                line(LogLevel::Warn, "Unit App-1.service NOT restarted"),
                line(LogLevel::Info, "LOGINNAME=Root"),
            ],
            logs_dropped_bytes: 0,
            stdout: String::new(),
            stderr: String::new(),
            elapsed: Duration::from_millis(1),
        };
        let (report, ok) = super::report("probe 0.1.0".into(), Phase::PreReset, inv);
        assert!(ok);
        assert_eq!(
            report.logs,
            [
                "warn: Unit App-1.service NOT restarted",
                "info: LOGINNAME=Root"
            ]
        );
        assert!(super::render(&report).contains("  warn: Unit App-1.service NOT restarted\n"));
    }
}
