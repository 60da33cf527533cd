//! Adapters to datamix-mde: MDE losses as features of candidate mixtures ([`MdeFeatures`],
//! for [`crate::ModelObjective`] and [`crate::RegressionSurrogate`]), the MDE objective
//! itself ([`MdeObjective`], with its exact gradient), and its exact convex solve over the
//! search space ([`mde_exact`]).

use datamix_mde::{Bounds, ExpertTable, OptimumParams, mde_features};
use ndarray::Array2;

use crate::bo::SurrogateError;
use crate::error::{OptimizerError, Result};
use crate::objective::Objective;
use crate::result::{OptimResult, TraceEntry};
use crate::space::SearchSpace;

/// MDE loss per eval domain of every candidate mixture, as `mde:<eval domain>` columns.
#[derive(Debug, Clone)]
pub struct MdeFeatures {
    tables: Vec<ExpertTable>,
}

impl MdeFeatures {
    /// One table per eval domain; all must list the same experts (in the search space's
    /// domain order) and share a tokenizer.
    pub fn new(tables: Vec<ExpertTable>) -> Result<Self> {
        let refs: Vec<&ExpertTable> = tables.iter().collect();
        let k = tables.first().map_or(0, ExpertTable::n_experts);
        // Aligned tables: computing one feature row checks experts and tokenizers.
        mde_features(&refs, &[vec![1.0 / k.max(1) as f64; k]])
            .map_err(|e| OptimizerError::Surrogate(Box::new(e)))?;
        Ok(Self { tables })
    }
}

impl crate::FeatureMap for MdeFeatures {
    fn names(&self) -> Vec<String> {
        self.tables
            .iter()
            .map(|t| format!("mde:{}", t.eval_domain()))
            .collect()
    }

    fn features(&self, xs: &[Vec<f64>]) -> std::result::Result<Array2<f64>, SurrogateError> {
        let refs: Vec<&ExpertTable> = self.tables.iter().collect();
        Ok(mde_features(&refs, xs)?)
    }
}

/// A weighted sum of MDE losses over eval domains, as an [`Objective`] with its gradient.
#[derive(Debug)]
pub struct MdeObjective<'a> {
    inner: datamix_mde::WeightedMdeLoss<'a>,
}

impl<'a> MdeObjective<'a> {
    /// `Σ_j w_j L_j^MDE(λ)` over `tables`.
    pub fn new(tables: &[&'a ExpertTable], weights: &[f64]) -> Result<Self> {
        let inner = datamix_mde::WeightedMdeLoss::new(tables, weights)
            .map_err(|e| OptimizerError::Surrogate(Box::new(e)))?;
        Ok(Self { inner })
    }

    /// The mean MDE loss over `tables`.
    pub fn mean(tables: &[&'a ExpertTable]) -> Result<Self> {
        let w = vec![1.0 / tables.len().max(1) as f64; tables.len()];
        Self::new(tables, &w)
    }

    /// The underlying datamix-mde objective.
    pub fn inner(&self) -> &datamix_mde::WeightedMdeLoss<'a> {
        &self.inner
    }
}

impl Objective for MdeObjective<'_> {
    fn value(&self, x: &[f64]) -> f64 {
        self.inner.value_and_grad(x).map_or(f64::NAN, |(v, _)| v)
    }

    fn gradient(&self, x: &[f64]) -> Option<Vec<f64>> {
        self.inner.value_and_grad(x).ok().map(|(_, g)| g)
    }
}

/// The exact minimiser of an MDE objective over `space` (its lower and upper bounds,
/// fixed domains and token limits), solved by datamix-mde with a certified duality gap.
pub fn mde_exact(
    space: &SearchSpace,
    objective: &MdeObjective<'_>,
    params: &OptimumParams,
) -> Result<OptimResult> {
    let k = objective.inner.n_experts();
    if k != space.dim() {
        return Err(OptimizerError::Surrogate(
            format!(
                "MDE tables have {k} experts, the search space {} domains",
                space.dim()
            )
            .into(),
        ));
    }
    let bounds = Bounds::new(space.lower().to_vec(), space.upper().to_vec())
        .map_err(|e| OptimizerError::Surrogate(Box::new(e)))?;
    let opt = datamix_mde::minimize(&objective.inner, &bounds, params)
        .map_err(|e| OptimizerError::Surrogate(Box::new(e)))?;
    // Project away rounding so the result passes the space's own feasibility check.
    let mixture = space.project(&opt.lambda);
    let value = objective.value(&mixture);
    Ok(OptimResult {
        method: "mde_exact".into(),
        domains: space.names().to_vec(),
        mixture,
        objective: value,
        uncertainty: None,
        evaluations: opt.iterations,
        converged: opt.converged,
        trace: vec![TraceEntry {
            iteration: opt.iterations,
            evaluations: opt.iterations,
            value,
            best_value: value,
        }],
    })
}
