//! The reset engine: changing passwords on the systems they belong to.
//!
//! Built so far: the agentless SSH client (`ssh`) and the Unix password change over it
//! (`remote`). The journaled pipeline, policies and jobs build on these.

pub mod remote;
pub mod ssh;
