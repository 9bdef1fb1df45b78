//! `lockstep-server`: the `lockstep` binary's library.
//!
//! See `docs/ARCHITECTURE.md` for the map. In short: `api` is the only module that knows HTTP;
//! `store` is the only module that knows SQL; `vault` is the only module that sees master keys;
//! domain modules (`identity`, `inventory`, `audit`) sit between and know neither HTTP nor SQL
//! dialects.

pub mod agent_cli;
pub mod agents;
pub mod api;
pub mod api_client;
pub mod audit;
pub mod cli;
pub mod config;
pub mod error;
pub mod identity;
pub mod inventory;
pub mod listener_files;
pub mod listener_test;
pub mod notifications;
pub mod open_files;
pub mod publisher;
pub mod registry;
pub mod reset;
pub mod reset_cli;
pub mod serve;
pub mod store;
pub mod time;
pub mod tls;
pub mod vault;

pub use error::{Error, Result};
