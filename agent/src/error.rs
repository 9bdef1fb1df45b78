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
    /// The server could not be reached, or its certificate is not the pinned one.
    #[error("cannot reach the server: {0}")]
    Transport(String),
    /// The server refused the request; `status` and its problem detail.
    #[error("the server refused ({status}): {detail}")]
    Refused { status: u16, detail: String },
}

impl Error {
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let context = context.into();
        move |source| Error::Io { context, source }
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
