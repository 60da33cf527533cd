//! Honest statistics for a study (backend-free): the seed-to-seed noise floor and the
//! correlation ceiling it implies, held-out test metrics, learning curves on the test
//! mixtures, and the best λ-only baseline's cross-validated predictions.

use datamix_regression::eval::{Metrics, pearson, spearman};
use datamix_regression::{Folds, Regressor, Task, cross_validate};
use ndarray::Array1;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use serde::Serialize;

use crate::error::Result;

/// The noise floor of one target, from mixtures trained with several seeds.
#[derive(Debug, Clone, Serialize)]
pub struct NoiseFloor {
    /// Eval domain or `objective`.
    pub target: String,
    /// Mixtures trained with more than one seed.
    pub mixtures: usize,
    /// Training runs behind the estimate.
    pub runs: usize,
    /// Pooled seed-to-seed standard deviation (within-mixture, `Σ (n_g - 1)` degrees of
    /// freedom).
    pub seed_sd: f64,
    /// Standard deviation across the training mixtures (one seed each).
    pub mixture_sd: f64,
    /// The highest correlation any predictor can reach against one-seed measurements:
    /// `sqrt(1 - seed_sd² / mixture_sd²)` (0 when noise dominates).
    pub ceiling: f64,
}

/// Pools the within-group spread of `groups` (the runs of each replicated mixture) and sets
/// it against the spread of `across` (one value per mixture).
pub fn noise_floor(target: &str, groups: &[Vec<f64>], across: &[f64]) -> NoiseFloor {
    let (mut ss, mut dof, mut runs, mut mixtures) = (0.0, 0usize, 0usize, 0usize);
    for g in groups.iter().filter(|g| g.len() >= 2) {
        let mean = g.iter().sum::<f64>() / g.len() as f64;
        ss += g.iter().map(|x| (x - mean).powi(2)).sum::<f64>();
        dof += g.len() - 1;
        runs += g.len();
        mixtures += 1;
    }
    let seed_sd = if dof > 0 {
        (ss / dof as f64).sqrt()
    } else {
        f64::NAN
    };
    let mixture_sd = sample_sd(across);
    let ceiling = (1.0 - (seed_sd / mixture_sd).powi(2)).max(0.0).sqrt();
    NoiseFloor {
        target: target.into(),
        mixtures,
        runs,
        seed_sd,
        mixture_sd,
        ceiling,
    }
}

/// Sample standard deviation (`n - 1`); NaN below two values.
pub fn sample_sd(v: &[f64]) -> f64 {
    if v.len() < 2 {
        return f64::NAN;
    }
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (v.len() - 1) as f64).sqrt()
}

/// Mean of a slice (NaN when empty).
pub fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// Fits `model` on `train` and scores its predictions on `test`.
pub fn holdout(model: &dyn Regressor, train: &Task, test: &Task) -> Result<Metrics> {
    let fitted = model.fit(train)?;
    let p = fitted.predict(test.x.view())?;
    Ok(Metrics::compute(p.mean.view(), test.y.view())?)
}

/// One point of a learning curve on the test mixtures.
#[derive(Debug, Clone, Serialize)]
pub struct CurvePoint {
    /// Family.
    pub family: String,
    /// Feature set.
    pub features: String,
    /// Training mixtures per fit.
    pub n_train: usize,
    /// Mean Spearman on the test mixtures over the repeats.
    pub spearman: f64,
    /// Its standard deviation over the repeats.
    pub spearman_sd: f64,
    /// Fits averaged (repeats whose Spearman was undefined are left out).
    pub repeats: usize,
}

/// Spearman on `test` of `model` fitted on random `n`-subsets of `train`'s rows, for each
/// `n` in `sizes` (`repeats` draws each; the full training set is drawn once).
pub fn test_curve(
    model: &dyn Regressor,
    features: &str,
    train: &Task,
    test: &Task,
    sizes: &[usize],
    repeats: usize,
    seed: u64,
) -> Result<Vec<CurvePoint>> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut out = Vec::new();
    for &n in sizes.iter().filter(|&&n| n <= train.n_rows()) {
        let draws = if n == train.n_rows() {
            1
        } else {
            repeats.max(1)
        };
        let mut rho = Vec::new();
        for _ in 0..draws {
            let mut rows: Vec<usize> = (0..train.n_rows()).collect();
            rows.shuffle(&mut rng);
            rows.truncate(n);
            rows.sort_unstable();
            // A fit can fail on a degenerate draw (e.g. a GP on 3 rows): skip that draw.
            if let Ok(m) = holdout(model, &train.subset(&rows), test)
                && m.spearman.is_finite()
            {
                rho.push(m.spearman);
            }
        }
        out.push(CurvePoint {
            family: model.name(),
            features: features.into(),
            n_train: n,
            spearman: mean(&rho),
            spearman_sd: sample_sd(&rho),
            repeats: rho.len(),
        });
    }
    Ok(out)
}

/// The best λ-only baseline: each family cross-validated on `task` (λ features), the one
/// whose out-of-fold predictions have the highest Pearson r. Returns (family, r, ρ);
/// `("none", NaN, NaN)` when no family can be fitted.
pub fn best_baseline(
    families: &[&dyn Regressor],
    task: &Task,
    folds: &Folds,
) -> Result<(String, f64, f64)> {
    let mut best = (String::from("none"), f64::NAN, f64::NAN);
    for f in families {
        // A family that cannot fit these folds (e.g. a GP on one training row) is skipped.
        let Ok(cv) = cross_validate(*f, task, folds) else {
            continue;
        };
        let r = pearson(cv.predictions.view(), task.y.view());
        if r > best.1 || best.1.is_nan() {
            best = (f.name(), r, spearman(cv.predictions.view(), task.y.view()));
        }
    }
    Ok(best)
}

/// Pearson r and Spearman ρ of two equal-length series.
pub fn correlate(a: &[f64], b: &[f64]) -> (f64, f64) {
    let (a, b) = (Array1::from(a.to_vec()), Array1::from(b.to_vec()));
    (pearson(a.view(), b.view()), spearman(a.view(), b.view()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datamix_regression::RidgeParams;
    use ndarray::Array2;

    #[test]
    fn noise_floor_pools_within_mixture_spread() {
        // Two mixtures, 3 seeds each: deviations ±1 around each mean -> pooled sd 1.
        let groups = vec![vec![9.0, 10.0, 11.0], vec![19.0, 20.0, 21.0], vec![5.0]];
        let across = [10.0, 20.0, 30.0, 40.0];
        let n = noise_floor("x", &groups, &across);
        assert_eq!((n.mixtures, n.runs), (2, 6));
        assert!((n.seed_sd - 1.0).abs() < 1e-12);
        let sd = sample_sd(&across);
        assert!((n.mixture_sd - sd).abs() < 1e-12);
        assert!((n.ceiling - (1.0 - 1.0 / (sd * sd)).sqrt()).abs() < 1e-12);
        // Noise larger than the spread: the ceiling is 0, not NaN.
        assert_eq!(noise_floor("y", &groups, &[1.0, 1.5]).ceiling, 0.0);
        // No replicate: unknown.
        assert!(noise_floor("z", &[vec![1.0]], &across).seed_sd.is_nan());
    }

    fn linear_task(n: usize, noise: f64) -> Task {
        let x = Array2::from_shape_fn((n, 2), |(i, j)| ((i * (j + 3)) % 7) as f64);
        let y = Array1::from_shape_fn(n, |i| {
            2.0 * x[[i, 0]] - x[[i, 1]] + noise * ((i * 13 % 5) as f64 - 2.0)
        });
        Task {
            x,
            y,
            feature_names: vec!["lambda:a".into(), "lambda:b".into()],
            target: "t".into(),
            ids: (0..n).map(|i| i.to_string()).collect(),
            mde_proxy: None,
        }
    }

    #[test]
    fn holdout_and_curves_score_unseen_rows() {
        let all = linear_task(30, 0.0);
        let train = all.subset(&(0..20).collect::<Vec<_>>());
        let test = all.subset(&(20..30).collect::<Vec<_>>());
        let ridge = RidgeParams::new().alpha(1e-6);
        let m = holdout(&ridge, &train, &test).unwrap();
        assert!(m.spearman > 0.99 && m.mse < 1e-6, "{m:?}");
        let c = test_curve(&ridge, "λ", &train, &test, &[5, 10, 20, 50], 4, 0).unwrap();
        assert_eq!(c.iter().map(|p| p.n_train).collect::<Vec<_>>(), [5, 10, 20]);
        assert_eq!(c[2].repeats, 1);
        assert!(c.iter().all(|p| p.spearman > 0.9), "{c:?}");
    }

    #[test]
    fn best_baseline_picks_the_highest_out_of_fold_r() {
        let t = linear_task(24, 0.1);
        let folds = Folds::kfold(24, 4, Some(1)).unwrap();
        let good = RidgeParams::new().alpha(1e-6);
        let bad = datamix_regression::MeanParams;
        let (name, r, rho) = best_baseline(&[&bad, &good], &t, &folds).unwrap();
        assert_eq!(name, good.name());
        assert!(r > 0.95 && rho > 0.9, "{r} {rho}");
    }
}
