//! `exec-hook`: a post-reset listener that hands the new password to a local program on its
//! standard input, the way `chpasswd` or an application's CLI takes it. The program and its
//! arguments come from the listener's parameters and must match an `exec` rule of the
//! manifest; the password never appears in argv.

use lockstep_sdk::{
    Event, Listener, PostOutcome, describe, exec, export_listener, log, props, secrets,
};

struct ExecHook;

impl Listener for ExecHook {
    fn post_reset(event: Event) -> PostOutcome {
        let Some((program, args)) = event.parameters.split_first() else {
            return PostOutcome::Failure(
                "no program given; the first parameter is the program to run".into(),
            );
        };
        let login = props::account("LOGINNAME")
            .ok()
            .flatten()
            .unwrap_or_default();
        let password = match secrets::new_password() {
            Ok(p) => p,
            Err(e) => {
                return PostOutcome::Failure(format!(
                    "cannot read the new password: {}",
                    describe(&e)
                ));
            }
        };
        let stdin = format!("{login}:{password}\n");
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        match exec::run_with_stdin(program, &args, stdin.as_bytes()) {
            Ok(out) if out.status == 0 => {
                let text = String::from_utf8_lossy(&out.stdout);
                log::info(&format!("{program} finished: {}", text.trim()));
                PostOutcome::Success(format!("{program} accepted the new password for {login}"))
            }
            Ok(out) => PostOutcome::Failure(format!(
                "{program} exited with {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )),
            Err(e) => PostOutcome::Failure(format!("{program}: {}", describe(&e))),
        }
    }
}

export_listener!(ExecHook);
