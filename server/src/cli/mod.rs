//! The command line: `args` defines every command and flag; the other modules are the
//! commands that do their work on this machine or through the API (as opposed to
//! `lockstep serve`, which is the server itself).

pub mod agent;
pub mod api_client;
pub mod args;
pub mod attention;
pub mod checkout;
pub mod delivery;
pub mod listener_files;
pub mod listener_test;
pub mod publisher;
pub mod reset;

pub use args::*;
