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
        self.authorize_program("target-exec", &program, &args)?;
        let Some(target) = self.ctx.target.clone() else {
            return Err(HostError::Failed(
                "this run has no connection to a reset target".into(),
            ));
        };
        let (remaining, cap) = (self.remaining(), self.output_cap());
        let out = target
            .run(&program, &args, &stdin, remaining, cap)
            .await
            .map_err(HostError::Failed)?;
        out.into_guest(|| format!("{program} on the target was stopped at the listener's deadline"))
    }
}
