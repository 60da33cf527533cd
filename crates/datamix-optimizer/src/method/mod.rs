//! Search methods: small interchangeable strategies behind one [`Method`] trait.
//!
//! Every method starts from the space's prior (unless told otherwise), keeps every iterate
//! feasible through the space's projections, and minimises the objective.

mod cma;
mod dirichlet;
mod gradient;

use serde::{Deserialize, Serialize};

pub use cma::CmaEs;
pub use dirichlet::DirichletSearch;
pub use gradient::{ExponentiatedGradient, GradientParams, ProjectedGradient};

use crate::error::{OptimizerError, Result};
use crate::objective::Objective;
use crate::result::OptimResult;
use crate::space::SearchSpace;

/// A way to minimise an objective over a search space.
pub trait Method {
    /// Short name recorded in results.
    fn name(&self) -> &'static str;

    /// Minimises `objective` over `space`; the returned mixture is always feasible.
    fn minimize(&self, space: &SearchSpace, objective: &dyn Objective) -> Result<OptimResult>;
}

/// Serialisable choice of method with its parameters (for configs and the CLI).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case")]
pub enum MethodConfig {
    /// [`DirichletSearch`].
    Dirichlet(DirichletSearch),
    /// [`ProjectedGradient`].
    ProjectedGradient(ProjectedGradient),
    /// [`ExponentiatedGradient`].
    ExponentiatedGradient(ExponentiatedGradient),
    /// [`CmaEs`].
    CmaEs(CmaEs),
}

impl MethodConfig {
    /// The configured method as a trait object.
    pub fn as_method(&self) -> &dyn Method {
        match self {
            Self::Dirichlet(m) => m,
            Self::ProjectedGradient(m) => m,
            Self::ExponentiatedGradient(m) => m,
            Self::CmaEs(m) => m,
        }
    }
}

/// Checks that a method parameter holds; `expected` describes the valid range.
pub(crate) fn ensure(
    ok: bool,
    owner: &'static str,
    name: &'static str,
    value: impl ToString,
    expected: &'static str,
) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(OptimizerError::InvalidParameter {
            owner,
            name,
            value: value.to_string(),
            expected,
        })
    }
}

/// The starting point: `start` checked against the space, or the space's prior.
pub(crate) fn start_point(space: &SearchSpace, start: Option<&Vec<f64>>) -> Result<Vec<f64>> {
    match start {
        Some(x) => {
            space.check(x)?;
            Ok(space.project(x))
        }
        None => Ok(space.prior().to_vec()),
    }
}
