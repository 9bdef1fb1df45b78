//! The agent's one error type.

/// What can go wrong in the agent; each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration file is missing, unreadable or wrong.
    #[error("{0}")]
    Config(String),
    /// A local file (key, passwd, shadow) could not be read or written.
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    /// A server node could not be reached (refused, timed out, cut off mid-answer).
    #[error(
        "cannot reach the server node {node}: {problem}; is it running and reachable from \
         here? (with several nodes in agent.toml the next one is tried)"
    )]
    Unreachable { node: String, problem: String },
    /// A server node showed a certificate other than the one pinned for its URL.
    #[error("server node {node}: {problem}")]
    Certificate { node: String, problem: String },
    /// The exchange with the server went wrong otherwise (an answer not understood).
    #[error("talking to the server: {0}")]
    Transport(String),
    /// The server refused the request; `status` and its problem detail.
    #[error("the server refused ({status}): {detail}")]
    Refused { status: u16, detail: String },
}

/// The HTTP answers of one node that another node may not give ([`Error::fails_over`]).
pub fn status_fails_over(status: u16) -> bool {
    matches!(status, 401 | 403 | 500 | 502..=504)
}

impl Error {
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let context = context.into();
        move |source| Error::Io { context, source }
    }

    /// Failures of one node that another node of the list may not have: it cannot be
    /// reached, shows a certificate other than its pin, cannot serve now (500: its database is
    /// gone; 502, 503, 504), or refuses the agent (401, 403: a node whose clock is off, that
    /// sees the agent from another address, or that is not of this deployment). Only when
    /// every node says so does the caller hear it. An answer about the request itself (404,
    /// 409, 422) is not one: the nodes share one database and answer it alike.
    pub fn fails_over(&self) -> bool {
        match self {
            Error::Unreachable { .. } | Error::Certificate { .. } => true,
            Error::Refused { status, .. } => status_fails_over(*status),
            _ => false,
        }
    }

    /// Refusals that retrying cannot fix (the agent is revoked, unknown, or not allowed).
    pub fn is_authorization(&self) -> bool {
        matches!(
            self,
            Error::Refused {
                status: 401 | 403,
                ..
            }
        )
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
