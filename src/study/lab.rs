//! Study stage 2, on a Burn backend: train the pool (seed, base-unit models, domain experts,
//! ground-truth mixture models) and score models and merged proxies on the eval streams.

use std::sync::{Arc, Mutex};

use burn::tensor::backend::AutodiffBackend;
use datamix_decoder::{Decoder, DecoderConfig, EvalConfig, Packer, TrainConfig, Trainer, evaluate};
use datamix_merge::{MergePlan, PathsOnly};
use datamix_partition::{Mixture, MixtureSampler, PackedCorpus, StreamContent};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use super::config::{Init, RunConfig, StudyConfig};
use super::data::Prepared;
use crate::error::{Error, Result};
use crate::pool::{Pool, PoolKey, TrainingRecord};
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

/// The format of [`ModelSpec`], recorded in every entry's `spec.json` (and so part of every
/// key). Version 2 names data by content ([`DataKey`]); version 1 (no `format` field) named
/// the whole corpus' manifest.
pub const SPEC_FORMAT: &str = "datamix-model-spec-v2";

/// Opens the study's pool and checks that an earlier version did not write it
/// ([`Pool::check_format`]).
pub fn open_pool(cfg: &StudyConfig) -> Result<Pool> {
    let pool = Pool::open(cfg.out_dir.join("pool"))?;
    pool.check_format(SPEC_FORMAT)?;
    Ok(pool)
}

/// Checks the study's pool before any work, without creating it: when `out_dir/pool`
/// exists it must be a writable directory of this version's format ([`open_pool`]).
pub fn check_pool(cfg: &StudyConfig) -> Result<()> {
    if std::fs::symlink_metadata(cfg.out_dir.join("pool")).is_err() {
        return Ok(());
    }
    open_pool(cfg).map(|_| ())
}

/// Everything that decides a pool model's weights (its pool key is the hash of this).
#[derive(Debug, Serialize)]
pub struct ModelSpec<'a> {
    /// [`SPEC_FORMAT`].
    pub format: &'static str,
    /// What the model is for.
    pub role: Role,
    /// Human-readable name (unit id, domain, mixture label).
    pub name: String,
    /// The checkpoint it continues from.
    pub from: Option<&'a PoolKey>,
    /// What it trains on, by content.
    pub data: DataKey,
    /// Architecture.
    pub model: &'a DecoderConfig,
    /// Optimisation (its seed also seeds the data order).
    pub train: TrainConfig,
}

/// The data a model trains on, by content: the tokenizer, the sequence length and the
/// sampler's streams (name, weight, sequences drawn, hash of the sequences drawn from).
/// Nothing in it names the corpus as a whole, so adding a domain (or base units of a new
/// domain) to a study keeps the keys of every model that does not sample it: with a fixed
/// tokenizer (`data.tokenizer`) and a seed that does not train on it (`data.seed_corpus`),
/// a finished study extended by one domain trains only the models that depend on it.
#[derive(Debug, Serialize)]
pub struct DataKey {
    /// SHA-256 of the tokenizer JSON.
    pub tokenizer: String,
    /// Tokens per sequence.
    pub seq_len: usize,
    /// The sampler's streams, in the order it serves them.
    pub streams: Vec<StreamContent>,
}

impl<'a> ModelSpec<'a> {
    /// The description of one training run (the one place specs are built: the job graph
    /// and the lab must agree on every key).
    pub fn new(
        role: Role,
        name: &str,
        from: Option<&'a PoolKey>,
        data: &Mixture,
        corpus: &Arc<PackedCorpus>,
        model: &'a DecoderConfig,
        train: TrainConfig,
    ) -> Result<Self> {
        let sampler = MixtureSampler::new(corpus.clone(), data, train.tokens_needed(), train.seed)?;
        let m = corpus.manifest();
        Ok(Self {
            format: SPEC_FORMAT,
            role,
            name: name.to_string(),
            from,
            data: DataKey {
                tokenizer: m.tokenizer_hash.clone(),
                seq_len: m.seq_len,
                streams: sampler.content_key(),
            },
            model,
            train,
        })
    }
}

/// The resumable checkpoint of one training in the pool's scratch area: `ckpt/` (what
/// [`Trainer::save`] writes plus `job.json`, the step the training started at), replaced
/// atomically every `checkpoint_every` steps (written to `ckpt.tmp-<host>-<pid>/`, then
/// `ckpt` → `ckpt.old`, `ckpt.tmp…` → `ckpt`, `ckpt.old` removed: a crash at any point leaves
/// `ckpt` or `ckpt.old` complete). Only the holder of the entry's lock touches it.
struct Scratch {
    dir: std::path::PathBuf,
}

#[derive(Serialize, serde::Deserialize)]
struct ScratchJob {
    first_step: u64,
}

impl Scratch {
    fn new(dir: std::path::PathBuf) -> Self {
        Self { dir }
    }

    /// The last complete checkpoint and the step its training started at, if any.
    fn resume<B: AutodiffBackend>(&self, device: &B::Device) -> Result<Option<(Trainer<B>, u64)>> {
        for name in ["ckpt", "ckpt.old"] {
            let d = self.dir.join(name);
            let Ok(bytes) = std::fs::read(d.join("job.json")) else {
                continue;
            };
            let Ok(job) = serde_json::from_slice::<ScratchJob>(&bytes) else {
                continue;
            };
            match Trainer::<B>::resume(&d, device) {
                Ok(t) if t.step() >= job.first_step => return Ok(Some((t, job.first_step))),
                Ok(_) => {}
                Err(e) => tracing::warn!(
                    checkpoint = %d.display(),
                    "unreadable checkpoint ({e}): not resumed from"
                ),
            }
        }
        Ok(None)
    }

    fn save<B: AutodiffBackend>(&self, trainer: &Trainer<B>, first_step: u64) -> Result<()> {
        std::fs::create_dir_all(&self.dir).map_err(|e| Error::io(&self.dir, e))?;
        let tmp = self.dir.join(datamix_io::temp_prefix("ckpt.tmp-"));
        let _ = std::fs::remove_dir_all(&tmp);
        trainer.save(&tmp)?;
        let job = serde_json::to_vec(&ScratchJob { first_step }).expect("serialises");
        datamix_io::write_file(&tmp.join("job.json"), &job)?;
        let (cur, old) = (self.dir.join("ckpt"), self.dir.join("ckpt.old"));
        let _ = std::fs::remove_dir_all(&old);
        if cur.exists() {
            std::fs::rename(&cur, &old).map_err(|e| Error::io(&cur, e))?;
        }
        std::fs::rename(&tmp, &cur).map_err(|e| Error::io(&tmp, e))?;
        let _ = std::fs::remove_dir_all(&old);
        Ok(())
    }

    /// Removes the scratch directory (the entry is in the pool).
    fn remove(&self) {
        if let Err(e) = std::fs::remove_dir_all(&self.dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %self.dir.display(), "cannot remove the scratch checkpoint: {e}");
        }
    }
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
            pool: open_pool(cfg)?,
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

    /// Trains (or finds in the pool) one model; returns its pool key. While another
    /// process trains the same model (it holds the entry's lock), waits for it and reuses
    /// its entry.
    pub fn train(
        &self,
        role: Role,
        name: &str,
        from: Option<&PoolKey>,
        data: &Mixture,
        run: &RunConfig,
        seed: u64,
    ) -> Result<PoolKey> {
        let key = self.train_if_free(role, name, from, data, run, seed, true)?;
        Ok(key.expect("a waiting training always ends with the entry"))
    }

    /// [`Lab::train`]; with `wait = false`, returns `None` at once (training nothing) when
    /// another process holds the entry's lock.
    #[allow(clippy::too_many_arguments)]
    pub fn train_if_free(
        &self,
        role: Role,
        name: &str,
        from: Option<&PoolKey>,
        data: &Mixture,
        run: &RunConfig,
        seed: u64,
        wait: bool,
    ) -> Result<Option<PoolKey>> {
        let seq = self.cfg.data.seq_len;
        let (corpus, _) = self.data.corpus_for(role == Role::Seed);
        let spec = ModelSpec::new(
            role,
            name,
            from,
            data,
            corpus,
            &self.model,
            run.train_config(seq, seed),
        )?;
        let key = PoolKey::of(&spec);
        if self.pool.contains(&key) {
            tracing::debug!(%role, name, key = key.short(), "in the pool");
            self.bar.inc(run.steps);
            return Ok(Some(key));
        }
        let _lock = if wait {
            self.pool.lock(&key)?
        } else {
            match self.pool.try_lock(&key)? {
                Some(l) => l,
                None => return Ok(None),
            }
        };
        // Another process may have finished it while this one waited for the lock.
        if self.pool.contains(&key) {
            tracing::debug!(
                %role,
                name,
                key = key.short(),
                "trained meanwhile by another process"
            );
            self.bar.inc(run.steps);
            return Ok(Some(key));
        }
        let started = std::time::Instant::now();
        self.bar.set_message(format!("{role} {name}"));
        let scratch = Scratch::new(self.pool.scratch_dir(&key));
        let (mut trainer, first_step) = match scratch.resume::<B>(&self.device)? {
            Some((t, first)) => {
                tracing::info!(
                    %role,
                    name,
                    key = key.short(),
                    done = t.step() - first,
                    of = run.steps,
                    "resuming from a checkpoint"
                );
                (t, first)
            }
            None => {
                let t = match from {
                    None => {
                        Trainer::<B>::new(self.model.clone(), spec.train.clone(), &self.device)?
                    }
                    Some(k) => Trainer::<B>::from_seed(
                        &self.pool.dir(k),
                        spec.train.clone(),
                        &self.device,
                    )?,
                };
                let first = t.step();
                (t, first)
            }
        };
        let mut done = trainer.step() - first_step;
        self.bar.inc(done);
        let sampler = MixtureSampler::new(corpus.clone(), data, spec.train.tokens_needed(), seed)?;
        let mut packer = Packer::resume(sampler, run.batch_size, seq, trainer.cursor().clone());
        let chunk = match run.checkpoint_every {
            0 => run.steps,
            n => n,
        };
        let mut tail = Vec::new();
        while done < run.steps {
            let n = chunk.min(run.steps - done);
            let stats = trainer.fit(&mut packer, n, |_| self.bar.inc(1))?;
            done += stats.len() as u64;
            tail.extend(stats.iter().map(|s| s.loss as f64));
            if (stats.len() as u64) < n {
                return Err(Error::Invalid(format!(
                    "{role} {name}: the sampler ran out of data after {done} of {} steps",
                    run.steps
                )));
            }
            if done < run.steps {
                scratch.save(&trainer, first_step)?;
            }
        }
        let tail = &tail[tail.len().saturating_sub(10)..];
        let loss = tail.iter().sum::<f64>() / tail.len().max(1) as f64;
        tracing::info!(
            %role,
            name,
            key = key.short(),
            train_loss = format!("{loss:.4}"),
            "trained"
        );
        self.pool
            .insert(&key, &spec, |dir| trainer.save(dir).map_err(Error::from))?;
        scratch.remove();
        self.pool.record_training(TrainingRecord {
            key: key.as_str().to_string(),
            role: role.to_string(),
            name: name.to_string(),
            tokens: run.tokens(seq),
            host: String::new(),
            pid: 0,
            seconds: started.elapsed().as_secs_f64(),
        })?;
        Ok(Some(key))
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
        super::data::scored(logprobs, self.masks[i].as_deref())
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
