//! Derivative-free search with CMA-ES (the `cmaes` crate) through the projection.

use std::cell::{Cell, RefCell};

use cmaes::{CMAESOptions, DVector};
use serde::{Deserialize, Serialize};

use super::{Method, ensure, start_point};
use crate::error::{OptimizerError, Result};
use crate::objective::{Objective, checked_value};
use crate::result::{OptimResult, Tracker};
use crate::space::SearchSpace;

/// CMA-ES on unconstrained `z ∈ R^k`, evaluating `f(P(z)) + penalty · ‖z − P(z)‖²` where
/// `P` is the Euclidean projection onto the space. The penalty keeps the search
/// distribution near the feasible set; returned mixtures are always `P(z)`, so feasible.
/// Works for non-smooth objectives (gradient-boosted trees).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CmaEs {
    /// Initial step size (standard deviation per coordinate).
    pub sigma0: f64,
    /// Population size; `None` uses CMA-ES's default `4 + ⌊3 ln k⌋`.
    pub population: Option<usize>,
    /// Maximum objective evaluations.
    pub max_evals: usize,
    /// Stop when the best values of recent generations differ by less than this.
    pub tol_fun: f64,
    /// Weight of the distance-to-feasible-set penalty.
    pub penalty: f64,
    /// RNG seed.
    pub seed: u64,
    /// Start here instead of the space's prior.
    pub start: Option<Vec<f64>>,
}

impl Default for CmaEs {
    fn default() -> Self {
        Self {
            sigma0: 0.2,
            population: None,
            max_evals: 20_000,
            tol_fun: 1e-12,
            penalty: 1.0,
            seed: 0,
            start: None,
        }
    }
}

impl CmaEs {
    /// Default parameters.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the seed.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    fn validate(&self) -> Result<()> {
        const N: &str = "CmaEs";
        ensure(
            self.sigma0 > 0.0 && self.sigma0.is_finite(),
            N,
            "sigma0",
            self.sigma0,
            "a finite number > 0",
        )?;
        ensure(
            self.population.is_none_or(|p| p >= 2),
            N,
            "population",
            format!("{:?}", self.population),
            "None or >= 2",
        )?;
        ensure(self.max_evals > 0, N, "max_evals", self.max_evals, ">= 1")?;
        ensure(self.tol_fun >= 0.0, N, "tol_fun", self.tol_fun, ">= 0")?;
        ensure(self.penalty >= 0.0, N, "penalty", self.penalty, ">= 0")
    }
}

impl Method for CmaEs {
    fn name(&self) -> &'static str {
        "cma_es"
    }

    fn minimize(&self, space: &SearchSpace, objective: &dyn Objective) -> Result<OptimResult> {
        self.validate()?;
        let x0 = start_point(space, self.start.as_ref())?;
        let f0 = checked_value(objective, &x0)?;
        // Shared between the CMA-ES closure and the per-generation trace below.
        let tracker = RefCell::new(Tracker::new(x0.clone(), f0, 1));
        let generation_best = Cell::new(f64::INFINITY);
        // The first non-finite objective value, reported as an error after the run.
        let bad: RefCell<Option<OptimizerError>> = RefCell::new(None);
        let mut x = vec![0.0; space.dim()];
        let penalised = |z: &DVector<f64>| -> f64 {
            if bad.borrow().is_some() {
                return f64::MAX;
            }
            space.project_into(z.as_slice(), &mut x);
            match checked_value(objective, &x) {
                Ok(v) => {
                    let mut t = tracker.borrow_mut();
                    t.evaluations += 1;
                    t.offer(&x, v);
                    generation_best.set(generation_best.get().min(v));
                    let d2: f64 = z.iter().zip(&x).map(|(z, x)| (z - x) * (z - x)).sum();
                    v + self.penalty * d2
                }
                Err(e) => {
                    *bad.borrow_mut() = Some(e);
                    f64::MAX
                }
            }
        };
        let mut options = CMAESOptions::new(x0, self.sigma0)
            .seed(self.seed)
            .max_function_evals(self.max_evals)
            .tol_fun(self.tol_fun);
        if let Some(p) = self.population {
            options = options.population_size(p);
        }
        let mut cma = options
            .build(penalised)
            .map_err(|e| OptimizerError::Cmaes(format!("{e:?}")))?;
        let mut generation = 0;
        let reasons = loop {
            let done = cma.next();
            generation += 1;
            let best = generation_best.replace(f64::INFINITY);
            if best.is_finite() {
                tracker.borrow_mut().log(generation, best);
            }
            if let Some(data) = done {
                break data.reasons;
            }
            if bad.borrow().is_some() {
                break Vec::new();
            }
        };
        drop(cma);
        if let Some(e) = bad.into_inner() {
            return Err(e);
        }
        let converged = !reasons
            .iter()
            .any(|r| matches!(r, cmaes::TerminationReason::MaxFunctionEvals));
        let tracker = tracker.into_inner();
        Ok(tracker.finish(self.name(), space, objective, converged))
    }
}
