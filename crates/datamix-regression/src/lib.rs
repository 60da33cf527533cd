//! # datamix-regression
//!
//! Predicts the loss of a data mixture from cheap features: the mixture weights λ, the
//! Mixture-of-Data-Experts losses `L^MDE(λ)` per eval domain, and merged-model losses per eval
//! domain (docs/design.md, "Method 2"). It owns
//!
//! * the [`Dataset`] of trained mixtures (named feature groups, per-eval-domain targets and
//!   weighted objectives, CSV load/save),
//! * model families behind one linfa-style interface: validated parameter builders
//!   ([`linfa::ParamGuard`]) implement [`Regressor::fit`], which returns a [`Predictor`]
//!   (batched `predict` → [`Prediction`] with mean and, where the family has it, std):
//!   [`RidgeParams`], [`ElasticNetParams`], [`GpParams`], [`GbdtParams`], and the baselines
//!   [`MeanParams`] and [`MdeAloneParams`];
//! * evaluation ([`eval`]): k-fold / LOO cross-validation, MSE, Spearman, Pearson, top-1
//!   regret, learning curves and feature-set comparison tables.
//!
//! It must NOT know how features are produced: no decoder, no Burn, no MDE or merge crate.
//! Feature values arrive as data; computing MDE features for candidate mixtures on the fly is
//! the optimizer's job, which holds a `Box<dyn Predictor>` and scores candidate rows.
//!
//! ```
//! use datamix_regression::{GpParams, Regressor, SyntheticSpec, synthetic, eval};
//! let data = synthetic(&SyntheticSpec { n_mixtures: 20, ..Default::default() });
//! let task = data.task(&["lambda", "mde"], "e0").unwrap();
//! let model = GpParams::new().fit(&task).unwrap();
//! let p = model.predict(task.x.view()).unwrap();
//! assert_eq!(p.mean.len(), 20);
//! let cv = eval::cross_validate(&GpParams::new(), &task, &eval::Folds::kfold(20, 5, Some(0)).unwrap()).unwrap();
//! assert!(cv.metrics.spearman > 0.5);
//! ```

pub mod baseline;
pub mod dataset;
pub mod error;
pub mod eval;
pub mod gbdt;
pub mod gp;
pub mod linear;
pub mod model;
pub mod spec;
pub mod synthetic;

pub use baseline::{MdeAloneParams, MeanParams};
pub use dataset::{Column, Dataset, FeatureGroup, Task};
pub use error::{RegressionError, Result};
pub use eval::{
    ComparisonTable, CvResult, FeatureSet, Folds, Metrics, compare, cross_validate, learning_curve,
};
pub use gbdt::{GbdtParams, GbdtValidParams};
pub use gp::{GpParams, GpValidParams, Kernel};
pub use linear::{
    ElasticNetParams, ElasticNetValidParams, LinearModel, RidgeParams, RidgeValidParams,
};
pub use model::{Prediction, Predictor, Regressor};
pub use spec::RegressorSpec;
pub use synthetic::{SyntheticSpec, synthetic};

/// The examples in README.md compile and pass (the crate page on crates.io shows them).
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
