//! `lockstep:listener@0.1.0`, the first contract, served by the current one: every host call
//! of a 0.1.0 component goes through the same function (and so the same manifest check, the
//! same limits and the same redaction) as the 0.2.0 call of the same name. Only the types
//! differ, and they are converted here; 0.1.0 changed nothing in the host interfaces.

use super::HostState;
use super::bindings::lockstep::listener as now;
use super::bindings_v0_1::lockstep::listener as old;

fn error(e: now::types::HostError) -> old::types::HostError {
    match e {
        now::types::HostError::Denied(m) => old::types::HostError::Denied(m),
        now::types::HostError::Failed(m) => old::types::HostError::Failed(m),
    }
}

fn output(o: now::exec::Output) -> old::exec::Output {
    let now::exec::Output {
        status,
        stdout,
        stderr,
    } = o;
    old::exec::Output {
        status,
        stdout,
        stderr,
    }
}

impl old::types::Host for HostState {}

impl old::props::Host for HostState {
    fn resource_property(&mut self, key: String) -> Result<Option<String>, old::types::HostError> {
        now::props::Host::resource_property(self, key).map_err(error)
    }

    fn account_property(&mut self, key: String) -> Result<Option<String>, old::types::HostError> {
        now::props::Host::account_property(self, key).map_err(error)
    }
}

impl old::secrets::Host for HostState {
    fn old_password(&mut self) -> Result<String, old::types::HostError> {
        now::secrets::Host::old_password(self).map_err(error)
    }

    fn new_password(&mut self) -> Result<String, old::types::HostError> {
        now::secrets::Host::new_password(self).map_err(error)
    }
}

impl old::exec::Host for HostState {
    async fn run(
        &mut self,
        program: String,
        args: Vec<String>,
        stdin: Vec<u8>,
    ) -> Result<old::exec::Output, old::types::HostError> {
        now::exec::Host::run(self, program, args, stdin)
            .await
            .map(output)
            .map_err(error)
    }
}

impl old::target_exec::Host for HostState {
    async fn run(
        &mut self,
        program: String,
        args: Vec<String>,
        stdin: Vec<u8>,
    ) -> Result<old::exec::Output, old::types::HostError> {
        now::target_exec::Host::run(self, program, args, stdin)
            .await
            .map(output)
            .map_err(error)
    }
}

impl old::log::Host for HostState {
    fn write(&mut self, level: old::log::Level, message: String) {
        let level = match level {
            old::log::Level::Debug => now::log::Level::Debug,
            old::log::Level::Info => now::log::Level::Info,
            old::log::Level::Warn => now::log::Level::Warn,
            old::log::Level::Error => now::log::Level::Error,
        };
        now::log::Host::write(self, level, message)
    }
}
