//! First-order methods for differentiable objectives: projected gradient (Euclidean) and
//! exponentiated gradient (mirror descent with the entropy, KL projection). Both use an
//! adaptive step: backtrack until the sufficient-decrease condition of the step's
//! geometry holds, then try a doubled step next time.

use serde::{Deserialize, Serialize};

use super::{Method, ensure, start_point};
use crate::error::Result;
use crate::objective::{Objective, checked_gradient, checked_value};
use crate::result::{OptimResult, Tracker};
use crate::space::SearchSpace;

/// Parameters shared by the two gradient methods.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GradientParams {
    /// Maximum number of accepted steps.
    pub max_iter: usize,
    /// Stop when no coordinate moves more than this in one step.
    pub tol: f64,
    /// Stop when the Frank–Wolfe gap `max_s ⟨∇f(x), x − s⟩` over feasible `s` is at most
    /// this; for convex objectives it bounds `f(x) − f*`.
    pub gap_tol: f64,
    /// First step size tried.
    pub initial_step: f64,
    /// Start here instead of the space's prior.
    pub start: Option<Vec<f64>>,
}

impl Default for GradientParams {
    fn default() -> Self {
        Self {
            max_iter: 2000,
            tol: 1e-12,
            gap_tol: 1e-10,
            initial_step: 1.0,
            start: None,
        }
    }
}

impl GradientParams {
    fn validate(&self, owner: &'static str) -> Result<()> {
        ensure(self.max_iter > 0, owner, "max_iter", self.max_iter, ">= 1")?;
        ensure(self.tol > 0.0, owner, "tol", self.tol, "> 0")?;
        ensure(self.gap_tol >= 0.0, owner, "gap_tol", self.gap_tol, ">= 0")?;
        ensure(
            self.initial_step > 0.0 && self.initial_step.is_finite(),
            owner,
            "initial_step",
            self.initial_step,
            "a finite number > 0",
        )
    }
}

/// Projected gradient descent: `x ← P(x − η ∇f(x))` with Euclidean projection `P`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProjectedGradient {
    /// Iteration limits and step size.
    #[serde(flatten)]
    pub params: GradientParams,
}

/// Exponentiated gradient (mirror descent): `x ← Π_KL(x ⊙ exp(−η ∇f(x)))`. Natural for
/// the simplex and for MDE losses, whose gradients blow up near the boundary.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ExponentiatedGradient {
    /// Iteration limits and step size.
    #[serde(flatten)]
    pub params: GradientParams,
}

impl ProjectedGradient {
    /// Default parameters.
    pub fn new() -> Self {
        Self::default()
    }
}

impl ExponentiatedGradient {
    /// Default parameters.
    pub fn new() -> Self {
        Self::default()
    }
}

/// The geometry of a first-order step.
trait Geometry {
    const NAME: &'static str;
    /// Writes the step of size `eta` from `x` along gradient `g` into `out`.
    fn step(space: &SearchSpace, x: &[f64], g: &[f64], eta: f64, out: &mut [f64]);
    /// Distance term of the sufficient-decrease test: `D(y, x) / eta`.
    fn divergence(y: &[f64], x: &[f64]) -> f64;
}

struct Euclid;
struct Entropy;

impl Geometry for Euclid {
    const NAME: &'static str = "projected_gradient";

    fn step(space: &SearchSpace, x: &[f64], g: &[f64], eta: f64, out: &mut [f64]) {
        let y: Vec<f64> = x.iter().zip(g).map(|(x, g)| x - eta * g).collect();
        space.project_into(&y, out);
    }

    fn divergence(y: &[f64], x: &[f64]) -> f64 {
        0.5 * y.iter().zip(x).map(|(y, x)| (y - x) * (y - x)).sum::<f64>()
    }
}

impl Geometry for Entropy {
    const NAME: &'static str = "exponentiated_gradient";

    fn step(space: &SearchSpace, x: &[f64], g: &[f64], eta: f64, out: &mut [f64]) {
        // Shift by min g so every factor is <= 1 (no overflow); the KL projection rescales.
        let gmin = g.iter().copied().fold(f64::INFINITY, f64::min);
        let y: Vec<f64> = x
            .iter()
            .zip(g)
            .map(|(x, g)| x * (-eta * (g - gmin)).exp())
            .collect();
        space.project_kl_into(&y, out);
    }

    fn divergence(y: &[f64], x: &[f64]) -> f64 {
        y.iter()
            .zip(x)
            .map(|(&y, &x)| {
                if y <= 0.0 {
                    x
                } else if x <= 0.0 {
                    f64::INFINITY
                } else {
                    y * (y / x).ln() - y + x
                }
            })
            .sum()
    }
}

fn descend<G: Geometry>(
    params: &GradientParams,
    space: &SearchSpace,
    objective: &dyn Objective,
) -> Result<OptimResult> {
    params.validate(G::NAME)?;
    let mut x = start_point(space, params.start.as_ref())?;
    if G::NAME == Entropy::NAME {
        // Mirror steps cannot leave a zero coordinate: start from the interior.
        let interior: Vec<f64> = x.iter().map(|v| v + 1e-3).collect();
        x = space.project(&interior);
    }
    let mut f = checked_value(objective, &x)?;
    let mut t = Tracker::new(x.clone(), f, 1);
    let mut eta = params.initial_step;
    let mut y = vec![0.0; x.len()];
    let mut converged = false;
    for it in 1..=params.max_iter {
        let g = checked_gradient(objective, &x, G::NAME)?;
        if frank_wolfe_gap(space, &x, &g) <= params.gap_tol {
            converged = true;
            break;
        }
        // Backtracking: accept once f(y) <= f(x) + <g, y − x> + D(y, x) / eta.
        let fy = loop {
            G::step(space, &x, &g, eta, &mut y);
            let fy = checked_value(objective, &y)?;
            t.evaluations += 1;
            let lin: f64 = g
                .iter()
                .zip(y.iter().zip(&x))
                .map(|(g, (y, x))| g * (y - x))
                .sum();
            let bound = f + lin + G::divergence(&y, &x) / eta;
            if fy <= bound + 4.0 * f64::EPSILON * f.abs() || eta < 1e-30 {
                break fy;
            }
            eta *= 0.5;
        };
        let moved = y
            .iter()
            .zip(&x)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        std::mem::swap(&mut x, &mut y);
        f = fy;
        t.offer(&x, f);
        t.log(it, f);
        if moved <= params.tol {
            converged = true;
            break;
        }
        eta *= 2.0;
    }
    Ok(t.finish(G::NAME, space, objective, converged))
}

/// `max_s ⟨g, x − s⟩` over the space: the vertex `s` fills the cheapest coordinates (by
/// `g`) up to their upper bounds, starting from the lower bounds.
pub(crate) fn frank_wolfe_gap(space: &SearchSpace, x: &[f64], g: &[f64]) -> f64 {
    let (lower, upper) = (space.lower(), space.upper());
    let mut order: Vec<usize> = (0..x.len()).collect();
    order.sort_by(|&a, &b| g[a].total_cmp(&g[b]));
    let mut left = 1.0 - lower.iter().sum::<f64>();
    let mut gs = 0.0;
    for &i in &order {
        let add = (upper[i] - lower[i]).min(left.max(0.0));
        left -= add;
        gs += g[i] * (lower[i] + add);
    }
    let gx: f64 = g.iter().zip(x).map(|(g, x)| g * x).sum();
    gx - gs
}

impl Method for ProjectedGradient {
    fn name(&self) -> &'static str {
        Euclid::NAME
    }

    fn minimize(&self, space: &SearchSpace, objective: &dyn Objective) -> Result<OptimResult> {
        descend::<Euclid>(&self.params, space, objective)
    }
}

impl Method for ExponentiatedGradient {
    fn name(&self) -> &'static str {
        Entropy::NAME
    }

    fn minimize(&self, space: &SearchSpace, objective: &dyn Objective) -> Result<OptimResult> {
        descend::<Entropy>(&self.params, space, objective)
    }
}
