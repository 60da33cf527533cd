//! The crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong while loading data, fitting or evaluating a model.
///
/// Messages name the file, row (1-based, header = row 1) or column involved and what was expected.
#[derive(Debug, thiserror::Error)]
pub enum RegressionError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The CSV reader failed (bad quoting, invalid UTF-8...).
    #[error("{path}: CSV error: {source}")]
    Csv {
        /// The file (`<reader>` when reading from memory).
        path: PathBuf,
        /// The underlying error.
        source: csv::Error,
    },
    /// A CSV row has a different number of fields than the header.
    #[error("{path}: row {row} has {found} fields, the header has {expected}")]
    ColumnCount {
        /// The file.
        path: PathBuf,
        /// 1-based line of the row (the header is row 1).
        row: usize,
        /// Fields in the header.
        expected: usize,
        /// Fields in this row.
        found: usize,
    },
    /// A CSV field is not a number.
    #[error("{path}: row {row}, column `{column}`: `{value}` is not a number")]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line of the row (the header is row 1).
        row: usize,
        /// Column name.
        column: String,
        /// The offending text.
        value: String,
    },
    /// A header name is malformed or repeated.
    #[error("column `{column}`: {reason}")]
    BadColumn {
        /// Column name.
        column: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A feature or target value is NaN or infinite.
    #[error("row {row} (`{id}`), column `{column}`: value {value} is not finite")]
    NonFinite {
        /// 0-based data row.
        row: usize,
        /// Row identifier (mixture name).
        id: String,
        /// Column name.
        column: String,
        /// The value.
        value: f64,
    },
    /// Array shapes disagree with each other or with the column names.
    #[error("{what}: expected {expected}, found {found}")]
    Shape {
        /// What was being checked.
        what: String,
        /// Expected size.
        expected: usize,
        /// Actual size.
        found: usize,
    },
    /// A feature group, column or target name that the dataset does not have.
    #[error("unknown {kind} `{name}`; available: {available}")]
    Unknown {
        /// "feature group", "target", "feature column".
        kind: &'static str,
        /// The requested name.
        name: String,
        /// Comma-separated names that exist.
        available: String,
    },
    /// Too few rows for the requested operation (folds, fitting).
    #[error("{what}: needs at least {needed} rows, got {rows}")]
    TooFewRows {
        /// What needed them.
        what: String,
        /// Rows needed.
        needed: usize,
        /// Rows available.
        rows: usize,
    },
    /// A target column with a single value: nothing to learn or rank.
    #[error("target `{target}` is constant ({value}); it cannot be regressed or ranked")]
    ConstantTarget {
        /// Target name.
        target: String,
        /// Its only value.
        value: f64,
    },
    /// A hyper-parameter outside its valid range.
    #[error("{family}: parameter `{param}` = {value}: {expected}")]
    InvalidParam {
        /// Model family.
        family: &'static str,
        /// Parameter name.
        param: &'static str,
        /// Its value, as text.
        value: String,
        /// What is allowed.
        expected: &'static str,
    },
    /// Candidates given to `predict` do not have the columns the model was fitted on.
    #[error("prediction input has {found} columns, the model was fitted on {expected} ({names})")]
    FeatureMismatch {
        /// Columns the model expects.
        expected: usize,
        /// Columns given.
        found: usize,
        /// The expected column names.
        names: String,
    },
    /// A model family could not be fitted (numerical failure, library error).
    #[error("{family}: fit failed: {message}")]
    Fit {
        /// Model family.
        family: &'static str,
        /// What failed.
        message: String,
    },
}

impl From<datamix_io::Error> for RegressionError {
    fn from(e: datamix_io::Error) -> Self {
        let (path, source) = e.into_parts();
        Self::Io { path, source }
    }
}

/// Shorthand for results in this crate.
pub type Result<T, E = RegressionError> = std::result::Result<T, E>;
