//! `lockstep:listener/target-exec`: commands on the reset target, over the reset's own
//! connection. The connection is provided by the caller (the reset engine) through
//! [`TargetExec`]; this module only checks the grant and the deadline.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use super::bindings::lockstep::listener::exec::Output;
use super::bindings::lockstep::listener::target_exec::Host;
use super::bindings::lockstep::listener::types::HostError;
use super::{HostState, ProgramOutput};

/// Runs a command on the reset target. Implementations must pass each argument to the remote
/// side without shell interpretation (quote it for the remote shell, or use an exec channel
/// that takes an argument vector), and must not exceed `timeout`.
pub trait TargetExec: Send + Sync {
    fn run<'a>(
        &'a self,
        program: &'a str,
        args: &'a [String],
        stdin: &'a [u8],
        timeout: Duration,
        output_cap: usize,
    ) -> Pin<Box<dyn Future<Output = Result<ProgramOutput, String>> + Send + 'a>>;
}

impl Host for HostState {
    async fn run(
        &mut self,
        program: String,
        args: Vec<String>,
        stdin: Vec<u8>,
    ) -> Result<Output, HostError> {
        self.refuse_secret_in_argv("target-exec", &program, &args)?;
        if let Err(denial) = self.manifest.target_exec_allowed(&program, &args) {
            return Err(self.deny(
                "target-exec",
                format!("{program} {args:?}"),
                denial.to_string(),
            ));
        }
        let Some(target) = self.ctx.target.clone() else {
            return Err(HostError::Failed(
                "this run has no connection to a reset target".into(),
            ));
        };
        let remaining = self
            .deadline
            .saturating_duration_since(std::time::Instant::now());
        let cap = self.output_cap();
        let out = target
            .run(&program, &args, &stdin, remaining, cap)
            .await
            .map_err(HostError::Failed)?;
        if out.timed_out {
            return Err(HostError::Failed(format!(
                "{program} on the target was stopped at the listener's deadline"
            )));
        }
        Ok(Output {
            status: out.status,
            stdout: out.stdout,
            stderr: out.stderr,
        })
    }
}
