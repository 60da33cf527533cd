//! One model outside a study: [`train`] it on a corpus, or on a mixture of the corpus'
//! domains (`datamix train`), and [`eval`] models on eval sets, keeping their per-token
//! log-probabilities as MDE tables (`datamix eval`, the input of `datamix mde`).
//!
//! Owns the run folder a training writes: a trainer checkpoint (`config.json`,
//! `model.safetensors`, `optimizer.safetensors`, `trainer.json`: the layout of a pool entry,
//! so a continued training starts from either), `tokenizer.json`, the packed corpus it
//! trained on (`corpus/`, unless a packed one was given), `train.csv` and, written last,
//! `run.json`. Knows nothing of studies or pools: a study trains the same models under
//! content-addressed keys ([`crate::study`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::tensor::backend::AutodiffBackend;
use datamix_decoder::{
    BackendKind, BackendTask, Decoder, DecoderConfig, EvalConfig, Packer, TrainConfig, Trainer,
    evaluate,
};
use datamix_mde::{ExpertTable, ExpertTableBuilder};
use datamix_partition::{
    CorpusSource, DEFAULT_EOT, Mixture, MixtureSampler, PackedCorpus, PartitionConfig, Partitioner,
    ReaderOptions, TextTokenizer, train_tokenizer,
};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::study::data::{heldout_tokens, scored, stem, tokenize_capped};

/// `run.json`'s format tag.
pub const RUN_FORMAT: &str = "datamix-run-v1";
/// The file that marks a finished run (written last).
pub const RUN_FILE: &str = "run.json";

/// Where a training's data comes from.
#[derive(Debug, Clone)]
pub enum TrainData {
    /// Raw text: a file or a folder (one domain per file, as a study's `data.corpus`),
    /// packed into `<out>/corpus` with a byte-level BPE tokenizer trained on it, or the
    /// given one.
    Text {
        /// The corpus file or folder.
        corpus: PathBuf,
        /// A tokenizer (`tokenizer.json`) to use instead of training one.
        tokenizer: Option<PathBuf>,
        /// Vocabulary of the trained tokenizer.
        vocab_size: usize,
        /// Tokens per training sequence.
        seq_len: usize,
        /// Share of each domain's documents held out for evaluation.
        heldout_fraction: f64,
    },
    /// A corpus packed before: a study's `out_dir/corpus` or another run's `corpus/`.
    Packed(PathBuf),
}

/// One training run (`datamix train`).
#[derive(Debug, Clone)]
pub struct TrainSpec {
    /// The data.
    pub data: TrainData,
    /// Domain weights by name, normalised (`None`: uniform over the corpus' domains).
    pub mixture: Option<Vec<(String, f64)>>,
    /// Decoder preset (`tiny`, `small`, …); not used when continuing from `init`.
    pub preset: String,
    /// Continue from a trainer checkpoint (another run's folder or a pool entry): its
    /// weights and optimizer moments, with a new schedule re-warmed to `lr`.
    pub init: Option<PathBuf>,
    /// Optimizer steps.
    pub steps: u64,
    /// Sequences per step.
    pub batch_size: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Linear warm-up steps.
    pub warmup_steps: u64,
    /// Seed of the initialisation and of the data order.
    pub seed: u64,
    /// Tokens scored per domain on the held-out split after training.
    pub eval_tokens: usize,
    /// Backend to train on.
    pub backend: BackendKind,
    /// The run folder.
    pub out: PathBuf,
}

/// Cross-entropy of one model on one eval stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalRow {
    /// Model name.
    pub model: String,
    /// Eval domain.
    pub eval_domain: String,
    /// Tokens scored.
    pub tokens: usize,
    /// Mean cross-entropy, nats per token.
    pub ce: f64,
    /// `exp(ce)`.
    pub perplexity: f64,
}

/// What a finished run records (`run.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    /// [`RUN_FORMAT`].
    pub format: String,
    /// The packed corpus trained on.
    pub corpus: PathBuf,
    /// SHA-256 of the tokenizer JSON (the packed corpus' manifest records the same).
    pub tokenizer_hash: String,
    /// `(domain, weight)` of the mixture trained on, normalised, manifest order.
    pub mixture: Vec<(String, f64)>,
    /// The checkpoint continued from.
    pub init: Option<PathBuf>,
    /// The optimisation settings.
    pub train: TrainConfig,
    /// Tokens trained on.
    pub tokens: u64,
    /// Mean training loss of the last 10 steps.
    pub final_loss: f64,
    /// Cross-entropy on each domain's held-out split (model `"."`).
    pub heldout: Vec<EvalRow>,
    /// Wall-clock seconds of the training.
    pub seconds: f64,
}

/// Trains one model (see the module docs for the folder it writes). A folder that already
/// holds a finished run is refused, so nothing is overwritten.
pub fn train(spec: &TrainSpec) -> Result<RunRecord> {
    check_train(spec)?;
    let out = &spec.out;
    let run_file = out.join(RUN_FILE);
    if run_file.exists() {
        return Err(Error::Invalid(format!(
            "--out {}: holds a finished run ({RUN_FILE}); choose another folder or delete it",
            out.display()
        )));
    }
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let corpus_dir = match &spec.data {
        TrainData::Packed(dir) => dir.clone(),
        TrainData::Text { .. } => pack_text(spec)?,
    };
    let corpus = Arc::new(PackedCorpus::open(&corpus_dir)?);
    let manifest = corpus.manifest();
    let tok = corpus.tokenizer()?;
    let weights = mixture_weights(&corpus, spec.mixture.as_deref())?;
    if let Some(init) = &spec.init {
        check_init(init, tok.hash())?;
    }
    let seq = corpus.seq_len();
    let train = TrainConfig {
        batch_size: spec.batch_size,
        seq_len: seq,
        lr: spec.lr,
        warmup_steps: spec.warmup_steps,
        total_steps: spec.steps,
        seed: spec.seed,
        ..TrainConfig::default()
    };
    let mixture = Mixture::from_weights(&corpus, &weights)?;
    let started = std::time::Instant::now();
    let task = TrainTask {
        spec,
        corpus: &corpus,
        mixture: &mixture,
        train: train.clone(),
    };
    let (losses, heldout) = spec.backend.run(task)??;
    let seconds = started.elapsed().as_secs_f64();
    tok.save(&out.join("tokenizer.json"))?;
    let mut csv = String::from("step,loss,lr,grad_norm\n");
    for (s, loss, lr, norm) in &losses {
        csv.push_str(&format!("{s},{loss},{lr},{norm}\n"));
    }
    datamix_io::write_file(&out.join("train.csv"), csv.as_bytes())?;
    let tail = &losses[losses.len().saturating_sub(10)..];
    let record = RunRecord {
        format: RUN_FORMAT.into(),
        corpus: corpus_dir,
        tokenizer_hash: tok.hash().to_string(),
        mixture: manifest
            .domains
            .iter()
            .zip(&weights)
            .map(|(d, &w)| (d.name.clone(), w))
            .collect(),
        init: spec.init.clone(),
        tokens: spec.steps * (spec.batch_size * seq) as u64,
        final_loss: tail.iter().map(|t| t.1).sum::<f64>() / tail.len().max(1) as f64,
        train,
        heldout,
        seconds,
    };
    let json = serde_json::to_vec_pretty(&record).expect("plain data serialises");
    datamix_io::write_file(&run_file, &json)?;
    Ok(record)
}

fn check_train(spec: &TrainSpec) -> Result<()> {
    let bad = |m: String| Err(Error::Invalid(m));
    if spec.steps == 0 {
        return bad("--steps must be at least 1".into());
    }
    if spec.batch_size == 0 {
        return bad("--batch-size must be at least 1".into());
    }
    if !(spec.lr.is_finite() && spec.lr > 0.0) {
        return bad(format!("--lr {}: expected a positive number", spec.lr));
    }
    if spec.warmup_steps > spec.steps {
        return bad(format!(
            "--warmup {} exceeds --steps {}",
            spec.warmup_steps, spec.steps
        ));
    }
    if let TrainData::Text {
        vocab_size,
        seq_len,
        heldout_fraction,
        ..
    } = &spec.data
    {
        if *seq_len < 2 {
            return bad(format!("--seq-len {seq_len}: expected at least 2"));
        }
        if *vocab_size < 260 {
            return bad(format!(
                "--vocab-size {vocab_size}: a byte-level BPE needs at least 260"
            ));
        }
        if !(0.0..1.0).contains(heldout_fraction) {
            return bad(format!(
                "--heldout-fraction {heldout_fraction}: expected a number in [0, 1)"
            ));
        }
    }
    Ok(())
}

/// Packs raw text into `<out>/corpus` (rebuilt every time: the folder is the run's own).
fn pack_text(spec: &TrainSpec) -> Result<PathBuf> {
    let TrainData::Text {
        corpus,
        tokenizer,
        vocab_size,
        seq_len,
        heldout_fraction,
    } = &spec.data
    else {
        unreachable!("called for text data only")
    };
    let sources = CorpusSource::discover(corpus)?;
    if sources.is_empty() {
        return Err(Error::Invalid(format!(
            "--corpus {}: no readable corpus files found",
            corpus.display()
        )));
    }
    let reader = ReaderOptions::default();
    let tok = match tokenizer {
        Some(p) => TextTokenizer::from_file(p, DEFAULT_EOT)?,
        None => train_tokenizer(&sources, &reader, *vocab_size, DEFAULT_EOT, u64::MAX)?,
    };
    let dir = spec.out.join("corpus");
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    }
    let pcfg = PartitionConfig {
        seq_len: *seq_len,
        heldout_fraction: *heldout_fraction,
        heldout_seed: spec.seed,
        reader,
        ..PartitionConfig::default()
    };
    Partitioner::new(pcfg, tok)?
        .with_cache_dir(spec.out.join("cache"))
        .run(&sources, &dir)?;
    Ok(dir)
}

/// The mixture's weights in manifest order, normalised; names are checked against the
/// corpus' domains.
fn mixture_weights(corpus: &PackedCorpus, mixture: Option<&[(String, f64)]>) -> Result<Vec<f64>> {
    let names: Vec<&str> = corpus
        .manifest()
        .domains
        .iter()
        .map(|d| d.name.as_str())
        .collect();
    let Some(mixture) = mixture else {
        return Ok(vec![1.0 / names.len() as f64; names.len()]);
    };
    let mut w = vec![0.0; names.len()];
    for (name, weight) in mixture {
        let Some(i) = names.iter().position(|n| n == name) else {
            return Err(Error::Invalid(format!(
                "--mixture: no domain `{name}` in the corpus; its domains are: {}",
                names.join(", ")
            )));
        };
        if !(weight.is_finite() && *weight >= 0.0) {
            return Err(Error::Invalid(format!(
                "--mixture {name}={weight}: expected a non-negative number"
            )));
        }
        if w[i] != 0.0 {
            return Err(Error::Invalid(format!(
                "--mixture: domain `{name}` given twice"
            )));
        }
        w[i] = *weight;
    }
    let sum: f64 = w.iter().sum();
    if sum <= 0.0 {
        return Err(Error::Invalid(
            "--mixture: the weights sum to 0; give at least one domain a positive weight".into(),
        ));
    }
    Ok(w.into_iter().map(|x| x / sum).collect())
}

/// A continued training must use the tokenizer its checkpoint was trained with (when the
/// checkpoint says which: a run folder does, a pool entry does not).
fn check_init(init: &Path, tokenizer_hash: &str) -> Result<()> {
    if !init.join("trainer.json").is_file() {
        return Err(Error::Invalid(format!(
            "--init {}: not a trainer checkpoint (no trainer.json): give a run folder of \
             `datamix train` or a pool entry",
            init.display()
        )));
    }
    let Ok(tok) = TextTokenizer::from_file(&init.join("tokenizer.json"), DEFAULT_EOT) else {
        return Ok(());
    };
    if tok.hash() != tokenizer_hash {
        return Err(Error::Invalid(format!(
            "--init {}: trained with another tokenizer (hash {}) than the corpus' ({}): \
             token ids would mean other things",
            init.display(),
            short(tok.hash()),
            short(tokenizer_hash)
        )));
    }
    Ok(())
}

fn short(hash: &str) -> &str {
    &hash[..hash.len().min(12)]
}

fn bar(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{{spinner}} {what} [{{elapsed_precise}}] {{wide_bar}} {{pos}}/{{len}} (eta {{eta}}) {{msg}}"
        ))
        .expect("valid template"),
    );
    bar
}

/// `(step, loss, lr, grad_norm)` per step.
type Losses = Vec<(u64, f64, f64, f64)>;

struct TrainTask<'a> {
    spec: &'a TrainSpec,
    corpus: &'a Arc<PackedCorpus>,
    mixture: &'a Mixture,
    train: TrainConfig,
}

impl BackendTask for TrainTask<'_> {
    type Output = Result<(Losses, Vec<EvalRow>)>;
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output {
        let spec = self.spec;
        let seq = self.train.seq_len;
        let vocab = self.corpus.manifest().vocab_size;
        let mut trainer = match &spec.init {
            None => {
                let mut model = DecoderConfig::preset(&spec.preset, vocab)?;
                model.max_seq_len = model.max_seq_len.max(seq);
                Trainer::<B>::new(model, self.train.clone(), &device)?
            }
            Some(dir) => Trainer::<B>::from_seed(dir, self.train.clone(), &device)?,
        };
        if trainer.config().vocab_size != vocab {
            return Err(Error::Invalid(format!(
                "--init: the checkpoint's vocabulary has {} ids, the corpus' tokenizer {vocab}",
                trainer.config().vocab_size
            )));
        }
        let budget = self.train.tokens_needed();
        let sampler = MixtureSampler::new(self.corpus.clone(), self.mixture, budget, spec.seed)?;
        let mut packer = Packer::new(sampler, spec.batch_size, seq);
        let progress = bar(spec.steps, "train");
        let stats = trainer.fit(&mut packer, spec.steps, |s| {
            progress.inc(1);
            progress.set_message(format!("loss {:.3}", s.loss));
        })?;
        progress.finish();
        if (stats.len() as u64) < spec.steps {
            return Err(Error::Invalid(format!(
                "the sampler ran out of data after {} of {} steps",
                stats.len(),
                spec.steps
            )));
        }
        trainer.save(&spec.out)?;
        let model = trainer.inference_model();
        let mut heldout = Vec::new();
        for d in &self.corpus.manifest().domains {
            let tokens = heldout_tokens(self.corpus, &d.name, spec.eval_tokens);
            if tokens.len() < 2 {
                continue;
            }
            let r = evaluate(&model, &tokens, &EvalConfig::new(seq), &device)?;
            heldout.push(EvalRow {
                model: ".".into(),
                eval_domain: d.name.clone(),
                tokens: r.logprobs.len(),
                ce: r.mean_ce,
                perplexity: r.perplexity,
            });
        }
        let losses = stats
            .iter()
            .map(|s| (s.step, s.loss as f64, s.lr, s.grad_norm))
            .collect();
        Ok((losses, heldout))
    }
}

/// Models scored on eval sets (`datamix eval`).
#[derive(Debug, Clone)]
pub struct EvalSpec {
    /// `(name, folder)`: a run folder of [`train`] or a pool entry (`config.json` +
    /// `model.safetensors`). The names become the experts of the MDE tables.
    pub models: Vec<(String, PathBuf)>,
    /// The tokenizer, for folders without `tokenizer.json` (pool entries).
    pub tokenizer: Option<PathBuf>,
    /// Eval files or folders: one eval domain per file (named after it).
    pub eval_sets: Vec<PathBuf>,
    /// End-task files (JSONL of context + answer or choices, as a study's
    /// `data.task_sets`): scored on the answer tokens only, named `task_<file>`.
    pub task_sets: Vec<PathBuf>,
    /// A packed corpus whose held-out split of every domain is an eval domain.
    pub heldout: Option<PathBuf>,
    /// Tokens scored per eval domain at most.
    pub eval_tokens: usize,
    /// Tokens of context per scored window (`None`: the sequence length the models trained
    /// on, the shortest if they differ).
    pub window: Option<usize>,
    /// Backend to evaluate on.
    pub backend: BackendKind,
}

/// What [`eval`] measured.
#[derive(Debug)]
pub struct EvalOutcome {
    /// One row per model and eval domain (models outer).
    pub rows: Vec<EvalRow>,
    /// One MDE table per eval domain, the models as experts (in the order given).
    pub tables: Vec<ExpertTable>,
}

/// One eval domain's tokens, and which targets count.
struct Stream {
    name: String,
    tokens: Vec<u32>,
    scored: Option<Vec<bool>>,
}

/// Scores every model on every eval domain. Models must share one tokenizer.
pub fn eval(spec: &EvalSpec) -> Result<EvalOutcome> {
    if spec.models.is_empty() {
        return Err(Error::Invalid("--model: give at least one model".into()));
    }
    if spec.eval_sets.is_empty() && spec.task_sets.is_empty() && spec.heldout.is_none() {
        return Err(Error::Invalid(
            "no eval domain: give --eval, --tasks or --heldout".into(),
        ));
    }
    let mut models = Vec::new();
    let mut tok: Option<(TextTokenizer, String)> = None;
    for (i, (name, dir)) in spec.models.iter().enumerate() {
        if spec.models[..i].iter().any(|(n, _)| n == name) {
            return Err(Error::Invalid(format!(
                "--model: the name `{name}` is given twice (name them NAME=FOLDER)"
            )));
        }
        let cfg_path = dir.join("config.json");
        let text = std::fs::read_to_string(&cfg_path).map_err(|e| Error::io(&cfg_path, e))?;
        let config: DecoderConfig = serde_json::from_str(&text)
            .map_err(|e| Error::Invalid(format!("{}: {e}", cfg_path.display())))?;
        let weights = dir.join("model.safetensors");
        if !weights.is_file() {
            return Err(Error::Invalid(format!(
                "--model {name}: {} is missing",
                weights.display()
            )));
        }
        let tok_path = match &spec.tokenizer {
            Some(p) => p.clone(),
            None => dir.join("tokenizer.json"),
        };
        if !tok_path.is_file() {
            return Err(Error::Invalid(format!(
                "--model {name}: {} has no tokenizer.json; pass --tokenizer",
                dir.display()
            )));
        }
        let t = TextTokenizer::from_file(&tok_path, DEFAULT_EOT)?;
        match &tok {
            None => tok = Some((t, name.clone())),
            Some((first, first_name)) if first.hash() != t.hash() => {
                return Err(Error::Invalid(format!(
                    "--model {name} uses another tokenizer (hash {}) than --model \
                     {first_name} ({}): their log-probabilities are not comparable",
                    short(t.hash()),
                    short(first.hash())
                )));
            }
            Some(_) => {}
        }
        if config.vocab_size < tok.as_ref().expect("set above").0.vocab_size() {
            return Err(Error::Invalid(format!(
                "--model {name}: {} vocabulary ids, fewer than the tokenizer's {}",
                config.vocab_size,
                tok.as_ref().expect("set above").0.vocab_size()
            )));
        }
        let hash = crate::pool::hash_file(&weights)?.blake3;
        models.push((name.clone(), config, weights, hash));
    }
    let (tok, _) = tok.expect("at least one model");
    // The sequence length the models trained on (trainer.json), else their longest.
    let window = spec
        .models
        .iter()
        .zip(&models)
        .map(|((_, dir), m)| trained_seq_len(dir).unwrap_or(m.1.max_seq_len))
        .min()
        .expect("at least one model");
    let window = spec.window.unwrap_or(window);
    if window < 2 || models.iter().any(|m| m.1.max_seq_len < window) {
        return Err(Error::Invalid(format!(
            "--window {window}: expected 2 to the models' max_seq_len"
        )));
    }
    let streams = streams(spec, &tok, window)?;
    let task = EvalTask {
        models: &models,
        streams: &streams,
        window,
    };
    let logprobs = spec.backend.run(task)??;
    let mut rows = Vec::new();
    let mut builders: Vec<ExpertTableBuilder> = streams
        .iter()
        .map(|s| ExpertTableBuilder::new(s.name.clone(), tok.hash()))
        .collect();
    for ((name, _, _, hash), per_stream) in models.iter().zip(logprobs) {
        for ((s, b), lp) in streams.iter().zip(&mut builders).zip(per_stream) {
            let ce = -lp.iter().map(|&x| x as f64).sum::<f64>() / lp.len().max(1) as f64;
            rows.push(EvalRow {
                model: name.clone(),
                eval_domain: s.name.clone(),
                tokens: lp.len(),
                ce,
                perplexity: ce.exp(),
            });
            b.add_expert(name.clone(), hash.clone(), &lp)?;
        }
    }
    let tables = builders
        .into_iter()
        .map(|b| b.build())
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(EvalOutcome { rows, tables })
}

/// `train.seq_len` of a trainer checkpoint's `trainer.json`, if there is one.
fn trained_seq_len(dir: &Path) -> Option<usize> {
    let text = std::fs::read_to_string(dir.join("trainer.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v.get("train")?.get("seq_len")?.as_u64().map(|n| n as usize)
}

/// The eval streams: held-out splits, eval files, end-task files (names must not clash).
fn streams(spec: &EvalSpec, tok: &TextTokenizer, window: usize) -> Result<Vec<Stream>> {
    let mut out: Vec<Stream> = Vec::new();
    let mut push = |s: Stream, origin: &Path| {
        if out.iter().any(|o| o.name == s.name) {
            return Err(Error::Invalid(format!(
                "eval domain `{}` ({}) is named twice",
                s.name,
                origin.display()
            )));
        }
        if s.tokens.len() < 2 {
            return Err(Error::Invalid(format!(
                "{}: eval domain `{}` holds no text",
                origin.display(),
                s.name
            )));
        }
        out.push(s);
        Ok(())
    };
    if let Some(dir) = &spec.heldout {
        let corpus = PackedCorpus::open(dir)?;
        let m = corpus.manifest();
        if m.tokenizer_hash != tok.hash() {
            return Err(Error::Invalid(format!(
                "--heldout {}: packed with another tokenizer (hash {}) than the models' ({})",
                dir.display(),
                short(&m.tokenizer_hash),
                short(tok.hash())
            )));
        }
        for d in &m.domains {
            let tokens = heldout_tokens(&corpus, &d.name, spec.eval_tokens);
            if tokens.len() < 2 {
                tracing::warn!(domain = %d.name, "no held-out sequence: not an eval domain");
                continue;
            }
            push(
                Stream {
                    name: d.name.clone(),
                    tokens,
                    scored: None,
                },
                dir,
            )?;
        }
    }
    let reader = ReaderOptions::default();
    for p in &spec.eval_sets {
        let sources = CorpusSource::discover(p)?;
        if sources.is_empty() {
            return Err(Error::Invalid(format!(
                "--eval {}: no readable eval files found",
                p.display()
            )));
        }
        for s in sources {
            let tokens = tokenize_capped(&s, &reader, tok, spec.eval_tokens)?;
            push(
                Stream {
                    name: stem(&s.path),
                    tokens,
                    scored: None,
                },
                &s.path,
            )?;
        }
    }
    for p in &spec.task_sets {
        for s in CorpusSource::discover(p)? {
            let t = crate::study::tasks::load(&s.path, tok, window, spec.eval_tokens)?;
            push(
                Stream {
                    name: format!("task_{}", stem(&s.path)),
                    tokens: t.tokens,
                    scored: Some(t.scored),
                },
                &s.path,
            )?;
        }
    }
    Ok(out)
}

/// `(name, config, weights file, BLAKE3 of the weights)`.
type LoadedModel = (String, DecoderConfig, PathBuf, String);

struct EvalTask<'a> {
    models: &'a [LoadedModel],
    streams: &'a [Stream],
    window: usize,
}

impl BackendTask for EvalTask<'_> {
    /// Per model, per stream: the log-probabilities that count.
    type Output = Result<Vec<Vec<Vec<f32>>>>;
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output {
        let progress = bar((self.models.len() * self.streams.len()) as u64, "eval");
        let cfg = EvalConfig {
            window: self.window,
            stride: self.window,
            batch_size: 16,
        };
        let mut out = Vec::with_capacity(self.models.len());
        for (name, config, weights, _) in self.models {
            let model: Decoder<B::InnerBackend> = config.load_weights(weights, &device)?;
            let mut per_stream = Vec::with_capacity(self.streams.len());
            for s in self.streams {
                progress.set_message(format!("{name} on {}", s.name));
                let lp = evaluate(&model, &s.tokens, &cfg, &device)?.logprobs;
                per_stream.push(scored(lp, s.scored.as_deref()));
                progress.inc(1);
            }
            out.push(per_stream);
        }
        progress.finish();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corpus(dir: &Path) -> PathBuf {
        let c = dir.join("text");
        std::fs::create_dir_all(&c).unwrap();
        for (name, word) in [
            ("alpha", "apple banana cherry"),
            ("beta", "fn main() { x + 1 }"),
        ] {
            let mut s = String::new();
            for i in 0..60 {
                s.push_str(&format!(
                    "{{\"text\": \"{word} {i} {word} the quick brown fox {}\", \"metadata\": {{\"domain\": \"{name}\"}}}}\n",
                    i * 7 % 13
                ));
            }
            std::fs::write(c.join(format!("{name}.jsonl")), s).unwrap();
        }
        c
    }

    fn spec(dir: &Path, out: &str) -> TrainSpec {
        TrainSpec {
            data: TrainData::Text {
                corpus: corpus(dir),
                tokenizer: None,
                vocab_size: 300,
                seq_len: 16,
                heldout_fraction: 0.2,
            },
            mixture: None,
            preset: "tiny".into(),
            init: None,
            steps: 4,
            batch_size: 2,
            lr: 1e-3,
            warmup_steps: 1,
            seed: 0,
            eval_tokens: 256,
            backend: BackendKind::Cpu,
            out: dir.join(out),
        }
    }

    #[test]
    fn mixture_names_must_be_domains_and_weights_are_normalised() {
        let dir = tempfile::tempdir().unwrap();
        let s = spec(dir.path(), "run");
        let mut bad = s.clone();
        bad.mixture = Some(vec![("gamma".into(), 1.0)]);
        let e = train(&bad).unwrap_err().to_string();
        assert!(
            e.contains("no domain `gamma`") && e.contains("alpha, beta"),
            "{e}"
        );
        assert!(!s.out.join(RUN_FILE).exists());
        let mut zero = s.clone();
        zero.mixture = Some(vec![("alpha".into(), 0.0)]);
        assert!(train(&zero).unwrap_err().to_string().contains("sum to 0"));
        let mut ok = s;
        ok.mixture = Some(vec![("alpha".into(), 3.0), ("beta".into(), 1.0)]);
        let r = train(&ok).unwrap();
        assert_eq!(
            r.mixture,
            vec![("alpha".to_string(), 0.75), ("beta".to_string(), 0.25)]
        );
        // A finished run is never overwritten.
        let e = train(&ok).unwrap_err().to_string();
        assert!(e.contains("holds a finished run"), "{e}");
    }

    #[test]
    fn bad_hyper_parameters_are_refused_before_any_work() {
        let dir = tempfile::tempdir().unwrap();
        for (edit, want) in [
            (
                (|s: &mut TrainSpec| s.steps = 0) as fn(&mut TrainSpec),
                "--steps",
            ),
            (|s| s.lr = f64::NAN, "--lr"),
            (|s| s.warmup_steps = 99, "--warmup"),
            (|s| s.batch_size = 0, "--batch-size"),
        ] {
            let mut s = spec(dir.path(), "bad");
            edit(&mut s);
            let e = train(&s).unwrap_err().to_string();
            assert!(e.contains(want), "{want}: {e}");
            assert!(!dir.path().join("bad").exists(), "{want}: wrote a folder");
        }
    }
}
