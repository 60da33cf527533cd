//! The facade's error type: every crate's error, plus study-level problems.

use std::path::{Path, PathBuf};

/// Anything a datamix pipeline can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// From the partitioner (corpus, rules, tokenizer, shards).
    #[error(transparent)]
    Partition(#[from] datamix_partition::PartitionError),
    /// From the decoder (config, training, checkpoints, evaluation).
    #[error(transparent)]
    Decoder(#[from] datamix_decoder::DecoderError),
    /// From merging.
    #[error(transparent)]
    Merge(#[from] datamix_merge::MergeError),
    /// From the MDE tables and losses.
    #[error(transparent)]
    Mde(#[from] datamix_mde::MdeError),
    /// From fitting or evaluating regression models.
    #[error(transparent)]
    Regression(#[from] datamix_regression::RegressionError),
    /// From the mixture search.
    #[error(transparent)]
    Optimizer(#[from] datamix_optimizer::OptimizerError),
    /// A study configuration file that cannot be read or parsed.
    #[error("study config {path}: {message}")]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong (names the key).
        message: String,
    },
    /// A file-system operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Invalid study input (named in the message).
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    /// An I/O error on `path`.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

impl From<datamix_io::Error> for Error {
    fn from(e: datamix_io::Error) -> Self {
        let (path, source) = e.into_parts();
        Self::Io { path, source }
    }
}

/// Shorthand for results in this crate.
pub type Result<T> = std::result::Result<T, Error>;
