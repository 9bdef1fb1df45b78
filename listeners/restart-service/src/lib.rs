//! `restart-service`: a post-reset listener that restarts, on the reset target, the systemd
//! units named in its parameters (services that cached the old password). It runs
//! `systemctl restart UNIT` over the reset's own connection, so it never holds a credential.

use lockstep_sdk::{Event, Listener, PostOutcome, describe, export_listener, log, target_exec};

struct RestartService;

impl Listener for RestartService {
    fn post_reset(event: Event) -> PostOutcome {
        if event.parameters.is_empty() {
            return PostOutcome::Failure(
                "no units given; list the units to restart as parameters".into(),
            );
        }
        let mut failed = Vec::new();
        for unit in &event.parameters {
            match target_exec::run("systemctl", &["restart", unit]) {
                Ok(out) if out.status == 0 => log::info(&format!("restarted {unit}")),
                Ok(out) => {
                    let why = String::from_utf8_lossy(&out.stderr).trim().to_string();
                    log::error(&format!("{unit}: systemctl exited {}: {why}", out.status));
                    failed.push(format!("{unit} (exit {})", out.status));
                }
                Err(e) => failed.push(format!("{unit} ({})", describe(&e))),
            }
        }
        if failed.is_empty() {
            PostOutcome::Success(format!("restarted {}", event.parameters.join(", ")))
        } else {
            PostOutcome::Failure(format!("could not restart {}", failed.join(", ")))
        }
    }
}

export_listener!(RestartService);
