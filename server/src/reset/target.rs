//! `target-exec` for listeners during a reset: commands run on the reset's own SSH target, as
//! the resource's admin account, over the engine's kept admin connection to that target.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use lockstep_runtime::{ProgramOutput, TargetExec};
use zeroize::Zeroizing;

use super::pool::AdminPool;
use super::ssh::Endpoint;
use crate::vault::Secret;

/// Runs commands as the admin; each command's arguments are quoted for the remote shell.
pub struct SshTargetExec {
    pool: Arc<AdminPool>,
    endpoint: Endpoint,
    user: String,
    password: Secret,
}

impl SshTargetExec {
    pub fn new(pool: Arc<AdminPool>, endpoint: Endpoint, user: String, password: Secret) -> Self {
        SshTargetExec {
            pool,
            endpoint,
            user,
            password,
        }
    }
}

/// POSIX single-quoting: the remote shell sees each argument as one literal word.
pub fn shell_quote(arg: &str) -> String {
    format!("'{}'", arg.replace('\'', r"'\''"))
}

impl TargetExec for SshTargetExec {
    fn run<'a>(
        &'a self,
        program: &'a str,
        args: &'a [String],
        stdin: &'a [u8],
        timeout: Duration,
        output_cap: usize,
    ) -> Pin<Box<dyn Future<Output = Result<ProgramOutput, String>> + Send + 'a>> {
        Box::pin(async move {
            let (conn, _) = self
                .pool
                .get(&self.endpoint, &self.user, &self.password)
                .await
                .map_err(|e| e.to_string())?;
            let mut command = shell_quote(program);
            for a in args {
                command.push(' ');
                command.push_str(&shell_quote(a));
            }
            let run = conn.run(&command, Zeroizing::new(stdin.to_vec()));
            let Ok(out) = tokio::time::timeout(timeout, run).await else {
                return Ok(ProgramOutput {
                    status: -1,
                    stdout: Vec::new(),
                    stderr: Vec::new(),
                    timed_out: true,
                });
            };
            let out = out.map_err(|e| e.failure().to_string())?;
            let cap = |mut v: Vec<u8>| {
                v.truncate(output_cap);
                v
            };
            Ok(ProgramOutput {
                status: i32::try_from(out.status).unwrap_or(-1),
                stdout: cap(out.stdout),
                stderr: cap(out.stderr),
                timed_out: false,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::shell_quote;

    #[test]
    fn quoting_keeps_every_argument_literal() {
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote("$(rm -rf /)"), "'$(rm -rf /)'");
    }
}
