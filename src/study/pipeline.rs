//! Study stages 2-6 on a Burn backend, once the job graph is known: train (or find) the
//! pool's models, score the experts, mixture models and merged proxies on the eval streams,
//! analyse, validate the recommendation, and account for the cost. [`super`] prepares the
//! data and writes the report; the jobs alone are trained by [`super::jobs`].

use burn::tensor::backend::AutodiffBackend;
use datamix_decoder::BackendTask;
use datamix_mde::{ExpertTable, ExpertTableBuilder};

use super::analysis::{self, Analysis};
use super::config::{Init, StudyConfig};
use super::data::Prepared;
use super::graph::{self, Graph, Slot};
use super::lab::{self, Lab, Role};
use super::{Cost, Replicate, StudyOutcome, design, objective_weights, subsets};
use crate::error::{Error, Result};
use crate::pool::PoolKey;

/// Runs stages 2-6 on the study's backend.
pub(super) fn outcome(cfg: &StudyConfig, data: &Prepared, graph: &Graph) -> Result<StudyOutcome> {
    cfg.backend.run(Task { cfg, data, graph })?
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
