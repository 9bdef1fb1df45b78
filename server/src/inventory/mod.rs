//! The inventory: resource types, resources, and accounts with their sealed passwords.
//!
//! **Invariant:** a password enters through [`accounts::create`] and leaves only through
//! [`accounts::retrieve_password`], which requires a reason and writes an audit event in the
//! same transaction as nothing else, before the plaintext is returned.

pub mod accounts;
pub mod fields;
pub mod reset_command;
pub mod resource_types;
pub mod resources;
