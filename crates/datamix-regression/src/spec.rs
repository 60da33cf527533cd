//! Serializable model choices (for configs and the optimizer): a [`RegressorSpec`] builds a
//! validated [`Regressor`].

use linfa::ParamGuard;

use crate::baseline::{MdeAloneParams, MeanParams};
use crate::error::Result;
use crate::gbdt::GbdtParams;
use crate::gp::{GpParams, Kernel};
use crate::linear::{ElasticNetParams, RidgeParams};
use crate::model::Regressor;

fn yes() -> bool {
    true
}

/// A model family and its hyper-parameters, as written in a config (`family = "gp"` ...).
/// Omitted fields take the family's defaults.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "family", rename_all = "kebab-case", deny_unknown_fields)]
pub enum RegressorSpec {
    /// Empirical mean.
    Mean,
    /// The MDE loss itself, optionally affinely calibrated.
    MdeAlone {
        /// Fit `a·mde + b`.
        #[serde(default = "yes")]
        calibrate: bool,
    },
    /// Ridge regression.
    Ridge {
        /// L2 penalty.
        alpha: Option<f64>,
    },
    /// Elastic net.
    ElasticNet {
        /// Overall penalty.
        alpha: Option<f64>,
        /// L1 share.
        l1_ratio: Option<f64>,
    },
    /// Gaussian process.
    Gp {
        /// Kernel shape.
        kernel: Option<Kernel>,
        /// Random optimiser restarts.
        restarts: Option<usize>,
        /// Seed of the restarts.
        seed: Option<u64>,
    },
    /// Gradient-boosted trees.
    Gbdt {
        /// Boosting rounds.
        n_trees: Option<usize>,
        /// Shrinkage.
        learning_rate: Option<f32>,
        /// Leaves per tree.
        max_leaves: Option<usize>,
        /// Minimum rows per leaf.
        min_leaf: Option<f32>,
        /// Early stopping after this many rounds without a better validation error
        /// ([`GbdtParams::early_stopping`]); none = all `n_trees`.
        #[serde(default)]
        early_stopping_rounds: Option<usize>,
        /// Share of the rows (the last ones) that validate, with `early_stopping_rounds`
        /// (default 0.2).
        #[serde(default)]
        validation_share: Option<f64>,
    },
}

impl RegressorSpec {
    /// Validates the hyper-parameters and returns the family.
    pub fn build(&self) -> Result<Box<dyn Regressor>> {
        Ok(match self.clone() {
            RegressorSpec::Mean => Box::new(MeanParams),
            RegressorSpec::MdeAlone { calibrate } => Box::new(MdeAloneParams { calibrate }),
            RegressorSpec::Ridge { alpha } => {
                let mut p = RidgeParams::new();
                if let Some(a) = alpha {
                    p = p.alpha(a);
                }
                Box::new(p.check()?)
            }
            RegressorSpec::ElasticNet { alpha, l1_ratio } => {
                let mut p = ElasticNetParams::new();
                if let Some(a) = alpha {
                    p = p.alpha(a);
                }
                if let Some(r) = l1_ratio {
                    p = p.l1_ratio(r);
                }
                Box::new(p.check()?)
            }
            RegressorSpec::Gp {
                kernel,
                restarts,
                seed,
            } => {
                let mut p = GpParams::new();
                if let Some(k) = kernel {
                    p = p.kernel(k);
                }
                if let Some(r) = restarts {
                    p = p.restarts(r);
                }
                if let Some(s) = seed {
                    p = p.seed(s);
                }
                Box::new(p.check()?)
            }
            RegressorSpec::Gbdt {
                n_trees,
                learning_rate,
                max_leaves,
                min_leaf,
                early_stopping_rounds,
                validation_share,
            } => {
                let mut p = GbdtParams::new();
                if let Some(n) = n_trees {
                    p = p.n_trees(n);
                }
                if let Some(l) = learning_rate {
                    p = p.learning_rate(l);
                }
                if let Some(l) = max_leaves {
                    p = p.max_leaves(l);
                }
                if let Some(m) = min_leaf {
                    p = p.min_leaf(m);
                }
                if let Some(r) = early_stopping_rounds {
                    p = p.early_stopping(r, validation_share.unwrap_or(0.2));
                }
                Box::new(p.check()?)
            }
        })
    }
}
