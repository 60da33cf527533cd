//! Gradient-boosted regression trees (forust-ml, pure Rust, histogram-based, XGBoost-style
//! gains) with RegMix-like defaults: 1000 trees, learning rate 0.01, up to 31 leaves grown
//! leaf-wise, no L2 on leaf weights, base score = training mean.
//!
//! One deviation from LightGBM's defaults that RegMix inherited: at least 5 (not 20) rows per
//! leaf, since datamix fits on 10–100 trained mixtures rather than RegMix's hundreds.
//!
//! Early stopping (off by default, [`GbdtParams::early_stopping`]) is RegMix's practice on
//! swarms of hundreds: the last share of the training rows is held out as a validation set,
//! boosting stops once its squared error has not improved for that many rounds, and the model
//! keeps the trees up to the best round (LightGBM's `best_iteration`).
//!
//! Features are binned the way LightGBM bins them (at most 255 bins of at least 3 training
//! rows, `min_data_in_bin`, thresholds midway between neighbouring values, zero in a bin of
//! its own) before forust sees them, so both libraries scan the same split candidates: on 56
//! rows that is 19 per feature rather than one per row, and scanning split candidates is most
//! of a fit on tens of rows. Bins are numbered from the top so that forust breaks ties between
//! equal-gain thresholds the way LightGBM does (see `bin_of`). With these settings forust grows
//! the same trees as LightGBM until float rounding (forust sums in `f32`) makes them diverge.

use forust_ml::GradientBooster;
use forust_ml::gradientbooster::GrowPolicy;
use forust_ml::metric::Metric;
use forust_ml::objective::ObjectiveType;
use ndarray::{Array1, ArrayView2, Axis};
use rayon::prelude::*;

use crate::dataset::Task;
use crate::error::{RegressionError, Result};
use crate::model::{Prediction, Predictor, Regressor, check_task, check_width, param_guard};

/// Validated GBDT hyper-parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct GbdtValidParams {
    n_trees: usize,
    learning_rate: f32,
    max_leaves: usize,
    max_depth: usize,
    min_leaf: f32,
    l2: f32,
    nbins: u16,
    min_rows_per_bin: usize,
    seed: u64,
    /// `(rounds, validation share)`.
    early_stopping: Option<(usize, f64)>,
}

/// GBDT parameters (builder); see the module docs for the defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct GbdtParams(GbdtValidParams);

impl Default for GbdtParams {
    fn default() -> Self {
        Self(GbdtValidParams {
            n_trees: 1000,
            learning_rate: 0.01,
            max_leaves: 31,
            max_depth: 64,
            min_leaf: 5.0,
            l2: 0.0,
            nbins: 255,
            min_rows_per_bin: 3,
            seed: 0,
            early_stopping: None,
        })
    }
}

impl GbdtParams {
    /// Default parameters.
    pub fn new() -> Self {
        Self::default()
    }
    /// Number of boosting rounds.
    pub fn n_trees(mut self, n: usize) -> Self {
        self.0.n_trees = n;
        self
    }
    /// Shrinkage per tree, in (0, 1].
    pub fn learning_rate(mut self, lr: f32) -> Self {
        self.0.learning_rate = lr;
        self
    }
    /// Maximum leaves per tree (≥ 2).
    pub fn max_leaves(mut self, n: usize) -> Self {
        self.0.max_leaves = n;
        self
    }
    /// Maximum tree depth (≥ 1).
    pub fn max_depth(mut self, n: usize) -> Self {
        self.0.max_depth = n;
        self
    }
    /// Minimum rows (hessian weight) per leaf.
    pub fn min_leaf(mut self, n: f32) -> Self {
        self.0.min_leaf = n;
        self
    }
    /// L2 penalty on leaf weights.
    pub fn l2(mut self, l2: f32) -> Self {
        self.0.l2 = l2;
        self
    }
    /// Maximum histogram bins per feature (2..=65535), LightGBM's `max_bin`.
    pub fn nbins(mut self, n: u16) -> Self {
        self.0.nbins = n;
        self
    }
    /// Minimum training rows per histogram bin (≥ 1), LightGBM's `min_data_in_bin`: a fit on
    /// `n` rows uses at most about `n / min_rows_per_bin` bins per feature (and at most `nbins`).
    pub fn min_rows_per_bin(mut self, n: usize) -> Self {
        self.0.min_rows_per_bin = n;
        self
    }
    /// Random seed (only used by sampling options, which are off).
    pub fn seed(mut self, seed: u64) -> Self {
        self.0.seed = seed;
        self
    }
    /// Early stopping: the last `validation_share` (in (0, 0.5]) of the training rows, in
    /// row order, become a validation set; boosting stops after `rounds` (≥ 1) rounds without
    /// a lower validation error and keeps the trees up to the best round. RegMix fits its
    /// LightGBM this way (3 rounds).
    pub fn early_stopping(mut self, rounds: usize, validation_share: f64) -> Self {
        self.0.early_stopping = Some((rounds, validation_share));
        self
    }
}

impl GbdtValidParams {
    fn validate(&self) -> Result<()> {
        let bad = |param, value: String, expected| {
            Err(RegressionError::InvalidParam {
                family: "gbdt",
                param,
                value,
                expected,
            })
        };
        if self.n_trees == 0 {
            return bad("n_trees", "0".into(), ">= 1");
        }
        if !(self.learning_rate > 0.0 && self.learning_rate <= 1.0) {
            return bad("learning_rate", self.learning_rate.to_string(), "in (0, 1]");
        }
        if self.max_leaves < 2 {
            return bad("max_leaves", self.max_leaves.to_string(), ">= 2");
        }
        if self.max_depth == 0 {
            return bad("max_depth", "0".into(), ">= 1");
        }
        if !(self.min_leaf.is_finite() && self.min_leaf >= 0.0) {
            return bad("min_leaf", self.min_leaf.to_string(), "finite and >= 0");
        }
        if !(self.l2.is_finite() && self.l2 >= 0.0) {
            return bad("l2", self.l2.to_string(), "finite and >= 0");
        }
        if self.nbins < 2 {
            return bad("nbins", self.nbins.to_string(), ">= 2");
        }
        if self.min_rows_per_bin == 0 {
            return bad("min_rows_per_bin", "0".into(), ">= 1");
        }
        if let Some((rounds, share)) = self.early_stopping {
            if rounds == 0 {
                return bad("early_stopping.rounds", "0".into(), ">= 1");
            }
            if !(share > 0.0 && share <= 0.5) {
                return bad(
                    "early_stopping.validation_share",
                    share.to_string(),
                    "in (0, 0.5]",
                );
            }
        }
        Ok(())
    }
}
param_guard!(GbdtParams, GbdtValidParams);

/// A fitted GBDT.
pub struct GbdtModel {
    names: Vec<String>,
    /// Per feature, the bin upper bounds the trees were fit on (see `bin_bounds`).
    bounds: Vec<Vec<f64>>,
    booster: GradientBooster,
}

impl std::fmt::Debug for GbdtModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GbdtModel")
            .field("names", &self.names)
            .field("trees", &self.booster.trees.len())
            .finish()
    }
}

/// Values within this distance of zero share LightGBM's zero bin (its `kZeroThreshold`).
const ZERO_THRESHOLD: f64 = 1e-35;

/// Bin upper bounds of one feature column, the way LightGBM bins a numerical feature
/// (`FindBinWithZeroAsOneBin` / `GreedyFindBin`): distinct values are merged, in order, into
/// bins of at least `min_rows` rows, a bin boundary is the midpoint between the last value of a
/// bin and the next value, and zeros (|v| ≤ 1e-35) get a bin of their own. With more
/// distinct values than `max_bins` allows, the rows per bin grow until at most `max_bins` bins
/// are left (LightGBM's equal-frequency split of that case is not reproduced exactly).
///
/// Returns the finite upper bounds, ascending; a value `v` falls in the first bin (counted from
/// the bottom) whose upper bound is ≥ `v`, `bounds.partition_point(|b| *b < v)`, and in the
/// last bin if it exceeds them all.
fn bin_bounds(column: impl Iterator<Item = f64>, max_bins: usize, min_rows: usize) -> Vec<f64> {
    let mut sorted: Vec<f64> = column.collect();
    sorted.sort_unstable_by(f64::total_cmp);
    let mut distinct: Vec<(f64, usize)> = Vec::new();
    for v in sorted {
        match distinct.last_mut() {
            Some((last, count)) if *last == v => *count += 1,
            _ => distinct.push((v, 1)),
        }
    }
    let negative = distinct.partition_point(|(v, _)| *v < -ZERO_THRESHOLD);
    let positive = distinct.partition_point(|(v, _)| *v <= ZERO_THRESHOLD);
    let (neg, rest) = distinct.split_at(negative);
    let (zero, pos) = rest.split_at(positive - negative);
    let n_rows: usize = distinct.iter().map(|(_, c)| c).sum();
    let mut rows_per_bin = min_rows.max(n_rows.div_ceil(max_bins.max(1))).max(1);
    loop {
        let mut bounds = Vec::new();
        greedy_bounds(neg, rows_per_bin, &mut bounds);
        if !neg.is_empty() && (!zero.is_empty() || !pos.is_empty()) {
            bounds.push(-ZERO_THRESHOLD);
        }
        if !zero.is_empty() && !pos.is_empty() {
            bounds.push(ZERO_THRESHOLD);
        }
        greedy_bounds(pos, rows_per_bin, &mut bounds);
        // Only the sign boundaries are left once a bin takes every row.
        if bounds.len() < max_bins || rows_per_bin >= n_rows {
            return bounds;
        }
        rows_per_bin += 1;
    }
}

/// Appends the boundaries that merge `distinct` (ascending values and their counts) into bins
/// of at least `rows_per_bin` rows, each boundary at the midpoint of two neighbouring values.
fn greedy_bounds(distinct: &[(f64, usize)], rows_per_bin: usize, bounds: &mut Vec<f64>) {
    let mut in_bin = 0;
    for pair in distinct.windows(2) {
        let ((a, count), (b, _)) = (pair[0], pair[1]);
        in_bin += count;
        if in_bin >= rows_per_bin {
            let mid = a / 2.0 + b / 2.0;
            bounds.push(if mid >= a && mid < b { mid } else { a });
            in_bin = 0;
        }
    }
}

/// The value forust sees for `v`: its bin among `bounds` (see [`bin_bounds`]), numbered from
/// the top (the highest bin is 0).
///
/// Thresholds between the same two occupied bins split a node's rows identically, so they tie
/// on gain. forust scans bins upwards and keeps the first of tied thresholds; LightGBM scans a
/// numerical feature downwards and keeps the first it meets, the highest. Numbering the bins
/// from the top makes forust make LightGBM's choice, which decides where rows not seen in
/// training (the ones cross-validation scores) fall.
fn bin_of(bounds: &[f64], v: f64) -> f64 {
    (bounds.len() - bounds.partition_point(|b| *b < v)) as f64
}

impl Regressor for GbdtValidParams {
    fn name(&self) -> String {
        match self.early_stopping {
            None => "gbdt".into(),
            Some(_) => "gbdt+early-stop".into(),
        }
    }

    fn fit(&self, task: &Task) -> Result<Box<dyn Predictor>> {
        check_task("gbdt", task, 2)?;
        let err = |e: forust_ml::errors::ForustError| RegressionError::Fit {
            family: "gbdt",
            message: e.to_string(),
        };
        // With early stopping, the last rows validate and the others fit.
        let (n_all, d) = task.x.dim();
        let n_val = match self.early_stopping {
            Some((_, share)) => ((n_all as f64 * share).floor() as usize).max(1),
            None => 0,
        };
        let n = n_all - n_val;
        if n < 2 {
            return Err(RegressionError::Fit {
                family: "gbdt",
                message: format!("{n_all} rows leave {n} to fit after the validation share"),
            });
        }
        let fit_x = task.x.slice(ndarray::s![..n, ..]);
        // Bin each feature once, LightGBM-style, and hand forust the bin numbers. forust's own
        // quantile cuts would put thresholds on training values rather than between them, and
        // on a few dozen rows one cut per row: 3x the split candidates LightGBM scans.
        let bounds: Vec<Vec<f64>> = fit_x
            .columns()
            .into_iter()
            .map(|c| {
                bin_bounds(
                    c.iter().copied(),
                    usize::from(self.nbins),
                    self.min_rows_per_bin,
                )
            })
            .collect();
        let max_bins = bounds.iter().map(|b| b.len() + 1).max().unwrap_or(1);
        let binned = |x: ArrayView2<'_, f64>| -> Vec<f64> {
            x.columns()
                .into_iter()
                .zip(&bounds)
                .flat_map(|(c, b)| c.into_iter().map(|v| bin_of(b, *v)).collect::<Vec<_>>())
                .collect()
        };
        let data = binned(fit_x);
        let val_data = binned(task.x.slice(ndarray::s![n.., ..]));
        let mut b = GradientBooster::default()
            .set_objective_type(ObjectiveType::SquaredLoss)
            .set_iterations(self.n_trees)
            .set_learning_rate(self.learning_rate)
            .set_max_depth(self.max_depth)
            .set_max_leaves(self.max_leaves)
            .set_min_leaf_weight(self.min_leaf)
            .set_l2(self.l2)
            // The features arrive pre-binned as 0, 1, ..., so forust keeps every bin.
            .set_nbins(u16::try_from(max_bins).unwrap_or(u16::MAX).max(2))
            .set_seed(self.seed)
            .set_initialize_base_score(true)
            .set_parallel(false);
        b.grow_policy = GrowPolicy::LossGuide;
        // Tasks and predictions hold only finite values (checked on construction), so no row is
        // ever missing: forust need not weigh splits that send only missing rows one way, and
        // it drops a candidate below `min_leaf` before computing its gain (same trees; about
        // 10% of a fit on the 12-domain swarm, docs/benchmarks.md).
        b = b.set_allow_missing_splits(false);
        // Early stopping watches the validation RMSE (monotone in LightGBM's l2). forust's
        // default for squared loss is the RMSE of log1p(y): not what RegMix stops on, and NaN
        // for targets below -1.
        b = b.set_evaluation_metric(Some(Metric::RootMeanSquaredError));
        let y = task.y.to_vec();
        let (y_fit, y_val) = y.split_at(n);
        let w_val = vec![1.0; n_val];
        let eval = self.early_stopping.map(|(rounds, _)| {
            b.early_stopping_rounds = Some(rounds);
            vec![(
                forust_ml::Matrix::new(&val_data, n_val, d),
                y_val,
                w_val.as_slice(),
            )]
        });
        b.fit(
            &forust_ml::Matrix::new(&data, n, d),
            y_fit,
            &vec![1.0; n],
            eval,
        )
        .map_err(err)?;
        // Prediction walks the trees itself: keep those up to the best round.
        if let Some(k) = b.prediction_iteration {
            b.trees.truncate(k);
        }
        Ok(Box::new(GbdtModel {
            names: task.feature_names.clone(),
            bounds,
            booster: b,
        }))
    }
}

/// Candidate rows per prediction block (binned, 16 features: 32 KiB).
const BLOCK: usize = 256;

impl Predictor for GbdtModel {
    fn feature_names(&self) -> &[String] {
        &self.names
    }

    fn predict(&self, x: ArrayView2<'_, f64>) -> Result<Prediction> {
        check_width(&self.names, &x)?;
        // Blocks of rows in parallel; within a block, one tree at a time over all its rows, so
        // the tree's nodes stay in L1 (walking all 1000 trees per row streams ~1 MB of nodes
        // from L3 for every row).
        let b = &self.booster;
        let d = self.bounds.len();
        let mut mean = Array1::from_elem(x.nrows(), b.base_score);
        mean.as_slice_mut()
            .expect("fresh array is contiguous")
            .par_chunks_mut(BLOCK)
            .zip(x.axis_chunks_iter(Axis(0), BLOCK).collect::<Vec<_>>())
            .for_each(|(out, rows)| {
                let mut binned = Vec::with_capacity(rows.nrows() * d);
                for values in rows.rows() {
                    binned.extend(values.iter().zip(&self.bounds).map(|(v, c)| bin_of(c, *v)));
                }
                for tree in &b.trees {
                    for (o, row) in out.iter_mut().zip(binned.chunks_exact(d)) {
                        *o += tree.predict_row_from_row_slice(row, &b.missing);
                    }
                }
            });
        Ok(Prediction { mean, std: None })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows in each bin of `values` under `bounds`.
    fn counts(bounds: &[f64], values: &[f64]) -> Vec<usize> {
        let mut c = vec![0; bounds.len() + 1];
        for v in values {
            c[bin_of(bounds, *v) as usize] += 1;
        }
        c
    }

    #[test]
    fn distinct_values_merge_into_bins_of_min_rows_with_midpoint_thresholds() {
        // 56 distinct positive values, as in a fold of the benchmark: 18 full bins of 3 rows,
        // the last 2 rows in a 19th (LightGBM reports 19 bins + its empty zero bin).
        let values: Vec<f64> = (1..=56).map(|i| f64::from(i) * 0.5).collect();
        let bounds = bin_bounds(values.iter().copied(), 255, 3);
        assert_eq!(bounds.len(), 18);
        assert!(bounds.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(bounds[0], 1.75); // midway between the 3rd and 4th values (1.5, 2.0)
        let c = counts(&bounds, &values);
        assert_eq!(c.iter().sum::<usize>(), 56);
        assert_eq!(&c[1..], &[3; 18]); // numbered from the top: bin 0 holds the 2 largest
        assert_eq!(c[0], 2);
    }

    #[test]
    fn repeated_values_stay_in_one_bin() {
        let values = [1.0, 1.0, 1.0, 1.0, 2.0, 3.0, 3.0, 4.0];
        let bounds = bin_bounds(values.iter().copied(), 255, 3);
        assert_eq!(bounds, vec![1.5, 3.5]);
        // A constant column has a single bin.
        assert!(bin_bounds([7.0; 10].into_iter(), 255, 3).is_empty());
    }

    #[test]
    fn zero_gets_its_own_bin_between_negative_and_positive_values() {
        let values = [-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0];
        let bounds = bin_bounds(values.iter().copied(), 255, 3);
        assert_eq!(bounds, vec![-ZERO_THRESHOLD, ZERO_THRESHOLD]);
        assert_eq!(counts(&bounds, &values), vec![3, 1, 3]);
        // Values left of every bound land in the lowest bin, which has the highest number.
        assert_eq!(bin_of(&bounds, -100.0), 2.0);
        assert_eq!(bin_of(&bounds, 100.0), 0.0);
    }

    #[test]
    fn many_distinct_values_respect_max_bins() {
        let values: Vec<f64> = (0..10_000).map(|i| f64::from(i).sqrt()).collect();
        for max_bins in [2, 16, 255] {
            let bounds = bin_bounds(values.iter().copied(), max_bins, 3);
            assert!(bounds.len() < max_bins, "{max_bins}: {}", bounds.len());
            // Equal-frequency bins of ceil(rows / max_bins) rows use nearly all of them.
            assert!(
                bounds.len() + 1 >= max_bins * 9 / 10,
                "{max_bins}: {}",
                bounds.len()
            );
        }
    }

    #[test]
    fn min_rows_per_bin_is_validated() {
        use linfa::ParamGuard;
        assert!(GbdtParams::new().min_rows_per_bin(0).check().is_err());
        assert!(GbdtParams::new().min_rows_per_bin(1).check().is_ok());
    }

    #[test]
    fn blocked_prediction_matches_row_by_row_in_any_layout() {
        let x = ndarray::Array2::from_shape_fn((40, 3), |(i, j)| ((i * (j + 3)) % 17) as f64);
        let y = x.column(0).mapv(|v| v * v) + x.column(2);
        let task = Task {
            x: x.clone(),
            y,
            feature_names: vec!["f:a".into(), "f:b".into(), "f:c".into()],
            target: "t".into(),
            ids: (0..40).map(|i| format!("m{i}")).collect(),
            mde_proxy: None,
        };
        let m = GbdtParams::new().n_trees(30).fit(&task).unwrap();
        // More rows than one block, in row-major and column-major order.
        let cands = ndarray::Array2::from_shape_fn((BLOCK * 2 + 7, 3), |(i, j)| {
            ((i * 7 + j * 5) % 19) as f64 - 1.5
        });
        let c_order = m.predict(cands.view()).unwrap().mean;
        let f_order = m.predict(cands.t().to_owned().t()).unwrap().mean;
        assert_eq!(c_order, f_order);
        for (i, row) in cands.rows().into_iter().enumerate() {
            let one = m.predict(row.insert_axis(Axis(0))).unwrap().mean[0];
            assert_eq!(one, c_order[i]);
        }
    }

    /// Trees a fitted model keeps (from its `Debug` form).
    fn trees(m: &dyn Predictor) -> usize {
        let d = format!("{m:?}");
        let rest = &d[d.find("trees: ").expect("Debug shows trees") + 7..];
        rest[..rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len())]
            .parse()
            .unwrap()
    }

    #[test]
    fn early_stopping_keeps_the_trees_up_to_the_best_validation_round() {
        use linfa::ParamGuard;
        // A noisy target: a fast learner overfits soon after the signal is fitted.
        let n = 200;
        let x = ndarray::Array2::from_shape_fn((n, 2), |(i, j)| ((i * (j * 7 + 3)) % 29) as f64);
        let noise = ndarray::Array1::from_shape_fn(n, |i| ((i * 7919) % 13) as f64 - 6.0);
        let y = x.column(0).mapv(|v| 0.5 * v) + noise;
        let task = Task {
            x,
            y,
            feature_names: vec!["f:a".into(), "f:b".into()],
            target: "t".into(),
            ids: (0..n).map(|i| format!("m{i}")).collect(),
            mde_proxy: None,
        };
        let params = GbdtParams::new().n_trees(400).learning_rate(0.3);
        assert_eq!(trees(params.clone().fit(&task).unwrap().as_ref()), 400);
        let early = params.clone().early_stopping(3, 0.2).fit(&task).unwrap();
        let kept = trees(early.as_ref());
        assert!((1..400).contains(&kept), "kept {kept} trees");
        assert!(params.clone().early_stopping(0, 0.2).check().is_err());
        assert!(params.clone().early_stopping(3, 0.6).check().is_err());
        assert!(params.early_stopping(3, 0.5).check().is_ok());
    }

    #[test]
    fn early_stopping_watches_squared_error_so_a_shifted_target_stops_alike() {
        // Squared error is blind to a constant shift of the target; forust's default metric
        // for squared loss (RMSE of log1p y) is not, and is NaN below -1. Shifted by -100,
        // the same trees must be kept and every prediction shifted by -100.
        let n = 200;
        let x = ndarray::Array2::from_shape_fn((n, 2), |(i, j)| ((i * (j * 7 + 3)) % 29) as f64);
        let noise = ndarray::Array1::from_shape_fn(n, |i| ((i * 7919) % 13) as f64 * 0.1);
        let y = x.column(0).mapv(|v| 0.05 * v) + noise;
        let task = |y: ndarray::Array1<f64>| Task {
            x: x.clone(),
            y,
            feature_names: vec!["f:a".into(), "f:b".into()],
            target: "t".into(),
            ids: (0..n).map(|i| format!("m{i}")).collect(),
            mde_proxy: None,
        };
        let params = GbdtParams::new()
            .n_trees(400)
            .learning_rate(0.3)
            .early_stopping(3, 0.2);
        let up = params.fit(&task(y.clone())).unwrap();
        let down = params.fit(&task(y - 100.0)).unwrap();
        let kept = trees(up.as_ref());
        assert!((1..400).contains(&kept), "kept {kept} trees");
        assert_eq!(trees(down.as_ref()), kept);
        let (pu, pd) = (
            up.predict(x.view()).unwrap().mean,
            down.predict(x.view()).unwrap().mean,
        );
        for (a, b) in pu.iter().zip(&pd) {
            assert!((a - 100.0 - b).abs() < 1e-3, "{a} - 100 vs {b}");
        }
    }
}
