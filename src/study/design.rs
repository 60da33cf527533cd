//! The study design: which models are trained (backend-free, deterministic in the seed).
//!
//! - Belenki et al.: ground-truth mixtures over domains (the uniform one, then Dirichlet
//!   draws), the last `mixtures.test` of them held out;
//! - Na et al.: distinct `k`-subsets of base units;
//! - replicates: (mixture, seed) pairs trained again.

use std::collections::BTreeSet;

use rand::SeedableRng;
use rand::seq::index::sample;
use rand_distr::{Distribution, Gamma};

use super::config::StudyConfig;
use crate::error::{Error, Result};

/// Ground-truth mixtures: the uniform one, then `count - 1` Dirichlet(α) draws.
pub fn draw_mixtures(k: usize, count: usize, alpha: f64, seed: u64) -> Vec<Vec<f64>> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x6d69_7874_7572_6573);
    let gamma = Gamma::new(alpha, 1.0).expect("alpha validated > 0");
    let mut out = vec![vec![1.0 / k as f64; k]];
    while out.len() < count {
        let g: Vec<f64> = (0..k).map(|_| gamma.sample(&mut rng)).collect();
        let s: f64 = g.iter().sum();
        if s > 0.0 && s.is_finite() {
            out.push(g.iter().map(|x| x / s).collect());
        }
    }
    out
}

/// `count` distinct `k`-subsets of `0..n` (each sorted), in draw order.
pub fn draw_subsets(n: usize, k: usize, count: usize, seed: u64) -> Result<Vec<Vec<usize>>> {
    if k == 0 || k > n {
        return Err(Error::Invalid(format!(
            "subsets.k = {k} with {n} base units (expected 1..={n})"
        )));
    }
    let possible = binomial(n, k);
    if (count as u128) > possible {
        return Err(Error::Invalid(format!(
            "subsets.count = {count}: only {possible} distinct {k}-subsets of {n} base units exist"
        )));
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x7375_6273_6574_7321);
    let mut seen = BTreeSet::new();
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        let mut s = sample(&mut rng, n, k).into_vec();
        s.sort_unstable();
        if seen.insert(s.clone()) {
            out.push(s);
        }
    }
    Ok(out)
}

/// `n choose k`, saturating at `u128::MAX`.
fn binomial(n: usize, k: usize) -> u128 {
    let k = k.min(n - k) as u128;
    let mut r: u128 = 1;
    for i in 0..k {
        r = r.saturating_mul(n as u128 - i) / (i + 1);
    }
    r
}

/// Which mixtures are held out (`is_test[j]`): the last `mixtures.test` ones.
pub fn test_mask(cfg: &StudyConfig) -> Vec<bool> {
    let n = cfg.mixtures.count;
    (0..n).map(|j| j >= n - cfg.mixtures.test).collect()
}

/// The extra seeds of replicate runs: `seed + 1 ..= seed + count`.
pub fn extra_seeds(seed: u64, count: usize) -> Vec<u64> {
    (1..=count as u64).map(|r| seed.wrapping_add(r)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subsets_are_distinct_sorted_and_deterministic() {
        let a = draw_subsets(10, 3, 50, 7).unwrap();
        assert_eq!(a, draw_subsets(10, 3, 50, 7).unwrap());
        let set: BTreeSet<_> = a.iter().cloned().collect();
        assert_eq!(set.len(), 50);
        assert!(
            a.iter()
                .all(|s| s.len() == 3 && s.windows(2).all(|w| w[0] < w[1]))
        );
        assert!(a.iter().flatten().all(|&u| u < 10));
        // Every 2-subset of 4 units: exactly 6 exist.
        assert_eq!(draw_subsets(4, 2, 6, 0).unwrap().len(), 6);
    }

    #[test]
    fn impossible_designs_are_refused() {
        let e = draw_subsets(4, 5, 1, 0).unwrap_err().to_string();
        assert!(e.contains("subsets.k = 5"), "{e}");
        let e = draw_subsets(4, 2, 7, 0).unwrap_err().to_string();
        assert!(e.contains("only 6 distinct"), "{e}");
        assert_eq!(binomial(26, 2), 325);
        assert_eq!(binomial(60, 30), 118_264_581_564_861_424);
    }

    #[test]
    fn mixtures_start_uniform_and_lie_on_the_simplex() {
        let m = draw_mixtures(4, 10, 0.5, 3);
        assert_eq!(m.len(), 10);
        assert!(m[0].iter().all(|&w| (w - 0.25).abs() < 1e-12));
        for l in &m {
            assert!((l.iter().sum::<f64>() - 1.0).abs() < 1e-9);
            assert!(l.iter().all(|&w| w >= 0.0));
        }
    }
}
