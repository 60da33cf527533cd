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
//!
//! This module prepares the data, builds the job graph ([`graph`]) and writes the report;
//! `pipeline` runs stages 3-6 on a backend; [`run_job`] and [`worker`] (module `jobs`) train
//! the graph's jobs alone, for SLURM, Kubernetes and local workers ([`emit`]).

pub mod analysis;
mod checks;
pub mod config;
pub mod data;
pub mod design;
pub mod emit;
pub mod graph;
mod jobs;
pub mod lab;
mod pipeline;
pub mod report;
pub mod stats;
pub mod subsets;
pub mod tasks;

use serde::Serialize;

pub use analysis::Analysis;
pub use config::StudyConfig;
use data::Prepared;
pub use design::draw_mixtures;
use graph::Graph;
pub use jobs::{JobRun, WorkerReport, run_job, worker};
pub use subsets::SubsetOutcome;

use crate::error::{Error, Result};

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
    /// Tokens trained for the study against training every candidate mixture it scored.
    pub cost: Cost,
}

/// The amortisation argument in tokens: what the study's models cost to train against
/// training one model per candidate mixture the search scored.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Cost {
    /// Models of the job graph (seed, units, experts, mixtures, replicates, subsets).
    pub job_models: usize,
    /// Their training tokens.
    pub job_tokens: u64,
    /// Validation runs that are not jobs (trained by `finish`).
    pub validation_models: usize,
    /// Their training tokens.
    pub validation_tokens: u64,
    /// `job_tokens + validation_tokens`: every model the study's numbers rest on (whether
    /// this run trained it or found it in the pool).
    pub study_tokens: u64,
    /// Candidate mixtures the search scored (objective evaluations).
    pub candidates_scored: usize,
    /// Tokens to train one candidate like a ground-truth mixture model (`continued`;
    /// the shared seed is counted once in `naive_tokens` when mixtures start from it).
    pub tokens_per_candidate: u64,
    /// Training every scored candidate instead: the seed (when mixtures continue from it)
    /// plus `candidates_scored × tokens_per_candidate`.
    pub naive_tokens: u64,
    /// `naive_tokens / study_tokens`.
    pub ratio: f64,
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

/// Runs a study (every stage; models already in the pool are reused): trains the jobs of
/// its [`graph`] one after another, then scores, analyses, validates and reports.
pub fn run(cfg: &StudyConfig) -> Result<StudyOutcome> {
    let (data, graph) = load(cfg, None)?;
    conclude(cfg, &data, &graph)
}

/// Checks the config, prepares the data (tokenizer, packed corpus) and builds the job
/// graph: everything before training. With `expect_plan`, the graph's plan id must be
/// that one ([`Error::PlanMismatch`]).
fn load(cfg: &StudyConfig, expect_plan: Option<&str>) -> Result<(Prepared, Graph)> {
    cfg.validate().map_err(Error::Invalid)?;
    // An unwritable pool, or one of an incompatible version: refused before any work.
    lab::check_pool(cfg)?;
    let data = data::prepare(cfg)?;
    check_design(cfg, &data)?;
    let graph = graph::build(cfg, &data)?;
    if let Some(expected) = expect_plan {
        let actual = graph.plan(cfg).id;
        if actual != expected {
            return Err(Error::PlanMismatch {
                expected: expected.to_string(),
                actual,
            });
        }
    }
    Ok((data, graph))
}

fn conclude(cfg: &StudyConfig, data: &Prepared, graph: &Graph) -> Result<StudyOutcome> {
    let outcome = pipeline::outcome(cfg, data, graph)?;
    report::write(cfg, &outcome)?;
    Ok(outcome)
}

/// The study's job graph as a plan (`datamix study plan`): prepares the data, trains nothing.
pub fn plan(cfg: &StudyConfig) -> Result<graph::Plan> {
    let (_, graph) = load(cfg, None)?;
    Ok(graph.plan(cfg))
}

/// The jobs of the graph whose models are not (intact) in the pool, in graph order.
fn missing_jobs<'g>(cfg: &StudyConfig, graph: &'g Graph) -> Result<Vec<&'g graph::Job>> {
    let pool = lab::open_pool(cfg)?;
    let mut missing = Vec::new();
    for j in &graph.jobs {
        if !pool.check(&j.key)? {
            missing.push(j);
        }
    }
    Ok(missing)
}

/// Scores, analyses, validates and reports a study whose jobs are all in the pool
/// (`datamix study finish`); [`Error::JobsMissing`] names the jobs that are not, before
/// any work. The validation runs (they depend on the analysis) are trained here.
/// `expect_plan`: see [`run_job`].
pub fn finish(cfg: &StudyConfig, expect_plan: Option<&str>) -> Result<StudyOutcome> {
    let (data, graph) = load(cfg, expect_plan)?;
    let missing = missing_jobs(cfg, &graph)?;
    if !missing.is_empty() {
        return Err(Error::JobsMissing {
            pool: cfg.out_dir.join("pool"),
            ids: missing.iter().map(|j| j.id.clone()).collect(),
        });
    }
    conclude(cfg, &data, &graph)
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
