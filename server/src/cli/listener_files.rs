//! Reading a listener's files from disk for the command line (`listener test`, `sign`,
//! `verify`), with errors that name the file.

use std::path::Path;

use lockstep_runtime::Manifest;

use crate::error::{Error, Result};

/// The bytes of a file; `what` names it in the error ("component", "signature", ...).
pub fn read_bytes(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(Error::io(format!("cannot read {what} {}", path.display())))
}

/// A UTF-8 text file.
pub fn read_text(path: &Path, what: &str) -> Result<String> {
    String::from_utf8(read_bytes(path, what)?)
        .map_err(|_| Error::Config(format!("{what} {} is not UTF-8 text", path.display())))
}

/// A listener manifest, parsed and validated; every problem listed in the error.
pub fn read_manifest(path: &Path) -> Result<Manifest> {
    Manifest::parse(&read_text(path, "manifest")?)
        .map_err(|e| Error::Config(format!("manifest {}:\n{e}", path.display())))
}
