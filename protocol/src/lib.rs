//! The wire contract between the lockstep server and `lockstep-agent`.
//!
//! Both sides depend on this crate and nothing else of each other: the agent stays small (no
//! SQL, no HTTP server) and the server cannot drift from what agents send.
//!
//! - [`auth`]: how an enrolled agent signs every request with its own ed25519 key, and how the
//!   server checks it.
//! - [`messages`]: the JSON bodies of enrollment, discovery, tasks and their results.
//!
//! The paths the agent calls are the constants below; all are under the server's `/v1`.

pub mod auth;
pub mod messages;

/// `POST`: enroll with a one-time token (the only agent call without a signature).
pub const ENROLL_PATH: &str = "/v1/agent/enroll";
/// `POST`: report the machine and its local accounts.
pub const DISCOVERY_PATH: &str = "/v1/agent/discovery";
/// `GET ?session=S&wait=SECS`: the long-poll for the next task.
pub const NEXT_TASK_PATH: &str = "/v1/agent/tasks/next";
/// `POST /v1/agent/tasks/{id}/result`: a task's result (idempotent).
pub fn result_path(task_id: &str) -> String {
    format!("/v1/agent/tasks/{task_id}/result")
}
/// `GET /v1/agent/components/{sha256}`: a listener component the agent does not have yet.
pub fn component_path(sha256: &str) -> String {
    format!("/v1/agent/components/{sha256}")
}

/// Longest hold of a long-poll the server grants, in seconds.
pub const MAX_HOLD_SECS: u64 = 60;
