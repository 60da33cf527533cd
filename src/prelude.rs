//! The common types of every crate, for `use datamix::prelude::*;`.
//!
//! Names are unique across the crates, so a glob import brings no ambiguity: the MDE
//! crate's weighted loss is [`WeightedMdeLoss`] (the optimizer's trait is [`Objective`]), a
//! BO surrogate's prediction is [`SurrogatePrediction`] (a regression model's is
//! [`Prediction`]), a corpus input is [`CorpusSource`], a regression family choice is
//! [`RegressorSpec`]. `Result` is left out so that it does not shadow `std`'s: use
//! [`crate::Result`].
//!
//! Fit a GP on a swarm, then search its predicted objective under a lower bound:
//!
//! ```
//! use datamix::prelude::*;
//!
//! let data = synthetic(&SyntheticSpec { n_mixtures: 24, ..Default::default() });
//! let task = data.task(&["lambda"], "e0")?;
//! let model = GpParams::new().fit(&task)?;
//! let k = task.x.ncols();
//! let domains: Vec<String> = (0..k).map(|i| format!("d{i}")).collect();
//! let space = SearchSpace::builder_named(domains).lower(vec![0.05; k]).build()?;
//! let objective = ModelObjective::new(model, &space, None)?;
//! let best: OptimResult = CmaEs::new().seed(0).minimize(&space, &objective)?;
//! space.check(&best.mixture)?;
//! assert!(best.mixture.iter().all(|&w| w >= 0.05 - 1e-9));
//! assert!(best.uncertainty.is_some()); // a GP knows its uncertainty
//! # Ok::<(), datamix::Error>(())
//! ```

pub use crate::error::Error;
#[cfg(feature = "study")]
pub use crate::study::StudyConfig;
#[cfg(feature = "decoder")]
pub use datamix_decoder::{BackendKind, DecoderConfig};
#[cfg(feature = "mde")]
pub use datamix_mde::{ExpertTable, ExpertTableBuilder, OptimumParams, WeightedMdeLoss};
#[cfg(feature = "merge")]
pub use datamix_merge::{MergeMethod, MergePlan};
#[cfg(feature = "optimizer")]
pub use datamix_optimizer::{
    Acquisition, BayesOpt, BoConfig, CmaEs, DirichletSearch, ExponentiatedGradient, MdeFeatures,
    MdeObjective, Method, ModelObjective, Objective, OptimResult, ProjectedGradient,
    RegressionSurrogate, SearchSpace, Surrogate, SurrogatePrediction, TokenLimits, mde_exact,
};
#[cfg(feature = "partition")]
pub use datamix_partition::{CorpusSource, Mixture, PartitionConfig, Partitioner};
#[cfg(feature = "regression")]
pub use datamix_regression::{
    Column, ComparisonTable, Dataset, ElasticNetParams, FeatureSet, Folds, GbdtParams, GpParams,
    Kernel, MdeAloneParams, MeanParams, Metrics, Prediction, Predictor, Regressor, RegressorSpec,
    RidgeParams, SyntheticSpec, Task, compare, cross_validate, synthetic,
};
