//! Synthetic trained-mixture tables for tests and benchmarks: losses from a known nonlinear
//! function of λ plus noise, with MDE-like and merged-proxy-like features.

use ndarray::{Array1, Array2};
use rand::{Rng, SeedableRng};

use crate::dataset::{Column, Dataset, LAMBDA, MDE, MERGED};

/// Shape of a synthetic table.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntheticSpec {
    /// Rows (trained mixtures).
    pub n_mixtures: usize,
    /// Training domains k (λ columns).
    pub n_domains: usize,
    /// Eval domains (targets, MDE and merged columns).
    pub n_eval: usize,
    /// Standard deviation of the observation noise on the targets.
    pub noise: f64,
    /// Random seed.
    pub seed: u64,
}

impl Default for SyntheticSpec {
    fn default() -> Self {
        Self {
            n_mixtures: 64,
            n_domains: 5,
            n_eval: 5,
            noise: 0.01,
            seed: 0,
        }
    }
}

fn normal(rng: &mut impl Rng) -> f64 {
    let u: f64 = rng.random_range(f64::EPSILON..1.0);
    let v: f64 = rng.random();
    (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
}

/// Generates a table with columns `lambda:d{i}`, `mde:e{j}`, `merged:e{j}` and `target:e{j}`.
///
/// Per eval domain j, with expert "token probabilities" `p_ij` (in-domain experts better):
/// `MDE_j(λ) = −ln Σ_i λ_i p_ij` and the true loss
/// `L_j(λ) = 0.9·MDE_j(λ) + 0.15 Σ_i c_ij λ_i² + 0.05 sin(2π λ_{j mod k}) + 0.3`.
/// Observed: target `L_j + N(0, noise²)`, MDE feature `MDE_j + N(0, (noise/2)²)`,
/// merged feature `L_j + 0.05 + 0.1 Σ_i λ_i² + N(0, (2·noise)²)`.
pub fn synthetic(spec: &SyntheticSpec) -> Dataset {
    let (n, k, m) = (spec.n_mixtures, spec.n_domains.max(1), spec.n_eval);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(spec.seed);
    let p = Array2::from_shape_fn((k, m), |(i, j)| {
        let base: f64 = rng.random_range(1.5..4.0);
        (-(if i == j % k { base - 1.5 } else { base })).exp()
    });
    let c = Array2::from_shape_fn((k, m), |_| rng.random_range(-1.0..1.0));
    let mut feats = Array2::zeros((n, k + 2 * m));
    let mut targets = Array2::zeros((n, m));
    for r in 0..n {
        // Sharper than uniform-Dirichlet draws, so some mixtures are nearly single-domain.
        let w: Array1<f64> = (0..k)
            .map(|_| (-rng.random_range(f64::EPSILON..1.0f64).ln()).powf(1.5))
            .collect();
        let lam = &w / w.sum();
        let sq = lam.dot(&lam);
        for i in 0..k {
            feats[[r, i]] = lam[i];
        }
        for j in 0..m {
            let mde = -lam.dot(&p.column(j)).ln();
            let quad: f64 = (0..k).map(|i| c[[i, j]] * lam[i] * lam[i]).sum();
            let loss =
                0.9 * mde + 0.15 * quad + 0.05 * (std::f64::consts::TAU * lam[j % k]).sin() + 0.3;
            targets[[r, j]] = loss + spec.noise * normal(&mut rng);
            feats[[r, k + j]] = mde + 0.5 * spec.noise * normal(&mut rng);
            feats[[r, k + m + j]] = loss + 0.05 + 0.1 * sq + 2.0 * spec.noise * normal(&mut rng);
        }
    }
    let mut cols: Vec<Column> = (0..k)
        .map(|i| Column::new(LAMBDA, format!("d{i}")))
        .collect();
    cols.extend((0..m).map(|j| Column::new(MDE, format!("e{j}"))));
    cols.extend((0..m).map(|j| Column::new(MERGED, format!("e{j}"))));
    Dataset::new(
        (0..n).map(|r| format!("m{r}")).collect(),
        cols,
        feats,
        (0..m).map(|j| format!("e{j}")).collect(),
        targets,
    )
    .expect("synthetic values are finite and names unique")
}
