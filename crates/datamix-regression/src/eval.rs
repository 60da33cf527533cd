//! Evaluation: metrics, k-fold / leave-one-out cross-validation, learning curves over the
//! number of training mixtures, and feature-set comparison tables.
//!
//! Cross-validated metrics are computed on the pooled out-of-fold predictions (every row is
//! predicted once by a model that did not see it), so LOO and k-fold are comparable.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use ndarray::{Array1, ArrayView1};
use rand::SeedableRng;
use rand::seq::SliceRandom;

use crate::dataset::{Dataset, Task, write_atomic};
use crate::error::{RegressionError, Result};
use crate::model::Regressor;

/// Mean squared error.
pub fn mse(pred: ArrayView1<'_, f64>, truth: ArrayView1<'_, f64>) -> f64 {
    (&pred - &truth).mapv(|e| e * e).mean().unwrap_or(f64::NAN)
}

/// Pearson correlation; NaN when either side is constant or empty.
pub fn pearson(a: ArrayView1<'_, f64>, b: ArrayView1<'_, f64>) -> f64 {
    let (Some(ma), Some(mb)) = (a.mean(), b.mean()) else {
        return f64::NAN;
    };
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        sab += (x - ma) * (y - mb);
        saa += (x - ma) * (x - ma);
        sbb += (y - mb) * (y - mb);
    }
    if saa == 0.0 || sbb == 0.0 {
        f64::NAN
    } else {
        sab / (saa * sbb).sqrt()
    }
}

/// 1-based ranks, ties sharing the mean of the ranks they span ("fractional" ranking).
pub fn ranks(v: ArrayView1<'_, f64>) -> Array1<f64> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
    let mut r = Array1::zeros(v.len());
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && v[idx[j + 1]] == v[idx[i]] {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            r[k] = avg;
        }
        i = j + 1;
    }
    r
}

/// Spearman ρ: Pearson correlation of tie-averaged ranks; NaN when a side is constant.
pub fn spearman(a: ArrayView1<'_, f64>, b: ArrayView1<'_, f64>) -> f64 {
    pearson(ranks(a).view(), ranks(b).view())
}

/// Quality of predictions against observed losses (lower loss = better mixture).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Metrics {
    /// Mean squared error.
    pub mse: f64,
    /// Spearman ρ (tie-aware); NaN if undefined.
    pub spearman: f64,
    /// Pearson r; NaN if undefined.
    pub pearson: f64,
    /// True loss of the predicted-best row minus the best true loss.
    pub top1_regret: f64,
    /// True rank (1 = best, ties averaged) of the predicted-best row.
    pub top1_rank: f64,
}

impl Metrics {
    /// Computes all metrics. `pred` and `truth` must have the same non-zero length.
    pub fn compute(pred: ArrayView1<'_, f64>, truth: ArrayView1<'_, f64>) -> Result<Self> {
        if pred.len() != truth.len() {
            return Err(RegressionError::Shape {
                what: "predictions vs targets".into(),
                expected: truth.len(),
                found: pred.len(),
            });
        }
        if pred.is_empty() {
            return Err(RegressionError::TooFewRows {
                what: "metrics".into(),
                needed: 1,
                rows: 0,
            });
        }
        let best_pred = argmin(pred);
        let best = truth.iter().copied().fold(f64::INFINITY, f64::min);
        Ok(Self {
            mse: mse(pred, truth),
            spearman: spearman(pred, truth),
            pearson: pearson(pred, truth),
            top1_regret: truth[best_pred] - best,
            top1_rank: ranks(truth)[best_pred],
        })
    }
}

fn argmin(v: ArrayView1<'_, f64>) -> usize {
    (0..v.len())
        .min_by(|&a, &b| v[a].total_cmp(&v[b]))
        .unwrap_or(0)
}

/// Test-row indices of each fold; together they cover each row exactly once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Folds(Vec<Vec<usize>>);

impl Folds {
    /// k folds over `n` rows: shuffled with `seed`, or `row % k` when `seed` is `None`.
    pub fn kfold(n: usize, k: usize, seed: Option<u64>) -> Result<Self> {
        if k < 2 {
            return Err(RegressionError::InvalidParam {
                family: "cross-validation",
                param: "folds",
                value: k.to_string(),
                expected: ">= 2",
            });
        }
        if n < k {
            return Err(RegressionError::TooFewRows {
                what: format!("{k}-fold cross-validation"),
                needed: k,
                rows: n,
            });
        }
        let mut order: Vec<usize> = (0..n).collect();
        if let Some(s) = seed {
            order.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(s));
        }
        let mut folds = vec![Vec::new(); k];
        for (pos, &row) in order.iter().enumerate() {
            folds[pos % k].push(row);
        }
        Ok(Self(folds))
    }

    /// Leave-one-out: `n` folds of one row (needs n ≥ 2).
    pub fn loo(n: usize) -> Result<Self> {
        Self::kfold(n, n.max(2), None).map_err(|_| RegressionError::TooFewRows {
            what: "leave-one-out".into(),
            needed: 2,
            rows: n,
        })
    }

    /// Folds from an explicit assignment `fold[row]` (fold ids need not be contiguous).
    pub fn from_assignment(fold: &[usize]) -> Result<Self> {
        let mut ids: Vec<usize> = fold.to_vec();
        ids.sort_unstable();
        ids.dedup();
        if ids.len() < 2 {
            return Err(RegressionError::TooFewRows {
                what: "cross-validation folds".into(),
                needed: 2,
                rows: ids.len(),
            });
        }
        Ok(Self(
            ids.iter()
                .map(|id| (0..fold.len()).filter(|&r| fold[r] == *id).collect())
                .collect(),
        ))
    }

    /// Test rows per fold.
    pub fn test_sets(&self) -> &[Vec<usize>] {
        &self.0
    }

    /// Total rows covered.
    pub fn n_rows(&self) -> usize {
        self.0.iter().map(Vec::len).sum()
    }

    /// Training rows of fold `i` (everything not in its test set), ascending.
    pub fn train_rows(&self, i: usize) -> Vec<usize> {
        let mut rows: Vec<usize> = self
            .0
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .flat_map(|(_, t)| t.iter().copied())
            .collect();
        rows.sort_unstable();
        rows
    }
}

/// Out-of-fold predictions and their metrics.
#[derive(Debug, Clone)]
pub struct CvResult {
    /// Out-of-fold prediction for every row.
    pub predictions: Array1<f64>,
    /// Out-of-fold predictive std, when the family has one.
    pub std: Option<Array1<f64>>,
    /// Metrics of `predictions` against the task's targets.
    pub metrics: Metrics,
    /// Wall time of all fits and predictions, in seconds.
    pub seconds: f64,
}

/// Cross-validates `model` on `task` with `folds`.
pub fn cross_validate(model: &dyn Regressor, task: &Task, folds: &Folds) -> Result<CvResult> {
    cross_validate_sized(model, task, folds, None, 0)
}

/// Like [`cross_validate`], but each fold trains on a random subset of `n_train` of its
/// training rows (drawn with `seed`), for learning curves.
fn cross_validate_sized(
    model: &dyn Regressor,
    task: &Task,
    folds: &Folds,
    n_train: Option<usize>,
    seed: u64,
) -> Result<CvResult> {
    let n = task.n_rows();
    if folds.n_rows() != n || folds.test_sets().iter().flatten().any(|&r| r >= n) {
        return Err(RegressionError::Shape {
            what: "rows covered by the folds".into(),
            expected: n,
            found: folds.n_rows(),
        });
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut pred = Array1::zeros(n);
    let mut std: Option<Array1<f64>> = None;
    let start = Instant::now();
    for (i, test) in folds.test_sets().iter().enumerate() {
        let mut train = folds.train_rows(i);
        if let Some(m) = n_train {
            if m > train.len() {
                return Err(RegressionError::TooFewRows {
                    what: format!("learning curve with {m} training mixtures"),
                    needed: m,
                    rows: train.len(),
                });
            }
            train.shuffle(&mut rng);
            train.truncate(m);
        }
        let fitted = model.fit(&task.subset(&train))?;
        let p = fitted.predict(task.x.select(ndarray::Axis(0), test).view())?;
        for (k, &r) in test.iter().enumerate() {
            pred[r] = p.mean[k];
        }
        if let Some(s) = p.std {
            let all = std.get_or_insert_with(|| Array1::from_elem(n, f64::NAN));
            for (k, &r) in test.iter().enumerate() {
                all[r] = s[k];
            }
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let metrics = Metrics::compute(pred.view(), task.y.view())?;
    Ok(CvResult {
        predictions: pred,
        std,
        metrics,
        seconds,
    })
}

/// One point of a learning curve: metrics averaged over repeats.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct LearningPoint {
    /// Training mixtures per fit.
    pub n_train: usize,
    /// Mean metrics over the repeats.
    pub metrics: Metrics,
    /// Repeats averaged.
    pub repeats: usize,
}

/// Learning curve: for each size, cross-validate with every fold trained on `size` random
/// training rows, `repeats` times; metrics are averaged (NaN correlations are skipped).
pub fn learning_curve(
    model: &dyn Regressor,
    task: &Task,
    folds: &Folds,
    sizes: &[usize],
    repeats: usize,
    seed: u64,
) -> Result<Vec<LearningPoint>> {
    let repeats = repeats.max(1);
    sizes
        .iter()
        .map(|&m| {
            let runs: Vec<Metrics> = (0..repeats)
                .map(|r| {
                    cross_validate_sized(model, task, folds, Some(m), seed.wrapping_add(r as u64))
                        .map(|c| c.metrics)
                })
                .collect::<Result<_>>()?;
            let avg = |f: fn(&Metrics) -> f64| {
                let v: Vec<f64> = runs.iter().map(f).filter(|x| x.is_finite()).collect();
                if v.is_empty() {
                    f64::NAN
                } else {
                    v.iter().sum::<f64>() / v.len() as f64
                }
            };
            Ok(LearningPoint {
                n_train: m,
                repeats,
                metrics: Metrics {
                    mse: avg(|m| m.mse),
                    spearman: avg(|m| m.spearman),
                    pearson: avg(|m| m.pearson),
                    top1_regret: avg(|m| m.top1_regret),
                    top1_rank: avg(|m| m.top1_rank),
                },
            })
        })
        .collect()
}

/// A named set of feature groups, e.g. `("λ+MDE", [FeatureGroup::Lambda, FeatureGroup::Mde])`
/// (or the same as strings, for groups of datasets read from CSV).
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureSet {
    /// Label used in tables.
    pub name: String,
    /// Feature groups it selects.
    pub groups: Vec<String>,
}

impl FeatureSet {
    /// A feature set called `name` selecting `groups`.
    pub fn new<G: AsRef<str>>(name: &str, groups: &[G]) -> Self {
        Self {
            name: name.into(),
            groups: groups.iter().map(|g| g.as_ref().to_string()).collect(),
        }
    }
}

/// One cell of a comparison: a family on a feature set.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ComparisonRow {
    /// Model family name.
    pub family: String,
    /// Feature-set name.
    pub features: String,
    /// Number of feature columns.
    pub n_features: usize,
    /// Cross-validated metrics.
    #[serde(flatten)]
    pub metrics: Metrics,
    /// Wall time of all fits and predictions, in seconds.
    pub seconds: f64,
}

/// Cross-validated metrics of several families on several feature sets, for one target.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ComparisonTable {
    /// The target compared on.
    pub target: String,
    /// Rows, family-major.
    pub rows: Vec<ComparisonRow>,
}

/// Cross-validates every family on every feature set. A family that cannot use a feature set
/// (e.g. "MDE alone" without the `mde` group) is skipped for it; other errors are returned.
pub fn compare(
    data: &Dataset,
    target: &str,
    families: &[&dyn Regressor],
    feature_sets: &[FeatureSet],
    folds: &Folds,
) -> Result<ComparisonTable> {
    let mut rows = Vec::new();
    for fam in families {
        for fs in feature_sets {
            let groups: Vec<&str> = fs.groups.iter().map(String::as_str).collect();
            let task = data.task(&groups, target)?;
            match cross_validate(*fam, &task, folds) {
                Ok(cv) => rows.push(ComparisonRow {
                    family: fam.name(),
                    features: fs.name.clone(),
                    n_features: task.x.ncols(),
                    metrics: cv.metrics,
                    seconds: cv.seconds,
                }),
                Err(RegressionError::Unknown {
                    kind: "feature column",
                    ..
                }) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(ComparisonTable {
        target: target.to_string(),
        rows,
    })
}

impl ComparisonTable {
    /// A markdown table (metrics to 4 significant digits).
    pub fn to_markdown(&self) -> String {
        let mut s = format!("Target `{}` (cross-validated)\n\n", self.target);
        s.push_str("| family | features | #feat | MSE | Spearman | Pearson | top-1 regret | top-1 rank | time (s) |\n");
        s.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|\n");
        for r in &self.rows {
            let m = &r.metrics;
            let _ = writeln!(
                s,
                "| {} | {} | {} | {:.4e} | {:.4} | {:.4} | {:.4e} | {:.1} | {:.4} |",
                r.family,
                r.features,
                r.n_features,
                m.mse,
                m.spearman,
                m.pearson,
                m.top1_regret,
                m.top1_rank,
                r.seconds
            );
        }
        s
    }

    /// CSV text, one line per row.
    pub fn to_csv_string(&self) -> String {
        let mut s = String::from(
            "target,family,features,n_features,mse,spearman,pearson,top1_regret,top1_rank,seconds\n",
        );
        for r in &self.rows {
            let m = &r.metrics;
            let _ = writeln!(
                s,
                "{},{},{},{},{},{},{},{},{},{}",
                self.target,
                r.family,
                r.features,
                r.n_features,
                m.mse,
                m.spearman,
                m.pearson,
                m.top1_regret,
                m.top1_rank,
                r.seconds
            );
        }
        s
    }

    /// JSON text (NaN metrics become `null`).
    pub fn to_json_string(&self) -> String {
        serde_json::to_string_pretty(self).expect("plain data serialises")
    }

    /// Writes the table atomically; the format follows the extension (`.csv`, `.json`, `.md`).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let text = match path.extension().and_then(|e| e.to_str()) {
            Some("csv") => self.to_csv_string(),
            Some("json") => self.to_json_string(),
            Some("md") => self.to_markdown(),
            _ => {
                return Err(RegressionError::BadColumn {
                    column: path.display().to_string(),
                    reason: "output extension must be .csv, .json or .md".into(),
                });
            }
        };
        write_atomic(path, |f| std::io::Write::write_all(f, text.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn ranks_average_ties() {
        assert_eq!(
            ranks(array![10.0, 20.0, 10.0, 30.0].view()),
            array![1.5, 3.0, 1.5, 4.0]
        );
    }

    #[test]
    fn spearman_with_ties_matches_hand_computation() {
        // ranks a = [1, 2.5, 2.5, 4], b = [1, 2, 3, 4]: ρ = Pearson of ranks = 0.9486833.
        let rho = spearman(
            array![1.0, 2.0, 2.0, 3.0].view(),
            array![1.0, 2.0, 3.0, 4.0].view(),
        );
        assert!((rho - 0.948_683_298_050_513_8).abs() < 1e-12, "{rho}");
        assert!(spearman(array![1.0, 1.0].view(), array![1.0, 2.0].view()).is_nan());
    }

    #[test]
    fn top1_regret_and_rank() {
        let m =
            Metrics::compute(array![0.5, 0.1, 0.9].view(), array![1.0, 2.0, 3.0].view()).unwrap();
        assert_eq!(m.top1_rank, 2.0);
        assert_eq!(m.top1_regret, 1.0);
        assert!((m.mse - (0.25 + 3.61 + 4.41) / 3.0).abs() < 1e-12);
    }

    #[test]
    fn folds_partition_rows() {
        let f = Folds::kfold(10, 3, Some(7)).unwrap();
        let mut all: Vec<usize> = f.test_sets().iter().flatten().copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..10).collect::<Vec<_>>());
        assert_eq!(f.train_rows(0).len() + f.test_sets()[0].len(), 10);
        assert!(matches!(
            Folds::kfold(2, 3, None),
            Err(RegressionError::TooFewRows {
                needed: 3,
                rows: 2,
                ..
            })
        ));
        assert_eq!(Folds::loo(4).unwrap().test_sets().len(), 4);
    }
}
