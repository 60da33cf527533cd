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
//!
//! Why not `egobox-gp` (docs/benchmarks.md, "Gaussian process and Bayesian optimisation
//! vs egobox"): on λ+MDE features it was as accurate as egobox's better setting at 1/6 to
//! 1/12 of its time, and egobox has no learned noise (a fixed nugget to pick by hand); on
//! λ alone with 44 rows egobox ranked better, which is recorded there.

use std::cell::{Cell, RefCell};

use argmin::core::{CostFunction, Executor, Gradient, State};
use argmin::solver::linesearch::MoreThuenteLineSearch;
use argmin::solver::quasinewton::LBFGS;
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
/// Weight of the quadratic penalty on log-parameters outside their bounds (soft bounds).
const PENALTY: f64 = 1.0;

/// Negative log marginal likelihood and its gradient in θ = [log ℓ.., log σ_f², log σ_n²].
struct Nll<'a> {
    kernel: Kernel,
    pairs: &'a Pairs,
    y: &'a Array1<f64>,
    min_noise: f64,
    cache: RefCell<Option<NllCache>>,
    /// Evaluations left: argmin's inner line search has no iteration cap and can cycle
    /// forever on a flat or ill-conditioned likelihood, so the budget ends it with an error.
    budget: &'a Cell<u64>,
    /// Lowest-cost point evaluated so far (kept when the budget ends a run).
    best: &'a RefCell<Option<(f64, Array1<f64>)>>,
}

/// Last evaluated point: θ, its negative log likelihood and gradient.
type NllCache = (Array1<f64>, f64, Array1<f64>);

fn bounds(d: usize, k: usize) -> (f64, f64) {
    if k < d {
        LS_BOUNDS
    } else if k == d {
        SF_BOUNDS
    } else {
        SN_BOUNDS
    }
}

/// Squared per-dimension differences of every training pair (a > b, row-major), which do not
/// change while the hyper-parameters are optimised.
struct Pairs {
    n: usize,
    d: usize,
    diff2: Vec<f64>,
}

impl Pairs {
    fn new(x: ArrayView2<'_, f64>) -> Self {
        let (n, d) = x.dim();
        let mut diff2 = Vec::with_capacity(n * n.saturating_sub(1) / 2 * d);
        for a in 0..n {
            for b in 0..a {
                diff2.extend(
                    x.row(a)
                        .iter()
                        .zip(x.row(b))
                        .map(|(u, v)| (u - v) * (u - v)),
                );
            }
        }
        Self { n, d, diff2 }
    }
}

/// In-place Cholesky factorisation of a row-major SPD matrix (lower triangle; the upper one
/// is zeroed). Returns `false` if the matrix is not numerically positive definite.
///
/// Hand-written because it is the inner loop of the hyper-parameter search: on the matrices
/// used here (n ≤ a few hundred) it is several times faster than linfa-linalg's generic one.
fn cholesky_in_place(a: &mut [f64], n: usize) -> bool {
    for j in 0..n {
        let row_j = &mut a[j * n..(j + 1) * n];
        let djj = row_j[j] - row_j[..j].iter().map(|v| v * v).sum::<f64>();
        if !(djj > 0.0 && djj.is_finite()) {
            return false;
        }
        let djj = djj.sqrt();
        row_j[j] = djj;
        row_j[j + 1..].fill(0.0);
        for i in j + 1..n {
            let (upper, lower) = a.split_at_mut(i * n);
            let lj = &upper[j * n..j * n + j];
            let row_i = &mut lower[..n];
            let dot: f64 = row_i[..j].iter().zip(lj).map(|(p, q)| p * q).sum();
            row_i[j] = (row_i[j] - dot) / djj;
        }
    }
    true
}

/// Inverse of a row-major lower-triangular matrix with a positive diagonal.
fn lower_inverse(l: &[f64], n: usize) -> Vec<f64> {
    let mut inv = vec![0.0; n * n];
    for i in 0..n {
        let d = 1.0 / l[i * n + i];
        inv[i * n + i] = d;
        // inv[i, j] = −(Σ_{k=j}^{i−1} L[i, k] inv[k, j]) / L[i, i]; accumulate row-wise.
        let mut acc = vec![0.0; i];
        for k in 0..i {
            let lik = l[i * n + k];
            if lik != 0.0 {
                for (a, v) in acc[..=k].iter_mut().zip(&inv[k * n..k * n + k + 1]) {
                    *a += lik * v;
                }
            }
        }
        for (j, a) in acc.into_iter().enumerate() {
            inv[i * n + j] = -a * d;
        }
    }
    inv
}

/// Cholesky factor `L` of the training covariance for θ, its inverse, and `α = K⁻¹y`.
struct Factor {
    l: Array2<f64>,
    linv: Array2<f64>,
    alpha: Array1<f64>,
}

fn factor(
    kernel: Kernel,
    pairs: &Pairs,
    y: &Array1<f64>,
    theta: &Array1<f64>,
    min_noise: f64,
) -> Option<Factor> {
    let (n, d) = (pairs.n, pairs.d);
    let inv_ls2: Vec<f64> = theta.iter().take(d).map(|t| (-2.0 * t).exp()).collect();
    let sf2 = theta[d].exp();
    let sn2 = theta[d + 1].exp() + min_noise;
    let mut k = vec![0.0; n * n];
    let mut p = 0;
    for a in 0..n {
        for b in 0..a {
            let r2: f64 = pairs.diff2[p * d..(p + 1) * d]
                .iter()
                .zip(&inv_ls2)
                .map(|(u, v)| u * v)
                .sum();
            k[a * n + b] = sf2 * kernel.value(r2);
            p += 1;
        }
        k[a * n + a] = sf2 + sn2;
    }
    if !cholesky_in_place(&mut k, n) {
        return None;
    }
    let linv = Array2::from_shape_vec((n, n), lower_inverse(&k, n)).expect("n×n");
    let l = Array2::from_shape_vec((n, n), k).expect("n×n");
    let alpha = linv.t().dot(&linv.dot(y));
    alpha
        .iter()
        .all(|v| v.is_finite())
        .then_some(Factor { l, linv, alpha })
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
        if self.budget.get() == 0 {
            return Err(argmin::core::Error::msg(
                "likelihood evaluation budget exhausted",
            ));
        }
        self.budget.set(self.budget.get() - 1);
        let (n, d) = (self.pairs.n, self.pairs.d);
        let f = factor(self.kernel, self.pairs, self.y, theta, self.min_noise)
            .ok_or_else(|| argmin::core::Error::msg("covariance is not positive definite"))?;
        let mut cost = 0.5 * self.y.dot(&f.alpha)
            + f.l.diag().mapv(f64::ln).sum()
            + 0.5 * n as f64 * (2.0 * std::f64::consts::PI).ln();
        // W = K⁻¹ − ααᵀ; ∂NLL/∂θ = ½ Σ_ab W_ab ∂K_ab/∂θ.
        let kinv = f.linv.t().dot(&f.linv);
        let inv_ls2: Vec<f64> = theta.iter().take(d).map(|t| (-2.0 * t).exp()).collect();
        let sf2 = theta[d].exp();
        let mut grad = Array1::zeros(d + 2);
        let mut gls = vec![0.0; d];
        let mut p = 0;
        for a in 0..n {
            for b in 0..a {
                let w = kinv[[a, b]] - f.alpha[a] * f.alpha[b];
                let diff = &self.pairs.diff2[p * d..(p + 1) * d];
                let r2: f64 = diff.iter().zip(&inv_ls2).map(|(u, v)| u * v).sum();
                // Off-diagonal pairs count twice (W and K symmetric).
                grad[d] += w * sf2 * self.kernel.value(r2);
                let g = w * sf2 * self.kernel.dlog_ls(r2);
                for (acc, u) in gls.iter_mut().zip(diff) {
                    *acc += g * u;
                }
                p += 1;
            }
            let w = kinv[[a, a]] - f.alpha[a] * f.alpha[a];
            grad[d] += 0.5 * w * sf2;
            grad[d + 1] += 0.5 * w * theta[d + 1].exp();
        }
        for i in 0..d {
            grad[i] = gls[i] * inv_ls2[i];
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
        if cost.is_finite() && self.best.borrow().as_ref().is_none_or(|(b, _)| cost < *b) {
            *self.best.borrow_mut() = Some((cost, theta.clone()));
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
    linv: Array2<f64>,
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
        let pairs = Pairs::new(xs.view());
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
                .and_then(|s| s.with_tolerance_cost(1e-8))
                .expect("tolerances are positive");
            // About 20 evaluations per L-BFGS iteration, line searches included.
            let budget = Cell::new(20 * self.max_iters.max(1));
            let seen = RefCell::new(None);
            let problem = Nll {
                kernel: self.kernel,
                pairs: &pairs,
                y: &y,
                min_noise: self.min_noise,
                cache: RefCell::new(None),
                budget: &budget,
                best: &seen,
            };
            let run = Executor::new(problem, solver)
                .configure(|s| s.param(init).max_iters(self.max_iters))
                .run();
            if run.is_err()
                && budget.get() == 0
                && let Some((c, p)) = seen.borrow().clone()
                && best.as_ref().is_none_or(|(b, _)| c < *b)
            {
                best = Some((c, p));
            }
            match run {
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
        let f = factor(self.kernel, &pairs, &y, &theta, self.min_noise).ok_or(
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
            linv: f.linv,
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
        // var = σ_f² − ‖L⁻¹k*‖², one matrix product for the whole chunk.
        let v = ks.dot(&self.linv.t());
        let var = v.map_axis(Axis(1), |r| (self.signal_variance - r.dot(&r)).max(0.0));
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

    /// The likelihood of `(x, y)` under `kernel`, with the fit's bookkeeping cells.
    fn nll<'a>(
        kernel: Kernel,
        pairs: &'a Pairs,
        y: &'a Array1<f64>,
        budget: &'a Cell<u64>,
        best: &'a RefCell<Option<(f64, Array1<f64>)>>,
    ) -> Nll<'a> {
        Nll {
            kernel,
            pairs,
            y,
            min_noise: 1e-6,
            cache: RefCell::new(None),
            budget,
            best,
        }
    }

    #[test]
    fn analytic_gradient_matches_finite_differences() {
        let x = array![[0.0, 1.0], [0.5, -0.3], [1.2, 0.4], [-0.7, 0.9], [0.3, 0.3]];
        let y = array![0.3, -1.0, 0.8, 0.1, -0.2];
        for kernel in [Kernel::Rbf, Kernel::Matern32, Kernel::Matern52] {
            let (budget, best) = (Cell::new(u64::MAX), RefCell::new(None));
            let pairs = Pairs::new(x.view());
            let p = nll(kernel, &pairs, &y, &budget, &best);
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

    #[test]
    fn evaluation_budget_ends_with_an_error_and_keeps_the_best_point() {
        let x = array![[0.0, 1.0], [0.5, -0.3], [1.2, 0.4]];
        let y = array![0.3, -1.0, 0.8];
        let (budget, best) = (Cell::new(2), RefCell::new(None));
        let pairs = Pairs::new(x.view());
        let p = nll(Kernel::Rbf, &pairs, &y, &budget, &best);
        let a = p.eval(&array![0.2, -0.4, 0.3, -2.0]).unwrap().0;
        let b = p.eval(&array![0.0, 0.0, 0.0, -1.0]).unwrap().0;
        // The cached point is free; a third distinct point exceeds the budget.
        assert_eq!(p.eval(&array![0.0, 0.0, 0.0, -1.0]).unwrap().0, b);
        assert!(p.eval(&array![1.0, 1.0, 1.0, -3.0]).is_err());
        assert_eq!(budget.get(), 0);
        let (c, _) = best.borrow().clone().unwrap();
        assert_eq!(c, a.min(b));
    }
}

#[cfg(test)]
mod linalg_tests {
    use super::*;

    #[test]
    fn cholesky_and_inverse_reconstruct() {
        let a = ndarray::array![[4.0, 2.0, 0.6], [2.0, 5.0, 1.0], [0.6, 1.0, 3.0]];
        let mut l = a.as_slice().unwrap().to_vec();
        assert!(cholesky_in_place(&mut l, 3));
        let lm = Array2::from_shape_vec((3, 3), l.clone()).unwrap();
        assert!((lm.dot(&lm.t()) - &a).iter().all(|e| e.abs() < 1e-12));
        let inv = Array2::from_shape_vec((3, 3), lower_inverse(&l, 3)).unwrap();
        assert!(
            (inv.dot(&lm) - Array2::<f64>::eye(3))
                .iter()
                .all(|e| e.abs() < 1e-12)
        );
        let mut bad = vec![1.0, 2.0, 2.0, 1.0];
        assert!(!cholesky_in_place(&mut bad, 2));
    }
}
