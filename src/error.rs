//! The configuration error every component's section returns from its validation. A
//! primitive: sections live with their components, so the error they share lives below all
//! of them.

use std::path::PathBuf;

/// A configuration problem, naming the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("invalid config {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The TOML parser's message (names the key and line).
        message: String,
    },
    /// A value is out of range or inconsistent.
    #[error("invalid config: `{key}`: {message}")]
    Invalid {
        /// The dotted key.
        key: String,
        /// What is wrong.
        message: String,
    },
}

/// Whether an error (its whole text, causes included) says a disk or quota is full: ENOSPC
/// or EDQUOT, as the OS reports them. Local writers (checkpoints, the lake, spools) keep what
/// they were given when this happens, and `run` pauses until space returns; any other write
/// error stops it.
pub fn is_disk_full(error: &dyn std::fmt::Display) -> bool {
    let text = error.to_string();
    text.contains("(os error 28)") || text.contains("(os error 122)")
}
