//! `lockstep:listener/log`: log lines kept with the run, capped in count and bytes.

use super::HostState;
use super::bindings::lockstep::listener::log::{Host, Level};
use crate::limits::MAX_LOG_LINES;
use crate::limits::MAX_MESSAGE_BYTES;
use crate::report::{LogLevel, LogLine};

impl Host for HostState {
    fn write(&mut self, level: Level, message: String) {
        let len = message.len();
        if self.logs.len() >= MAX_LOG_LINES
            || self.log_bytes + len.min(MAX_MESSAGE_BYTES) > self.output_cap()
        {
            self.logs_dropped_bytes += len as u64;
            return;
        }
        let message = self.redactor.clean(message, false, MAX_MESSAGE_BYTES);
        self.log_bytes += message.len();
        let level = match level {
            Level::Debug => LogLevel::Debug,
            Level::Info => LogLevel::Info,
            Level::Warn => LogLevel::Warn,
            Level::Error => LogLevel::Error,
        };
        self.logs.push(LogLine { level, message });
    }
}
