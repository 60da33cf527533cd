//! Study stage 4 (backend-free): proxy quality beside a λ-only baseline, the noise floor,
//! regression cross-validated on the training mixtures and scored on held-out test
//! mixtures, learning curves, the search and what validates it.

use datamix_mde::{ExpertTable, OptimumParams};
use datamix_optimizer::{
    BayesOpt, BoConfig, CmaEs, MdeFeatures, MdeObjective, Method, ModelObjective, OptimResult,
    RegressionSurrogate, SearchSpace, TokenLimits, mde_exact,
};
use datamix_regression::FeatureGroup::{Lambda, Mde, Merged};
use datamix_regression::{
    Column, ComparisonTable, Dataset, FeatureSet, Folds, GbdtParams, GpParams, MdeAloneParams,
    MeanParams, Metrics, Regressor, RidgeParams, compare,
};
use ndarray::Array2;
use serde::Serialize;

use super::StudyOutcome;
use super::config::StudyConfig;
use super::stats::{self, CurvePoint, NoiseFloor};
use crate::error::{Error, Result};

/// The objective's name in datasets and tables: the weighted mean of eval-domain losses
/// (`objective.weights`).
pub const OBJECTIVE: &str = "objective";

/// The secondary objective's name (`objective.secondary`).
pub const SECONDARY: &str = "secondary";

/// Label of the λ-only baseline rows in [`Analysis::proxy_quality`].
pub const LAMBDA_ONLY: &str = "λ-only (CV)";

/// How well one proxy tracks the true loss on one eval domain (or the objective).
#[derive(Debug, Clone, Serialize)]
pub struct ProxyQuality {
    /// Eval domain, or `objective`.
    pub target: String,
    /// `mde`, `merged`, or the λ-only baseline (the best family's out-of-fold predictions).
    pub proxy: String,
    /// Pearson r between proxy and true loss over every trained mixture.
    pub pearson: f64,
    /// Spearman ρ.
    pub spearman: f64,
}

/// A family on a feature set, fitted on every training mixture and scored on the test
/// mixtures.
#[derive(Debug, Clone, Serialize)]
pub struct TestRow {
    /// `objective` or `secondary`.
    pub target: String,
    /// Family.
    pub family: String,
    /// Feature set.
    pub features: String,
    /// Metrics on the test mixtures.
    #[serde(flatten)]
    pub metrics: Metrics,
}

/// The recommendation trained for real with several seeds, beside the uniform and the best
/// training mixture trained with the same seeds (objective values).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Validation {
    /// Training seeds.
    pub seeds: Vec<u64>,
    /// The recommendation's objective per seed.
    pub recommended: Vec<f64>,
    /// The uniform mixture's objective per seed.
    pub uniform: Vec<f64>,
    /// Index of the best training mixture (by its first-seed objective).
    pub best_index: usize,
    /// Its objective per seed.
    pub best: Vec<f64>,
}

/// Regression, search and validation results.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Analysis {
    /// Proxy vs truth, per eval domain and for the objective, with the λ-only baseline.
    pub proxy_quality: Vec<ProxyQuality>,
    /// Seed-to-seed noise per eval domain and for the objective (when replicated).
    pub noise: Vec<NoiseFloor>,
    /// Families x feature sets cross-validated on the training mixtures (objective).
    pub comparison: Option<ComparisonTable>,
    /// Families x feature sets fitted on the training mixtures, scored on the test ones.
    pub test: Vec<TestRow>,
    /// Spearman on the test mixtures against the number of training mixtures.
    pub curves: Vec<CurvePoint>,
    /// Family used for the search, and the feature groups it uses.
    pub family: String,
    /// Feature groups of the searched model.
    pub features: Vec<String>,
    /// Index of the training mixture with the lowest objective.
    pub best_observed: usize,
    /// Its objective.
    pub best_observed_loss: f64,
    /// The recommended mixture (best predicted objective on the simplex).
    pub recommended: Option<Vec<f64>>,
    /// Its predicted objective.
    pub predicted: Option<f64>,
    /// Predicted standard deviation, where the family has one.
    pub predicted_std: Option<f64>,
    /// The exact minimiser of the MDE objective alone (no regression).
    pub mde_optimum: Option<Vec<f64>>,
    /// The MDE objective there.
    pub mde_optimum_loss: Option<f64>,
    /// The search run behind the recommendation (method, trace).
    pub search: Option<OptimResult>,
    /// The mixture a Bayesian-optimisation step proposes to train next.
    pub bo_next: Option<Vec<f64>>,
    /// True objective of a model trained on the recommendation (first seed).
    pub validated_loss: Option<f64>,
    /// Its per-eval-domain losses.
    pub validated_losses: Option<Vec<f64>>,
    /// The recommendation against the uniform and the best training mixture, per seed.
    pub validation: Option<Validation>,
}

/// The weighted objective of per-eval-domain losses (`weights` sum to 1).
pub fn objective(losses: &[f64], weights: &[f64]) -> f64 {
    losses.iter().zip(weights).map(|(l, w)| l * w).sum()
}

/// The regression dataset of a study (every mixture, test ones included): λ, MDE and merged
/// losses as features; per-eval-domain losses and the objective as targets.
pub fn dataset(o: &StudyOutcome) -> Result<Dataset> {
    let n = o.mixtures.len();
    let mut columns = Vec::new();
    let mut cols: Vec<Vec<f64>> = Vec::new();
    for (i, d) in o.domains.iter().enumerate() {
        columns.push(Column::new(Lambda.as_str(), d));
        cols.push(o.mixtures.iter().map(|m| m[i]).collect());
    }
    for (group, m) in [(Mde, &o.mde_loss), (Merged, &o.merged_loss)] {
        for (j, e) in o.eval_domains.iter().enumerate() {
            columns.push(Column::new(group.as_str(), e));
            cols.push(m.iter().map(|r| r[j]).collect());
        }
    }
    let features = Array2::from_shape_fn((n, cols.len()), |(r, c)| cols[c][r]);
    let targets = Array2::from_shape_fn((n, o.eval_domains.len()), |(r, c)| o.true_loss[r][c]);
    let mut data = Dataset::new(
        (0..n).map(|j| format!("mix{j:02}")).collect(),
        columns,
        features,
        o.eval_domains.clone(),
        targets,
    )?;
    let weights: Vec<(&str, f64)> = o
        .eval_domains
        .iter()
        .zip(&o.objective_weights)
        .filter(|(_, w)| **w > 0.0)
        .map(|(e, &w)| (e.as_str(), w))
        .collect();
    data.add_objective(OBJECTIVE, &weights)?;
    if let Some(w2) = &o.secondary_weights {
        let weights: Vec<(&str, f64)> = o
            .eval_domains
            .iter()
            .zip(w2)
            .filter(|(_, w)| **w > 0.0)
            .map(|(e, &w)| (e.as_str(), w))
            .collect();
        data.add_objective(SECONDARY, &weights)?;
    }
    Ok(data)
}

/// Indices of the training and the test mixtures.
pub fn split(o: &StudyOutcome) -> (Vec<usize>, Vec<usize>) {
    (0..o.mixtures.len()).partition(|&j| !o.is_test[j])
}

fn column(m: &[Vec<f64>], j: usize) -> Vec<f64> {
    m.iter().map(|r| r[j]).collect()
}

/// `k` folds over `n` rows (`k` = 0 or at least `n`: leave-one-out), shuffled by `seed`.
pub(super) fn folds_of(k: usize, n: usize, seed: u64) -> Result<Folds> {
    Ok(if k == 0 || k >= n {
        Folds::loo(n)?
    } else {
        Folds::kfold(n, k, Some(seed))?
    })
}

/// The folds of `analysis.folds` over `n` rows.
fn folds(cfg: &StudyConfig, n: usize) -> Result<Folds> {
    folds_of(cfg.analysis.folds, n, cfg.seed)
}

/// The feature sets compared.
fn feature_sets() -> [FeatureSet; 3] {
    [
        FeatureSet::new("λ", &[Lambda]),
        FeatureSet::new("λ+MDE", &[Lambda, Mde]),
        FeatureSet::new("λ+MDE+merged", &[Lambda, Mde, Merged]),
    ]
}

/// Every analysis of the measured losses.
pub fn analyse(cfg: &StudyConfig, o: &StudyOutcome, tables: &[&ExpertTable]) -> Result<Analysis> {
    let mut a = Analysis::default();
    let w = &o.objective_weights;
    let data = dataset(o)?;
    let (train_rows, test_rows) = split(o);
    let train = data.subset(&train_rows);
    let cv_folds = folds(cfg, train_rows.len())?;
    let ridge = RidgeParams::new();
    let gp = GpParams::new();
    let gbdt = GbdtParams::new();
    let (mean, mde_alone) = (MeanParams, MdeAloneParams::default());
    let learners: [&dyn Regressor; 3] = [&ridge, &gp, &gbdt];

    // Proxies over every mixture, beside the best λ-only family's out-of-fold predictions
    // (over every mixture too, so each number comes from the same rows).
    let all_folds = folds(cfg, o.mixtures.len())?;
    let objectives: Vec<(&str, &Vec<f64>)> = std::iter::once((OBJECTIVE, w))
        .chain(o.secondary_weights.as_ref().map(|w2| (SECONDARY, w2)))
        .collect();
    let targets: Vec<String> = o
        .eval_domains
        .iter()
        .cloned()
        .chain(objectives.iter().map(|(n, _)| n.to_string()))
        .collect();
    for (j, target) in targets.iter().enumerate() {
        let pick = |m: &[Vec<f64>]| match j.checked_sub(o.eval_domains.len()) {
            None => column(m, j),
            Some(k) => m.iter().map(|r| objective(r, objectives[k].1)).collect(),
        };
        let truth = pick(&o.true_loss);
        for (proxy, m) in [(Mde, &o.mde_loss), (Merged, &o.merged_loss)] {
            let (pearson, spearman) = stats::correlate(&pick(m), &truth);
            a.proxy_quality.push(ProxyQuality {
                target: target.clone(),
                proxy: proxy.to_string(),
                pearson,
                spearman,
            });
        }
        let task = data.task(&[Lambda], target)?;
        let (family, pearson, spearman) = stats::best_baseline(&learners, &task, &all_folds)?;
        a.proxy_quality.push(ProxyQuality {
            target: target.clone(),
            proxy: format!("{LAMBDA_ONLY}: {family}"),
            pearson,
            spearman,
        });
    }
    a.noise = noise(o);

    let train_obj: Vec<f64> = train_rows
        .iter()
        .map(|&j| objective(&o.true_loss[j], w))
        .collect();
    let (best_pos, best_loss) = train_obj
        .iter()
        .copied()
        .enumerate()
        .min_by(|x, y| x.1.total_cmp(&y.1))
        .expect("at least three training mixtures");
    a.best_observed = train_rows[best_pos];
    a.best_observed_loss = best_loss;

    // Regression: every family on every feature set, cross-validated on the training
    // mixtures' folds (the family is chosen there), then fitted on all of them and scored
    // on the test mixtures.
    let families: Vec<&dyn Regressor> = vec![&mean, &mde_alone, &ridge, &gp, &gbdt];
    let table = compare(&train, OBJECTIVE, &families, &feature_sets(), &cv_folds)?;
    if !test_rows.is_empty() {
        let test = data.subset(&test_rows);
        for (target, _) in &objectives {
            for fam in &families {
                for fs in feature_sets() {
                    let groups = &fs.groups;
                    if fam.name().starts_with("mde-alone")
                        && !groups.iter().any(|g| g == Mde.as_str())
                    {
                        continue;
                    }
                    let (tr, te) = (train.task(groups, target)?, test.task(groups, target)?);
                    a.test.push(TestRow {
                        target: target.to_string(),
                        family: fam.name(),
                        features: fs.name.clone(),
                        metrics: stats::holdout(*fam, &tr, &te)?,
                    });
                }
            }
        }
    }
    let family = match cfg.analysis.family.as_str() {
        "auto" => table
            .rows
            .iter()
            .filter(|r| {
                r.features == "λ+MDE"
                    && ["ridge", "gp", "gbdt"]
                        .iter()
                        .any(|f| r.family.starts_with(f))
            })
            .max_by(|x, y| x.metrics.spearman.total_cmp(&y.metrics.spearman))
            .map(|r| r.family.clone())
            .unwrap_or_else(|| "ridge".into()),
        f => f.to_string(),
    };
    let chosen: &dyn Regressor = if family.starts_with("gp") {
        &gp
    } else if family.starts_with("gbdt") {
        &gbdt
    } else {
        &ridge
    };
    a.family = chosen.name();
    a.features = vec![Lambda.to_string(), Mde.to_string()];
    a.comparison = Some(table);
    if test_rows.len() >= 3 {
        let test = data.subset(&test_rows);
        let sizes = curve_sizes(train_rows.len());
        for (name, groups) in [("λ", &[Lambda][..]), ("λ+MDE", &[Lambda, Mde][..])] {
            let (tr, te) = (
                train.task(groups, OBJECTIVE)?,
                test.task(groups, OBJECTIVE)?,
            );
            a.curves.extend(stats::test_curve(
                chosen,
                name,
                &tr,
                &te,
                &sizes,
                cfg.analysis.curve_repeats,
                cfg.seed,
            )?);
        }
    }
    let task = train.task(&[Lambda, Mde], OBJECTIVE)?;
    let model = chosen.fit(&task)?;

    let space = search::space(cfg, o)?;
    let owned: Vec<ExpertTable> = tables.iter().map(|t| (*t).clone()).collect();
    // MDE alone, solved exactly over the same constrained simplex.
    let (obj_tables, obj_weights): (Vec<&ExpertTable>, Vec<f64>) = tables
        .iter()
        .zip(w)
        .filter(|(_, w)| **w > 0.0)
        .map(|(t, &w)| (*t, w))
        .unzip();
    let mde_obj = MdeObjective::new(&obj_tables, &obj_weights)?;
    let exact = mde_exact(&space, &mde_obj, &OptimumParams::default())?;
    a.mde_optimum = Some(exact.mixture.clone());
    a.mde_optimum_loss = Some(exact.objective);
    // The regression model, searched with MDE features computed for every candidate.
    let objective_fn = ModelObjective::new(
        model,
        &space,
        Some(Box::new(MdeFeatures::new(owned.clone())?)),
    )?;
    let found = CmaEs::new()
        .seed(cfg.seed)
        .minimize(&space, &objective_fn)?;
    a.recommended = Some(found.mixture.clone());
    a.predicted = Some(found.objective);
    a.predicted_std = found.uncertainty;
    a.search = Some(found);
    // One Bayesian-optimisation step: a GP on [λ, MDE(λ)] fitted to every training mixture
    // proposes the next mixture worth training.
    let surrogate = RegressionSurrogate::new(GpParams::new(), &space)
        .with_features(Box::new(MdeFeatures::new(owned)?));
    let mut bo = BayesOpt::new(
        space,
        surrogate,
        BoConfig {
            seed: cfg.seed,
            ..BoConfig::default()
        },
    )?;
    for (&j, y) in train_rows.iter().zip(&train_obj) {
        bo.observe(o.mixtures[j].clone(), *y)?;
    }
    a.bo_next = Some(bo.suggest()?);
    Ok(a)
}

/// Learning-curve sizes: 5, 10, 15, ... up to all training mixtures.
fn curve_sizes(n: usize) -> Vec<usize> {
    let mut s: Vec<usize> = (1..).map(|i| 5 * i).take_while(|&m| m < n).collect();
    s.push(n);
    s
}

/// The noise floor of every eval domain and the objective: the runs of each replicated
/// mixture (its first run and its replicates) against the spread over training mixtures.
pub fn noise(o: &StudyOutcome) -> Vec<NoiseFloor> {
    let mut replicated: Vec<usize> = o.replicates.iter().map(|r| r.mixture).collect();
    replicated.sort_unstable();
    replicated.dedup();
    if replicated.is_empty() {
        return Vec::new();
    }
    let runs = |j: usize| -> Vec<&Vec<f64>> {
        std::iter::once(&o.true_loss[j])
            .chain(
                o.replicates
                    .iter()
                    .filter(|r| r.mixture == j)
                    .map(|r| &r.losses),
            )
            .collect()
    };
    let (train_rows, _) = split(o);
    let w = &o.objective_weights;
    let value = |l: &Vec<f64>, j: Option<usize>| j.map_or_else(|| objective(l, w), |j| l[j]);
    (0..=o.eval_domains.len())
        .map(|j| {
            let (target, j) = if j < o.eval_domains.len() {
                (o.eval_domains[j].as_str(), Some(j))
            } else {
                (OBJECTIVE, None)
            };
            let groups: Vec<Vec<f64>> = replicated
                .iter()
                .map(|&m| runs(m).into_iter().map(|l| value(l, j)).collect())
                .collect();
            let across: Vec<f64> = train_rows
                .iter()
                .map(|&m| value(&o.true_loss[m], j))
                .collect();
            stats::noise_floor(target, &groups, &across)
        })
        .collect()
}

/// The search space of a study.
mod search {
    use super::*;

    /// The simplex over the study's domains with `search.min_weight` lower bounds and,
    /// when `search.max_epochs` is set, token-availability limits for the study's budget.
    pub fn space(cfg: &StudyConfig, o: &StudyOutcome) -> Result<SearchSpace> {
        let k = o.domains.len();
        let mut b =
            SearchSpace::builder_named(o.domains.clone()).lower(vec![cfg.search.min_weight; k]);
        if let Some(e) = cfg.search.max_epochs {
            b = b.token_limits(TokenLimits {
                budget: cfg.continued.tokens(cfg.data.seq_len) as f64,
                tokens: o.domain_tokens.iter().map(|&t| t as f64).collect(),
                max_epochs: vec![e; k],
            });
        }
        b.build()
            .map_err(|e| Error::Invalid(format!("search: {e}")))
    }
}
