//! The constrained search space: the simplex with per-domain bounds, fixed domains,
//! token-availability limits and an optional prior mixture.

use rand::Rng;
use rand_distr::{Distribution, Gamma};
use serde::{Deserialize, Serialize};

use crate::error::{OptimizerError, Result};
use crate::projection::{project_euclidean, project_kl};

/// Slack allowed when checking that a caller's mixture lies in the space.
pub const FEASIBILITY_TOLERANCE: f64 = 1e-9;

/// Token-availability limits: training on `λ_i · budget` tokens of domain `i` must not
/// repeat it more than `max_epochs_i` times, i.e. `λ_i · budget ≤ max_epochs_i · tokens_i`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenLimits {
    /// Total training tokens of the run the mixture is for.
    pub budget: f64,
    /// Tokens available per domain.
    pub tokens: Vec<f64>,
    /// Maximum number of passes over each domain.
    pub max_epochs: Vec<f64>,
}

/// Validated description of the feasible mixtures, built with [`SearchSpace::builder`].
///
/// Feasible set: `{λ : Σ λ_i = 1, lower_i ≤ λ_i ≤ upper_i}` where `upper` already includes
/// token limits and fixed domains have `lower_i = upper_i`. It is never empty.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchSpace {
    names: Vec<String>,
    lower: Vec<f64>,
    upper: Vec<f64>,
    prior: Vec<f64>,
}

impl SearchSpace {
    /// Starts a space over `k` domains named `d0, d1, ...` (no bounds, uniform prior).
    pub fn builder(k: usize) -> SearchSpaceBuilder {
        SearchSpaceBuilder::new((0..k).map(|i| format!("d{i}")).collect())
    }

    /// Starts a space over the named domains.
    pub fn builder_named<S: Into<String>>(
        names: impl IntoIterator<Item = S>,
    ) -> SearchSpaceBuilder {
        SearchSpaceBuilder::new(names.into_iter().map(Into::into).collect())
    }

    /// The unconstrained simplex over `k` domains.
    pub fn simplex(k: usize) -> Result<Self> {
        Self::builder(k).build()
    }

    /// Number of domains.
    pub fn dim(&self) -> usize {
        self.lower.len()
    }

    /// Domain names.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Effective lower bounds.
    pub fn lower(&self) -> &[f64] {
        &self.lower
    }

    /// Effective upper bounds (token limits and fixed domains included).
    pub fn upper(&self) -> &[f64] {
        &self.upper
    }

    /// The prior mixture, projected into the space (uniform if none was given).
    pub fn prior(&self) -> &[f64] {
        &self.prior
    }

    /// Euclidean projection of any point onto the space.
    pub fn project(&self, y: &[f64]) -> Vec<f64> {
        let mut out = vec![0.0; self.dim()];
        self.project_into(y, &mut out);
        out
    }

    /// Euclidean projection of `y` into `out` (both of length [`Self::dim`]).
    pub fn project_into(&self, y: &[f64], out: &mut [f64]) {
        project_euclidean(y, &self.lower, &self.upper, out);
    }

    /// KL projection of a positive vector onto the space (mirror-descent step).
    pub fn project_kl_into(&self, y: &[f64], out: &mut [f64]) {
        project_kl(y, &self.lower, &self.upper, out);
    }

    /// Checks that `x` is a feasible mixture (within [`FEASIBILITY_TOLERANCE`]).
    pub fn check(&self, x: &[f64]) -> Result<()> {
        let bad = |reason: String| OptimizerError::InfeasibleMixture {
            x: x.to_vec(),
            reason,
        };
        if x.len() != self.dim() {
            return Err(bad(format!(
                "has {} entries, expected {}",
                x.len(),
                self.dim()
            )));
        }
        for (i, &v) in x.iter().enumerate() {
            if !v.is_finite()
                || v < self.lower[i] - FEASIBILITY_TOLERANCE
                || v > self.upper[i] + FEASIBILITY_TOLERANCE
            {
                return Err(bad(format!(
                    "domain {i} ({}) is {v}, expected within [{}, {}]",
                    self.names[i], self.lower[i], self.upper[i]
                )));
            }
        }
        let s: f64 = x.iter().sum();
        if (s - 1.0).abs() > FEASIBILITY_TOLERANCE * self.dim() as f64 {
            return Err(bad(format!("sums to {s}, expected 1")));
        }
        Ok(())
    }

    /// Draws `λ ~ Dirichlet(concentration · centre)` and projects it onto the space.
    ///
    /// `centre` entries are floored at `1e-3 / k` so every domain can be explored;
    /// `concentration` scales how tightly samples cluster around the centre.
    pub fn sample_dirichlet<R: Rng + ?Sized>(
        &self,
        centre: &[f64],
        concentration: f64,
        rng: &mut R,
    ) -> Vec<f64> {
        let floor = 1e-3 / self.dim() as f64;
        let mut g: Vec<f64> = centre
            .iter()
            .map(|&c| {
                let alpha = concentration * c.max(floor);
                // Gamma::new only fails for non-positive or non-finite shape/scale.
                Gamma::new(alpha, 1.0).map_or(0.0, |d| d.sample(rng))
            })
            .collect();
        let total: f64 = g.iter().sum();
        if total > 0.0 && total.is_finite() {
            g.iter_mut().for_each(|v| *v /= total);
        } else {
            g.copy_from_slice(centre);
        }
        self.project(&g)
    }

    /// Draws a mixture uniformly from the simplex (Dirichlet(1)) and projects it.
    pub fn sample_uniform<R: Rng + ?Sized>(&self, rng: &mut R) -> Vec<f64> {
        let k = self.dim() as f64;
        let centre = vec![1.0 / k; self.dim()];
        self.sample_dirichlet(&centre, k, rng)
    }
}

/// Builder for [`SearchSpace`]; [`SearchSpaceBuilder::build`] validates everything.
#[derive(Debug, Clone)]
pub struct SearchSpaceBuilder {
    names: Vec<String>,
    lower: Option<Vec<f64>>,
    upper: Option<Vec<f64>>,
    fixed: Vec<(usize, f64)>,
    token_limits: Option<TokenLimits>,
    prior: Option<Vec<f64>>,
}

impl SearchSpaceBuilder {
    fn new(names: Vec<String>) -> Self {
        Self {
            names,
            lower: None,
            upper: None,
            fixed: Vec::new(),
            token_limits: None,
            prior: None,
        }
    }

    /// Per-domain lower bounds (default 0).
    pub fn lower(mut self, lower: Vec<f64>) -> Self {
        self.lower = Some(lower);
        self
    }

    /// Per-domain upper bounds (default 1).
    pub fn upper(mut self, upper: Vec<f64>) -> Self {
        self.upper = Some(upper);
        self
    }

    /// Fixes domain `domain` at weight `value` (overrides its bounds).
    pub fn fix(mut self, domain: usize, value: f64) -> Self {
        self.fixed.push((domain, value));
        self
    }

    /// Adds token-availability limits (`λ_i · budget ≤ max_epochs_i · tokens_i`).
    pub fn token_limits(mut self, limits: TokenLimits) -> Self {
        self.token_limits = Some(limits);
        self
    }

    /// Sets a prior mixture (non-negative weights, e.g. token counts; normalised to sum 1,
    /// then projected into the space).
    pub fn prior(mut self, prior: Vec<f64>) -> Self {
        self.prior = Some(prior);
        self
    }

    /// Validates and builds the space.
    ///
    /// Errors: [`OptimizerError::NoDomains`], [`OptimizerError::DimensionMismatch`],
    /// [`OptimizerError::InvalidValue`] (NaN, negative, bounds outside `[0, 1]`),
    /// [`OptimizerError::InvalidBudget`] (zero budget), [`OptimizerError::EmptyInterval`],
    /// [`OptimizerError::LowerBoundsAboveOne`], [`OptimizerError::UpperBoundsBelowOne`].
    pub fn build(self) -> Result<SearchSpace> {
        let k = self.names.len();
        if k == 0 {
            return Err(OptimizerError::NoDomains);
        }
        let names = self.names;
        let check_len = |field: &'static str, v: &[f64]| {
            if v.len() == k {
                Ok(())
            } else {
                Err(OptimizerError::DimensionMismatch {
                    field,
                    expected: k,
                    got: v.len(),
                })
            }
        };
        let check_range =
            |field: &'static str, v: &[f64], min: f64, max: f64, expected: &'static str| match v
                .iter()
                .position(|&x| !(x >= min && x <= max))
            {
                None => Ok(()),
                Some(i) => Err(OptimizerError::InvalidValue {
                    field,
                    domain: i,
                    name: names[i].clone(),
                    value: v[i],
                    expected,
                }),
            };
        let mut lower = self.lower.unwrap_or_else(|| vec![0.0; k]);
        let mut upper = self.upper.unwrap_or_else(|| vec![1.0; k]);
        check_len("lower", &lower)?;
        check_len("upper", &upper)?;
        check_range("lower", &lower, 0.0, 1.0, "a number in [0, 1]")?;
        check_range("upper", &upper, 0.0, 1.0, "a number in [0, 1]")?;
        for &(i, v) in &self.fixed {
            if i >= k {
                return Err(OptimizerError::InvalidParameter {
                    owner: "SearchSpace",
                    name: "fix.domain",
                    value: i.to_string(),
                    expected: "a domain index below the number of domains",
                });
            }
            check_range("fixed", &[v], 0.0, 1.0, "a number in [0, 1]")
                .map_err(|e| relabel(e, i, &names[i]))?;
            lower[i] = v;
            upper[i] = v;
        }
        if let Some(limits) = &self.token_limits {
            if !(limits.budget.is_finite() && limits.budget > 0.0) {
                return Err(OptimizerError::InvalidBudget(limits.budget));
            }
            check_len("tokens", &limits.tokens)?;
            check_len("max_epochs", &limits.max_epochs)?;
            let any = "a finite number >= 0";
            check_range("tokens", &limits.tokens, 0.0, f64::MAX, any)?;
            check_range("max_epochs", &limits.max_epochs, 0.0, f64::MAX, any)?;
            for ((u, e), t) in upper.iter_mut().zip(&limits.max_epochs).zip(&limits.tokens) {
                *u = u.min(e * t / limits.budget);
            }
        }
        for i in 0..k {
            if lower[i] > upper[i] {
                return Err(OptimizerError::EmptyInterval {
                    domain: i,
                    name: names[i].clone(),
                    lower: lower[i],
                    upper: upper[i],
                });
            }
        }
        let lo_sum: f64 = lower.iter().sum();
        let up_sum: f64 = upper.iter().sum();
        // Allow rounding slack (e.g. fixed weights 0.1 + 0.2 + 0.7).
        let slack = 1e-12 * k as f64;
        if lo_sum > 1.0 + slack {
            return Err(OptimizerError::LowerBoundsAboveOne { sum: lo_sum });
        }
        if up_sum < 1.0 - slack {
            return Err(OptimizerError::UpperBoundsBelowOne { sum: up_sum });
        }
        let prior = match self.prior {
            None => vec![1.0 / k as f64; k],
            Some(p) => {
                check_len("prior", &p)?;
                check_range("prior", &p, 0.0, f64::MAX, "a finite weight >= 0")?;
                let s: f64 = p.iter().sum();
                if !(s > 0.0 && s.is_finite()) {
                    return Err(OptimizerError::InvalidValue {
                        field: "prior",
                        domain: 0,
                        name: names[0].clone(),
                        value: s,
                        expected: "prior weights with a positive finite sum",
                    });
                }
                p.iter().map(|v| v / s).collect()
            }
        };
        let mut space = SearchSpace {
            names,
            lower,
            upper,
            prior,
        };
        space.prior = space.project(&space.prior);
        Ok(space)
    }
}

fn relabel(e: OptimizerError, domain: usize, name: &str) -> OptimizerError {
    match e {
        OptimizerError::InvalidValue {
            field,
            value,
            expected,
            ..
        } => OptimizerError::InvalidValue {
            field,
            domain,
            name: name.to_owned(),
            value,
            expected,
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_limits_become_upper_bounds() {
        let space = SearchSpace::builder(3)
            .token_limits(TokenLimits {
                budget: 100.0,
                tokens: vec![10.0, 1000.0, 1000.0],
                max_epochs: vec![2.0, 1.0, 1.0],
            })
            .build()
            .unwrap();
        assert_eq!(space.upper(), &[0.2, 1.0, 1.0]);
    }

    #[test]
    fn bad_input_gives_typed_errors() {
        let e = SearchSpace::builder(3).lower(vec![0.5, 0.4, 0.2]).build();
        assert!(matches!(e, Err(OptimizerError::LowerBoundsAboveOne { .. })));
        let e = SearchSpace::builder(3).upper(vec![0.3, 0.3, 0.3]).build();
        assert!(matches!(e, Err(OptimizerError::UpperBoundsBelowOne { .. })));
        let e = SearchSpace::builder(2)
            .token_limits(TokenLimits {
                budget: 0.0,
                tokens: vec![1.0, 1.0],
                max_epochs: vec![1.0, 1.0],
            })
            .build();
        assert!(matches!(e, Err(OptimizerError::InvalidBudget(b)) if b == 0.0));
        let e = SearchSpace::builder(2).lower(vec![f64::NAN, 0.0]).build();
        assert!(matches!(
            e,
            Err(OptimizerError::InvalidValue {
                field: "lower",
                domain: 0,
                ..
            })
        ));
        let e = SearchSpace::builder(2).upper(vec![1.0]).build();
        assert!(matches!(
            e,
            Err(OptimizerError::DimensionMismatch { field: "upper", .. })
        ));
        let e = SearchSpace::builder(2)
            .lower(vec![0.6, 0.0])
            .upper(vec![0.5, 1.0])
            .build();
        assert!(matches!(
            e,
            Err(OptimizerError::EmptyInterval { domain: 0, .. })
        ));
        assert!(matches!(
            SearchSpace::builder(0).build(),
            Err(OptimizerError::NoDomains)
        ));
    }

    #[test]
    fn fixed_domain_and_prior_are_respected() {
        let space = SearchSpace::builder_named(["web", "code", "books"])
            .fix(1, 0.25)
            .prior(vec![600.0, 300.0, 100.0])
            .build()
            .unwrap();
        assert_eq!(space.prior()[1], 0.25);
        space.check(space.prior()).unwrap();
        let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(7);
        for _ in 0..20 {
            let x = space.sample_dirichlet(space.prior(), 10.0, &mut rng);
            space.check(&x).unwrap();
            assert_eq!(x[1], 0.25);
        }
    }
}
