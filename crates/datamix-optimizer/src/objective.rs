//! Objectives: what the methods minimise.

use rayon::prelude::*;

use crate::error::{OptimizerError, Result};

/// A function of the mixture to **minimise** (a predicted loss).
///
/// Only [`Objective::value`] is required. Gradient methods also need
/// [`Objective::gradient`]; models that know their own uncertainty report it through
/// [`Objective::uncertainty`] so results can carry `objective ± std`. [`Objective::values`]
/// evaluates many mixtures at once (in parallel by default); objectives with a batched
/// form (e.g. MDE features as one matrix product) override it.
///
/// Implemented for every `Fn(&[f64]) -> f64 + Sync` closure.
pub trait Objective: Sync {
    /// Objective value at mixture `x`.
    fn value(&self, x: &[f64]) -> f64;

    /// Gradient with respect to `x` (ambient coordinates), if the objective has one.
    fn gradient(&self, _x: &[f64]) -> Option<Vec<f64>> {
        None
    }

    /// Standard deviation of the predicted value at `x`, if known.
    fn uncertainty(&self, _x: &[f64]) -> Option<f64> {
        None
    }

    /// Values at many mixtures; the default evaluates them in parallel.
    fn values(&self, xs: &[Vec<f64>]) -> Vec<f64> {
        xs.par_iter().map(|x| self.value(x)).collect()
    }
}

impl<F: Fn(&[f64]) -> f64 + Sync> Objective for F {
    fn value(&self, x: &[f64]) -> f64 {
        self(x)
    }
}

/// An objective built from a value closure and a gradient closure.
#[derive(Debug, Clone)]
pub struct WithGradient<F, G> {
    value: F,
    gradient: G,
}

impl<F, G> WithGradient<F, G>
where
    F: Fn(&[f64]) -> f64 + Sync,
    G: Fn(&[f64]) -> Vec<f64> + Sync,
{
    /// Pairs a value function with its gradient.
    pub fn new(value: F, gradient: G) -> Self {
        Self { value, gradient }
    }
}

impl<F, G> Objective for WithGradient<F, G>
where
    F: Fn(&[f64]) -> f64 + Sync,
    G: Fn(&[f64]) -> Vec<f64> + Sync,
{
    fn value(&self, x: &[f64]) -> f64 {
        (self.value)(x)
    }

    fn gradient(&self, x: &[f64]) -> Option<Vec<f64>> {
        Some((self.gradient)(x))
    }
}

/// Evaluates `objective` at `x`, turning a non-finite value into an error.
pub fn checked_value<O: Objective + ?Sized>(objective: &O, x: &[f64]) -> Result<f64> {
    let v = objective.value(x);
    finite(x, v)
}

/// Evaluates many points, turning the first non-finite value into an error.
pub fn checked_values<O: Objective + ?Sized>(objective: &O, xs: &[Vec<f64>]) -> Result<Vec<f64>> {
    let vs = objective.values(xs);
    for (x, &v) in xs.iter().zip(&vs) {
        finite(x, v)?;
    }
    Ok(vs)
}

/// Gradient at `x`, checked for length and finiteness; `method` names the caller for the
/// error when the objective has no gradient.
pub fn checked_gradient<O: Objective + ?Sized>(
    objective: &O,
    x: &[f64],
    method: &'static str,
) -> Result<Vec<f64>> {
    let g = objective
        .gradient(x)
        .ok_or(OptimizerError::GradientUnavailable { method })?;
    let bad = |reason: String| OptimizerError::InvalidGradient {
        x: x.to_vec(),
        reason,
    };
    if g.len() != x.len() {
        return Err(bad(format!("{} entries, expected {}", g.len(), x.len())));
    }
    if let Some(i) = g.iter().position(|v| !v.is_finite()) {
        return Err(bad(format!("entry {i} is {}", g[i])));
    }
    Ok(g)
}

fn finite(x: &[f64], v: f64) -> Result<f64> {
    if v.is_finite() {
        Ok(v)
    } else {
        Err(OptimizerError::NonFiniteObjective {
            x: x.to_vec(),
            value: v,
        })
    }
}
