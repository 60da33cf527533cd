//! The crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong while building a search space or searching it.
///
/// User input (bounds, budgets, mixtures, objective values) never panics: it ends up here,
/// with the field, domain or point that was wrong and what was expected.
#[derive(Debug, thiserror::Error)]
pub enum OptimizerError {
    /// A search space needs at least one domain.
    #[error("search space has no domains: expected at least one")]
    NoDomains,
    /// A per-domain vector has the wrong length.
    #[error("`{field}` has {got} entries, expected one per domain ({expected})")]
    DimensionMismatch {
        /// Name of the offending field or argument.
        field: &'static str,
        /// Number of domains.
        expected: usize,
        /// Length that was given.
        got: usize,
    },
    /// A number that must be finite and inside a range is not.
    #[error("`{field}` of domain {domain} ({name}) is {value}, expected {expected}")]
    InvalidValue {
        /// Field name (`lower`, `upper`, `tokens`, `prior`...).
        field: &'static str,
        /// Domain index.
        domain: usize,
        /// Domain name.
        name: String,
        /// Value that was given.
        value: f64,
        /// What was expected.
        expected: &'static str,
    },
    /// A domain's lower bound is above its (possibly token-limited) upper bound.
    #[error(
        "domain {domain} ({name}): lower bound {lower} exceeds upper bound {upper} \
         (upper bound includes token-availability limits)"
    )]
    EmptyInterval {
        /// Domain index.
        domain: usize,
        /// Domain name.
        name: String,
        /// Lower bound.
        lower: f64,
        /// Effective upper bound.
        upper: f64,
    },
    /// The lower bounds (including fixed domains) sum to more than one.
    #[error("infeasible bounds: lower bounds (incl. fixed domains) sum to {sum} > 1")]
    LowerBoundsAboveOne {
        /// Sum of the lower bounds.
        sum: f64,
    },
    /// The upper bounds (including token limits) sum to less than one.
    #[error(
        "infeasible bounds: upper bounds (incl. fixed domains and token limits) sum to {sum} < 1"
    )]
    UpperBoundsBelowOne {
        /// Sum of the effective upper bounds.
        sum: f64,
    },
    /// The training budget for token-availability limits is zero or not finite.
    #[error("token budget is {0}, expected a finite number of tokens > 0")]
    InvalidBudget(f64),
    /// The objective returned NaN or an infinity.
    #[error("objective returned {value} at mixture {x:?}, expected a finite number")]
    NonFiniteObjective {
        /// Mixture at which the objective was evaluated.
        x: Vec<f64>,
        /// Returned value.
        value: f64,
    },
    /// The objective's gradient had the wrong length or a non-finite entry.
    #[error("objective gradient at mixture {x:?} is invalid: {reason}")]
    InvalidGradient {
        /// Mixture at which the gradient was evaluated.
        x: Vec<f64>,
        /// What was wrong.
        reason: String,
    },
    /// A gradient method was given an objective without a gradient.
    #[error("method `{method}` needs a gradient, but the objective provides none")]
    GradientUnavailable {
        /// Method name.
        method: &'static str,
    },
    /// A method or loop parameter is out of range.
    #[error("parameter `{name}` of `{owner}` is {value}, expected {expected}")]
    InvalidParameter {
        /// Method or component name.
        owner: &'static str,
        /// Parameter name.
        name: &'static str,
        /// Value that was given, formatted.
        value: String,
        /// What was expected.
        expected: &'static str,
    },
    /// A mixture given by the caller is not inside the search space.
    #[error("mixture {x:?} is outside the search space: {reason}")]
    InfeasibleMixture {
        /// The mixture.
        x: Vec<f64>,
        /// Which constraint it violates.
        reason: String,
    },
    /// An observed objective value is NaN or infinite.
    #[error("observed value {value} for mixture {x:?} is not finite")]
    NonFiniteObservation {
        /// The mixture.
        x: Vec<f64>,
        /// Observed value.
        value: f64,
    },
    /// The surrogate model failed to fit or predict.
    #[error("surrogate model failed: {0}")]
    Surrogate(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The derivative-free backend rejected its options.
    #[error("CMA-ES rejected its options: {0}")]
    Cmaes(String),
    /// Writing a result file failed.
    #[error("cannot write {path}: {source}")]
    Io {
        /// Destination path.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
    /// (De)serialising a result failed.
    #[error("JSON error: {0}")]
    Json(#[from] serde_json::Error),
}

/// Result alias for this crate.
pub type Result<T, E = OptimizerError> = std::result::Result<T, E>;
