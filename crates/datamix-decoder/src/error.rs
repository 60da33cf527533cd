//! The decoder crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong when configuring, training, evaluating or
/// (de)serialising a decoder. User input never panics: it maps to one of these.
#[derive(Debug, thiserror::Error)]
pub enum DecoderError {
    /// A configuration field has an invalid value.
    #[error("invalid config field `{field}`: {reason}")]
    InvalidConfig {
        /// The offending field, e.g. `d_model`.
        field: &'static str,
        /// What was expected.
        reason: String,
    },
    /// An unknown preset name.
    #[error("unknown model preset `{0}` (expected one of: tiny, small, m70, m130, m1b)")]
    UnknownPreset(String),
    /// A token stream or batch that cannot be used.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// A token id outside the vocabulary.
    #[error(
        "token id {token} at position {position} is outside the vocabulary of size {vocab_size}"
    )]
    TokenOutOfRange {
        /// The token id.
        token: u32,
        /// Its position in the stream.
        position: usize,
        /// The model's vocabulary size.
        vocab_size: usize,
    },
    /// A checkpoint tensor is missing.
    #[error("checkpoint {path}: tensor `{name}` is missing")]
    MissingTensor {
        /// The checkpoint file.
        path: PathBuf,
        /// The tensor name.
        name: String,
    },
    /// A checkpoint holds a tensor the model does not have.
    #[error("checkpoint {path}: unexpected tensor `{name}` (not part of this model)")]
    UnexpectedTensor {
        /// The checkpoint file.
        path: PathBuf,
        /// The tensor name.
        name: String,
    },
    /// A checkpoint tensor's shape or dtype disagrees with the model config.
    #[error("checkpoint {path}: tensor `{name}` has {found}, the config expects {expected}")]
    TensorMismatch {
        /// The checkpoint file.
        path: PathBuf,
        /// The tensor name.
        name: String,
        /// What the file holds.
        found: String,
        /// What the config implies.
        expected: String,
    },
    /// A file that is not valid safetensors (truncated, corrupt header...).
    #[error("checkpoint {path}: not a valid safetensors file: {reason}")]
    CorruptCheckpoint {
        /// The checkpoint file.
        path: PathBuf,
        /// The parser's explanation.
        reason: String,
    },
    /// A JSON file (config, trainer state) that cannot be parsed.
    #[error("{path}: invalid JSON: {source}")]
    Json {
        /// The JSON file.
        path: PathBuf,
        /// The parser error.
        source: serde_json::Error,
    },
    /// An I/O error on a named file.
    #[error("{path}: {source}")]
    Io {
        /// The file being read or written.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A backend that was not compiled in.
    #[error("backend `{0}` is not available in this build (enable its cargo feature)")]
    BackendUnavailable(String),
    /// Training diverged (the loss became NaN or infinite).
    #[error("training diverged at step {step}: loss is {loss}")]
    Diverged {
        /// The optimizer step.
        step: u64,
        /// The non-finite loss.
        loss: f32,
    },
}

/// Shorthand for results in this crate.
pub type Result<T> = std::result::Result<T, DecoderError>;

impl From<datamix_io::Error> for DecoderError {
    fn from(e: datamix_io::Error) -> Self {
        let (path, source) = e.into_parts();
        Self::Io { path, source }
    }
}

pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> DecoderError {
    let path = path.into();
    move |source| DecoderError::Io { path, source }
}
