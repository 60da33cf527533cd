//! Study stage 4 (backend-free): proxy quality, regression, search.

use datamix_mde::{ExpertTable, OptimumParams};
use datamix_optimizer::{
    BayesOpt, BoConfig, CmaEs, MdeFeatures, MdeObjective, Method, ModelObjective, OptimResult,
    RegressionSurrogate, SearchSpace, TokenLimits, mde_exact,
};
use datamix_regression::eval::{pearson, spearman};
use datamix_regression::{
    Column, ComparisonTable, Dataset, FeatureSet, Folds, GbdtParams, GpParams, MdeAloneParams,
    MeanParams, Regressor, RidgeParams, compare,
};
use ndarray::{Array1, Array2};
use serde::Serialize;

use super::StudyOutcome;
use super::config::StudyConfig;
use crate::error::{Error, Result};

/// The objective: mean cross-entropy over all eval domains.
pub const OBJECTIVE: &str = "objective";

/// How well one proxy tracks the true loss on one eval domain (or the objective).
#[derive(Debug, Clone, Serialize)]
pub struct ProxyQuality {
    /// Eval domain, or `objective`.
    pub target: String,
    /// `mde` or `merged`.
    pub proxy: String,
    /// Pearson r between proxy and true loss over the ground-truth mixtures.
    pub pearson: f64,
    /// Spearman ρ.
    pub spearman: f64,
}

/// Regression, search and validation results.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Analysis {
    /// Proxy vs truth, per eval domain and for the objective.
    pub proxy_quality: Vec<ProxyQuality>,
    /// Cross-validated families x feature sets on the objective.
    pub comparison: Option<ComparisonTable>,
    /// Family used for the search, and the feature groups it uses.
    pub family: String,
    /// Feature groups of the searched model.
    pub features: Vec<String>,
    /// Index of the ground-truth mixture with the lowest objective.
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
    /// True objective of a model trained on the recommendation (when validated).
    pub validated_loss: Option<f64>,
    /// Its per-eval-domain losses.
    pub validated_losses: Option<Vec<f64>>,
}

/// Mean over eval domains.
pub fn objective(losses: &[f64]) -> f64 {
    losses.iter().sum::<f64>() / losses.len() as f64
}

/// The regression dataset of a study: λ, MDE and merged losses as features; per-eval-domain
/// losses and the objective as targets.
pub fn dataset(o: &StudyOutcome) -> Result<Dataset> {
    let n = o.mixtures.len();
    let mut columns = Vec::new();
    let mut cols: Vec<Vec<f64>> = Vec::new();
    for (i, d) in o.domains.iter().enumerate() {
        columns.push(Column::new("lambda", d));
        cols.push(o.mixtures.iter().map(|m| m[i]).collect());
    }
    for (group, m) in [("mde", &o.mde_loss), ("merged", &o.merged_loss)] {
        for (j, e) in o.eval_domains.iter().enumerate() {
            columns.push(Column::new(group, e));
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
    let w = 1.0 / o.eval_domains.len() as f64;
    let weights: Vec<(&str, f64)> = o.eval_domains.iter().map(|e| (e.as_str(), w)).collect();
    data.add_objective(OBJECTIVE, &weights)?;
    Ok(data)
}

fn quality(target: &str, proxy: &str, p: &[f64], t: &[f64]) -> ProxyQuality {
    let (p, t) = (Array1::from(p.to_vec()), Array1::from(t.to_vec()));
    ProxyQuality {
        target: target.into(),
        proxy: proxy.into(),
        pearson: pearson(p.view(), t.view()),
        spearman: spearman(p.view(), t.view()),
    }
}

/// Every analysis of the measured losses.
pub fn analyse(cfg: &StudyConfig, o: &StudyOutcome, tables: &[&ExpertTable]) -> Result<Analysis> {
    let mut a = Analysis::default();
    let col = |m: &Vec<Vec<f64>>, j: usize| m.iter().map(|r| r[j]).collect::<Vec<_>>();
    for (j, e) in o.eval_domains.iter().enumerate() {
        let t = col(&o.true_loss, j);
        a.proxy_quality
            .push(quality(e, "mde", &col(&o.mde_loss, j), &t));
        a.proxy_quality
            .push(quality(e, "merged", &col(&o.merged_loss, j), &t));
    }
    let obj = |m: &Vec<Vec<f64>>| m.iter().map(|r| objective(r)).collect::<Vec<_>>();
    let true_obj = obj(&o.true_loss);
    a.proxy_quality
        .push(quality(OBJECTIVE, "mde", &obj(&o.mde_loss), &true_obj));
    a.proxy_quality.push(quality(
        OBJECTIVE,
        "merged",
        &obj(&o.merged_loss),
        &true_obj,
    ));
    let (best, best_loss) = true_obj
        .iter()
        .copied()
        .enumerate()
        .min_by(|x, y| x.1.total_cmp(&y.1))
        .expect("at least two mixtures");
    a.best_observed = best;
    a.best_observed_loss = best_loss;

    // Regression: every family on every feature set, cross-validated on the objective.
    let data = dataset(o)?;
    let n = data.n_rows();
    let folds = if cfg.analysis.folds == 0 || cfg.analysis.folds >= n {
        Folds::loo(n)?
    } else {
        Folds::kfold(n, cfg.analysis.folds, Some(cfg.seed))?
    };
    let ridge = RidgeParams::new();
    let gp = GpParams::new();
    let gbdt = GbdtParams::new();
    let (mean, mde_alone) = (MeanParams, MdeAloneParams::default());
    let families: Vec<&dyn Regressor> = vec![&mean, &mde_alone, &ridge, &gp, &gbdt];
    let sets = [
        FeatureSet::new("λ", &["lambda"]),
        FeatureSet::new("λ+MDE", &["lambda", "mde"]),
        FeatureSet::new("λ+MDE+merged", &["lambda", "mde", "merged"]),
    ];
    let table = compare(&data, OBJECTIVE, &families, &sets, &folds)?;

    // The family searched: as configured, or the best cross-validated one on λ+MDE.
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
    a.features = vec!["lambda".into(), "mde".into()];
    a.comparison = Some(table);
    let task = data.task(&["lambda", "mde"], OBJECTIVE)?;
    let model = chosen.fit(&task)?;

    let space = search::space(cfg, o)?;
    let owned: Vec<ExpertTable> = tables.iter().map(|t| (*t).clone()).collect();
    // MDE alone, solved exactly over the same constrained simplex.
    let mde_obj = MdeObjective::mean(tables)?;
    let exact = mde_exact(&space, &mde_obj, &OptimumParams::default())?;
    a.mde_optimum = Some(exact.mixture.clone());
    a.mde_optimum_loss = Some(exact.objective);
    // The regression model, searched with MDE features computed for every candidate.
    let objective = ModelObjective::new(
        model,
        &space,
        Some(Box::new(MdeFeatures::new(owned.clone())?)),
    )?;
    let found = CmaEs::new().seed(cfg.seed).minimize(&space, &objective)?;
    a.recommended = Some(found.mixture.clone());
    a.predicted = Some(found.objective);
    a.predicted_std = found.uncertainty;
    a.search = Some(found);
    // One Bayesian-optimisation step: a GP on [λ, MDE(λ)] fitted to every trained mixture
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
    for (x, y) in o.mixtures.iter().zip(&true_obj) {
        bo.observe(x.clone(), *y)?;
    }
    a.bo_next = Some(bo.suggest()?);
    Ok(a)
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
