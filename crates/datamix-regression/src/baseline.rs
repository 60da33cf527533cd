//! Baselines: the empirical mean, and "MDE alone" (the MDE loss itself, optionally calibrated
//! by an affine map fitted with linfa-linear least squares).

use linfa::traits::Fit;
use ndarray::{Array1, ArrayView2, Axis};

use crate::dataset::Task;
use crate::error::{RegressionError, Result};
use crate::model::{Prediction, Predictor, Regressor, check_task, check_width};

/// Predicts the mean training target, with the training standard deviation as uncertainty.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct MeanParams;

/// A fitted [`MeanParams`].
#[derive(Debug, Clone)]
pub struct MeanModel {
    names: Vec<String>,
    /// The training mean.
    pub mean: f64,
    /// The training standard deviation.
    pub std: f64,
}

impl Regressor for MeanParams {
    fn name(&self) -> String {
        "mean".into()
    }

    fn fit(&self, task: &Task) -> Result<Box<dyn Predictor>> {
        check_task("mean", task, 1)?;
        Ok(Box::new(MeanModel {
            names: task.feature_names.clone(),
            mean: task.y.mean().unwrap_or(0.0),
            std: task.y.std(0.0),
        }))
    }
}

impl Predictor for MeanModel {
    fn feature_names(&self) -> &[String] {
        &self.names
    }

    fn predict(&self, x: ArrayView2<'_, f64>) -> Result<Prediction> {
        check_width(&self.names, &x)?;
        let n = x.nrows();
        Ok(Prediction {
            mean: Array1::from_elem(n, self.mean),
            std: Some(Array1::from_elem(n, self.std)),
        })
    }
}

/// "MDE alone": the prediction is the MDE estimate of the target ([`Task::mde_proxy`]),
/// `a·mde + b` when `calibrate` is on (fitted by least squares), `mde` itself otherwise.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MdeAloneParams {
    /// Fit an affine calibration `a·mde + b` on the training rows.
    pub calibrate: bool,
}

impl Default for MdeAloneParams {
    fn default() -> Self {
        Self { calibrate: true }
    }
}

/// A fitted [`MdeAloneParams`].
#[derive(Debug, Clone)]
pub struct MdeAloneModel {
    names: Vec<String>,
    proxy: Vec<(usize, f64)>,
    /// Calibration slope.
    pub slope: f64,
    /// Calibration intercept.
    pub intercept: f64,
}

impl MdeAloneModel {
    fn proxy(&self, x: &ArrayView2<'_, f64>) -> Array1<f64> {
        let mut p = Array1::zeros(x.nrows());
        for &(j, w) in &self.proxy {
            p.scaled_add(w, &x.column(j));
        }
        p
    }
}

impl Regressor for MdeAloneParams {
    fn name(&self) -> String {
        if self.calibrate {
            "mde-alone-calibrated".into()
        } else {
            "mde-alone".into()
        }
    }

    fn fit(&self, task: &Task) -> Result<Box<dyn Predictor>> {
        check_task("mde-alone", task, if self.calibrate { 2 } else { 1 })?;
        let proxy = task
            .mde_proxy
            .clone()
            .ok_or_else(|| RegressionError::Unknown {
                kind: "feature column",
                name: format!(
                    "mde:{} (MDE estimate of target `{}`)",
                    task.target, task.target
                ),
                available: task.feature_names.join(", "),
            })?;
        let mut m = MdeAloneModel {
            names: task.feature_names.clone(),
            proxy,
            slope: 1.0,
            intercept: 0.0,
        };
        if self.calibrate {
            let p = m.proxy(&task.x.view());
            if p.iter().all(|&v| v == p[0]) {
                m.intercept = task.y.mean().unwrap_or(0.0) - p[0];
            } else {
                let fitted = linfa_linear::LinearRegression::new()
                    .fit(&linfa::Dataset::new(p.insert_axis(Axis(1)), task.y.clone()))
                    .map_err(|e| RegressionError::Fit {
                        family: "mde-alone",
                        message: e.to_string(),
                    })?;
                m.slope = fitted.params()[0];
                m.intercept = fitted.intercept();
            }
        }
        Ok(Box::new(m))
    }
}

impl Predictor for MdeAloneModel {
    fn feature_names(&self) -> &[String] {
        &self.names
    }

    fn predict(&self, x: ArrayView2<'_, f64>) -> Result<Prediction> {
        check_width(&self.names, &x)?;
        Ok(Prediction {
            mean: self.proxy(&x) * self.slope + self.intercept,
            std: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn calibrated_mde_recovers_an_affine_map() {
        let task = Task {
            x: array![[0.1, 2.0], [0.2, 3.0], [0.3, 5.0]],
            y: array![5.0, 7.0, 11.0],
            feature_names: vec!["lambda:a".into(), "mde:t".into()],
            target: "t".into(),
            ids: vec!["a".into(), "b".into(), "c".into()],
            mde_proxy: Some(vec![(1, 1.0)]),
        };
        let m = MdeAloneParams { calibrate: true }.fit(&task).unwrap();
        let p = m.predict(array![[0.0, 4.0]].view()).unwrap();
        assert!((p.mean[0] - 9.0).abs() < 1e-9);
        let raw = MdeAloneParams { calibrate: false }.fit(&task).unwrap();
        assert_eq!(raw.predict(array![[0.0, 4.0]].view()).unwrap().mean[0], 4.0);
        let mut no_mde = task.clone();
        no_mde.mde_proxy = None;
        assert!(
            MdeAloneParams::default()
                .fit(&no_mde)
                .unwrap_err()
                .to_string()
                .contains("mde:t")
        );
    }
}
