//! The crate's error types.

use std::path::{Path, PathBuf};

/// A failed file-system operation, naming the path it was about.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading, writing, syncing or renaming `path` failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

impl Error {
    /// An I/O error on `path`.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// The path the error is about.
    pub fn path(&self) -> &Path {
        match self {
            Self::Io { path, .. } => path,
        }
    }

    /// Splits the error into its path and cause (to wrap it in another crate's error).
    pub fn into_parts(self) -> (PathBuf, std::io::Error) {
        match self {
            Self::Io { path, source } => (path, source),
        }
    }
}

/// A buffer that is not a well-formed safetensors file (see [`crate::sorted_header`]).
#[derive(Debug, thiserror::Error)]
#[error("not a safetensors buffer: {0}")]
pub struct HeaderError(pub String);

/// Shorthand for results of this crate's file operations.
pub type Result<T> = std::result::Result<T, Error>;
