//! Mixture search: chooses the data mixture λ that minimises a (predicted) loss.
//!
//! This crate owns
//! - the constrained search space ([`SearchSpace`]): the simplex with per-domain bounds,
//!   fixed domains, token-availability limits (`λ_i · budget ≤ max_epochs_i · tokens_i`)
//!   and a prior mixture, validated into typed errors ([`OptimizerError`]);
//! - exact projections onto it ([`projection`]), which every method goes through, so
//!   every returned mixture is feasible;
//! - the [`Objective`] trait (value, optional gradient, optional uncertainty), implemented
//!   for any `Fn(&[f64]) -> f64`;
//! - search methods as interchangeable strategies behind [`Method`]: RegMix-style
//!   Dirichlet sampling with top-k averaging ([`DirichletSearch`]), projected and
//!   exponentiated gradient ([`ProjectedGradient`], [`ExponentiatedGradient`]), and CMA-ES
//!   ([`CmaEs`]);
//! - a Bayesian-optimisation loop ([`BayesOpt`]) with a `suggest` / `observe` API over any
//!   [`Surrogate`];
//! - serialisable results ([`OptimResult`]).
//!
//! It must not know how losses are produced: no model training, no token probabilities,
//! no file formats of other crates. Objectives and surrogates come in through traits; the
//! adapters to MDE features and regression models are the only places that name those
//! crates. All randomness is seeded.
//!
//! ```rust
//! use datamix_optimizer::{DirichletSearch, Method, SearchSpace};
//!
//! let space = SearchSpace::builder_named(["web", "code", "books"])
//!     .lower(vec![0.1, 0.1, 0.1])
//!     .build()?;
//! // Any closure is an objective; here a bowl with its minimum at (0.5, 0.3, 0.2).
//! let loss = |x: &[f64]| (x[0] - 0.5).powi(2) + (x[1] - 0.3).powi(2) + (x[2] - 0.2).powi(2);
//! let best = DirichletSearch::new(20_000, 50).seed(0).minimize(&space, &loss)?;
//! space.check(&best.mixture)?;
//! assert!(best.objective < 1e-2);
//! # Ok::<(), datamix_optimizer::OptimizerError>(())
//! ```

pub mod bo;
mod error;
pub mod mde;
pub mod method;
pub mod objective;
pub mod projection;
mod result;
mod space;
pub mod surrogate;

pub use bo::{
    Acquisition, BayesOpt, BoConfig, BoState, Observation, Surrogate, SurrogatePrediction,
};
pub use error::{OptimizerError, Result};
pub use mde::{MdeFeatures, MdeObjective, mde_exact};
pub use method::{
    CmaEs, DirichletSearch, ExponentiatedGradient, Method, MethodConfig, ProjectedGradient,
};
pub use objective::{Objective, WithGradient};
pub use result::{OptimResult, TraceEntry};
pub use space::{FEASIBILITY_TOLERANCE, SearchSpace, SearchSpaceBuilder, TokenLimits};
pub use surrogate::{FeatureMap, ModelObjective, RegressionSurrogate};

/// The examples in README.md compile and pass (the crate page on crates.io shows them).
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
