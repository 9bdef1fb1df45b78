//! Access control: accounts whose password is checked out for a time window with approval,
//! and rotated when it comes back (`docs/access-control.md`).
//!
//! - `policy`: who may request, who approves and how many, the longest window, exclusive or
//!   shared, rotate on check-in; per account, resource or resource type, the narrowest deciding.
//! - `checkout`: the workflow's transitions and the gate every password retrieval passes.
//! - `sweep`: deadlines read from the database (lapsed requests, ended windows, rotations not
//!   yet started), run by every node.

pub mod checkout;
pub mod policy;
pub mod sweep;
