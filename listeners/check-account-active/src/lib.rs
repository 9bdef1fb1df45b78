//! `check-account-active`: a pre-reset listener that asks the target whether the account is
//! locked or has no password (`passwd -S LOGIN`), and vetoes the reset if so: rotating a
//! disabled account's password would silently re-enable nothing and hide the real problem.

use lockstep_sdk::{
    Event, Listener, PreOutcome, describe, export_listener, log, props, target_exec,
};

struct CheckAccountActive;

impl Listener for CheckAccountActive {
    fn pre_reset(_event: Event) -> PreOutcome {
        let login = match props::account("LOGINNAME") {
            Ok(Some(l)) => l,
            Ok(None) => return PreOutcome::Veto("the account has no LOGINNAME".into()),
            Err(e) => return PreOutcome::Veto(describe(&e)),
        };
        let out = match target_exec::run("passwd", &["-S", &login]) {
            Ok(out) => out,
            Err(e) => {
                return PreOutcome::Veto(format!(
                    "cannot ask the target about {login}: {}",
                    describe(&e)
                ));
            }
        };
        let text = String::from_utf8_lossy(&out.stdout);
        if out.status != 0 {
            return PreOutcome::Veto(format!(
                "passwd -S {login} exited {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        // `passwd -S` prints: LOGIN STATUS DATE MIN MAX WARN INACTIVE, STATUS being P (usable),
        // L (locked) or NP (no password).
        match text.split_whitespace().nth(1) {
            Some("P") | Some("PS") => {
                log::info(&format!("{login} is active"));
                PreOutcome::Proceed
            }
            Some("L") | Some("LK") => PreOutcome::Veto(format!("{login} is locked on the target")),
            Some("NP") => PreOutcome::Veto(format!("{login} has no password on the target")),
            _ => PreOutcome::Veto(format!(
                "cannot read the status of {login} from: {}",
                text.trim()
            )),
        }
    }
}

export_listener!(CheckAccountActive);
