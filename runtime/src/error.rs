//! The crate's one error type.

use std::fmt;

use serde::Serialize;

/// One rule a manifest breaks, with the field at fault.
///
/// The shape matches the API's validation `errors` list, so the server can pass it through.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// The field path, e.g. `capabilities.network[1]`.
    pub field: String,
    /// What is wrong, then after a semicolon how to fix it.
    pub problem: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.problem)
    }
}

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The manifest is not TOML of the manifest's shape (bad syntax, an unknown field, a
    /// wrong type). Parsing stops at the first such error.
    #[error("manifest line {line}, column {column}: {message}")]
    Syntax {
        /// 1-based line of the error.
        line: usize,
        /// 1-based column (in characters) of the error.
        column: usize,
        /// What the TOML reader found.
        message: String,
    },
    /// The manifest has the right shape but breaks one or more rules; all are listed, one
    /// per line when displayed.
    #[error("{}", display_problems(.0))]
    Invalid(Vec<Problem>),
    /// The wasmtime engine could not be built or linked.
    #[error("listener engine: {0}")]
    Engine(String),
    /// The compiled-component cache could not be used.
    #[error("component cache: {0}")]
    Cache(String),
    /// The bytes are not a WebAssembly component.
    #[error("not a WebAssembly component: {0}")]
    NotAComponent(String),
    /// The component is refused before compiling: compiling it would cost too much
    /// ([`crate::limits::check_code`]).
    #[error("the component is too costly to compile: {0}")]
    TooCostly(String),
    /// The component failed to compile.
    #[error("the component does not compile: {0}")]
    Compile(String),
    /// The component imports an interface its manifest does not grant.
    #[error(
        "the component imports '{import}', which needs {grant}; grant it in the manifest or remove the import"
    )]
    UngrantedImport {
        /// The import's full name, e.g. `lockstep:listener/secrets@0.1.0`.
        import: String,
        /// The manifest field that would grant it.
        grant: &'static str,
    },
    /// The component does not fit the listener world (a missing hook, a wrong signature).
    #[error("the component does not implement a lockstep:listener world (0.1.0 or 0.2.0): {0}")]
    Link(String),
    /// A publisher key or signature file cannot be read or is malformed.
    #[error("{0}")]
    Key(String),
    /// A signature does not match the component, the manifest or the key.
    #[error("the signature does not verify: {0}")]
    SignatureInvalid(String),
    /// The manifest asks for something this host cannot provide yet.
    #[error("{0}")]
    Unsupported(String),
}

fn display_problems(problems: &[Problem]) -> String {
    let lines: Vec<String> = problems.iter().map(Problem::to_string).collect();
    lines.join("\n")
}
