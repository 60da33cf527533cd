//! The end-to-end study: from a raw multi-domain corpus to a recommended mixture.
//!
//! 1. **Data** ([`data`]): tokenizer (a given `tokenizer.json` or a BPE trained on the
//!    corpus), domains, equal-sized base units, held-out splits, eval streams.
//! 2. **Pool** ([`lab`]): a seed model pre-trained on the uniform mixture; continued from it
//!    with the same budget: one model per base unit (Na et al.), one expert per domain
//!    (Belenki et al.), and one model per ground-truth mixture (drawn from a Dirichlet).
//!    Every model is content-addressed in `out_dir/pool`, so reruns and extensions only
//!    train what is new.
//! 3. **Proxies**: for each ground-truth mixture λ, the MDE loss per eval domain (from the
//!    experts' per-token probabilities, tables saved in `out_dir/tables`) and the loss of
//!    the λ-weighted merge of the base-unit models.
//! 4. **Analysis** ([`analysis`]): how well each proxy ranks the true losses; regression
//!    families cross-validated on λ, λ+MDE, λ+MDE+merged; the fitted model searched over
//!    the simplex (MDE features computed for every candidate); the exact MDE-only optimum;
//!    and optionally one more model trained on the recommendation to check it.
//! 5. **Report** ([`report`]): CSV/JSON results, SVG plots, a markdown summary.

pub mod analysis;
mod checks;
pub mod config;
pub mod data;
pub mod lab;
pub mod report;

use burn::tensor::backend::AutodiffBackend;
use datamix_decoder::BackendTask;
use datamix_mde::{ExpertTable, ExpertTableBuilder};
use datamix_partition::Mixture;
use rand::SeedableRng;
use rand_distr::{Distribution, Gamma};
use serde::Serialize;

pub use analysis::Analysis;
pub use config::StudyConfig;
use data::Prepared;
use lab::{Lab, mean_ce};

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
    /// Base units per domain.
    pub units_per_domain: Vec<usize>,
    /// Training tokens per domain.
    pub domain_tokens: Vec<u64>,
    /// Mean CE of the seed model per eval domain.
    pub seed_loss: Vec<f64>,
    /// Mean CE of each domain expert (rows) per eval domain (columns).
    pub expert_loss: Vec<Vec<f64>>,
    /// The ground-truth mixtures.
    pub mixtures: Vec<Vec<f64>>,
    /// Mean CE of the model trained on each mixture, per eval domain.
    pub true_loss: Vec<Vec<f64>>,
    /// MDE estimate per mixture and eval domain.
    pub mde_loss: Vec<Vec<f64>>,
    /// Loss of the λ-weighted merge of base-unit models per mixture and eval domain.
    pub merged_loss: Vec<Vec<f64>>,
    /// Regression, search and validation.
    pub analysis: Analysis,
}

/// Runs a study (every stage; models already in the pool are reused).
pub fn run(cfg: &StudyConfig) -> Result<StudyOutcome> {
    cfg.validate().map_err(Error::Invalid)?;
    let data = data::prepare(cfg)?;
    let outcome = cfg.backend.run(Task { cfg, data: &data })??;
    report::write(cfg, &outcome)?;
    Ok(outcome)
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

/// Ground-truth mixtures: the uniform one, then `count - 1` Dirichlet(α) draws.
pub fn draw_mixtures(k: usize, count: usize, alpha: f64, seed: u64) -> Vec<Vec<f64>> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x6d69_7874_7572_6573);
    let gamma = Gamma::new(alpha, 1.0).expect("alpha validated > 0");
    let mut out = vec![vec![1.0 / k as f64; k]];
    while out.len() < count {
        let g: Vec<f64> = (0..k).map(|_| gamma.sample(&mut rng)).collect();
        let s: f64 = g.iter().sum();
        if s > 0.0 && s.is_finite() {
            out.push(g.iter().map(|x| x / s).collect());
        }
    }
    out
}

fn run_on<B: AutodiffBackend>(
    cfg: &StudyConfig,
    data: &Prepared,
    device: B::Device,
) -> Result<StudyOutcome> {
    let m = data.corpus.manifest();
    let k = data.domains.len();
    let mixtures = draw_mixtures(k, cfg.mixtures.count, cfg.mixtures.alpha, cfg.seed);
    let n_models = m.units.len() + k + mixtures.len() + usize::from(cfg.search.validate);
    let total = (n_models as u64)
        .saturating_mul(cfg.continued.steps)
        .saturating_add(cfg.seed_model.steps);
    tracing::info!(
        domains = k,
        units = m.units.len(),
        mixtures = mixtures.len(),
        "training the pool: 1 seed + {n_models} continued models"
    );
    let lab = Lab::<B>::new(cfg, data, device, total)?;

    let uniform = Mixture::from_weights(&data.corpus, &vec![1.0; k])?;
    let seed = lab.train("seed", "uniform", None, &uniform, &cfg.seed_model, cfg.seed)?;
    let mut units: Vec<(String, PoolKey)> = Vec::new();
    for u in &m.units {
        let mix = Mixture::from_unit_ids(&data.corpus, &[u.id.as_str()])?;
        let key = lab.train("unit", &u.id, Some(&seed), &mix, &cfg.continued, cfg.seed)?;
        units.push((u.domain.clone(), key));
    }
    let mut experts = Vec::new();
    for (i, d) in data.domains.iter().enumerate() {
        let mut w = vec![0.0; k];
        w[i] = 1.0;
        let mix = Mixture::from_weights(&data.corpus, &w)?;
        experts.push(lab.train("expert", d, Some(&seed), &mix, &cfg.continued, cfg.seed)?);
    }
    let mut mixture_models = Vec::new();
    for (j, lambda) in mixtures.iter().enumerate() {
        let mix = Mixture::from_weights(&data.corpus, lambda)?;
        let name = format!("mix{j:02}");
        mixture_models.push(lab.train(
            "mixture",
            &name,
            Some(&seed),
            &mix,
            &cfg.continued,
            cfg.seed,
        )?);
    }

    tracing::info!("scoring experts, mixture models and merged proxies");
    let tok_hash = m.tokenizer_hash.clone();
    let seed_loss: Vec<f64> = lab.score(&seed)?.iter().map(|l| mean_ce(l)).collect();
    let mut builders: Vec<ExpertTableBuilder> = data
        .eval
        .iter()
        .map(|e| ExpertTableBuilder::new(e.name.clone(), tok_hash.clone()))
        .collect();
    let mut expert_loss = Vec::new();
    for (d, key) in data.domains.iter().zip(&experts) {
        let scores = lab.score(key)?;
        expert_loss.push(scores.iter().map(|l| mean_ce(l)).collect());
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
    let table_refs: Vec<&ExpertTable> = tables.iter().collect();
    let mde = datamix_mde::mde_features(&table_refs, &mixtures)?;
    let mde_loss: Vec<Vec<f64>> = mde.rows().into_iter().map(|r| r.to_vec()).collect();

    let mut true_loss = Vec::new();
    let mut merged_loss = Vec::new();
    for (lambda, key) in mixtures.iter().zip(&mixture_models) {
        true_loss.push(lab.score(key)?.iter().map(|l| mean_ce(l)).collect());
        merged_loss.push(lab.score_merged(lambda, &units)?);
    }

    let mut outcome = StudyOutcome {
        domains: data.domains.clone(),
        eval_domains: data.eval.iter().map(|e| e.name.clone()).collect(),
        eval_in_domain: data.eval.iter().map(|e| e.in_domain).collect(),
        units_per_domain: data
            .domains
            .iter()
            .map(|d| units.iter().filter(|(ud, _)| ud == d).count())
            .collect(),
        domain_tokens: m.domains.iter().map(|d| d.tokens).collect(),
        seed_loss,
        expert_loss,
        mixtures,
        true_loss,
        mde_loss,
        merged_loss,
        analysis: Analysis::default(),
    };
    outcome.analysis = analysis::analyse(cfg, &outcome, &table_refs)?;

    if cfg.search.validate
        && let Some(rec) = outcome.analysis.recommended.clone()
    {
        let mix = Mixture::from_weights(&data.corpus, &rec)?;
        let key = lab.train(
            "mixture",
            "recommended",
            Some(&seed),
            &mix,
            &cfg.continued,
            cfg.seed,
        )?;
        let losses: Vec<f64> = lab.score(&key)?.iter().map(|l| mean_ce(l)).collect();
        outcome.analysis.validated_loss = Some(analysis::objective(&losses));
        outcome.analysis.validated_losses = Some(losses);
    }
    lab.finish();
    Ok(outcome)
}
