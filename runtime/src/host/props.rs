//! `lockstep:listener/props`: resource and account properties, by granted key.

use super::HostState;
use super::bindings::lockstep::listener::props::Host;
use super::bindings::lockstep::listener::types::HostError;
use crate::limits::MAX_SHOWN_KEY_BYTES;

impl HostState {
    fn property(&mut self, scope: &str, key: String) -> Result<Option<String>, HostError> {
        if key.len() > crate::limits::MAX_PROP_KEY_BYTES {
            // Redacted whole before it is cut: a password straddling the cut would no longer
            // match once cut.
            let shown = self.redactor.clean(key, false, MAX_SHOWN_KEY_BYTES);
            return Err(self.deny(
                "props",
                format!("{scope} {shown}"),
                "not a property key (too long)".into(),
            ));
        }
        if !self.manifest.allows_prop(&key) {
            return Err(self.deny(
                "props",
                format!("{scope} {key}"),
                format!("'{key}' is not in capabilities.props"),
            ));
        }
        let map = if scope == "resource" {
            &self.ctx.resource
        } else {
            &self.ctx.account
        };
        Ok(map.get(&key).cloned())
    }
}

impl Host for HostState {
    fn resource_property(&mut self, key: String) -> Result<Option<String>, HostError> {
        self.property("resource", key)
    }

    fn account_property(&mut self, key: String) -> Result<Option<String>, HostError> {
        self.property("account", key)
    }
}
