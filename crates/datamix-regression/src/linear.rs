//! Regularised linear models: ridge (exact, via linfa-linear least squares on the augmented
//! system) and elastic net (coordinate descent, via linfa-elasticnet).
//!
//! Penalties use scikit-learn's conventions: ridge minimises `‖y − Xw − b‖² + α‖w‖²`; elastic
//! net minimises `‖y − Xw − b‖²/(2n) + α(ρ‖w‖₁ + (1−ρ)‖w‖²/2)`. With `standardize` (default)
//! features are scaled to zero mean and unit variance first, as scikit-learn's
//! `StandardScaler` would; coefficients are reported on the original scale.

use linfa::traits::Fit;
use ndarray::{Array1, Array2, ArrayView2, Axis, concatenate, s};

use crate::dataset::Task;
use crate::error::{RegressionError, Result};
use crate::model::{
    Prediction, Predictor, Regressor, Scaler, check_task, check_width, param_guard,
};

/// A fitted linear model `y = x·w + b`.
#[derive(Debug, Clone)]
pub struct LinearModel {
    names: Vec<String>,
    /// Coefficients on the original feature scale.
    pub coef: Array1<f64>,
    /// Intercept on the original scale.
    pub intercept: f64,
}

impl Predictor for LinearModel {
    fn feature_names(&self) -> &[String] {
        &self.names
    }

    fn predict(&self, x: ArrayView2<'_, f64>) -> Result<Prediction> {
        check_width(&self.names, &x)?;
        Ok(Prediction {
            mean: x.dot(&self.coef) + self.intercept,
            std: None,
        })
    }
}

impl LinearModel {
    /// Maps coefficients fitted on scaled features back to the original scale.
    fn unscale(names: Vec<String>, sc: &Scaler, w: Array1<f64>, b: f64) -> Self {
        let coef = &w / &sc.scale;
        let intercept = b - coef.dot(&sc.mean);
        Self {
            names,
            coef,
            intercept,
        }
    }
}

fn scaler(task: &Task, standardize: bool) -> Scaler {
    let mut sc = Scaler::fit(task.x.view());
    if !standardize {
        sc.scale.fill(1.0);
    }
    sc
}

/// Validated ridge hyper-parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct RidgeValidParams {
    alpha: f64,
    standardize: bool,
}

/// Ridge regression parameters (builder). Defaults: `alpha = 1`, standardised features.
#[derive(Debug, Clone, PartialEq)]
pub struct RidgeParams(RidgeValidParams);

impl Default for RidgeParams {
    fn default() -> Self {
        Self(RidgeValidParams {
            alpha: 1.0,
            standardize: true,
        })
    }
}

impl RidgeParams {
    /// Default parameters.
    pub fn new() -> Self {
        Self::default()
    }
    /// L2 penalty α ≥ 0 (scikit-learn's `Ridge(alpha)`).
    pub fn alpha(mut self, alpha: f64) -> Self {
        self.0.alpha = alpha;
        self
    }
    /// Scale features to unit variance before fitting.
    pub fn standardize(mut self, on: bool) -> Self {
        self.0.standardize = on;
        self
    }
}

impl RidgeValidParams {
    fn validate(&self) -> Result<()> {
        if !(self.alpha.is_finite() && self.alpha >= 0.0) {
            return Err(RegressionError::InvalidParam {
                family: "ridge",
                param: "alpha",
                value: self.alpha.to_string(),
                expected: "finite and >= 0",
            });
        }
        Ok(())
    }
}
param_guard!(RidgeParams, RidgeValidParams);

impl Regressor for RidgeValidParams {
    fn name(&self) -> String {
        "ridge".into()
    }

    fn fit(&self, task: &Task) -> Result<Box<dyn Predictor>> {
        check_task("ridge", task, 1)?;
        let sc = scaler(task, self.standardize);
        let xs = sc.transform(task.x.view());
        let ym = task.y.mean().unwrap_or(0.0);
        let d = xs.ncols();
        // min ‖y − Xw‖² + α‖w‖² on centred data = least squares on [X; √α I] w ≈ [y; 0].
        let aug_x = concatenate![Axis(0), xs, Array2::<f64>::eye(d) * self.alpha.sqrt()];
        let mut aug_y = Array1::zeros(aug_x.nrows());
        aug_y.slice_mut(s![..task.n_rows()]).assign(&(&task.y - ym));
        let fitted = linfa_linear::LinearRegression::new()
            .with_intercept(false)
            .fit(&linfa::Dataset::new(aug_x, aug_y))
            .map_err(|e| RegressionError::Fit {
                family: "ridge",
                message: e.to_string(),
            })?;
        let w = fitted.params().to_owned();
        Ok(Box::new(LinearModel::unscale(
            task.feature_names.clone(),
            &sc,
            w,
            ym,
        )))
    }
}

/// Validated elastic-net hyper-parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct ElasticNetValidParams {
    alpha: f64,
    l1_ratio: f64,
    standardize: bool,
    tolerance: f64,
    max_iterations: u32,
}

/// Elastic-net parameters (builder). Defaults: `alpha = 1e-3`, `l1_ratio = 0.5`,
/// standardised features, tolerance 1e-6, 10 000 sweeps.
#[derive(Debug, Clone, PartialEq)]
pub struct ElasticNetParams(ElasticNetValidParams);

impl Default for ElasticNetParams {
    fn default() -> Self {
        Self(ElasticNetValidParams {
            alpha: 1e-3,
            l1_ratio: 0.5,
            standardize: true,
            tolerance: 1e-6,
            max_iterations: 10_000,
        })
    }
}

impl ElasticNetParams {
    /// Default parameters.
    pub fn new() -> Self {
        Self::default()
    }
    /// Overall penalty α > 0 (scikit-learn's `ElasticNet(alpha)`).
    pub fn alpha(mut self, alpha: f64) -> Self {
        self.0.alpha = alpha;
        self
    }
    /// Share ρ ∈ [0, 1] of the L1 penalty.
    pub fn l1_ratio(mut self, r: f64) -> Self {
        self.0.l1_ratio = r;
        self
    }
    /// Scale features to unit variance before fitting.
    pub fn standardize(mut self, on: bool) -> Self {
        self.0.standardize = on;
        self
    }
    /// Convergence tolerance of coordinate descent (duality gap).
    pub fn tolerance(mut self, tol: f64) -> Self {
        self.0.tolerance = tol;
        self
    }
    /// Maximum coordinate-descent sweeps.
    pub fn max_iterations(mut self, n: u32) -> Self {
        self.0.max_iterations = n;
        self
    }
}

impl ElasticNetValidParams {
    fn validate(&self) -> Result<()> {
        let bad = |param, value: f64, expected| {
            Err(RegressionError::InvalidParam {
                family: "elastic-net",
                param,
                value: value.to_string(),
                expected,
            })
        };
        if !(self.alpha.is_finite() && self.alpha > 0.0) {
            return bad("alpha", self.alpha, "finite and > 0");
        }
        if !(0.0..=1.0).contains(&self.l1_ratio) {
            return bad("l1_ratio", self.l1_ratio, "in [0, 1]");
        }
        if !(self.tolerance.is_finite() && self.tolerance > 0.0) {
            return bad("tolerance", self.tolerance, "finite and > 0");
        }
        if self.max_iterations == 0 {
            return bad("max_iterations", 0.0, ">= 1");
        }
        Ok(())
    }
}
param_guard!(ElasticNetParams, ElasticNetValidParams);

impl Regressor for ElasticNetValidParams {
    fn name(&self) -> String {
        "elastic-net".into()
    }

    fn fit(&self, task: &Task) -> Result<Box<dyn Predictor>> {
        check_task("elastic-net", task, 1)?;
        let sc = scaler(task, self.standardize);
        let xs = sc.transform(task.x.view());
        let fitted = linfa_elasticnet::ElasticNet::params()
            .penalty(self.alpha)
            .l1_ratio(self.l1_ratio)
            .with_intercept(true)
            .tolerance(self.tolerance)
            .max_iterations(self.max_iterations)
            .fit(&linfa::Dataset::new(xs, task.y.clone()))
            .map_err(|e| RegressionError::Fit {
                family: "elastic-net",
                message: e.to_string(),
            })?;
        let w = fitted.hyperplane().to_owned();
        Ok(Box::new(LinearModel::unscale(
            task.feature_names.clone(),
            &sc,
            w,
            fitted.intercept(),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use linfa::ParamGuard;
    use ndarray::array;

    fn task(x: Array2<f64>, y: Array1<f64>) -> Task {
        let n = x.nrows();
        Task {
            feature_names: (0..x.ncols()).map(|i| format!("f:{i}")).collect(),
            x,
            y,
            target: "t".into(),
            ids: (0..n).map(|i| i.to_string()).collect(),
            mde_proxy: None,
        }
    }

    #[test]
    fn ridge_shrinks_towards_zero_as_alpha_grows() {
        let x = array![[0.0], [1.0], [2.0], [3.0]];
        let y = array![1.0, 3.0, 5.0, 7.0];
        let t = task(x, y);
        let slope = |a: f64| {
            let m = RidgeValidParams {
                alpha: a,
                standardize: false,
            }
            .fit(&t)
            .unwrap();
            m.predict(array![[1.0]].view()).unwrap().mean[0]
                - m.predict(array![[0.0]].view()).unwrap().mean[0]
        };
        // Closed form on centred x (Σx² = 5): slope = 2·5/(5 + α).
        assert!((slope(0.0) - 2.0).abs() < 1e-10);
        assert!((slope(5.0) - 1.0).abs() < 1e-10);
    }

    #[test]
    fn invalid_params_are_rejected_with_their_name() {
        let e = RidgeParams::new().alpha(-1.0).check().unwrap_err();
        assert!(e.to_string().contains("alpha"), "{e}");
        let e = ElasticNetParams::new().l1_ratio(2.0).check().unwrap_err();
        assert!(e.to_string().contains("l1_ratio"), "{e}");
    }

    #[test]
    fn predict_rejects_wrong_width() {
        let t = task(
            array![[0.0, 1.0], [1.0, 0.0], [2.0, 2.0]],
            array![1.0, 2.0, 3.0],
        );
        let m = RidgeParams::new().fit(&t).unwrap();
        let e = m.predict(array![[1.0]].view()).unwrap_err();
        assert!(matches!(
            e,
            RegressionError::FeatureMismatch {
                expected: 2,
                found: 1,
                ..
            }
        ));
    }
}
