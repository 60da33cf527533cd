//! Mixture of Data Experts (Belenki et al. 2025): estimate the loss a model trained on
//! data mixture λ would reach, from k domain experts, with no new training or inference.
//!
//! This crate owns:
//! - [`ExpertTable`]: for one eval domain, each expert's log-probability of the true next
//!   token at each of T positions, with metadata (expert ids, tokenizer and checkpoint
//!   hashes), built one expert at a time ([`ExpertTableBuilder`]) and stored atomically as
//!   safetensors;
//! - the MDE loss `L(λ) = -(1/T) Σ_t ln Σ_i λ_i p_i(t)`, exactly with its gradient
//!   ([`ExpertTable::loss_and_grad`]) and fast for many mixtures ([`ExpertTable::losses`]);
//! - the exact convex optimum of a weighted sum of domain losses over the simplex with
//!   per-domain bounds, with a certified duality gap ([`minimize`]);
//! - the feature matrix the regression crate consumes ([`mde_features`]).
//!
//! It must NOT know about models, Burn or the decoder: callers hand it the per-token
//! log-probabilities (`Vec<f32>`) that the decoder's evaluation returns. It knows nothing
//! of regression or search beyond producing features and the MDE-only optimum.

mod error;
pub mod fastln;
mod loss;
mod optimum;
pub mod simplex;
mod table;

pub use error::{MdeError, MixtureProblem, Result};
pub use loss::{SUM_TOLERANCE, batched_kernel, mde_features, validate_mixture};
pub use optimum::{Bounds, Optimum, OptimumParams, WeightedMdeLoss, minimize};
pub use table::{ExpertTable, ExpertTableBuilder, TableMeta};
