//! The interface every model family implements: validated parameters fit a [`Task`] into a
//! [`Predictor`], which maps candidate feature rows to a [`Prediction`].

use std::fmt::Debug;

use ndarray::{Array1, ArrayView1, ArrayView2, Axis};

use crate::dataset::Task;
use crate::error::{RegressionError, Result};

/// Predicted target for a batch of candidates.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    /// Predicted mean, one per candidate row.
    pub mean: Array1<f64>,
    /// Predictive standard deviation of the mean (families with uncertainty only).
    pub std: Option<Array1<f64>>,
}

/// A fitted model. Object safe and thread safe, so an optimizer can hold a
/// `Box<dyn Predictor>` and score many candidate mixtures in one call.
pub trait Predictor: Send + Sync + Debug {
    /// Headers (`group:name`) of the columns `predict` expects, in order.
    fn feature_names(&self) -> &[String];

    /// Predicts every row of `x` (rows = candidates, columns = [`Predictor::feature_names`]).
    fn predict(&self, x: ArrayView2<'_, f64>) -> Result<Prediction>;

    /// Predicts one candidate.
    fn predict_one(&self, x: ArrayView1<'_, f64>) -> Result<(f64, Option<f64>)> {
        let p = self.predict(x.insert_axis(Axis(0)))?;
        Ok((p.mean[0], p.std.map(|s| s[0])))
    }
}

/// A model family with validated hyper-parameters: fits a [`Task`].
pub trait Regressor: Send + Sync + Debug {
    /// Short family name used in tables (e.g. `ridge`, `gp-matern52`).
    fn name(&self) -> String;

    /// Fits the model on all rows of `task`.
    fn fit(&self, task: &Task) -> Result<Box<dyn Predictor>>;
}

/// Checks that `x` has the columns a predictor was fitted on and only finite values.
pub(crate) fn check_width(names: &[String], x: &ArrayView2<'_, f64>) -> Result<()> {
    if x.ncols() != names.len() {
        return Err(RegressionError::FeatureMismatch {
            expected: names.len(),
            found: x.ncols(),
            names: names.join(", "),
        });
    }
    match x.indexed_iter().find(|(_, v)| !v.is_finite()) {
        None => Ok(()),
        Some(((row, c), &value)) => Err(RegressionError::NonFinite {
            row,
            id: format!("candidate {row}"),
            column: names[c].clone(),
            value,
        }),
    }
}

/// Checks that a task has rows and features a family can use.
pub(crate) fn check_task(family: &'static str, task: &Task, min_rows: usize) -> Result<()> {
    if task.n_rows() < min_rows {
        return Err(RegressionError::TooFewRows {
            what: format!("{family} fit"),
            needed: min_rows,
            rows: task.n_rows(),
        });
    }
    if task.x.ncols() != task.feature_names.len() {
        return Err(RegressionError::Shape {
            what: "task columns vs feature names".into(),
            expected: task.feature_names.len(),
            found: task.x.ncols(),
        });
    }
    Ok(())
}

/// Per-column affine scaling to zero mean and unit variance (constant columns keep scale 1).
#[derive(Debug, Clone)]
pub(crate) struct Scaler {
    pub mean: Array1<f64>,
    pub scale: Array1<f64>,
}

impl Scaler {
    pub fn fit(x: ArrayView2<'_, f64>) -> Self {
        let mean = x
            .mean_axis(Axis(0))
            .unwrap_or_else(|| Array1::zeros(x.ncols()));
        let scale = x
            .std_axis(Axis(0), 0.0)
            .mapv(|s| if s > 1e-12 { s } else { 1.0 });
        Self { mean, scale }
    }

    pub fn transform(&self, x: ArrayView2<'_, f64>) -> ndarray::Array2<f64> {
        (&x - &self.mean) / &self.scale
    }
}

/// Mean and scale of a target (scale 1 when constant).
pub(crate) fn target_scale(y: ArrayView1<'_, f64>) -> (f64, f64) {
    let m = y.mean().unwrap_or(0.0);
    let s = y.std(0.0);
    (m, if s > 1e-12 { s } else { 1.0 })
}

/// Implements linfa's `ParamGuard` for a `Params(Valid)` newtype pair and `Regressor`
/// for the unchecked form (checking first).
macro_rules! param_guard {
    ($params:ident, $valid:ident) => {
        impl linfa::ParamGuard for $params {
            type Checked = $valid;
            type Error = $crate::error::RegressionError;
            fn check_ref(&self) -> $crate::error::Result<&$valid> {
                self.0.validate()?;
                Ok(&self.0)
            }
            fn check(self) -> $crate::error::Result<$valid> {
                self.0.validate()?;
                Ok(self.0)
            }
        }

        impl $crate::model::Regressor for $params {
            fn name(&self) -> String {
                $crate::model::Regressor::name(&self.0)
            }
            fn fit(
                &self,
                task: &$crate::dataset::Task,
            ) -> $crate::error::Result<Box<dyn $crate::model::Predictor>> {
                $crate::model::Regressor::fit(linfa::ParamGuard::check_ref(self)?, task)
            }
        }
    };
}
pub(crate) use param_guard;
