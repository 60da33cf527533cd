//! The end-to-end study: from a raw multi-domain corpus to a recommended mixture, with the
//! statistics that say how far to trust it.
//!
//! 1. **Data** ([`data`], [`tasks`]): tokenizer (a given `tokenizer.json` or a BPE trained on
//!    the corpus), domains, equal-sized base units, held-out splits, eval streams, end-task
//!    streams scored on their answer tokens.
//! 2. **Design** ([`design`]): ground-truth mixtures (uniform + Dirichlet draws; the last
//!    `mixtures.test` held out), Na et al.'s k-subsets of base units, replicate seeds.
//! 3. **Pool** ([`lab`]): a seed model pre-trained on the uniform mixture (of the training
//!    domains, or of `data.seed_corpus`'s); from it (or from
//!    scratch, `mixtures.init`) one model per base unit, one expert per domain, one model
//!    per mixture and replicate, and one seq model per subset. Every model is
//!    content-addressed in `out_dir/pool`, so reruns and extensions only train what is new.
//! 4. **Proxies**: per mixture, the MDE loss per eval domain (expert tables saved in
//!    `out_dir/tables`) and the loss of the λ-weighted merge of the base-unit models; per
//!    subset, its micro, macro and expert merges and the mean of its units' models
//!    ([`subsets`]).
//! 5. **Analysis** ([`analysis`], [`stats`]): proxies beside a λ-only baseline, the
//!    seed-to-seed noise floor, families cross-validated on the training mixtures and scored
//!    on the test ones, learning curves, the search (CMA-ES on the chosen family with MDE
//!    features), the exact MDE optimum, one Bayesian-optimisation proposal.
//! 6. **Validation**: the recommendation trained with `search.validate_seeds` seeds beside
//!    the uniform and the best training mixture.
//! 7. **Report** ([`report`]): CSV/JSON results, SVG and PNG plots, a markdown summary.

pub mod analysis;
mod checks;
pub mod config;
pub mod data;
pub mod design;
pub mod lab;
pub mod report;
pub mod stats;
pub mod subsets;
pub mod tasks;

use burn::tensor::backend::AutodiffBackend;
use datamix_decoder::BackendTask;
use datamix_mde::{ExpertTable, ExpertTableBuilder};
use datamix_partition::Mixture;
use serde::Serialize;

pub use analysis::Analysis;
pub use config::StudyConfig;
use config::{Init, RunConfig};
use data::Prepared;
pub use design::draw_mixtures;
use lab::{Lab, Role};
pub use subsets::SubsetOutcome;

use crate::error::{Error, Result};
use crate::pool::PoolKey;

/// What a study measured: every number the report is made of.
#[derive(Debug, Clone, Serialize)]
pub struct StudyOutcome {
    /// Training domains (the axes of λ).
    pub domains: Vec<String>,
    /// Eval domains (columns of the loss matrices).
    pub eval_domains: Vec<String>,
    /// Which eval domains are training domains' held-out splits.
    pub eval_in_domain: Vec<bool>,
    /// Which eval domains are end-task sets (scored on answer tokens only).
    pub eval_task: Vec<bool>,
    /// The objective's weight per eval domain (normalised to sum to 1).
    pub objective_weights: Vec<f64>,
    /// The secondary objective's weights (`objective.secondary`), when set.
    pub secondary_weights: Option<Vec<f64>>,
    /// Share of a mixture model's training steps that λ decides (1 when trained from
    /// scratch, `continued / (seed + continued)` when continued from the seed).
    pub lambda_share: f64,
    /// Base units per domain.
    pub units_per_domain: Vec<usize>,
    /// Training tokens per domain.
    pub domain_tokens: Vec<u64>,
    /// Mean CE of the seed model per eval domain.
    pub seed_loss: Vec<f64>,
    /// Mean CE of each domain expert (rows) per eval domain (columns).
    pub expert_loss: Vec<Vec<f64>>,
    /// The ground-truth mixtures (training and test).
    pub mixtures: Vec<Vec<f64>>,
    /// Which mixtures are held out (never fitted on, never used to choose a family).
    pub is_test: Vec<bool>,
    /// Mean CE of the model trained on each mixture, per eval domain.
    pub true_loss: Vec<Vec<f64>>,
    /// MDE estimate per mixture and eval domain.
    pub mde_loss: Vec<Vec<f64>>,
    /// Loss of the λ-weighted merge of base-unit models per mixture and eval domain.
    pub merged_loss: Vec<Vec<f64>>,
    /// Mixtures trained again with other seeds.
    pub replicates: Vec<Replicate>,
    /// Na et al.'s setting (sets of base units), when `subsets.count > 0`.
    pub subsets: Option<SubsetOutcome>,
    /// Regression, search and validation.
    pub analysis: Analysis,
}

/// One more training run of a mixture with another seed.
#[derive(Debug, Clone, Serialize)]
pub struct Replicate {
    /// Index into the mixtures.
    pub mixture: usize,
    /// Its training seed.
    pub seed: u64,
    /// Mean CE per eval domain.
    pub losses: Vec<f64>,
}

/// Runs a study (every stage; models already in the pool are reused).
pub fn run(cfg: &StudyConfig) -> Result<StudyOutcome> {
    cfg.validate().map_err(Error::Invalid)?;
    let data = data::prepare(cfg)?;
    check_design(cfg, &data)?;
    let outcome = cfg.backend.run(Task { cfg, data: &data })??;
    report::write(cfg, &outcome)?;
    Ok(outcome)
}

/// Checks what needs the prepared data, before any training: subsets against the number of
/// base units, objective weights against the eval domains.
fn check_design(cfg: &StudyConfig, data: &Prepared) -> Result<()> {
    let units = data.corpus.manifest().units.len();
    if cfg.subsets.count > 0 {
        design::draw_subsets(units, cfg.subsets.k, cfg.subsets.count, cfg.seed)?;
    }
    objective_weights("objective.weights", &cfg.objective.weights, data)?;
    objective_weights("objective.secondary", &cfg.objective.secondary, data).map(|_| ())
}

/// An objective's weights aligned with the eval domains, normalised (`key` names the
/// config table in errors; empty weights = every eval domain equally).
fn objective_weights(
    key: &str,
    w: &std::collections::BTreeMap<String, f64>,
    data: &Prepared,
) -> Result<Vec<f64>> {
    if let Some(unknown) = w.keys().find(|k| !data.eval.iter().any(|e| &e.name == *k)) {
        let names: Vec<&str> = data.eval.iter().map(|e| e.name.as_str()).collect();
        return Err(Error::Invalid(format!(
            "{key}.{unknown}: no such eval domain (expected one of {})",
            names.join(", ")
        )));
    }
    let raw: Vec<f64> = data
        .eval
        .iter()
        .map(|e| {
            if w.is_empty() {
                1.0
            } else {
                w.get(&e.name).copied().unwrap_or(0.0)
            }
        })
        .collect();
    let sum: f64 = raw.iter().sum();
    if !(sum > 0.0 && sum.is_finite()) {
        return Err(Error::Invalid(format!(
            "{key}: the eval domains present get no positive weight"
        )));
    }
    Ok(raw.iter().map(|x| x / sum).collect())
}

struct Task<'a> {
    cfg: &'a StudyConfig,
    data: &'a Prepared,
}

impl BackendTask for Task<'_> {
    type Output = Result<StudyOutcome>;
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output {
        run_on::<B>(self.cfg, self.data, device)
    }
}

/// The pool keys of every trained model.
struct Trained {
    seed: PoolKey,
    /// `(domain, key)` per base unit, manifest order.
    units: Vec<(String, PoolKey)>,
    experts: Vec<PoolKey>,
    mixtures: Vec<PoolKey>,
    /// `(mixture, seed, key)`.
    replicates: Vec<(usize, u64, PoolKey)>,
    /// `(unit indices, key)`.
    subsets: Vec<(Vec<usize>, PoolKey)>,
}

/// The mixture name in pool keys and reports.
fn mixture_name(j: usize) -> String {
    format!("mix{j:02}")
}

fn run_on<B: AutodiffBackend>(
    cfg: &StudyConfig,
    data: &Prepared,
    device: B::Device,
) -> Result<StudyOutcome> {
    // Design: the mixtures and subsets to train.
    let k = data.domains.len();
    let mixtures = draw_mixtures(k, cfg.mixtures.count, cfg.mixtures.alpha, cfg.seed);
    let subsets = if cfg.subsets.count > 0 {
        let units = data.corpus.manifest().units.len();
        design::draw_subsets(units, cfg.subsets.k, cfg.subsets.count, cfg.seed)?
    } else {
        Vec::new()
    };
    // Pool.
    let total = pool_steps(cfg, data, mixtures.len(), subsets.len());
    let lab = Lab::<B>::new(cfg, data, device, total)?;
    let trained = train_pool(&lab, cfg, data, &mixtures, &subsets)?;
    // Proxies.
    tracing::info!("scoring experts, mixture models and merged proxies");
    let mut outcome = score(&lab, cfg, data, mixtures, &trained)?;
    let tables = expert_tables(&lab, cfg, data, &trained, &mut outcome)?;
    let table_refs: Vec<&ExpertTable> = tables.iter().collect();
    let mde = datamix_mde::mde_features(&table_refs, &outcome.mixtures)?;
    outcome.mde_loss = mde.rows().into_iter().map(|r| r.to_vec()).collect();
    if !subsets.is_empty() {
        outcome.subsets = Some(score_subsets(&lab, cfg, data, &trained, &outcome)?);
    }
    // Analysis and validation.
    outcome.analysis = analysis::analyse(cfg, &outcome, &table_refs)?;
    if cfg.search.validate {
        validate(&lab, cfg, &trained, &mut outcome)?;
    }
    lab.finish();
    Ok(outcome)
}

/// The optimizer steps of the whole pool (the progress bar's length), logged with the
/// number of models: the seed, then every continued model (base units, experts,
/// mixtures, replicates, validation runs, and the subsets at `k` times the steps).
fn pool_steps(cfg: &StudyConfig, data: &Prepared, n_mixtures: usize, n_subsets: usize) -> u64 {
    let m = data.corpus.manifest();
    let k = data.domains.len();
    let replicate_runs = cfg.replicates.mixtures.len() * cfg.replicates.seeds;
    let validation_runs = if cfg.search.validate {
        3 * cfg.search.validate_seeds
    } else {
        0
    };
    let n_models = m.units.len() + k + n_mixtures + replicate_runs + validation_runs;
    let subset_steps = (n_subsets as u64)
        .saturating_mul(cfg.subsets.k as u64)
        .saturating_mul(cfg.continued.steps);
    let total = (n_models as u64)
        .saturating_mul(cfg.continued.steps)
        .saturating_add(cfg.seed_model.steps)
        .saturating_add(subset_steps);
    tracing::info!(
        domains = k,
        units = m.units.len(),
        mixtures = n_mixtures,
        test_mixtures = cfg.mixtures.test,
        replicate_runs,
        subsets = n_subsets,
        "training the pool: 1 seed + {} continued models",
        n_models + n_subsets
    );
    total
}

/// Na et al.'s setting: scores the subsets' models and merges, and analyses them against
/// the outcome's eval domains.
fn score_subsets<B: AutodiffBackend>(
    lab: &Lab<'_, B>,
    cfg: &StudyConfig,
    data: &Prepared,
    trained: &Trained,
    outcome: &StudyOutcome,
) -> Result<SubsetOutcome> {
    tracing::info!(
        subsets = trained.subsets.len(),
        "scoring Na et al.'s subsets and their merges"
    );
    let mut so = subsets::score(
        lab,
        cfg,
        data,
        &trained.units,
        &trained.experts,
        &trained.subsets,
    )?;
    let unit_domains: Vec<String> = trained.units.iter().map(|(d, _)| d.clone()).collect();
    subsets::analyse(
        &mut so,
        &outcome.eval_domains,
        &outcome.eval_in_domain,
        &unit_domains,
        &data.domains,
        cfg.analysis.folds,
        cfg.seed,
    )?;
    Ok(so)
}

/// Trains (or finds in the pool) every model of the design.
fn train_pool<B: AutodiffBackend>(
    lab: &Lab<'_, B>,
    cfg: &StudyConfig,
    data: &Prepared,
    mixtures: &[Vec<f64>],
    subsets: &[Vec<usize>],
) -> Result<Trained> {
    let m = data.corpus.manifest();
    let k = data.domains.len();
    let seed = lab.train_seed()?;
    let mut units = Vec::new();
    for u in &m.units {
        let mix = Mixture::from_unit_ids(&data.corpus, &[u.id.as_str()])?;
        let key = lab.train(
            Role::Unit,
            &u.id,
            Some(&seed),
            &mix,
            &cfg.continued,
            cfg.seed,
        )?;
        units.push((u.domain.clone(), key));
    }
    let mut experts = Vec::new();
    for (i, d) in data.domains.iter().enumerate() {
        let mut w = vec![0.0; k];
        w[i] = 1.0;
        experts.push(lab.train_lambda(&seed, Role::Expert, d, &w, cfg.seed)?);
    }
    let mut mixture_keys = Vec::new();
    for (j, lambda) in mixtures.iter().enumerate() {
        let name = mixture_name(j);
        mixture_keys.push(lab.train_lambda(&seed, Role::Mixture, &name, lambda, cfg.seed)?);
    }
    let mut replicates = Vec::new();
    for &j in &cfg.replicates.mixtures {
        for s in design::extra_seeds(cfg.seed, cfg.replicates.seeds) {
            let key = lab.train_lambda(&seed, Role::Mixture, &mixture_name(j), &mixtures[j], s)?;
            replicates.push((j, s, key));
        }
    }
    let mut subset_keys = Vec::new();
    let run = RunConfig {
        steps: cfg.continued.steps.saturating_mul(cfg.subsets.k as u64),
        ..cfg.continued.clone()
    };
    for s in subsets {
        let ids: Vec<&str> = s.iter().map(|&u| m.units[u].id.as_str()).collect();
        let mix = Mixture::from_unit_ids(&data.corpus, &ids)?;
        let key = lab.train(
            Role::Subset,
            &ids.join("+"),
            Some(&seed),
            &mix,
            &run,
            cfg.seed,
        )?;
        subset_keys.push((s.clone(), key));
    }
    Ok(Trained {
        seed,
        units,
        experts,
        mixtures: mixture_keys,
        replicates,
        subsets: subset_keys,
    })
}

/// True and merged losses of every mixture and replicate; seed and expert losses.
fn score<B: AutodiffBackend>(
    lab: &Lab<'_, B>,
    cfg: &StudyConfig,
    data: &Prepared,
    mixtures: Vec<Vec<f64>>,
    t: &Trained,
) -> Result<StudyOutcome> {
    let m = data.corpus.manifest();
    let mut true_loss = Vec::new();
    let mut merged_loss = Vec::new();
    for (lambda, key) in mixtures.iter().zip(&t.mixtures) {
        true_loss.push(lab.score_mean(key)?);
        merged_loss.push(lab.score_merged(lambda, &t.units)?);
    }
    let replicates = t
        .replicates
        .iter()
        .map(|(j, s, key)| {
            Ok(Replicate {
                mixture: *j,
                seed: *s,
                losses: lab.score_mean(key)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let seed_steps = cfg.seed_model.steps as f64;
    let cont = cfg.continued.steps as f64;
    Ok(StudyOutcome {
        domains: data.domains.clone(),
        eval_domains: data.eval.iter().map(|e| e.name.clone()).collect(),
        eval_in_domain: data.eval.iter().map(|e| e.in_domain).collect(),
        eval_task: data.eval.iter().map(|e| e.task).collect(),
        objective_weights: objective_weights("objective.weights", &cfg.objective.weights, data)?,
        secondary_weights: if cfg.objective.secondary.is_empty() {
            None
        } else {
            Some(objective_weights(
                "objective.secondary",
                &cfg.objective.secondary,
                data,
            )?)
        },
        lambda_share: match cfg.mixtures.init {
            Init::Seed => cont / (seed_steps + cont),
            Init::Scratch => 1.0,
        },
        units_per_domain: data
            .domains
            .iter()
            .map(|d| t.units.iter().filter(|(ud, _)| ud == d).count())
            .collect(),
        domain_tokens: m.domains.iter().map(|d| d.tokens).collect(),
        seed_loss: lab.score_mean(&t.seed)?,
        expert_loss: Vec::new(),
        is_test: design::test_mask(cfg),
        mixtures,
        true_loss,
        mde_loss: Vec::new(),
        merged_loss,
        replicates,
        subsets: None,
        analysis: Analysis::default(),
    })
}

/// Scores the experts (filling `expert_loss`) and saves their log-probability tables.
fn expert_tables<B: AutodiffBackend>(
    lab: &Lab<'_, B>,
    cfg: &StudyConfig,
    data: &Prepared,
    t: &Trained,
    outcome: &mut StudyOutcome,
) -> Result<Vec<ExpertTable>> {
    let tok_hash = data.corpus.manifest().tokenizer_hash.clone();
    let mut builders: Vec<ExpertTableBuilder> = data
        .eval
        .iter()
        .map(|e| ExpertTableBuilder::new(e.name.clone(), tok_hash.clone()))
        .collect();
    for (d, key) in data.domains.iter().zip(&t.experts) {
        let scores = lab.score(key)?;
        outcome
            .expert_loss
            .push(scores.iter().map(|l| lab::mean_ce(l)).collect());
        for (b, l) in builders.iter_mut().zip(&scores) {
            b.add_expert(d.clone(), key.as_str(), l)?;
        }
    }
    let tables: Vec<ExpertTable> = builders
        .into_iter()
        .map(|b| b.build())
        .collect::<std::result::Result<_, _>>()?;
    let table_dir = cfg.out_dir.join("tables");
    std::fs::create_dir_all(&table_dir).map_err(|e| Error::io(&table_dir, e))?;
    for t in &tables {
        t.save(table_dir.join(format!("{}.safetensors", t.eval_domain())))?;
    }
    Ok(tables)
}

/// Trains the recommendation with `search.validate_seeds` seeds, and the uniform and the
/// best training mixture with the same seeds.
fn validate<B: AutodiffBackend>(
    lab: &Lab<'_, B>,
    cfg: &StudyConfig,
    t: &Trained,
    outcome: &mut StudyOutcome,
) -> Result<()> {
    let Some(rec) = outcome.analysis.recommended.clone() else {
        return Ok(());
    };
    let seeds: Vec<u64> = (0..cfg.search.validate_seeds as u64)
        .map(|r| cfg.seed.wrapping_add(r))
        .collect();
    let best = outcome.analysis.best_observed;
    let w = outcome.objective_weights.clone();
    let mut v = analysis::Validation {
        seeds: seeds.clone(),
        best_index: best,
        ..Default::default()
    };
    for &s in &seeds {
        let key = lab.train_lambda(&t.seed, Role::Mixture, "recommended", &rec, s)?;
        let losses = lab.score_mean(&key)?;
        v.recommended.push(analysis::objective(&losses, &w));
        if s == cfg.seed {
            outcome.analysis.validated_loss = Some(analysis::objective(&losses, &w));
            outcome.analysis.validated_losses = Some(losses);
        }
        for (j, out) in [(0, &mut v.uniform), (best, &mut v.best)] {
            let lambda = &outcome.mixtures[j];
            let key = lab.train_lambda(&t.seed, Role::Mixture, &mixture_name(j), lambda, s)?;
            out.push(analysis::objective(&lab.score_mean(&key)?, &w));
        }
    }
    outcome.analysis.validation = Some(v);
    Ok(())
}
