//! The crate's error type.

use std::path::PathBuf;

/// What is wrong with one mixture λ.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MixtureProblem {
    /// The mixture does not have one weight per expert.
    #[error("has {got} weights, expected {expected} (one per expert)")]
    WrongLength {
        /// Number of experts in the table(s).
        expected: usize,
        /// Number of weights given.
        got: usize,
    },
    /// A weight is NaN or infinite.
    #[error("weight {index} is {value}, expected a finite number")]
    NonFinite {
        /// Index of the weight.
        index: usize,
        /// The offending value.
        value: f64,
    },
    /// A weight is negative.
    #[error("weight {index} is {value}, expected >= 0")]
    Negative {
        /// Index of the weight.
        index: usize,
        /// The offending value.
        value: f64,
    },
    /// Every weight is zero.
    #[error("all weights are zero")]
    AllZero,
    /// The weights do not sum to 1.
    #[error("weights sum to {sum}, expected 1 (normalise the mixture)")]
    NotNormalized {
        /// The sum of the weights.
        sum: f64,
    },
}

/// Errors of `datamix-mde`.
#[derive(Debug, thiserror::Error)]
pub enum MdeError {
    /// A mixture λ is invalid; `row` is its index in the list given (0 for a single mixture).
    #[error("mixture row {row}: {problem}")]
    Mixture {
        /// Row of the mixture in the caller's list.
        row: usize,
        /// What is wrong.
        problem: MixtureProblem,
    },
    /// An expert's log-probabilities do not cover the same tokens as the table.
    #[error("eval domain '{domain}', expert '{expert}': {got} tokens, expected {expected}")]
    TokenCountMismatch {
        /// Eval domain of the table.
        domain: String,
        /// Expert id.
        expert: String,
        /// Token count of the table.
        expected: usize,
        /// Token count given.
        got: usize,
    },
    /// Two tables (or a table and an expert) come from different tokenizers.
    #[error("eval domain '{domain}': tokenizer hash '{got}', expected '{expected}'")]
    TokenizerMismatch {
        /// Eval domain of the table being combined.
        domain: String,
        /// Tokenizer hash of the reference table.
        expected: String,
        /// Tokenizer hash found.
        got: String,
    },
    /// Two tables that should describe the same eval domain do not.
    #[error("eval domain '{got}' cannot be combined with eval domain '{expected}'")]
    DomainMismatch {
        /// Eval domain of the reference table.
        expected: String,
        /// Eval domain found.
        got: String,
    },
    /// A requested expert is not in the table.
    #[error("eval domain '{domain}': expert '{expert}' is missing (table has {available:?})")]
    MissingExpert {
        /// Eval domain of the table.
        domain: String,
        /// Requested expert id.
        expert: String,
        /// Expert ids the table has.
        available: Vec<String>,
    },
    /// An expert id appears twice.
    #[error("eval domain '{domain}': expert '{expert}' appears twice")]
    DuplicateExpert {
        /// Eval domain of the table.
        domain: String,
        /// The duplicated expert id.
        expert: String,
    },
    /// Tables used together do not list the same experts in the same order.
    #[error(
        "eval domain '{domain}' has experts {got:?}, expected {expected:?} (align tables with ExpertTable::select)"
    )]
    ExpertMismatch {
        /// Eval domain of the mismatching table.
        domain: String,
        /// Expert ids of the first table.
        expected: Vec<String>,
        /// Expert ids of this table.
        got: Vec<String>,
    },
    /// A log-probability is NaN, infinite or positive.
    #[error(
        "eval domain '{domain}', expert '{expert}', token {position}: log-probability {value}, expected a finite value <= 0"
    )]
    InvalidLogProb {
        /// Eval domain of the table.
        domain: String,
        /// Expert id.
        expert: String,
        /// Token position.
        position: usize,
        /// The offending value.
        value: f32,
    },
    /// A table with no experts or no tokens.
    #[error("eval domain '{domain}': table is empty ({reason})")]
    EmptyTable {
        /// Eval domain of the table.
        domain: String,
        /// Why it is empty.
        reason: &'static str,
    },
    /// An invalid parameter (objective weights, bounds, solver settings).
    #[error("invalid {name}: {reason}")]
    InvalidParam {
        /// Name of the parameter.
        name: String,
        /// What was expected.
        reason: String,
    },
    /// Reading or writing a table file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A table file is not a valid MDE table.
    #[error("{path}: {reason}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

impl From<datamix_io::Error> for MdeError {
    fn from(e: datamix_io::Error) -> Self {
        let (path, source) = e.into_parts();
        Self::Io { path, source }
    }
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, MdeError>;
