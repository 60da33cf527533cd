//! The facade's error type: every crate's error, plus study-level problems.

use std::path::{Path, PathBuf};

/// Anything a datamix pipeline can fail with.
///
/// The per-crate variants exist only when their crate's feature is on, so the enum is
/// `#[non_exhaustive]`: a feature another crate in the build turns on must not break a match.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// From the partitioner (corpus, rules, tokenizer, shards).
    #[cfg(feature = "partition")]
    #[error(transparent)]
    Partition(#[from] datamix_partition::PartitionError),
    /// From the decoder (config, training, checkpoints, evaluation).
    #[cfg(feature = "decoder")]
    #[error(transparent)]
    Decoder(#[from] datamix_decoder::DecoderError),
    /// From merging.
    #[cfg(feature = "merge")]
    #[error(transparent)]
    Merge(#[from] datamix_merge::MergeError),
    /// From the MDE tables and losses.
    #[cfg(feature = "mde")]
    #[error(transparent)]
    Mde(#[from] datamix_mde::MdeError),
    /// From fitting or evaluating regression models.
    #[cfg(feature = "regression")]
    #[error(transparent)]
    Regression(#[from] datamix_regression::RegressionError),
    /// From the mixture search.
    #[cfg(feature = "optimizer")]
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

/// Shorthand for results in this crate.
pub type Result<T> = std::result::Result<T, Error>;
