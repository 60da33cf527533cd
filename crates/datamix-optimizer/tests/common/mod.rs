//! Synthetic objectives with known optima, shared by the integration tests.
#![allow(dead_code)]

use datamix_optimizer::Objective;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// `f(x) = ½ (x − x*)ᵀ Q (x − x*) + νᵀ x` with `Q` positive definite and `ν` chosen so the
/// KKT conditions hold at `x*`: `ν_i > 0` where `x*` sits at its lower bound, `ν_i < 0`
/// where it sits at its upper bound, 0 elsewhere. So `x*` is the unique minimiser over
/// `{Σ x = 1, l ≤ x ≤ u}`.
pub struct Quadratic {
    pub q: Vec<Vec<f64>>,
    pub x_star: Vec<f64>,
    pub nu: Vec<f64>,
}

impl Quadratic {
    /// `at_lower[i]`/`at_upper[i]` mark active bounds of `x_star`.
    pub fn new(x_star: Vec<f64>, at_lower: &[bool], at_upper: &[bool], seed: u64) -> Self {
        let k = x_star.len();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let b: Vec<Vec<f64>> = (0..k)
            .map(|_| (0..k).map(|_| rng.random_range(-1.0..1.0)).collect())
            .collect();
        let q = (0..k)
            .map(|i| {
                (0..k)
                    .map(|j| {
                        (0..k).map(|r| b[r][i] * b[r][j]).sum::<f64>()
                            + if i == j { 0.5 } else { 0.0 }
                    })
                    .collect()
            })
            .collect();
        let nu = (0..k)
            .map(|i| {
                if at_lower[i] {
                    rng.random_range(0.2..1.0)
                } else if at_upper[i] {
                    -rng.random_range(0.2..1.0)
                } else {
                    0.0
                }
            })
            .collect();
        Self { q, x_star, nu }
    }

    pub fn optimum_value(&self) -> f64 {
        self.value(&self.x_star)
    }
}

impl Objective for Quadratic {
    fn value(&self, x: &[f64]) -> f64 {
        let d: Vec<f64> = x.iter().zip(&self.x_star).map(|(a, b)| a - b).collect();
        let quad: f64 = (0..d.len())
            .map(|i| d[i] * (0..d.len()).map(|j| self.q[i][j] * d[j]).sum::<f64>())
            .sum();
        0.5 * quad + x.iter().zip(&self.nu).map(|(a, b)| a * b).sum::<f64>()
    }

    fn gradient(&self, x: &[f64]) -> Option<Vec<f64>> {
        let d: Vec<f64> = x.iter().zip(&self.x_star).map(|(a, b)| a - b).collect();
        Some(
            (0..d.len())
                .map(|i| (0..d.len()).map(|j| self.q[i][j] * d[j]).sum::<f64>() + self.nu[i])
                .collect(),
        )
    }
}

/// MDE loss over synthetic experts: `L(λ) = −(1/T) Σ_t log Σ_i λ_i p_i(t)`.
///
/// Token `t` comes from domain `d(t) ~ true_mixture`; expert `d(t)` gives it probability in
/// `[0.3, 0.6]`, the others in `[0.01, 0.15]`.
pub struct SyntheticMde {
    /// `p[t][i]`.
    pub p: Vec<Vec<f64>>,
}

impl SyntheticMde {
    pub fn new(true_mixture: &[f64], tokens: usize, seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let k = true_mixture.len();
        let p = (0..tokens)
            .map(|_| {
                let u: f64 = rng.random();
                let mut acc = 0.0;
                let d = true_mixture
                    .iter()
                    .position(|w| {
                        acc += w;
                        u < acc
                    })
                    .unwrap_or(k - 1);
                (0..k)
                    .map(|i| {
                        if i == d {
                            rng.random_range(0.3..0.6)
                        } else {
                            rng.random_range(0.01..0.15)
                        }
                    })
                    .collect()
            })
            .collect();
        Self { p }
    }
}

impl Objective for SyntheticMde {
    fn value(&self, x: &[f64]) -> f64 {
        let t = self.p.len() as f64;
        -self
            .p
            .iter()
            .map(|p| p.iter().zip(x).map(|(p, l)| p * l).sum::<f64>().ln())
            .sum::<f64>()
            / t
    }

    fn gradient(&self, x: &[f64]) -> Option<Vec<f64>> {
        let t = self.p.len() as f64;
        let mut g = vec![0.0; x.len()];
        for p in &self.p {
            let mix: f64 = p.iter().zip(x).map(|(p, l)| p * l).sum();
            for (gi, pi) in g.iter_mut().zip(p) {
                *gi -= pi / mix / t;
            }
        }
        Some(g)
    }
}

pub fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max)
}
