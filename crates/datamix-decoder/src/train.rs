//! Training: packed batches, the learning-rate schedule, and the [`Trainer`]
//! (forward + backward + AdamW, gradient accumulation and clipping,
//! checkpoint/resume, continued pre-training from a seed).

use std::collections::HashMap;
use std::path::Path;

use burn::module::{AutodiffModule, Module};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::checkpoint::{
    HostTensor, TensorMap, read_safetensors, to_host, write_atomic, write_safetensors,
};
use crate::config::DecoderConfig;
use crate::error::{DecoderError, Result, io_err};
use crate::model::Decoder;
use crate::optim::{
    AdamWParams, AdamWState, GradCollector, NamedTensors, PathTracker, Updater, global_norm,
};

/// Optimisation hyper-parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Sequences per micro-batch.
    pub batch_size: usize,
    /// Tokens per sequence (<= the model's `max_seq_len`).
    pub seq_len: usize,
    /// Micro-batches whose gradients are summed into one optimizer step.
    pub grad_accum: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Final learning rate as a fraction of `lr` (end of the cosine).
    pub min_lr_ratio: f64,
    /// Linear warm-up steps.
    pub warmup_steps: u64,
    /// Length of the schedule in optimizer steps.
    pub total_steps: u64,
    /// Clip the global gradient L2 norm to this value (`None`: no clipping).
    pub grad_clip: Option<f64>,
    /// AdamW hyper-parameters.
    pub adamw: AdamWParams,
    /// Seed of the parameter initialisation ([`DecoderConfig::init_seeded`]).
    pub seed: u64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            batch_size: 8,
            seq_len: 256,
            grad_accum: 1,
            lr: 1e-3,
            min_lr_ratio: 0.1,
            warmup_steps: 100,
            total_steps: 1000,
            grad_clip: Some(1.0),
            adamw: AdamWParams::default(),
            seed: 0,
        }
    }
}

impl TrainConfig {
    /// Checks every field against the model config.
    pub fn validate(&self, model: &DecoderConfig) -> Result<()> {
        let bad = |field, reason: String| Err(DecoderError::InvalidConfig { field, reason });
        if self.batch_size == 0 {
            return bad("batch_size", "must be at least 1".into());
        }
        if self.grad_accum == 0 {
            return bad("grad_accum", "must be at least 1".into());
        }
        if self.seq_len == 0 || self.seq_len > model.max_seq_len {
            return bad(
                "seq_len",
                format!(
                    "{} must be in 1..={} (max_seq_len)",
                    self.seq_len, model.max_seq_len
                ),
            );
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad("lr", format!("{} is not a positive number", self.lr));
        }
        if !(0.0..=1.0).contains(&self.min_lr_ratio) {
            return bad(
                "min_lr_ratio",
                format!("{} is not in [0, 1]", self.min_lr_ratio),
            );
        }
        if self.total_steps == 0 {
            return bad("total_steps", "must be at least 1".into());
        }
        if let Some(c) = self.grad_clip
            && !(c.is_finite() && c > 0.0)
        {
            return bad("grad_clip", format!("{c} is not a positive number"));
        }
        let a = &self.adamw;
        if !(0.0..1.0).contains(&a.beta1) || !(0.0..1.0).contains(&a.beta2) {
            return bad("adamw.beta", "betas must be in [0, 1)".into());
        }
        if !(a.eps > 0.0 && a.weight_decay >= 0.0) {
            return bad("adamw", "eps must be > 0 and weight_decay >= 0".into());
        }
        Ok(())
    }

    /// Tokens a whole run draws from its data source: `batch_size × grad_accum × seq_len ×
    /// total_steps`, plus one sequence (a batch row needs `seq_len + 1` tokens). Saturating.
    pub fn tokens_needed(&self) -> u64 {
        let seq = self.seq_len as u64;
        (self.batch_size as u64)
            .saturating_mul(self.grad_accum as u64)
            .saturating_mul(seq)
            .saturating_mul(self.total_steps)
            .saturating_add(seq)
    }

    /// Learning rate at `step` steps into the schedule: linear warm-up to `lr`,
    /// then cosine decay to `lr * min_lr_ratio` at `total_steps`, flat after.
    pub fn lr_at(&self, step: u64) -> f64 {
        let min = self.lr * self.min_lr_ratio;
        if step < self.warmup_steps {
            return self.lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let span = self.total_steps.saturating_sub(self.warmup_steps).max(1);
        let t = ((step - self.warmup_steps) as f64 / span as f64).min(1.0);
        min + 0.5 * (self.lr - min) * (1.0 + (std::f64::consts::PI * t).cos())
    }
}

/// One micro-batch: `batch` rows of `seq` input tokens and the `seq` next tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// Row-major `[batch, seq]` input ids.
    pub inputs: Vec<u32>,
    /// Row-major `[batch, seq]` target ids (inputs shifted by one).
    pub targets: Vec<u32>,
    /// Rows.
    pub batch: usize,
    /// Columns.
    pub seq: usize,
}

impl Batch {
    /// Input and target id tensors, `[batch, seq]` each.
    pub fn tensors<B: Backend>(
        &self,
        device: &B::Device,
    ) -> (Tensor<B, 2, Int>, Tensor<B, 2, Int>) {
        let t = |v: &[u32]| {
            let v: Vec<i64> = v.iter().map(|&x| x as i64).collect();
            Tensor::from_data(TensorData::new(v, [self.batch, self.seq]), device)
        };
        (t(&self.inputs), t(&self.targets))
    }

    fn check_vocab(&self, vocab: usize) -> Result<()> {
        for (position, &token) in self.inputs.iter().chain(&self.targets).enumerate() {
            if token as usize >= vocab {
                return Err(DecoderError::TokenOutOfRange {
                    token,
                    position,
                    vocab_size: vocab,
                });
            }
        }
        Ok(())
    }
}

/// Where a [`Packer`] stands in its source: enough to resume exactly.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataCursor {
    /// Items pulled from the source iterator so far.
    pub items: u64,
    /// Tokens pulled but not yet emitted (at most one sequence's worth).
    pub pending: Vec<u32>,
}

/// Packs any iterator of token sequences (documents, or already fixed-length
/// sequences) into fixed-length batches: the stream is cut into windows of
/// `seq + 1` tokens that overlap by one, so every token is a target once.
pub struct Packer<I> {
    source: I,
    batch: usize,
    seq: usize,
    cursor: DataCursor,
}

impl<I, S> Packer<I>
where
    I: Iterator<Item = S>,
    S: AsRef<[u32]>,
{
    /// A packer at the start of `source`.
    pub fn new(source: I, batch: usize, seq: usize) -> Self {
        Self::resume(source, batch, seq, DataCursor::default())
    }

    /// A packer that continues where `cursor` was taken; `source` must yield
    /// the same items as the original (it is advanced by `cursor.items`).
    pub fn resume(mut source: I, batch: usize, seq: usize, cursor: DataCursor) -> Self {
        for _ in 0..cursor.items {
            if source.next().is_none() {
                break;
            }
        }
        Self {
            source,
            batch,
            seq,
            cursor,
        }
    }

    /// The position to store in a checkpoint.
    pub fn cursor(&self) -> &DataCursor {
        &self.cursor
    }

    /// The next batch, or `None` when the source cannot fill one.
    pub fn next_batch(&mut self) -> Option<Batch> {
        let need = self.batch * self.seq + 1;
        while self.cursor.pending.len() < need {
            let item = self.source.next()?;
            self.cursor.items += 1;
            self.cursor.pending.extend_from_slice(item.as_ref());
        }
        let mut inputs = Vec::with_capacity(self.batch * self.seq);
        let mut targets = Vec::with_capacity(self.batch * self.seq);
        for r in 0..self.batch {
            let w = &self.cursor.pending[r * self.seq..(r + 1) * self.seq + 1];
            inputs.extend_from_slice(&w[..self.seq]);
            targets.extend_from_slice(&w[1..]);
        }
        self.cursor.pending.drain(..self.batch * self.seq);
        Some(Batch {
            inputs,
            targets,
            batch: self.batch,
            seq: self.seq,
        })
    }
}

impl<I, S> Iterator for Packer<I>
where
    I: Iterator<Item = S>,
    S: AsRef<[u32]>,
{
    type Item = Batch;
    fn next(&mut self) -> Option<Batch> {
        self.next_batch()
    }
}

/// What one optimizer step did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepStats {
    /// Optimizer step just completed (1-based).
    pub step: u64,
    /// Mean training loss over the step's micro-batches (nats/token).
    pub loss: f32,
    /// Learning rate used.
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
}

/// Trainer state saved in `trainer.json` next to the weights.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct TrainerState {
    format: String,
    step: u64,
    schedule_start: u64,
    optimizer_step: u64,
    cursor: DataCursor,
    train: TrainConfig,
}

/// Trains a [`Decoder`] and checkpoints it.
///
/// A checkpoint directory holds `config.json`, `model.safetensors`,
/// `optimizer.safetensors` (AdamW moments under `exp_avg.<name>` and
/// `exp_avg_sq.<name>`) and `trainer.json` (step, schedule start, data cursor,
/// train config), written in that order, each atomically.
pub struct Trainer<B: AutodiffBackend> {
    model: Option<Decoder<B>>,
    config: DecoderConfig,
    train: TrainConfig,
    state: AdamWState<B::InnerBackend>,
    step: u64,
    schedule_start: u64,
    cursor: DataCursor,
    device: B::Device,
}

impl<B: AutodiffBackend> Trainer<B> {
    /// A fresh model, initialised from `train.seed`.
    pub fn new(config: DecoderConfig, train: TrainConfig, device: &B::Device) -> Result<Self> {
        train.validate(&config)?;
        let model = config.init_seeded::<B>(train.seed, device)?;
        Ok(Self {
            model: Some(model),
            config,
            train,
            state: AdamWState::default(),
            step: 0,
            schedule_start: 0,
            cursor: DataCursor::default(),
            device: device.clone(),
        })
    }

    /// Resumes a run from a checkpoint directory exactly where it stopped.
    pub fn resume(dir: &Path, device: &B::Device) -> Result<Self> {
        Self::load(dir, None, device)
    }

    /// Continued pre-training from a seed checkpoint: keeps the seed's weights
    /// and optimizer moments (as Na et al. did), starts a new schedule that
    /// re-warms to the peak learning rate of `train`, and a fresh data cursor.
    pub fn from_seed(dir: &Path, train: TrainConfig, device: &B::Device) -> Result<Self> {
        Self::load(dir, Some(train), device)
    }

    fn load(dir: &Path, new_run: Option<TrainConfig>, device: &B::Device) -> Result<Self> {
        let cfg_path = dir.join("config.json");
        let config: DecoderConfig = read_json(&cfg_path)?;
        config.validate()?;
        let st_path = dir.join("trainer.json");
        let saved: TrainerState = read_json(&st_path)?;
        let model = config.load_weights::<B>(&dir.join("model.safetensors"), device)?;
        let opt_path = dir.join("optimizer.safetensors");
        let (moments, _) = read_safetensors(&opt_path)?;
        let shapes = to_host(&model);
        let mut state = AdamWState::<B::InnerBackend> {
            step: saved.optimizer_step,
            ..Default::default()
        };
        for (key, t) in moments {
            let (kind, name) = key.split_once('.').unwrap_or(("", &key));
            let Some(p) = shapes.get(name) else {
                return Err(DecoderError::UnexpectedTensor {
                    path: opt_path,
                    name: key,
                });
            };
            if p.shape != t.shape {
                return Err(DecoderError::TensorMismatch {
                    path: opt_path,
                    name: key.clone(),
                    found: format!("shape {:?}", t.shape),
                    expected: format!("shape {:?}", p.shape),
                });
            }
            let flat = moment_from_host::<B::InnerBackend>(name, t, device);
            match kind {
                "exp_avg" => state.m.insert(name.to_string(), flat),
                "exp_avg_sq" => state.v.insert(name.to_string(), flat),
                _ => {
                    return Err(DecoderError::UnexpectedTensor {
                        path: opt_path,
                        name: key,
                    });
                }
            };
        }
        let (train, schedule_start, cursor) = match new_run {
            None => (saved.train, saved.schedule_start, saved.cursor),
            Some(t) => (t, saved.step, DataCursor::default()),
        };
        train.validate(&config)?;
        Ok(Self {
            model: Some(model),
            config,
            train,
            state,
            step: saved.step,
            schedule_start,
            cursor,
            device: device.clone(),
        })
    }

    /// Writes a checkpoint directory (see the type docs).
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let cfg = serde_json::to_vec_pretty(&self.config).expect("config serialises");
        write_atomic(&dir.join("config.json"), &cfg)?;
        crate::checkpoint::save_weights(
            self.model(),
            &self.config,
            &dir.join("model.safetensors"),
        )?;
        let shapes = to_host(self.model());
        let mut moments = TensorMap::new();
        for (kind, map) in [("exp_avg", &self.state.m), ("exp_avg_sq", &self.state.v)] {
            for (name, t) in map {
                let shape = &shapes[name].shape;
                moments.insert(
                    format!("{kind}.{name}"),
                    moment_to_host(name, t.clone(), shape),
                );
            }
        }
        let meta = HashMap::from([("format".to_string(), "datamix-adamw".to_string())]);
        write_safetensors(&dir.join("optimizer.safetensors"), &moments, meta)?;
        let st = TrainerState {
            format: "datamix-trainer-v1".into(),
            step: self.step,
            schedule_start: self.schedule_start,
            optimizer_step: self.state.step,
            cursor: self.cursor.clone(),
            train: self.train.clone(),
        };
        write_atomic(
            &dir.join("trainer.json"),
            &serde_json::to_vec_pretty(&st).expect("state serialises"),
        )
    }

    /// The model being trained.
    pub fn model(&self) -> &Decoder<B> {
        self.model.as_ref().expect("model is present between steps")
    }

    /// The model without autodiff, for evaluation.
    pub fn inference_model(&self) -> Decoder<B::InnerBackend> {
        self.model().valid()
    }

    /// The model's config.
    pub fn config(&self) -> &DecoderConfig {
        &self.config
    }

    /// The optimisation config.
    pub fn train_config(&self) -> &TrainConfig {
        &self.train
    }

    /// Optimizer steps taken over the model's whole life (seed included).
    pub fn step(&self) -> u64 {
        self.step
    }

    /// The data cursor recorded by the last [`Trainer::fit`] call; hand it to
    /// [`Packer::resume`] after [`Trainer::resume`].
    pub fn cursor(&self) -> &DataCursor {
        &self.cursor
    }

    /// Learning rate of the next step.
    pub fn current_lr(&self) -> f64 {
        self.train.lr_at(self.step - self.schedule_start)
    }

    /// One optimizer step over `micro_batches` (gradient accumulation: their
    /// gradients are averaged, then clipped by global norm).
    pub fn step_on(&mut self, micro_batches: &[Batch]) -> Result<StepStats> {
        if micro_batches.is_empty() {
            return Err(DecoderError::InvalidInput(
                "no micro-batches for a step".into(),
            ));
        }
        let mut grads: NamedTensors<B::InnerBackend> = NamedTensors::new();
        let mut loss_sum = 0.0f64;
        let model = self.model.take().expect("model is present between steps");
        for b in micro_batches {
            if let Err(e) = b.check_vocab(self.config.vocab_size) {
                self.model = Some(model);
                return Err(e);
            }
            let (x, y) = b.tensors::<B>(&self.device);
            let loss = model.loss(x, y);
            let g = loss.backward();
            loss_sum += loss.into_scalar().elem::<f64>();
            model.visit(&mut GradCollector::<B> {
                path: PathTracker::default(),
                grads: &g,
                out: &mut grads,
            });
        }
        let n = micro_batches.len() as f64;
        let loss = (loss_sum / n) as f32;
        if !loss.is_finite() {
            self.model = Some(model);
            return Err(DecoderError::Diverged {
                step: self.step + 1,
                loss,
            });
        }
        let grad_norm = global_norm(&grads) / n;
        let clip = match self.train.grad_clip {
            Some(max) if grad_norm > max => max / (grad_norm + 1e-6),
            _ => 1.0,
        };
        let lr = self.current_lr();
        let model = model.map(&mut Updater::<B> {
            path: PathTracker::default(),
            grads: &grads,
            state: &mut self.state,
            params: self.train.adamw,
            lr,
            grad_scale: clip / n,
        });
        self.state.step += 1;
        self.step += 1;
        self.model = Some(model);
        Ok(StepStats {
            step: self.step,
            loss,
            lr,
            grad_norm,
        })
    }

    /// Trains for up to `steps` optimizer steps on batches from `packer`
    /// (each step takes `grad_accum` micro-batches), calling `on_step` after
    /// each. Stops early when the data runs out. Records the packer's cursor.
    pub fn fit<I, S>(
        &mut self,
        packer: &mut Packer<I>,
        steps: u64,
        mut on_step: impl FnMut(&StepStats),
    ) -> Result<Vec<StepStats>>
    where
        I: Iterator<Item = S>,
        S: AsRef<[u32]>,
    {
        let mut out = Vec::new();
        for _ in 0..steps {
            let micro: Vec<Batch> = (0..self.train.grad_accum)
                .map_while(|_| packer.next_batch())
                .collect();
            if micro.len() < self.train.grad_accum {
                break;
            }
            let stats = self.step_on(&micro)?;
            self.cursor = packer.cursor().clone();
            on_step(&stats);
            out.push(stats);
        }
        self.cursor = packer.cursor().clone();
        Ok(out)
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = std::fs::read(path).map_err(io_err(path))?;
    serde_json::from_slice(&bytes).map_err(|source| DecoderError::Json {
        path: path.to_path_buf(),
        source,
    })
}

/// Moments are kept flat in Burn layout; files hold them in checkpoint layout.
fn moment_to_host<B: Backend>(name: &str, t: Tensor<B, 1>, shape: &[usize]) -> HostTensor {
    if crate::checkpoint::is_linear(name) && shape.len() == 2 {
        let t = t.reshape([shape[1], shape[0]]).transpose();
        crate::checkpoint::host(t)
    } else {
        HostTensor {
            shape: shape.to_vec(),
            data: crate::checkpoint::host(t).data,
        }
    }
}

fn moment_from_host<B: Backend>(name: &str, t: HostTensor, device: &B::Device) -> Tensor<B, 1> {
    let n = t.data.len();
    if crate::checkpoint::is_linear(name) && t.shape.len() == 2 {
        let m = Tensor::<B, 2>::from_data(TensorData::new(t.data, t.shape), device);
        m.transpose().reshape([n])
    } else {
        Tensor::from_data(TensorData::new(t.data, [n]), device)
    }
}
