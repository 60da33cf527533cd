//! Gaussian-process regression: ARD RBF or Matérn (3/2, 5/2) kernel plus learned noise,
//! hyper-parameters by maximising the log marginal likelihood (L-BFGS from argmin with
//! analytic gradients, several starts), Cholesky solves from linfa-linalg.
//!
//! Features are standardised and the target is normalised before fitting, so length scales
//! are in units of feature standard deviations. One GP per target.
//!
//! Model: `k(x, x') = σ_f² κ(r)`, `r² = Σ_i (x_i − x'_i)² / ℓ_i²`, plus `σ_n²` on the diagonal.
//! `predict` returns the posterior mean and the standard deviation of the latent function
//! (noise excluded), which is zero-ish at training points and grows away from them.

use std::cell::RefCell;

use argmin::core::{CostFunction, Executor, Gradient, State};
use argmin::solver::linesearch::MoreThuenteLineSearch;
use argmin::solver::quasinewton::LBFGS;
use linfa_linalg::cholesky::Cholesky;
use linfa_linalg::triangular::{SolveTriangular, UPLO};
use ndarray::{Array1, Array2, ArrayView2, Axis, s};
use rand::{Rng, SeedableRng};
use rayon::prelude::*;

use crate::dataset::Task;
use crate::error::{RegressionError, Result};
use crate::model::{
    Prediction, Predictor, Regressor, Scaler, check_task, check_width, param_guard, target_scale,
};

/// Stationary kernel shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kernel {
    /// Squared exponential `exp(−r²/2)`.
    Rbf,
    /// Matérn ν = 3/2: `(1 + √3 r) exp(−√3 r)`.
    Matern32,
    /// Matérn ν = 5/2: `(1 + √5 r + 5r²/3) exp(−√5 r)`.
    Matern52,
}

impl Kernel {
    /// κ(r²).
    fn value(self, r2: f64) -> f64 {
        match self {
            Kernel::Rbf => (-0.5 * r2).exp(),
            Kernel::Matern32 => {
                let a = (3.0 * r2).sqrt();
                (1.0 + a) * (-a).exp()
            }
            Kernel::Matern52 => {
                let a = (5.0 * r2).sqrt();
                (1.0 + a + 5.0 * r2 / 3.0) * (-a).exp()
            }
        }
    }

    /// g(r²) with ∂κ/∂log ℓ_i = g(r²) · (x_i − x'_i)²/ℓ_i².
    fn dlog_ls(self, r2: f64) -> f64 {
        match self {
            Kernel::Rbf => (-0.5 * r2).exp(),
            Kernel::Matern32 => 3.0 * (-(3.0 * r2).sqrt()).exp(),
            Kernel::Matern52 => {
                let a = (5.0 * r2).sqrt();
                5.0 / 3.0 * (1.0 + a) * (-a).exp()
            }
        }
    }

    fn label(self) -> &'static str {
        match self {
            Kernel::Rbf => "rbf",
            Kernel::Matern32 => "matern32",
            Kernel::Matern52 => "matern52",
        }
    }
}

/// Validated GP hyper-parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct GpValidParams {
    kernel: Kernel,
    restarts: usize,
    max_iters: u64,
    seed: u64,
    min_noise: f64,
}

/// GP parameters (builder). Defaults: Matérn 5/2, 2 random restarts besides the default
/// start, 200 L-BFGS iterations per start, seed 0, noise variance ≥ 1e-6 (normalised units).
#[derive(Debug, Clone, PartialEq)]
pub struct GpParams(GpValidParams);

impl Default for GpParams {
    fn default() -> Self {
        Self(GpValidParams {
            kernel: Kernel::Matern52,
            restarts: 2,
            max_iters: 200,
            seed: 0,
            min_noise: 1e-6,
        })
    }
}

impl GpParams {
    /// Default parameters.
    pub fn new() -> Self {
        Self::default()
    }
    /// Kernel shape.
    pub fn kernel(mut self, k: Kernel) -> Self {
        self.0.kernel = k;
        self
    }
    /// Extra optimiser starts drawn at random (log-uniform within the bounds).
    pub fn restarts(mut self, n: usize) -> Self {
        self.0.restarts = n;
        self
    }
    /// L-BFGS iterations per start.
    pub fn max_iters(mut self, n: u64) -> Self {
        self.0.max_iters = n;
        self
    }
    /// Seed of the random starts.
    pub fn seed(mut self, seed: u64) -> Self {
        self.0.seed = seed;
        self
    }
    /// Smallest noise variance (in normalised target units); `0 < min_noise < 1`.
    pub fn min_noise(mut self, v: f64) -> Self {
        self.0.min_noise = v;
        self
    }
}

impl GpValidParams {
    fn validate(&self) -> Result<()> {
        if !(self.min_noise > 0.0 && self.min_noise < 1.0) {
            return Err(RegressionError::InvalidParam {
                family: "gp",
                param: "min_noise",
                value: self.min_noise.to_string(),
                expected: "in (0, 1)",
            });
        }
        if self.max_iters == 0 {
            return Err(RegressionError::InvalidParam {
                family: "gp",
                param: "max_iters",
                value: "0".into(),
                expected: ">= 1",
            });
        }
        Ok(())
    }
}
param_guard!(GpParams, GpValidParams);

/// Log-space bounds: length scales, signal variance, noise variance (normalised units).
const LS_BOUNDS: (f64, f64) = (-4.6, 6.9); // 0.01 .. 1000
const SF_BOUNDS: (f64, f64) = (-9.2, 9.2); // 1e-4 .. 1e4
const SN_BOUNDS: (f64, f64) = (-18.4, 2.3); // 1e-8 .. 10
const PENALTY: f64 = 100.0;

/// Negative log marginal likelihood and its gradient in θ = [log ℓ.., log σ_f², log σ_n²].
struct Nll<'a> {
    kernel: Kernel,
    x: ArrayView2<'a, f64>,
    y: &'a Array1<f64>,
    min_noise: f64,
    cache: RefCell<Option<(Array1<f64>, f64, Array1<f64>)>>,
}

fn bounds(d: usize, k: usize) -> (f64, f64) {
    if k < d {
        LS_BOUNDS
    } else if k == d {
        SF_BOUNDS
    } else {
        SN_BOUNDS
    }
}

/// Cholesky factor of the training covariance for θ, with the per-pair pieces the gradient needs.
struct Factor {
    l: Array2<f64>,
    alpha: Array1<f64>,
}

fn factor(
    kernel: Kernel,
    x: ArrayView2<'_, f64>,
    y: &Array1<f64>,
    theta: &Array1<f64>,
    min_noise: f64,
) -> Option<Factor> {
    let (n, d) = x.dim();
    let inv_ls2 = theta.slice(s![..d]).mapv(|t| (-2.0 * t).exp());
    let sf2 = theta[d].exp();
    let sn2 = theta[d + 1].exp() + min_noise;
    let mut k = Array2::zeros((n, n));
    for a in 0..n {
        for b in 0..a {
            let mut r2 = 0.0;
            for i in 0..d {
                let t = x[[a, i]] - x[[b, i]];
                r2 += t * t * inv_ls2[i];
            }
            let v = sf2 * kernel.value(r2);
            k[[a, b]] = v;
            k[[b, a]] = v;
        }
        k[[a, a]] = sf2 + sn2;
    }
    let l = k.cholesky().ok()?;
    let z = l
        .solve_triangular(&y.view().insert_axis(Axis(1)), UPLO::Lower)
        .ok()?;
    let alpha = l
        .t()
        .solve_triangular(&z, UPLO::Upper)
        .ok()?
        .remove_axis(Axis(1));
    Some(Factor { l, alpha })
}

impl Nll<'_> {
    fn eval(
        &self,
        theta: &Array1<f64>,
    ) -> std::result::Result<(f64, Array1<f64>), argmin::core::Error> {
        if let Some((t, c, g)) = self.cache.borrow().as_ref()
            && t == theta
        {
            return Ok((*c, g.clone()));
        }
        let (n, d) = self.x.dim();
        let f = factor(self.kernel, self.x, self.y, theta, self.min_noise)
            .ok_or_else(|| argmin::core::Error::msg("covariance is not positive definite"))?;
        let mut cost = 0.5 * self.y.dot(&f.alpha)
            + f.l.diag().mapv(f64::ln).sum()
            + 0.5 * n as f64 * (2.0 * std::f64::consts::PI).ln();
        // W = K⁻¹ − ααᵀ; ∂NLL/∂θ = ½ Σ_ab W_ab ∂K_ab/∂θ.
        let linv =
            f.l.solve_triangular(&Array2::eye(n), UPLO::Lower)
                .map_err(argmin::core::Error::msg)?;
        let kinv = linv.t().dot(&linv);
        let inv_ls2 = theta.slice(s![..d]).mapv(|t| (-2.0 * t).exp());
        let sf2 = theta[d].exp();
        let mut grad = Array1::zeros(d + 2);
        let mut diff2 = vec![0.0; d];
        for a in 0..n {
            for b in 0..a {
                let w = kinv[[a, b]] - f.alpha[a] * f.alpha[b];
                let mut r2 = 0.0;
                for i in 0..d {
                    let t = self.x[[a, i]] - self.x[[b, i]];
                    diff2[i] = t * t * inv_ls2[i];
                    r2 += diff2[i];
                }
                // Off-diagonal pairs count twice (W and K symmetric).
                grad[d] += w * sf2 * self.kernel.value(r2);
                let g = w * sf2 * self.kernel.dlog_ls(r2);
                for i in 0..d {
                    grad[i] += g * diff2[i];
                }
            }
            let w = kinv[[a, a]] - f.alpha[a] * f.alpha[a];
            grad[d] += 0.5 * w * sf2;
            grad[d + 1] += 0.5 * w * theta[d + 1].exp();
        }
        for (k, t) in theta.iter().enumerate() {
            let (lo, hi) = bounds(d, k);
            let over = if *t < lo {
                t - lo
            } else if *t > hi {
                t - hi
            } else {
                0.0
            };
            cost += 0.5 * PENALTY * over * over;
            grad[k] += PENALTY * over;
        }
        *self.cache.borrow_mut() = Some((theta.clone(), cost, grad.clone()));
        Ok((cost, grad))
    }
}

impl CostFunction for Nll<'_> {
    type Param = Array1<f64>;
    type Output = f64;
    fn cost(&self, p: &Self::Param) -> std::result::Result<f64, argmin::core::Error> {
        Ok(self.eval(p)?.0)
    }
}

impl Gradient for Nll<'_> {
    type Param = Array1<f64>;
    type Gradient = Array1<f64>;
    fn gradient(&self, p: &Self::Param) -> std::result::Result<Array1<f64>, argmin::core::Error> {
        Ok(self.eval(p)?.1)
    }
}

/// A fitted GP.
#[derive(Debug, Clone)]
pub struct GpModel {
    names: Vec<String>,
    kernel: Kernel,
    scaler: Scaler,
    y_mean: f64,
    y_scale: f64,
    /// Training inputs divided by the length scales.
    xl: Array2<f64>,
    l: Array2<f64>,
    alpha: Array1<f64>,
    /// Length scales (in feature standard deviations).
    pub length_scales: Array1<f64>,
    /// Signal variance (normalised target units).
    pub signal_variance: f64,
    /// Noise variance (normalised target units).
    pub noise_variance: f64,
    /// Negative log marginal likelihood at the optimum (normalised target).
    pub nll: f64,
}

impl Regressor for GpValidParams {
    fn name(&self) -> String {
        format!("gp-{}", self.kernel.label())
    }

    fn fit(&self, task: &Task) -> Result<Box<dyn Predictor>> {
        check_task("gp", task, 2)?;
        let d = task.x.ncols();
        let scaler = Scaler::fit(task.x.view());
        let xs = scaler.transform(task.x.view());
        let (y_mean, y_scale) = target_scale(task.y.view());
        let y = task.y.mapv(|v| (v - y_mean) / y_scale);
        let mut starts = vec![{
            let mut t = Array1::zeros(d + 2);
            t[d + 1] = 0.1f64.ln();
            t
        }];
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(self.seed);
        for _ in 0..self.restarts {
            starts.push(Array1::from_shape_fn(d + 2, |k| {
                let (lo, hi) = bounds(d, k);
                // Random starts avoid the extremes of the bounds (flat likelihood there).
                let (lo, hi) = (lo.max(-3.0), hi.min(3.0));
                rng.random_range(lo..hi)
            }));
        }
        let mut best: Option<(f64, Array1<f64>)> = None;
        let mut last_err = String::from("no start converged");
        for init in starts {
            // Tolerances as scipy's L-BFGS-B defaults in scikit-learn (pgtol 1e-5, factr 1e7).
            let solver = LBFGS::new(MoreThuenteLineSearch::new(), 10)
                .with_tolerance_grad(1e-5)
                .and_then(|s| s.with_tolerance_cost(1e7 * f64::EPSILON))
                .expect("tolerances are positive");
            let problem = Nll {
                kernel: self.kernel,
                x: xs.view(),
                y: &y,
                min_noise: self.min_noise,
                cache: RefCell::new(None),
            };
            match Executor::new(problem, solver)
                .configure(|s| s.param(init).max_iters(self.max_iters))
                .run()
            {
                Ok(res) => {
                    let st = res.state();
                    if let Some(p) = st.get_best_param() {
                        let c = st.get_best_cost();
                        if c.is_finite() && best.as_ref().is_none_or(|(b, _)| c < *b) {
                            best = Some((c, p.clone()));
                        }
                    }
                }
                Err(e) => last_err = e.to_string(),
            }
        }
        let (nll, theta) = best.ok_or(RegressionError::Fit {
            family: "gp",
            message: last_err,
        })?;
        let f = factor(self.kernel, xs.view(), &y, &theta, self.min_noise).ok_or(
            RegressionError::Fit {
                family: "gp",
                message: "covariance is not positive definite at the optimum".into(),
            },
        )?;
        let length_scales = theta.slice(s![..d]).mapv(f64::exp);
        Ok(Box::new(GpModel {
            names: task.feature_names.clone(),
            kernel: self.kernel,
            xl: &xs / &length_scales,
            scaler,
            y_mean,
            y_scale,
            l: f.l,
            alpha: f.alpha,
            length_scales,
            signal_variance: theta[d].exp(),
            noise_variance: theta[d + 1].exp() + self.min_noise,
            nll,
        }))
    }
}

impl GpModel {
    fn predict_chunk(&self, x: ArrayView2<'_, f64>) -> (Array1<f64>, Array1<f64>) {
        let z = self.scaler.transform(x) / &self.length_scales;
        // r² = |z|² + |x_l|² − 2 z·x_l
        let zn = z.map_axis(Axis(1), |r| r.dot(&r));
        let xn = self.xl.map_axis(Axis(1), |r| r.dot(&r));
        let mut ks = z.dot(&self.xl.t());
        for ((i, j), v) in ks.indexed_iter_mut() {
            let r2 = (zn[i] + xn[j] - 2.0 * *v).max(0.0);
            *v = self.signal_variance * self.kernel.value(r2);
        }
        let mean = ks.dot(&self.alpha);
        let v = self
            .l
            .solve_triangular(&ks.t(), UPLO::Lower)
            .expect("factor is lower triangular, square");
        let var = v.map_axis(Axis(0), |c| (self.signal_variance - c.dot(&c)).max(0.0));
        (
            mean * self.y_scale + self.y_mean,
            var.mapv(f64::sqrt) * self.y_scale,
        )
    }
}

/// Candidates per parallel chunk in [`GpModel::predict`].
const CHUNK: usize = 512;

impl Predictor for GpModel {
    fn feature_names(&self) -> &[String] {
        &self.names
    }

    fn predict(&self, x: ArrayView2<'_, f64>) -> Result<Prediction> {
        check_width(&self.names, &x)?;
        let n = x.nrows();
        let starts: Vec<usize> = (0..n).step_by(CHUNK).collect();
        let parts: Vec<(Array1<f64>, Array1<f64>)> = starts
            .par_iter()
            .map(|&a| self.predict_chunk(x.slice(s![a..(a + CHUNK).min(n), ..])))
            .collect();
        let mean = ndarray::concatenate(
            Axis(0),
            &parts.iter().map(|p| p.0.view()).collect::<Vec<_>>(),
        )
        .unwrap_or_else(|_| Array1::zeros(0));
        let std = ndarray::concatenate(
            Axis(0),
            &parts.iter().map(|p| p.1.view()).collect::<Vec<_>>(),
        )
        .unwrap_or_else(|_| Array1::zeros(0));
        Ok(Prediction {
            mean,
            std: Some(std),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn analytic_gradient_matches_finite_differences() {
        let x = array![[0.0, 1.0], [0.5, -0.3], [1.2, 0.4], [-0.7, 0.9], [0.3, 0.3]];
        let y = array![0.3, -1.0, 0.8, 0.1, -0.2];
        for kernel in [Kernel::Rbf, Kernel::Matern32, Kernel::Matern52] {
            let p = Nll {
                kernel,
                x: x.view(),
                y: &y,
                min_noise: 1e-6,
                cache: RefCell::new(None),
            };
            let theta = array![0.2, -0.4, 0.3, -2.0];
            let (_, g) = p.eval(&theta).unwrap();
            for k in 0..theta.len() {
                let h = 1e-6;
                let mut tp = theta.clone();
                tp[k] += h;
                let mut tm = theta.clone();
                tm[k] -= h;
                let fd = (p.eval(&tp).unwrap().0 - p.eval(&tm).unwrap().0) / (2.0 * h);
                assert!(
                    (fd - g[k]).abs() < 1e-5 * (1.0 + fd.abs()),
                    "{kernel:?} θ{k}: fd {fd} vs {}",
                    g[k]
                );
            }
        }
    }
}
