//! The facade's error type: every crate's error, plus study-level problems.

/// Anything a datamix pipeline can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// From the decoder (config, training, checkpoints, evaluation).
    #[error(transparent)]
    Decoder(#[from] datamix_decoder::DecoderError),
    /// From merging.
    #[error(transparent)]
    Merge(#[from] datamix_merge::MergeError),
    /// Invalid study input (named in the message).
    #[error("{0}")]
    Invalid(String),
}

/// Shorthand for results in this crate.
pub type Result<T> = std::result::Result<T, Error>;
