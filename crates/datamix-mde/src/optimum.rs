//! The exact MDE-only optimum: minimise `F(λ) = Σ_j w_j L_j(λ)` over
//! `{λ : Σ λ_i = 1, l_i <= λ_i <= u_i}`.
//!
//! Each `L_j` is convex (minus the log of an affine function, averaged), so `F` is too.
//! The solver is spectral projected gradient (Barzilai-Borwein steps, Armijo backtracking,
//! exact Euclidean projection onto the box-constrained simplex). Optimality is certified
//! by the Frank-Wolfe duality gap `g·λ - min_{s feasible} g·s >= F(λ) - F*`.

use crate::error::{MdeError, Result};
use crate::loss::check_aligned;
use crate::table::ExpertTable;

/// A non-negative weighting of eval-domain MDE losses over one common set of experts.
#[derive(Debug, Clone)]
pub struct WeightedMdeLoss<'a> {
    tables: Vec<&'a ExpertTable>,
    weights: Vec<f64>,
}

impl<'a> WeightedMdeLoss<'a> {
    /// `F(λ) = Σ_j weights[j] · L_j(λ)`. Tables must be aligned (same experts, same order,
    /// same tokenizer); weights finite, non-negative and not all zero.
    pub fn new(tables: &[&'a ExpertTable], weights: &[f64]) -> Result<Self> {
        check_aligned(tables)?;
        let bad = |reason: String| {
            Err(MdeError::InvalidParam {
                name: "objective weights".into(),
                reason,
            })
        };
        if weights.len() != tables.len() {
            return bad(format!(
                "{} weights for {} tables",
                weights.len(),
                tables.len()
            ));
        }
        if let Some(j) = weights.iter().position(|w| !(w.is_finite() && *w >= 0.0)) {
            return bad(format!(
                "weight {j} (eval domain '{}') is {}, expected finite and >= 0",
                tables[j].eval_domain(),
                weights[j]
            ));
        }
        if weights.iter().all(|&w| w == 0.0) {
            return bad("all weights are zero".into());
        }
        Ok(Self {
            tables: tables.to_vec(),
            weights: weights.to_vec(),
        })
    }

    /// The average of the given tables' losses (equal weights).
    pub fn mean(tables: &[&'a ExpertTable]) -> Result<Self> {
        Self::new(
            tables,
            &vec![1.0 / tables.len().max(1) as f64; tables.len()],
        )
    }

    /// Number of experts k.
    pub fn n_experts(&self) -> usize {
        self.tables[0].n_experts()
    }

    /// Expert ids (coordinates of λ).
    pub fn expert_ids(&self) -> &[String] {
        self.tables[0].expert_ids()
    }

    /// `F(λ)` and its gradient.
    pub fn value_and_grad(&self, lambda: &[f64]) -> Result<(f64, Vec<f64>)> {
        crate::loss::validate_mixture(lambda, self.n_experts(), 0)?;
        Ok(self.value_and_grad_unchecked(lambda))
    }

    fn value_and_grad_unchecked(&self, lambda: &[f64]) -> (f64, Vec<f64>) {
        let mut value = 0.0;
        let mut grad = vec![0.0; self.n_experts()];
        for (t, &w) in self.tables.iter().zip(&self.weights) {
            if w == 0.0 {
                continue;
            }
            let (v, g) = t.loss_and_grad_unchecked(lambda);
            value += w * v;
            grad.iter_mut().zip(&g).for_each(|(a, b)| *a += w * b);
        }
        (value, grad)
    }
}

/// Per-expert lower and upper bounds on λ.
#[derive(Debug, Clone, PartialEq)]
pub struct Bounds {
    lower: Vec<f64>,
    upper: Vec<f64>,
}

impl Bounds {
    /// `0 <= lower_i <= upper_i <= 1`, `Σ lower <= 1 <= Σ upper` (so the set is non-empty).
    pub fn new(lower: Vec<f64>, upper: Vec<f64>) -> Result<Self> {
        let bad = |reason: String| {
            Err(MdeError::InvalidParam {
                name: "bounds".into(),
                reason,
            })
        };
        if lower.len() != upper.len() {
            return bad(format!(
                "{} lower and {} upper bounds",
                lower.len(),
                upper.len()
            ));
        }
        for (i, (&l, &u)) in lower.iter().zip(&upper).enumerate() {
            if !(l.is_finite() && u.is_finite() && 0.0 <= l && l <= u && u <= 1.0) {
                return bad(format!(
                    "expert {i}: [{l}, {u}], expected 0 <= lower <= upper <= 1"
                ));
            }
        }
        let (sl, su) = (lower.iter().sum::<f64>(), upper.iter().sum::<f64>());
        if sl > 1.0 + 1e-12 || su < 1.0 - 1e-12 {
            return bad(format!(
                "lower bounds sum to {sl} and upper bounds to {su}: no mixture fits"
            ));
        }
        Ok(Self { lower, upper })
    }

    /// The whole simplex over `k` experts.
    pub fn simplex(k: usize) -> Self {
        Self {
            lower: vec![0.0; k],
            upper: vec![1.0; k],
        }
    }

    /// Euclidean projection of `y` onto the feasible set ([`crate::simplex`], which
    /// allocates nothing while it solves; only the returned vector is new).
    fn project(&self, y: &[f64]) -> Vec<f64> {
        let mut out = vec![0.0; y.len()];
        crate::simplex::project_euclidean(y, &self.lower, &self.upper, &mut out);
        out
    }

    /// Frank-Wolfe vertex `argmin_{s feasible} g·s`: start at the lower bounds and pour the
    /// remaining mass into the coordinates with the smallest gradient, up to their upper bounds.
    fn linear_minimizer(&self, g: &[f64]) -> Vec<f64> {
        let mut s = self.lower.clone();
        let mut rest = 1.0 - s.iter().sum::<f64>();
        let mut order: Vec<usize> = (0..g.len()).collect();
        order.sort_by(|&a, &b| g[a].total_cmp(&g[b]));
        for i in order {
            let add = (self.upper[i] - self.lower[i]).min(rest).max(0.0);
            s[i] += add;
            rest -= add;
        }
        s
    }
}

/// Solver settings for [`minimize`].
#[derive(Debug, Clone, PartialEq)]
pub struct OptimumParams {
    gap_tol: f64,
    max_iter: usize,
}

impl Default for OptimumParams {
    fn default() -> Self {
        Self {
            gap_tol: 1e-9,
            max_iter: 5000,
        }
    }
}

impl OptimumParams {
    /// Stop once the certified gap `F(λ) - F*` bound is at most this (nats; default 1e-9).
    pub fn gap_tol(mut self, tol: f64) -> Self {
        self.gap_tol = tol;
        self
    }
    /// Iteration limit (default 5000).
    pub fn max_iter(mut self, n: usize) -> Self {
        self.max_iter = n;
        self
    }
    fn validate(&self) -> Result<()> {
        if !(self.gap_tol.is_finite() && self.gap_tol > 0.0) || self.max_iter == 0 {
            return Err(MdeError::InvalidParam {
                name: "optimum parameters".into(),
                reason: format!(
                    "gap_tol {} and max_iter {}, expected gap_tol > 0 and max_iter >= 1",
                    self.gap_tol, self.max_iter
                ),
            });
        }
        Ok(())
    }
}

/// Result of [`minimize`].
#[derive(Debug, Clone, PartialEq)]
pub struct Optimum {
    /// The minimising mixture (feasible).
    pub lambda: Vec<f64>,
    /// `F(λ)`.
    pub value: f64,
    /// Certified duality gap: `F(λ) - F* <= gap`.
    pub gap: f64,
    /// Gradient evaluations used.
    pub iterations: usize,
    /// Whether `gap <= gap_tol` was reached.
    pub converged: bool,
}

/// Minimise `objective` over the mixtures within `bounds` (see the module docs).
pub fn minimize(
    objective: &WeightedMdeLoss,
    bounds: &Bounds,
    params: &OptimumParams,
) -> Result<Optimum> {
    params.validate()?;
    let k = objective.n_experts();
    if bounds.lower.len() != k {
        return Err(MdeError::InvalidParam {
            name: "bounds".into(),
            reason: format!("{} bounds for {k} experts", bounds.lower.len()),
        });
    }
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    // Directional derivatives along feasible directions use the gradient minus its mean:
    // the same in exact arithmetic (directions sum to ~0), but free of the `ḡ · Σd`
    // rounding term that otherwise swamps slopes near the optimum.
    let slope_of = |g: &[f64], d: &[f64]| {
        let mean = g.iter().sum::<f64>() / g.len() as f64;
        g.iter().zip(d).map(|(x, y)| (x - mean) * y).sum::<f64>()
    };
    let gap_of = |lambda: &[f64], g: &[f64]| {
        let s = bounds.linear_minimizer(g);
        let diff: Vec<f64> = lambda.iter().zip(&s).map(|(a, b)| a - b).collect();
        slope_of(g, &diff).max(0.0)
    };
    let mut lambda = bounds.project(&vec![1.0 / k as f64; k]);
    let (mut f, mut g) = objective.value_and_grad_unchecked(&lambda);
    let mut evals = 1;
    let mut alpha = 1.0 / g.iter().fold(1e-12f64, |m, x| m.max(x.abs()));
    let mut gap = gap_of(&lambda, &g);
    while gap > params.gap_tol && evals < params.max_iter {
        let trial: Vec<f64> = lambda
            .iter()
            .zip(&g)
            .map(|(l, gi)| l - alpha * gi)
            .collect();
        let d: Vec<f64> = bounds
            .project(&trial)
            .iter()
            .zip(&lambda)
            .map(|(p, l)| p - l)
            .collect();
        let slope = slope_of(&g, &d);
        if slope >= 0.0 {
            break; // no descent direction left at floating-point resolution
        }
        // Line search on the directional derivative φ'(γ) = ∇F(λ + γd)·d, which stays
        // accurate where differences of F drown in rounding: φ is convex, so any γ with
        // φ'(γ) <= 0 decreases F; otherwise regula falsi on φ' over [0, 1].
        let at = |gamma: f64| -> (Vec<f64>, f64, Vec<f64>) {
            let x: Vec<f64> = lambda
                .iter()
                .zip(&d)
                .map(|(l, di)| l + gamma * di)
                .collect();
            let (fx, gx) = objective.value_and_grad_unchecked(&x);
            (x, fx, gx)
        };
        let mut best = at(1.0);
        evals += 1;
        let mut right = (1.0, slope_of(&best.2, &d));
        let mut left = (0.0, slope);
        while right.1 > 0.0 && right.1 > -0.1 * slope && evals < params.max_iter {
            let gamma = (left.0 - left.1 * (right.0 - left.0) / (right.1 - left.1)).clamp(
                left.0 + 0.01 * (right.0 - left.0),
                right.0 - 0.01 * (right.0 - left.0),
            );
            let trial = at(gamma);
            evals += 1;
            let dg = slope_of(&trial.2, &d);
            best = trial;
            if dg <= 0.0 {
                left = (gamma, dg);
                if dg >= 0.1 * slope {
                    break;
                }
            } else {
                right = (gamma, dg);
            }
        }
        let (next, fnext, gnext) = best;
        let s: Vec<f64> = next.iter().zip(&lambda).map(|(a, b)| a - b).collect();
        let y: Vec<f64> = gnext.iter().zip(&g).map(|(a, b)| a - b).collect();
        let sy = dot(&s, &y);
        alpha = if sy > 0.0 {
            (dot(&s, &s) / sy).clamp(1e-12, 1e12)
        } else {
            1e12
        };
        (lambda, f, g) = (next, fnext, gnext);
        gap = gap_of(&lambda, &g);
    }
    Ok(Optimum {
        lambda,
        value: f,
        gap,
        iterations: evals,
        converged: gap <= params.gap_tol,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn projection_lands_in_the_box_simplex() {
        let b = Bounds::new(vec![0.1, 0.0, 0.2], vec![0.5, 0.3, 1.0]).unwrap();
        for y in [
            vec![5.0, -3.0, 0.0],
            vec![0.0, 0.0, 0.0],
            vec![1.0, 1.0, 1.0],
        ] {
            let p = b.project(&y);
            assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-12, "{p:?}");
            for i in 0..3 {
                assert!(p[i] >= b.lower[i] && p[i] <= b.upper[i], "{p:?}");
            }
        }
        // A feasible point projects to itself.
        let x = [0.3, 0.2, 0.5];
        let p = b.project(&x);
        assert!(
            p.iter().zip(&x).all(|(a, b)| (a - b).abs() < 1e-12),
            "{p:?}"
        );
    }

    #[test]
    fn linear_minimizer_fills_cheapest_first() {
        let b = Bounds::new(vec![0.1, 0.1, 0.1], vec![0.6, 1.0, 1.0]).unwrap();
        let s = b.linear_minimizer(&[-1.0, 0.0, 1.0]);
        assert_eq!(s.len(), 3);
        assert!(
            (s[0] - 0.6).abs() < 1e-12 && (s[1] - 0.3).abs() < 1e-12 && (s[2] - 0.1).abs() < 1e-12,
            "{s:?}"
        );
    }

    #[test]
    fn infeasible_bounds_are_rejected() {
        assert!(Bounds::new(vec![0.6, 0.6], vec![1.0, 1.0]).is_err());
        assert!(Bounds::new(vec![0.0, 0.0], vec![0.4, 0.4]).is_err());
        assert!(Bounds::new(vec![0.5, f64::NAN], vec![1.0, 1.0]).is_err());
    }
}
