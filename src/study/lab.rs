//! Study stage 2, on a Burn backend: train the pool (seed, base-unit models, domain experts,
//! ground-truth mixture models) and score models and merged proxies on the eval streams.

use std::sync::{Arc, Mutex};

use burn::tensor::backend::AutodiffBackend;
use datamix_decoder::{Decoder, DecoderConfig, EvalConfig, Packer, TrainConfig, Trainer, evaluate};
use datamix_merge::{MergePlan, PathsOnly};
use datamix_partition::{Mixture, MixtureSampler, PackedCorpus};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use super::config::{Init, RunConfig, StudyConfig};
use super::data::Prepared;
use crate::error::{Error, Result};
use crate::pool::{Pool, PoolKey};
use crate::proxy::ProxyMerger;

/// What a pool model is for. It is part of every pool key, serialised as the lowercase
/// name (`"seed"`, `"unit"`, …), exactly the strings earlier versions wrote, so existing
/// pools keep their keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The model every other one continues from (trained on the uniform mixture).
    Seed,
    /// A base-unit model (Na et al.): continued on one base unit.
    Unit,
    /// A domain expert (Belenki et al.): continued on one domain.
    Expert,
    /// A model trained on a mixture λ (ground truth, replicates, the recommendation).
    Mixture,
    /// A model continued on a subset of base units (Na et al.'s setting).
    Subset,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 5] = [
        Role::Seed,
        Role::Unit,
        Role::Expert,
        Role::Mixture,
        Role::Subset,
    ];

    /// The name used in pool keys, logs and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Seed => "seed",
            Role::Unit => "unit",
            Role::Expert => "expert",
            Role::Mixture => "mixture",
            Role::Subset => "subset",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything that decides a pool model's weights (its pool key is the hash of this).
#[derive(Debug, Serialize)]
pub struct ModelSpec<'a> {
    /// What the model is for.
    pub role: Role,
    /// Human-readable name (unit id, domain, mixture label).
    pub name: String,
    /// The checkpoint it continues from.
    pub from: Option<&'a PoolKey>,
    /// What it trains on.
    pub data: &'a Mixture,
    /// SHA-256 of the packed corpus' manifest.
    pub corpus: &'a str,
    /// Architecture.
    pub model: &'a DecoderConfig,
    /// Optimisation.
    pub train: TrainConfig,
}

/// A backend, a pool and the prepared data: trains and scores models.
pub struct Lab<'a, B: AutodiffBackend> {
    cfg: &'a StudyConfig,
    data: &'a Prepared,
    pool: Pool,
    model: DecoderConfig,
    device: B::Device,
    streams: Vec<(String, Vec<u32>)>,
    /// Per stream, which log-probabilities count (end-task sets: the answer tokens only).
    masks: Vec<Option<Vec<bool>>>,
    /// The previous proxy's buffers, reused by the next merge.
    proxies: Mutex<ProxyMerger>,
    bar: ProgressBar,
}

impl<'a, B: AutodiffBackend> Lab<'a, B> {
    /// A lab whose progress bar counts `total_steps` optimizer steps.
    pub fn new(
        cfg: &'a StudyConfig,
        data: &'a Prepared,
        device: B::Device,
        total_steps: u64,
    ) -> Result<Self> {
        let vocab = data.corpus.manifest().vocab_size;
        let model = cfg.model.decoder(vocab, cfg.data.seq_len)?;
        let bar = ProgressBar::new(total_steps);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} train [{elapsed_precise}] {wide_bar} {pos}/{len} steps (eta {eta}) {msg}",
            )
            .expect("valid template"),
        );
        Ok(Self {
            cfg,
            data,
            pool: Pool::open(cfg.out_dir.join("pool"))?,
            model,
            device,
            streams: data
                .eval
                .iter()
                .map(|e| (e.name.clone(), e.tokens.clone()))
                .collect(),
            masks: data.eval.iter().map(|e| e.scored.clone()).collect(),
            proxies: Mutex::new(ProxyMerger::new()),
            bar,
        })
    }

    /// The decoder architecture.
    pub fn model_config(&self) -> &DecoderConfig {
        &self.model
    }

    /// The model pool.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    fn corpus(&self) -> &Arc<PackedCorpus> {
        &self.data.corpus
    }

    /// Trains (or finds in the pool) one model; returns its pool key.
    pub fn train(
        &self,
        role: Role,
        name: &str,
        from: Option<&PoolKey>,
        data: &Mixture,
        run: &RunConfig,
        seed: u64,
    ) -> Result<PoolKey> {
        let corpus = (self.corpus(), self.data.corpus_id.as_str());
        self.train_in(corpus, role, name, from, data, run, seed)
    }

    /// Trains (or finds) the seed model: the uniform mixture of the training domains, or of
    /// `data.seed_corpus`'s domains when the study has one, for `seed_model` steps.
    pub fn train_seed(&self) -> Result<PoolKey> {
        let (corpus, id, k) = match &self.data.seed_corpus {
            Some(s) => (&s.corpus, s.corpus_id.as_str(), s.domains.len()),
            None => (
                self.corpus(),
                self.data.corpus_id.as_str(),
                self.data.domains.len(),
            ),
        };
        let uniform = Mixture::from_weights(corpus, &vec![1.0; k])?;
        let (run, seed) = (&self.cfg.seed_model, self.cfg.seed);
        self.train_in(
            (corpus, id),
            Role::Seed,
            "uniform",
            None,
            &uniform,
            run,
            seed,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn train_in(
        &self,
        (corpus, corpus_id): (&Arc<PackedCorpus>, &str),
        role: Role,
        name: &str,
        from: Option<&PoolKey>,
        data: &Mixture,
        run: &RunConfig,
        seed: u64,
    ) -> Result<PoolKey> {
        let seq = self.cfg.data.seq_len;
        let spec = ModelSpec {
            role,
            name: name.to_string(),
            from,
            data,
            corpus: corpus_id,
            model: &self.model,
            train: run.train_config(seq, seed),
        };
        let key = PoolKey::of(&spec);
        if self.pool.contains(&key) {
            tracing::debug!(%role, name, key = key.short(), "in the pool");
            self.bar.inc(run.steps);
            return Ok(key);
        }
        self.bar.set_message(format!("{role} {name}"));
        let mut trainer = match from {
            None => Trainer::<B>::new(self.model.clone(), spec.train.clone(), &self.device)?,
            Some(k) => {
                Trainer::<B>::from_seed(&self.pool.dir(k), spec.train.clone(), &self.device)?
            }
        };
        // One extra sequence: a batch row needs `seq + 1` tokens.
        let budget = run.tokens(seq) + seq as u64;
        let sampler = MixtureSampler::new(corpus.clone(), data, budget, seed)?;
        let mut packer = Packer::new(sampler, run.batch_size, seq);
        let stats = trainer.fit(&mut packer, run.steps, |_| self.bar.inc(1))?;
        if (stats.len() as u64) < run.steps {
            return Err(Error::Invalid(format!(
                "{role} {name}: the sampler ran out of data after {} of {} steps",
                stats.len(),
                run.steps
            )));
        }
        let tail = &stats[stats.len().saturating_sub(10)..];
        let loss = tail.iter().map(|s| s.loss as f64).sum::<f64>() / tail.len() as f64;
        tracing::info!(
            %role,
            name,
            key = key.short(),
            train_loss = format!("{loss:.4}"),
            "trained"
        );
        self.pool
            .insert(&key, &spec, |dir| trainer.save(dir).map_err(Error::from))?;
        Ok(key)
    }

    /// Trains (or finds) a model on mixture λ the way experts and mixture models are
    /// trained: from the seed model or from scratch (`mixtures.init`), for `continued`.
    pub fn train_lambda(
        &self,
        seed: &PoolKey,
        role: Role,
        name: &str,
        lambda: &[f64],
        train_seed: u64,
    ) -> Result<PoolKey> {
        let mix = Mixture::from_weights(&self.data.corpus, lambda)?;
        let from = match self.cfg.mixtures.init {
            Init::Seed => Some(seed),
            Init::Scratch => None,
        };
        self.train(role, name, from, &mix, &self.cfg.continued, train_seed)
    }

    /// Loads a pool model for inference.
    pub fn load(&self, key: &PoolKey) -> Result<Decoder<B::InnerBackend>> {
        Ok(self
            .model
            .load_weights::<B::InnerBackend>(&self.pool.weights(key), &self.device)?)
    }

    fn eval_config(&self) -> EvalConfig {
        EvalConfig {
            window: self.cfg.data.seq_len,
            stride: self.cfg.data.seq_len,
            batch_size: 16,
        }
    }

    /// Keeps the log-probabilities that count for stream `i` (all, or an end-task set's
    /// answer tokens).
    fn masked(&self, i: usize, logprobs: Vec<f32>) -> Vec<f32> {
        match &self.masks[i] {
            None => logprobs,
            Some(m) => logprobs
                .into_iter()
                .zip(m)
                .filter(|(_, keep)| **keep)
                .map(|(l, _)| l)
                .collect(),
        }
    }

    /// Per-token log-probabilities of a pool model on every eval stream (end-task sets:
    /// answer tokens only).
    pub fn score(&self, key: &PoolKey) -> Result<Vec<Vec<f32>>> {
        let model = self.load(key)?;
        let cfg = self.eval_config();
        self.streams
            .iter()
            .enumerate()
            .map(
                |(i, (_, t))| Ok(self.masked(i, evaluate(&model, t, &cfg, &self.device)?.logprobs)),
            )
            .collect()
    }

    /// Mean cross-entropy of a pool model per eval stream.
    pub fn score_mean(&self, key: &PoolKey) -> Result<Vec<f64>> {
        Ok(self.score(key)?.iter().map(|l| mean_ce(l)).collect())
    }

    /// The λ-weighted merge of the base-unit models: each domain's units averaged uniformly,
    /// then the domains weighted by λ (Na et al.'s macro merge with mixture weights).
    pub fn lambda_plan(&self, lambda: &[f64], units: &[(String, PoolKey)]) -> MergePlan {
        MergePlan::Average(
            self.data
                .domains
                .iter()
                .zip(lambda)
                .filter(|(_, w)| **w > 0.0)
                .map(|(d, &w)| {
                    let files = units
                        .iter()
                        .filter(|(ud, _)| ud == d)
                        .map(|(_, k)| self.pool.weights(k));
                    (w, MergePlan::uniform(files))
                })
                .collect(),
        )
    }

    /// A merge of pool models: `(weight, key)` pairs, normalised.
    pub fn weighted_plan(&self, terms: &[(f64, &PoolKey)]) -> MergePlan {
        MergePlan::weighted(terms.iter().map(|(w, k)| (self.pool.weights(k), *w)))
    }

    /// Mean cross-entropy per eval stream of a merge plan's model, built in memory (in the
    /// previous proxy's buffers) and never written.
    pub fn score_plan(&self, plan: &MergePlan) -> Result<Vec<f64>> {
        let mut proxies = self.proxies.lock().unwrap_or_else(|e| e.into_inner());
        let out = proxies.evaluate::<B::InnerBackend>(
            plan,
            &PathsOnly,
            &self.model,
            &self.streams,
            &self.eval_config(),
            &self.device,
        )?;
        Ok(out
            .into_iter()
            .enumerate()
            .map(|(i, (_, r))| mean_ce(&self.masked(i, r.logprobs)))
            .collect())
    }

    /// Mean cross-entropy per eval stream of the λ-weighted merge of the base-unit models
    /// ([`Lab::lambda_plan`]).
    pub fn score_merged(&self, lambda: &[f64], units: &[(String, PoolKey)]) -> Result<Vec<f64>> {
        self.score_plan(&self.lambda_plan(lambda, units))
    }

    /// Marks the progress bar done.
    pub fn finish(&self) {
        self.bar.finish_with_message("done");
    }
}

/// Mean cross-entropy (nats per token) of per-token log-probabilities.
pub fn mean_ce(logprobs: &[f32]) -> f64 {
    -logprobs.iter().map(|&x| x as f64).sum::<f64>() / logprobs.len().max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pool keys of existing pools were made with the role as a plain string: a spec
    /// with the enum must serialise (and so hash) to exactly the same bytes.
    #[test]
    fn role_enum_keeps_pool_keys_byte_identical() {
        #[derive(Serialize)]
        struct WithEnum<'a> {
            role: Role,
            name: &'a str,
            from: Option<&'a str>,
        }
        #[derive(Serialize)]
        struct WithStr<'a> {
            role: &'a str,
            name: &'a str,
            from: Option<&'a str>,
        }
        let old_names = ["seed", "unit", "expert", "mixture", "subset"];
        for (role, old) in Role::ALL.into_iter().zip(old_names) {
            let new = WithEnum {
                role,
                name: "web/0",
                from: Some("abc"),
            };
            let before = WithStr {
                role: old,
                name: "web/0",
                from: Some("abc"),
            };
            assert_eq!(
                serde_json::to_vec_pretty(&new).unwrap(),
                serde_json::to_vec_pretty(&before).unwrap()
            );
            assert_eq!(PoolKey::of(&new), PoolKey::of(&before));
            assert_eq!(role.as_str(), old);
            assert_eq!(role.to_string(), old);
        }
    }
}
