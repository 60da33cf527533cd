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
pub mod emit;
pub mod graph;
pub mod lab;
pub mod report;
pub mod stats;
pub mod subsets;
pub mod tasks;

use burn::tensor::backend::AutodiffBackend;
use datamix_decoder::BackendTask;
use datamix_mde::{ExpertTable, ExpertTableBuilder};
use serde::Serialize;

pub use analysis::Analysis;
use config::Init;
pub use config::StudyConfig;
use data::Prepared;
pub use design::draw_mixtures;
use graph::{Graph, Slot};
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
    let outcome = cfg.backend.run(Task { cfg, data, graph })??;
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
    let pool = crate::pool::Pool::open(cfg.out_dir.join("pool"))?;
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

/// What [`run_job`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobRun {
    /// The model was in the pool already: nothing trained.
    InPool,
    /// Trained (by this process, or by another one this process waited for).
    Trained,
}

/// Trains one job of the graph (`datamix study run-job`); a no-op if its model is in the
/// pool. Fails before any work on an unknown id ([`Error::UnknownJob`]) or a dependency
/// not in the pool ([`Error::JobsMissing`]), or, with `expect_plan`, a config whose plan
/// id is another one ([`Error::PlanMismatch`]: scripts emitted for an older config).
pub fn run_job(cfg: &StudyConfig, id: &str, expect_plan: Option<&str>) -> Result<JobRun> {
    let (data, graph) = load(cfg, expect_plan)?;
    let Some((index, job)) = graph.job(id) else {
        return Err(Error::UnknownJob {
            id: id.to_string(),
            known: graph.jobs.iter().map(|j| j.id.clone()).collect(),
        });
    };
    let pool = crate::pool::Pool::open(cfg.out_dir.join("pool"))?;
    if pool.check(&job.key)? {
        tracing::info!(job = id, key = job.key.short(), "already in the pool");
        return Ok(JobRun::InPool);
    }
    let mut missing = Vec::new();
    for d in &job.deps {
        let (_, dep) = graph.job(d).expect("dependencies are jobs of the graph");
        if !pool.check(&dep.key)? {
            missing.push(d.clone());
        }
    }
    if !missing.is_empty() {
        return Err(Error::JobsMissing {
            pool: pool.root().to_path_buf(),
            ids: missing,
        });
    }
    cfg.backend.run(Jobs {
        cfg,
        data: &data,
        graph: &graph,
        mode: JobsMode::One(index),
    })??;
    Ok(JobRun::Trained)
}

/// What a [`worker`] did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct WorkerReport {
    /// Ids of the jobs this worker trained.
    pub trained: Vec<String>,
    /// Jobs found in the pool (trained before, or by other workers).
    pub in_pool: usize,
}

/// A worker (`datamix study worker`): repeatedly takes a job whose dependencies are in the
/// pool and whose lock no other process holds, trains it, and returns when every job of
/// the graph is in the pool. Any number of workers, on one machine or on several sharing
/// the pool's file system, train each model once ([`crate::lock`] has the caveats).
/// `poll` is how long an idle worker waits before looking again.
pub fn worker(cfg: &StudyConfig, poll: std::time::Duration) -> Result<WorkerReport> {
    let (data, graph) = load(cfg, None)?;
    cfg.backend.run(Jobs {
        cfg,
        data: &data,
        graph: &graph,
        mode: JobsMode::Worker(poll),
    })?
}

enum JobsMode {
    One(usize),
    Worker(std::time::Duration),
}

struct Jobs<'a> {
    cfg: &'a StudyConfig,
    data: &'a Prepared,
    graph: &'a Graph,
    mode: JobsMode,
}

impl BackendTask for Jobs<'_> {
    type Output = Result<WorkerReport>;
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output {
        let g = self.graph;
        let train = |lab: &Lab<'_, B>, i: usize, wait: bool| {
            let j = &g.jobs[i];
            lab.train_if_free(
                j.spec_role,
                &j.name,
                j.from.map(|f| &g.jobs[f].key),
                &j.data,
                &j.run,
                j.train_seed,
                wait,
            )
        };
        let mut report = WorkerReport::default();
        match self.mode {
            JobsMode::One(i) => {
                let lab = Lab::<B>::new(self.cfg, self.data, device, g.jobs[i].steps)?;
                train(&lab, i, true)?;
                lab.finish();
                report.trained.push(g.jobs[i].id.clone());
            }
            JobsMode::Worker(poll) => {
                let total = g.jobs.iter().map(|j| j.steps).sum();
                let lab = Lab::<B>::new(self.cfg, self.data, device, total)?;
                let mut done = vec![false; g.jobs.len()];
                loop {
                    let mut remaining = 0;
                    let mut progressed = false;
                    for i in 0..g.jobs.len() {
                        if done[i] {
                            continue;
                        }
                        if lab.pool().check(&g.jobs[i].key)? {
                            done[i] = true;
                            report.in_pool += 1;
                            continue;
                        }
                        remaining += 1;
                        if g.jobs[i].from.is_some_and(|f| !done[f]) {
                            continue;
                        }
                        if train(&lab, i, false)?.is_some() {
                            done[i] = true;
                            remaining -= 1;
                            progressed = true;
                            report.trained.push(g.jobs[i].id.clone());
                        }
                    }
                    if remaining == 0 {
                        break;
                    }
                    if !progressed {
                        std::thread::sleep(poll);
                    }
                }
                lab.finish();
            }
        }
        Ok(report)
    }
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
    graph: &'a Graph,
}

impl BackendTask for Task<'_> {
    type Output = Result<StudyOutcome>;
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output {
        run_on::<B>(self.cfg, self.data, self.graph, device)
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

use graph::mixture_name;

fn run_on<B: AutodiffBackend>(
    cfg: &StudyConfig,
    data: &Prepared,
    graph: &Graph,
    device: B::Device,
) -> Result<StudyOutcome> {
    let m = data.corpus.manifest();
    let k = data.domains.len();
    let mixtures = graph.mixtures.clone();
    let subsets = &graph.subsets;
    let replicate_runs = cfg.replicates.mixtures.len() * cfg.replicates.seeds;
    let validation_runs = if cfg.search.validate {
        3 * cfg.search.validate_seeds
    } else {
        0
    };
    let n_models = graph.jobs.len() - 1 + validation_runs;
    let total = graph
        .jobs
        .iter()
        .map(|j| j.steps)
        .sum::<u64>()
        .saturating_add((validation_runs as u64).saturating_mul(cfg.continued.steps));
    tracing::info!(
        domains = k,
        units = m.units.len(),
        mixtures = mixtures.len(),
        test_mixtures = cfg.mixtures.test,
        replicate_runs,
        subsets = subsets.len(),
        "training the pool: 1 seed + {n_models} continued models",
    );
    let lab = Lab::<B>::new(cfg, data, device, total)?;
    let trained = train_pool(&lab, graph)?;

    tracing::info!("scoring experts, mixture models and merged proxies");
    let mut outcome = score(&lab, cfg, data, mixtures, &trained)?;
    let tables = expert_tables(&lab, cfg, data, &trained, &mut outcome)?;
    let table_refs: Vec<&ExpertTable> = tables.iter().collect();
    let mde = datamix_mde::mde_features(&table_refs, &outcome.mixtures)?;
    outcome.mde_loss = mde.rows().into_iter().map(|r| r.to_vec()).collect();
    if !subsets.is_empty() {
        tracing::info!(
            subsets = subsets.len(),
            "scoring Na et al.'s subsets and their merges"
        );
        let mut so = subsets::score(
            &lab,
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
        outcome.subsets = Some(so);
    }
    outcome.analysis = analysis::analyse(cfg, &outcome, &table_refs)?;
    let validation_keys = if cfg.search.validate {
        validate(&lab, cfg, &trained, &mut outcome)?
    } else {
        Vec::new()
    };
    outcome.cost = cost(cfg, graph, &validation_keys, &outcome.analysis);
    lab.finish();
    Ok(outcome)
}

/// The study's [`Cost`]: `validation_keys` are the pool keys the validation used.
fn cost(cfg: &StudyConfig, graph: &Graph, validation_keys: &[PoolKey], a: &Analysis) -> Cost {
    let jobs: std::collections::BTreeSet<&PoolKey> = graph.jobs.iter().map(|j| &j.key).collect();
    let extra: std::collections::BTreeSet<&PoolKey> = validation_keys
        .iter()
        .filter(|k| !jobs.contains(k))
        .collect();
    let per = cfg.continued.tokens(cfg.data.seq_len);
    let job_tokens: u64 = graph.jobs.iter().map(|j| j.tokens).sum();
    let validation_tokens = (extra.len() as u64).saturating_mul(per);
    let study_tokens = job_tokens.saturating_add(validation_tokens);
    let candidates_scored = a.search.as_ref().map_or(0, |r| r.evaluations);
    let shared_seed = match cfg.mixtures.init {
        Init::Seed => cfg.seed_model.tokens(cfg.data.seq_len),
        Init::Scratch => 0,
    };
    let naive_tokens = shared_seed.saturating_add((candidates_scored as u64).saturating_mul(per));
    Cost {
        job_models: graph.jobs.len(),
        job_tokens,
        validation_models: extra.len(),
        validation_tokens,
        study_tokens,
        candidates_scored,
        tokens_per_candidate: per,
        naive_tokens,
        ratio: naive_tokens as f64 / study_tokens.max(1) as f64,
    }
}

/// Trains (or finds in the pool) every job of the graph, in order.
fn train_pool<B: AutodiffBackend>(lab: &Lab<'_, B>, graph: &Graph) -> Result<Trained> {
    let mut keys: Vec<PoolKey> = Vec::with_capacity(graph.jobs.len());
    for j in &graph.jobs {
        let key = lab.train(
            j.spec_role,
            &j.name,
            j.from.map(|f| &keys[f]),
            &j.data,
            &j.run,
            j.train_seed,
        )?;
        if key != j.key {
            return Err(Error::Invalid(format!(
                "job {}: trained as pool key {key}, the plan says {} (a bug: please report it)",
                j.id, j.key
            )));
        }
        keys.push(key);
    }
    let mut t = Trained {
        seed: graph.jobs[0].key.clone(),
        units: Vec::new(),
        experts: Vec::new(),
        mixtures: Vec::new(),
        replicates: Vec::new(),
        subsets: Vec::new(),
    };
    for (j, key) in graph.jobs.iter().zip(keys) {
        match &j.slot {
            Slot::Seed => t.seed = key,
            Slot::Unit(d) => t.units.push((d.clone(), key)),
            Slot::Expert => t.experts.push(key),
            Slot::Mixture => t.mixtures.push(key),
            Slot::Replicate(m, s) => t.replicates.push((*m, *s, key)),
            Slot::Subset(u) => t.subsets.push((u.clone(), key)),
        }
    }
    Ok(t)
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
        cost: Cost::default(),
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
/// best training mixture with the same seeds; returns the pool keys of those models.
fn validate<B: AutodiffBackend>(
    lab: &Lab<'_, B>,
    cfg: &StudyConfig,
    t: &Trained,
    outcome: &mut StudyOutcome,
) -> Result<Vec<PoolKey>> {
    let mut keys = Vec::new();
    let Some(rec) = outcome.analysis.recommended.clone() else {
        return Ok(keys);
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
        keys.push(key);
        v.recommended.push(analysis::objective(&losses, &w));
        if s == cfg.seed {
            outcome.analysis.validated_loss = Some(analysis::objective(&losses, &w));
            outcome.analysis.validated_losses = Some(losses);
        }
        for (j, out) in [(0, &mut v.uniform), (best, &mut v.best)] {
            let lambda = &outcome.mixtures[j];
            let key = lab.train_lambda(&t.seed, Role::Mixture, &mixture_name(j), lambda, s)?;
            out.push(analysis::objective(&lab.score_mean(&key)?, &w));
            keys.push(key);
        }
    }
    outcome.analysis.validation = Some(v);
    Ok(keys)
}
