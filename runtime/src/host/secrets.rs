//! `lockstep:listener/secrets`: the old and new password, each its own grant. A denial
//! records which secret was asked for, never a value.

use super::HostState;
use super::bindings::lockstep::listener::secrets::Host;
use super::bindings::lockstep::listener::types::HostError;
use crate::manifest::Secret;

impl HostState {
    fn secret(&mut self, which: Secret) -> Result<String, HostError> {
        if !self.manifest.allows_secret(which) {
            let name = which.as_str();
            return Err(self.deny(
                "secrets",
                name.to_string(),
                format!("'{name}' is not in capabilities.secrets"),
            ));
        }
        let value = match which {
            Secret::OldPassword => self.ctx.old_password.as_ref(),
            Secret::NewPassword => self.ctx.new_password.as_ref(),
        };
        value
            .map(|v| v.to_string())
            .ok_or_else(|| HostError::Failed(format!("this run has no {}", which.as_str())))
    }
}

impl Host for HostState {
    fn old_password(&mut self) -> Result<String, HostError> {
        self.secret(Secret::OldPassword)
    }

    fn new_password(&mut self) -> Result<String, HostError> {
        self.secret(Secret::NewPassword)
    }
}
