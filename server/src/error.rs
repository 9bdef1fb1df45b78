//! The one error type of the server crate.
//!
//! Domain and store code return [`Error`]; the HTTP layer turns it into an RFC 9457 problem
//! document (`api::problem`). Variants carry only what is safe to show a caller: never a secret,
//! never SQL. `Store`, `Crypto` and `Internal` become 500s whose details are logged, not echoed.

use serde::Serialize;

/// One field of a request that failed validation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FieldProblem {
    /// The JSON field (or query parameter) at fault, e.g. `ssh_port`.
    pub field: String,
    /// What is wrong with it, in words a person can act on.
    pub problem: String,
}

impl FieldProblem {
    pub fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            problem: problem.into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// 401: no token, or a token that is unknown, expired or revoked.
    #[error("authentication required: {0}")]
    Unauthenticated(&'static str),
    /// 403: the caller is known but lacks the privilege.
    #[error("this action needs the '{0}' privilege, which your role does not have")]
    Forbidden(String),
    /// 403: the caller holds the privilege, but this particular action is not theirs to take
    /// (approving their own change, deciding a change assigned to someone else).
    #[error("{0}")]
    NotAllowed(String),
    /// 404.
    #[error("{what} '{id}' does not exist")]
    NotFound { what: &'static str, id: String },
    /// 409: the request conflicts with the current state (duplicate name, still in use, ...).
    #[error("{0}")]
    Conflict(String),
    /// 422: one or more fields are invalid.
    #[error("{}", describe(.0))]
    Validation(Vec<FieldProblem>),
    /// 413: what was sent is larger than this server takes (the message says the limit).
    #[error("{0}")]
    TooLarge(String),
    /// A 4xx decided by the HTTP layer (malformed JSON, wrong type, body too large, ...). Only
    /// `api/` builds it (tests/tests/tidy.rs): domain code says what happened, not a status.
    #[error("{detail}")]
    Rejected { status: u16, detail: String },
    /// 500: a database failure (`store::Error`). Logged, never echoed.
    #[error("database error: {0}")]
    Store(#[from] crate::store::Error),
    /// 500: the vault could not seal or open a secret (wrong master key, tampered row).
    #[error("vault error: {0}")]
    Crypto(String),
    /// Reading or writing a local file (master key, certificate, data dir).
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    /// Bad configuration given on the command line, in the environment or the config file.
    #[error("{0}")]
    Config(String),
    /// A listener could not be loaded (bad manifest, not a component, ungranted import, ...).
    #[error("{0}")]
    Listener(#[from] lockstep_runtime::Error),
    /// 503: what authorizes callers cannot be trusted (the registry ledger fails its checks);
    /// nothing is served until an operator repairs it.
    #[error("integrity check failed: {0}")]
    Untrusted(String),
    /// 500: an invariant broke (a stored value that cannot be decoded, ...).
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    pub fn validation(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Error::Validation(vec![FieldProblem::new(field, problem)])
    }

    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let context = context.into();
        move |source| Error::Io { context, source }
    }
}

/// `field: problem; field: problem` — the `detail` of a validation problem.
pub fn describe(problems: &[FieldProblem]) -> String {
    problems
        .iter()
        .map(|p| format!("{}: {}", p.field, p.problem))
        .collect::<Vec<_>>()
        .join("; ")
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
