//! `lockstep-server`: the `lockstep` binary's library.
//!
//! See `docs/ARCHITECTURE.md` for the map. In short: `api` is the only module that knows HTTP;
//! `store` is the only module that knows SQL; `vault` is the only module that sees master keys;
//! domain modules (`identity`, `inventory`, `audit`) sit between and know neither HTTP nor SQL
//! dialects.

pub mod access;
pub mod agents;
pub mod api;
pub mod attention;
pub mod audit;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod error;
pub mod identity;
pub mod inventory;
pub mod notifications;
pub mod open_files;
pub mod registry;
pub mod reset;
pub mod serve;
pub mod states;
pub mod store;
pub mod time;
pub mod tls;
pub mod vault;

pub use error::{Error, Result};
