//! The crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong while reading, partitioning, tokenizing, packing or sampling.
///
/// Messages name the file, line, field or domain concerned and what was expected.
#[derive(Debug, thiserror::Error)]
pub enum PartitionError {
    /// An I/O error on a named file.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A line of a JSONL file is not a JSON object.
    #[error("{path}:{line}: malformed JSON record: {message}")]
    MalformedRecord {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: u64,
        /// What the parser said.
        message: String,
    },
    /// Text that is not valid UTF-8 (a `.txt` line, a JSONL line, or a file of a folder
    /// source, where `line` is 0).
    #[error("{}: not valid UTF-8 text (datamix reads text as UTF-8: re-encode the file)", location(path, *line))]
    InvalidUtf8 {
        /// The file.
        path: PathBuf,
        /// 1-based line number (0: the whole file).
        line: u64,
    },
    /// Decontamination removed (nearly) all of a domain's training documents: an eval set
    /// overlaps it.
    #[error(
        "the eval set(s) {eval_sets} overlap training domain `{domain}`: {contaminated} of its \
         {documents} training documents were removed as contaminated (they share a \
         {ngram}-token window with an eval set), too few are left for one {seq_len}-token \
         sequence"
    )]
    Contaminated {
        /// The domain.
        domain: String,
        /// The eval sets.
        eval_sets: String,
        /// Training documents removed.
        contaminated: u64,
        /// Training documents before decontamination.
        documents: u64,
        /// Decontamination window.
        ngram: usize,
        /// The sequence length.
        seq_len: usize,
    },
    /// A record lacks the text field (or it is not a string).
    #[error("{path}:{line}: record has no string field `{field}`")]
    MissingText {
        /// The file.
        path: PathBuf,
        /// 1-based line (or row) number.
        line: u64,
        /// The expected text field.
        field: String,
    },
    /// A Parquet file could not be read, or lacks the text column.
    #[error("{path}: parquet: {message}")]
    Parquet {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A file's format could not be told from its name.
    #[error(
        "{path}: unknown input format (expected .jsonl, .json, .txt, .parquet, optionally .gz/.zst, or a directory)"
    )]
    UnknownFormat {
        /// The file.
        path: PathBuf,
    },
    /// A configuration (TOML) could not be parsed; unknown keys are reported by name.
    #[error("{what}: invalid configuration: {message}")]
    Config {
        /// The file or the kind of configuration.
        what: String,
        /// The parser's message (names the offending key).
        message: String,
    },
    /// A domain rule names a metadata key that no document carries.
    #[error("domain rule names metadata key `{key}`, which no document in {sources} has")]
    UnknownMetadataKey {
        /// The key.
        key: String,
        /// The sources that were read.
        sources: String,
    },
    /// A domain has no (or too few) tokens to fill one training sequence.
    #[error(
        "domain `{domain}` is empty: {tokens} training tokens, need at least one sequence of {seq_len}"
    )]
    EmptyDomain {
        /// The domain.
        domain: String,
        /// Training tokens it has.
        tokens: u64,
        /// The sequence length.
        seq_len: usize,
    },
    /// The tokenizer file is missing or invalid.
    #[error("tokenizer {path}: {message}")]
    Tokenizer {
        /// The tokenizer file (or `<trained>`).
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A manifest or shard does not match what was expected.
    #[error("{path}: {message}")]
    BadShard {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// A parameter is out of range.
    #[error("invalid parameter `{name}`: {message}")]
    InvalidParam {
        /// The parameter.
        name: &'static str,
        /// What was expected.
        message: String,
    },
    /// A mixture does not fit the manifest.
    #[error("invalid mixture: {0}")]
    Mixture(String),
    /// A sampler cursor does not belong to this sampler.
    #[error("cursor does not match this sampler: {0}")]
    Cursor(String),
}

impl PartitionError {
    /// Wraps an I/O error with the path it concerns.
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}

fn location(path: &std::path::Path, line: u64) -> String {
    if line == 0 {
        path.display().to_string()
    } else {
        format!("{}:{line}", path.display())
    }
}

/// Result alias.
pub type Result<T, E = PartitionError> = std::result::Result<T, E>;
