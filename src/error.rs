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
    /// Jobs of a study's graph whose models are not in the pool (`finish` before the
    /// jobs are done, or `run-job` before its dependencies are).
    #[error("{} job(s) not in the pool {}: {} (train them with `datamix study run-job` or `datamix study worker`)", ids.len(), pool.display(), ids.join(", "))]
    JobsMissing {
        /// The pool.
        pool: PathBuf,
        /// Their ids, in graph order.
        ids: Vec<String>,
    },
    /// A job id that is not in the study's graph.
    #[error("no job `{id}` in this study's plan (its {} jobs: {}; see `datamix study plan`)", known.len(), summary(known))]
    UnknownJob {
        /// The id asked for.
        id: String,
        /// The graph's job ids.
        known: Vec<String>,
    },
    /// A job script emitted for one plan run against a config that now implies another.
    #[error(
        "plan mismatch: the scripts were emitted for plan {expected}, this config gives plan {actual} (the config or the data changed since: emit the scripts again)"
    )]
    PlanMismatch {
        /// The plan id the caller expects (`--expect-plan`).
        expected: String,
        /// The plan id of the config now.
        actual: String,
    },
    /// A pool whose entries were written by an incompatible version of datamix (their
    /// descriptions, hence their keys, follow another format).
    #[error(
        "pool {}: entry {entry} was written by another version of datamix (model description format `{found}`, this version writes `{expected}`): its models would never be found again. Move the pool aside or delete it (or set another out_dir)", pool.display()
    )]
    PoolFormat {
        /// The pool.
        pool: PathBuf,
        /// The entry looked at.
        entry: String,
        /// Its description's format.
        found: String,
        /// This version's.
        expected: String,
    },
    /// A pool this process cannot write to.
    #[error("pool {}: not writable ({source}); models could not be stored (check the permissions, the mount, the free space)", pool.display())]
    PoolUnwritable {
        /// The pool.
        pool: PathBuf,
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

/// The first few ids and the last one.
fn summary(ids: &[String]) -> String {
    if ids.len() <= 8 {
        ids.join(", ")
    } else {
        format!("{}, …, {}", ids[..6].join(", "), ids[ids.len() - 1])
    }
}

/// Shorthand for results in this crate.
pub type Result<T> = std::result::Result<T, Error>;
