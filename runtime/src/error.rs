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
}

fn display_problems(problems: &[Problem]) -> String {
    let lines: Vec<String> = problems.iter().map(Problem::to_string).collect();
    lines.join("\n")
}
