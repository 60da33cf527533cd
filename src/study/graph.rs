//! The study as a job graph: every model a config trains before its analysis, as jobs
//! with an id, a role, a pool key and the jobs it depends on.
//!
//! [`build`] enumerates the jobs in the order a serial study trains them: the seed model
//! (pre-trained on the uniform mixture), then — each continued from the seed, or from
//! scratch when `mixtures.init = "scratch"` — one model per base unit, one expert per
//! domain, one model per ground-truth mixture, the replicates (mixtures again with other
//! seeds) and one seq model per subset of base units (Na et al.). `datamix study` trains
//! them one after another ([`super::run`]); `datamix study run-job` trains one, a
//! `worker` trains whichever are ready and unclaimed ([`super::worker`]), and the SLURM and
//! Kubernetes files of `datamix study emit` run them as a job array. Every model is keyed
//! by its content ([`crate::pool`]), so whoever trains a job, the pool ends up the same.
//!
//! The validation runs (`search.validate`: the recommended mixture, the uniform one and
//! the best training mixture, with `search.validate_seeds` seeds) are not jobs of the
//! graph: what they train on is only known after the analysis, so `finish` trains them
//! (at most `3 × validate_seeds` runs of `continued`; several are already in the pool as
//! mixture or replicate jobs). [`Plan::deferred`] counts them.

use datamix_partition::Mixture;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::config::{Init, RunConfig, StudyConfig};
use super::data::Prepared;
use super::design;
use super::lab::{ModelSpec, Role as SpecRole};
use crate::error::Result;
use crate::pool::PoolKey;

/// Format tag of a written plan.
pub const PLAN_FORMAT: &str = "datamix-study-plan-v1";

/// What a job trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The seed model, pre-trained on the uniform mixture.
    Seed,
    /// One base unit's model.
    Unit,
    /// One domain's expert.
    Expert,
    /// One ground-truth mixture's model.
    Mixture,
    /// A ground-truth mixture trained again with another seed.
    Replicate,
    /// One subset of base units' seq model (Na et al.).
    Subset,
}

/// Where a job's model goes in the study's bookkeeping.
#[derive(Debug, Clone)]
pub(crate) enum Slot {
    Seed,
    /// A base unit: its domain.
    Unit(String),
    Expert,
    Mixture,
    /// `(mixture, seed)`.
    Replicate(usize, u64),
    /// Unit indices.
    Subset(Vec<usize>),
}

/// One training run of the study.
#[derive(Debug, Clone, Serialize)]
pub struct Job {
    /// Stable id (`seed`, `unit-3`, `expert-0`, `mixture-7`, `replicate-0-1`, `subset-2`):
    /// what `datamix study run-job --job` takes.
    pub id: String,
    /// What it trains.
    pub role: Role,
    /// Unit id, domain, mixture or subset name.
    pub name: String,
    /// Its model's pool key (the entry `<pool>/<key>`).
    pub key: PoolKey,
    /// Ids of the jobs whose models it starts from.
    pub deps: Vec<String>,
    /// Optimizer steps.
    pub steps: u64,
    /// Training tokens (steps × batch × sequence length).
    pub tokens: u64,
    /// Training seed (initialisation and data order).
    pub train_seed: u64,
    /// The role in its model spec (`mixture` for replicates: the pool keys of existing
    /// pools stay valid).
    #[serde(skip)]
    pub(crate) spec_role: SpecRole,
    /// Index (in the graph) of the job it continues from.
    #[serde(skip)]
    pub(crate) from: Option<usize>,
    #[serde(skip)]
    pub(crate) data: Mixture,
    #[serde(skip)]
    pub(crate) run: RunConfig,
    #[serde(skip)]
    pub(crate) slot: Slot,
}

/// Every job of a study, in training order (a job comes after what it depends on).
#[derive(Debug, Clone)]
pub struct Graph {
    /// The jobs.
    pub jobs: Vec<Job>,
    /// The ground-truth mixtures (training and test).
    pub mixtures: Vec<Vec<f64>>,
    /// Na et al.'s subsets (unit indices).
    pub subsets: Vec<Vec<usize>>,
}

/// Runs the graph leaves to the end of the study.
#[derive(Debug, Clone, Serialize)]
pub struct Deferred {
    /// At most this many validation runs (`3 × search.validate_seeds`, 0 without
    /// `search.validate`).
    pub validation_runs: usize,
    /// Their tokens, at most.
    pub tokens: u64,
    /// Why they are not jobs.
    pub note: &'static str,
}

/// What `datamix study plan` writes.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// [`PLAN_FORMAT`].
    pub format: &'static str,
    /// SHA-256 of the jobs' ids and pool keys: two configs that train the same models
    /// have the same plan id; any change to what is trained changes it.
    pub id: String,
    /// The pool the jobs' models go to.
    pub pool: std::path::PathBuf,
    /// Training tokens of all jobs together.
    pub tokens: u64,
    /// The jobs, in an order that respects their dependencies.
    pub jobs: Vec<Job>,
    /// What `finish` still trains.
    pub deferred: Deferred,
}

impl Graph {
    /// The job with id `id`.
    pub fn job(&self, id: &str) -> Option<(usize, &Job)> {
        self.jobs.iter().enumerate().find(|(_, j)| j.id == id)
    }

    /// The plan of this graph for `cfg`.
    pub fn plan(&self, cfg: &StudyConfig) -> Plan {
        let mut h = Sha256::new();
        for j in &self.jobs {
            h.update(j.id.as_bytes());
            h.update(b"\0");
            h.update(j.key.as_str().as_bytes());
            h.update(b"\n");
        }
        let validation_runs = if cfg.search.validate {
            3 * cfg.search.validate_seeds
        } else {
            0
        };
        Plan {
            format: PLAN_FORMAT,
            id: hex::encode(h.finalize()),
            pool: cfg.out_dir.join("pool"),
            tokens: self.jobs.iter().map(|j| j.tokens).sum(),
            jobs: self.jobs.clone(),
            deferred: Deferred {
                validation_runs,
                tokens: (validation_runs as u64)
                    .saturating_mul(cfg.continued.tokens(cfg.data.seq_len)),
                note: "validation runs train on the analysis' recommendation: `finish` trains them",
            },
        }
    }
}

/// The mixture name in pool keys and reports.
pub(crate) fn mixture_name(j: usize) -> String {
    format!("mix{j:02}")
}

/// Enumerates the jobs `cfg` implies on the prepared data (no training, no backend).
pub fn build(cfg: &StudyConfig, data: &Prepared) -> Result<Graph> {
    let m = data.corpus.manifest();
    let k = data.domains.len();
    let seq = cfg.data.seq_len;
    let model = cfg.model.decoder(m.vocab_size, seq)?;
    let mixtures = design::draw_mixtures(k, cfg.mixtures.count, cfg.mixtures.alpha, cfg.seed);
    let subsets = if cfg.subsets.count > 0 {
        design::draw_subsets(m.units.len(), cfg.subsets.k, cfg.subsets.count, cfg.seed)?
    } else {
        Vec::new()
    };
    let mut jobs: Vec<Job> = Vec::new();
    let mut add = |id: String,
                   role: Role,
                   spec_role: SpecRole,
                   name: String,
                   from: Option<usize>,
                   data_mix: Mixture,
                   run: &RunConfig,
                   train_seed: u64,
                   slot: Slot|
     -> Result<usize> {
        let parent = from.map(|i| jobs[i].key.clone());
        let spec = ModelSpec::new(
            spec_role,
            &name,
            parent.as_ref(),
            &data_mix,
            data.corpus_for(spec_role == SpecRole::Seed).0,
            &model,
            run.train_config(seq, train_seed),
        )?;
        let key = PoolKey::of(&spec);
        jobs.push(Job {
            id,
            role,
            name,
            key,
            deps: from.map(|i| vec![jobs[i].id.clone()]).unwrap_or_default(),
            steps: run.steps,
            tokens: run.tokens(seq),
            train_seed,
            spec_role,
            from,
            data: data_mix,
            run: run.clone(),
            slot,
        });
        Ok(jobs.len() - 1)
    };
    let uniform = data.seed_mixture()?;
    let seed = add(
        "seed".into(),
        Role::Seed,
        SpecRole::Seed,
        "uniform".into(),
        None,
        uniform,
        &cfg.seed_model,
        cfg.seed,
        Slot::Seed,
    )?;
    let lambda_from = match cfg.mixtures.init {
        Init::Seed => Some(seed),
        Init::Scratch => None,
    };
    for (i, u) in m.units.iter().enumerate() {
        let mix = Mixture::from_unit_ids(&data.corpus, &[u.id.as_str()])?;
        add(
            format!("unit-{i}"),
            Role::Unit,
            SpecRole::Unit,
            u.id.clone(),
            Some(seed),
            mix,
            &cfg.continued,
            cfg.seed,
            Slot::Unit(u.domain.clone()),
        )?;
    }
    for (i, d) in data.domains.iter().enumerate() {
        let mut w = vec![0.0; k];
        w[i] = 1.0;
        let mix = Mixture::from_weights(&data.corpus, &w)?;
        add(
            format!("expert-{i}"),
            Role::Expert,
            SpecRole::Expert,
            d.clone(),
            lambda_from,
            mix,
            &cfg.continued,
            cfg.seed,
            Slot::Expert,
        )?;
    }
    for (j, lambda) in mixtures.iter().enumerate() {
        let mix = Mixture::from_weights(&data.corpus, lambda)?;
        add(
            format!("mixture-{j}"),
            Role::Mixture,
            SpecRole::Mixture,
            mixture_name(j),
            lambda_from,
            mix,
            &cfg.continued,
            cfg.seed,
            Slot::Mixture,
        )?;
    }
    for &j in &cfg.replicates.mixtures {
        for (r, s) in design::extra_seeds(cfg.seed, cfg.replicates.seeds)
            .into_iter()
            .enumerate()
        {
            let mix = Mixture::from_weights(&data.corpus, &mixtures[j])?;
            add(
                format!("replicate-{j}-{}", r + 1),
                Role::Replicate,
                SpecRole::Mixture,
                mixture_name(j),
                lambda_from,
                mix,
                &cfg.continued,
                s,
                Slot::Replicate(j, s),
            )?;
        }
    }
    let subset_run = RunConfig {
        steps: cfg.continued.steps.saturating_mul(cfg.subsets.k as u64),
        ..cfg.continued.clone()
    };
    for (i, s) in subsets.iter().enumerate() {
        let ids: Vec<&str> = s.iter().map(|&u| m.units[u].id.as_str()).collect();
        let mix = Mixture::from_unit_ids(&data.corpus, &ids)?;
        add(
            format!("subset-{i}"),
            Role::Subset,
            SpecRole::Subset,
            ids.join("+"),
            Some(seed),
            mix,
            &subset_run,
            cfg.seed,
            Slot::Subset(s.clone()),
        )?;
    }
    Ok(Graph {
        jobs,
        mixtures,
        subsets,
    })
}
