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
//!
//! ```rust
//! use datamix_mde::{Bounds, ExpertTableBuilder, OptimumParams, WeightedMdeLoss, minimize};
//!
//! // Two experts' log-probabilities of the true next token at 4 positions of one eval set.
//! let mut builder = ExpertTableBuilder::new("web_val", "tokenizer-hash");
//! builder.add_expert("web", "ckpt-a", &[-0.5, -1.0, -2.0, -0.7])?;
//! builder.add_expert("code", "ckpt-b", &[-2.0, -0.4, -0.3, -3.0])?;
//! let table = builder.build()?;
//!
//! let loss = table.loss(&[0.7, 0.3])?; // MDE estimate of the loss of the 70/30 mixture
//! let many = table.losses(&[vec![1.0, 0.0], vec![0.5, 0.5]])?;
//! assert!((many[0] - table.expert_cross_entropy(0)).abs() < 1e-6);
//!
//! // The mixture with the lowest MDE loss on this eval set.
//! let objective = WeightedMdeLoss::new(&[&table], &[1.0])?;
//! let best = minimize(&objective, &Bounds::simplex(2), &OptimumParams::default())?;
//! assert!(best.value <= loss + best.gap);
//! # Ok::<(), datamix_mde::MdeError>(())
//! ```

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

/// The examples in README.md compile and pass (the crate page on crates.io shows them).
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
