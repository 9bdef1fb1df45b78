//! `change-freeze`: a pre-reset listener that vetoes resets of resources in a location under
//! a change freeze. Its parameters are the frozen locations; it reads the resource's
//! `RESOURCENAME` and `LOCATION` (manifest: `props = ["RESOURCENAME", "LOCATION"]`).

use lockstep_sdk::{Event, Listener, PreOutcome, export_listener, log, props};

struct ChangeFreeze;

impl Listener for ChangeFreeze {
    fn pre_reset(event: Event) -> PreOutcome {
        let name = props::resource("RESOURCENAME")
            .ok()
            .flatten()
            .unwrap_or_default();
        let location = match props::resource("LOCATION") {
            Ok(Some(l)) => l,
            Ok(None) => {
                log::info(&format!("{name} has no LOCATION; no freeze applies"));
                return PreOutcome::Proceed;
            }
            Err(e) => {
                return PreOutcome::Veto(format!(
                    "cannot read LOCATION: {}",
                    lockstep_sdk::describe(&e)
                ));
            }
        };
        if event
            .parameters
            .iter()
            .any(|frozen| frozen.eq_ignore_ascii_case(&location))
        {
            PreOutcome::Veto(format!(
                "{location} is under a change freeze; {name} keeps its password"
            ))
        } else {
            log::info(&format!("{location} is not frozen"));
            PreOutcome::Proceed
        }
    }
}

export_listener!(ChangeFreeze);
