//! The study configuration (TOML). Unknown keys are rejected by name.
//!
//! A study can combine both papers' designs over one pool: Belenki et al.'s Dirichlet
//! mixtures over domains (`[mixtures]`, with held-out test mixtures and replicates) and
//! Na et al.'s sets of base units (`[subsets]`), scored on eval sets and end-task sets
//! (`data.task_sets`) and summarised by a weighted objective (`[objective]`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use datamix_decoder::{BackendKind, DecoderConfig, TrainConfig};
use datamix_partition::DomainRules;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Everything a study does, from raw corpus to the recommended mixture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StudyConfig {
    /// Where every output goes (tokenizer, packed corpus, model pool, tables, results).
    pub out_dir: PathBuf,
    /// Backend for training and evaluation (`cpu`, `ndarray`, `wgpu`, `cuda`; must be compiled in).
    #[serde(default = "default_backend")]
    pub backend: BackendKind,
    /// Master seed (initialisation, data order, mixtures drawn).
    #[serde(default)]
    pub seed: u64,
    /// The corpus and how it is cut.
    pub data: DataConfig,
    /// The model architecture.
    pub model: ModelConfig,
    /// Pre-training of the shared seed model (on the uniform mixture of the training domains,
    /// or of `data.seed_corpus`'s domains when set).
    pub seed_model: RunConfig,
    /// Continued pre-training from the seed: base-unit models, domain experts and the
    /// ground-truth mixture models all use it (same token budget).
    pub continued: RunConfig,
    /// Ground-truth mixtures: trained for real to fit and judge the proxies.
    pub mixtures: MixtureConfig,
    /// Mixtures as sets of base units (Na et al.'s setting); off unless `subsets.count > 0`.
    #[serde(default)]
    pub subsets: SubsetConfig,
    /// Mixtures trained again with other seeds: the noise floor of every target.
    #[serde(default)]
    pub replicates: ReplicateConfig,
    /// The objective: a weighted mean of eval-domain losses.
    #[serde(default)]
    pub objective: ObjectiveConfig,
    /// Regression and cross-validation.
    #[serde(default)]
    pub analysis: AnalysisConfig,
    /// Mixture search.
    #[serde(default)]
    pub search: SearchConfig,
}

fn default_backend() -> BackendKind {
    BackendKind::Cpu
}

/// The corpus and its partitioning.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// Training corpus: a file or a folder (Dolma-style JSONL, text, Parquet; one file or
    /// sub-folder per domain, or a metadata field chosen by `rules`).
    pub corpus: PathBuf,
    /// Out-of-domain evaluation sets (files or folders); each file is one eval domain.
    #[serde(default)]
    pub eval_sets: Vec<PathBuf>,
    /// End-task sets (files or folders of JSONL `{"context", "answer"}` items); each file is
    /// one eval domain named `task_<file stem>`, scored on the answer tokens only (the items
    /// are joined into one stream, so earlier items act as few-shot examples).
    #[serde(default)]
    pub task_sets: Vec<PathBuf>,
    /// A separate corpus for the seed model only (a file or a folder, read like `corpus`):
    /// the seed is pre-trained on the uniform mixture of its domains instead of the training
    /// domains', so the mixtures start from a model that has not seen their data. It is
    /// tokenized with the study's tokenizer (trained on `corpus`, never on this) and packed
    /// under `out_dir/seed_corpus`; it is never evaluated.
    #[serde(default)]
    pub seed_corpus: Option<PathBuf>,
    /// A `tokenizer.json`; when absent a byte-level BPE of `vocab_size` is trained on the corpus.
    #[serde(default)]
    pub tokenizer: Option<PathBuf>,
    /// Vocabulary of the trained BPE (small vocabularies keep small models small).
    #[serde(default = "default_vocab")]
    pub vocab_size: usize,
    /// Tokens per training sequence.
    pub seq_len: usize,
    /// Tokens per base unit.
    pub unit_tokens: u64,
    /// Fraction of each domain's documents held out for evaluation.
    #[serde(default = "default_heldout")]
    pub heldout_fraction: f64,
    /// Tokens scored per eval domain (held-out streams are cut to this length).
    #[serde(default = "default_eval_tokens")]
    pub eval_tokens: usize,
    /// At most this many tokens per end-task stream (items past it are dropped).
    #[serde(default = "default_task_tokens")]
    pub task_tokens: usize,
    /// How documents map to domains (default: metadata field `domain`, which the
    /// readers fill from file or folder names).
    #[serde(default)]
    pub rules: DomainRules,
}

fn default_vocab() -> usize {
    4096
}
fn default_heldout() -> f64 {
    0.1
}
fn default_eval_tokens() -> usize {
    16_384
}
fn default_task_tokens() -> usize {
    65_536
}

/// The decoder architecture: a preset, optionally with a few fields changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// One of `tiny`, `small`, `m70`, `m130`, `m1b`.
    pub preset: String,
    /// Override of the preset's width.
    #[serde(default)]
    pub d_model: Option<usize>,
    /// Override of the preset's depth.
    #[serde(default)]
    pub n_layers: Option<usize>,
    /// Override of the preset's query heads.
    #[serde(default)]
    pub n_heads: Option<usize>,
}

impl ModelConfig {
    /// The decoder config for a vocabulary and sequence length.
    pub fn decoder(&self, vocab_size: usize, seq_len: usize) -> Result<DecoderConfig> {
        let mut c = DecoderConfig::preset(&self.preset, vocab_size)?;
        if let Some(d) = self.d_model {
            c.d_model = d;
        }
        if let Some(l) = self.n_layers {
            c.n_layers = l;
        }
        if let Some(h) = self.n_heads {
            c.n_heads = h;
        }
        c.max_seq_len = c.max_seq_len.max(seq_len);
        c.validate()?;
        Ok(c)
    }
}

/// One training run's schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// Optimizer steps.
    pub steps: u64,
    /// Sequences per step.
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// Peak learning rate (reached after warm-up; re-warmed when continuing from the seed).
    pub lr: f64,
    /// Linear warm-up steps.
    #[serde(default)]
    pub warmup_steps: u64,
    /// Final learning rate as a fraction of `lr`.
    #[serde(default = "default_min_lr")]
    pub min_lr_ratio: f64,
    /// Save a resumable checkpoint (weights, optimizer moments, data position) every this
    /// many steps into the pool's scratch area (`<pool>.jobs/scratch/<key>/`); a killed
    /// training resumes from the last one, bit-identically. 0: never. Not part of the
    /// pool key (it does not change the weights).
    #[serde(default = "default_checkpoint_every")]
    pub checkpoint_every: u64,
}

fn default_checkpoint_every() -> u64 {
    500
}

fn default_batch() -> usize {
    8
}
fn default_min_lr() -> f64 {
    0.1
}

impl RunConfig {
    /// The decoder's training config for sequences of `seq_len`.
    pub fn train_config(&self, seq_len: usize, seed: u64) -> TrainConfig {
        TrainConfig {
            batch_size: self.batch_size,
            seq_len,
            grad_accum: 1,
            lr: self.lr,
            min_lr_ratio: self.min_lr_ratio,
            warmup_steps: self.warmup_steps,
            total_steps: self.steps,
            seed,
            ..TrainConfig::default()
        }
    }

    /// Tokens a run consumes (saturating; `validate` rejects configs where it would overflow).
    pub fn tokens(&self, seq_len: usize) -> u64 {
        (self.batch_size as u64)
            .saturating_mul(seq_len as u64)
            .saturating_mul(self.steps)
    }
}

/// The ground-truth mixtures (Belenki et al.'s setting).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MixtureConfig {
    /// Mixtures drawn from a symmetric Dirichlet (the uniform mixture is always added first),
    /// test mixtures included.
    pub count: usize,
    /// Dirichlet concentration (1 = uniform on the simplex; smaller = sparser mixtures).
    #[serde(default = "default_alpha")]
    pub alpha: f64,
    /// The last `test` mixtures are held out: never used to fit a regression or to choose a
    /// family, only to measure predictions.
    #[serde(default)]
    pub test: usize,
    /// Where the domain experts and the mixture models start: `seed` (continued from the
    /// seed model, λ controls `continued / (seed + continued)` of training) or `scratch`
    /// (random initialisation, λ controls all of it).
    #[serde(default)]
    pub init: Init,
}

fn default_alpha() -> f64 {
    1.0
}

/// Where experts and mixture models start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Init {
    /// Continued from the seed model (with its optimizer state; learning rate re-warmed).
    #[default]
    Seed,
    /// From a random initialisation (the seed model is then only used for base units).
    Scratch,
}

/// Na et al.'s setting: mixtures as sets of `k` base units, each trained for real on the
/// union of its units with `k` times the unit budget (from the seed) and predicted by merges
/// of the units' models.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SubsetConfig {
    /// Number of distinct k-subsets drawn (0 = the setting is off).
    pub count: usize,
    /// Base units per subset.
    pub k: usize,
}

impl Default for SubsetConfig {
    fn default() -> Self {
        Self { count: 0, k: 2 }
    }
}

/// Replicates: mixtures trained again with other seeds (data order; initialisation too
/// when `mixtures.init = "scratch"`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReplicateConfig {
    /// Indices into the mixtures (0 = the uniform mixture) trained again.
    pub mixtures: Vec<usize>,
    /// Extra seeds per replicated mixture (`seed + 1 ..= seed + seeds`).
    pub seeds: usize,
}

/// The objective minimised by the search: `Σ_e w_e · loss_e / Σ_e w_e`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ObjectiveConfig {
    /// Weight per eval domain (held-out domain name, eval-set stem or `task_<stem>`);
    /// empty = every eval domain weighted equally.
    pub weights: BTreeMap<String, f64>,
    /// A second objective reported beside the first (e.g. Belenki et al.'s AVG-ET+SP when
    /// the first is AVG-SP): proxy quality and held-out test metrics; the search uses the
    /// first. Empty = none.
    pub secondary: BTreeMap<String, f64>,
}

/// Regression settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnalysisConfig {
    /// Cross-validation folds over the training mixtures (0 = leave-one-out).
    pub folds: usize,
    /// Model family used for the search (`ridge`, `gp`, `gbdt`; `auto` = best CV Spearman
    /// on λ+MDE over the training mixtures' folds).
    pub family: String,
    /// Random training subsets per learning-curve point.
    pub curve_repeats: usize,
}

impl Default for AnalysisConfig {
    fn default() -> Self {
        Self {
            folds: 5,
            family: "auto".into(),
            curve_repeats: 20,
        }
    }
}

/// Search settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SearchConfig {
    /// Lower bound on every domain's weight.
    pub min_weight: f64,
    /// At most this many passes over any domain's tokens at the continued-training budget
    /// (`λ_i · budget ≤ max_epochs · tokens_i`); none = no limit.
    pub max_epochs: Option<f64>,
    /// Train a model on the recommended mixture and report its true loss.
    pub validate: bool,
    /// Seeds the recommendation is trained with; the uniform and the best training mixture
    /// are trained with the same seeds, so the gaps are stated in seed-to-seed units.
    pub validate_seeds: usize,
}

impl Default for SearchConfig {
    fn default() -> Self {
        Self {
            min_weight: 0.0,
            max_epochs: None,
            validate: true,
            validate_seeds: 1,
        }
    }
}

impl StudyConfig {
    /// Reads and validates a TOML file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_toml(&text, path)
    }

    /// Parses and validates TOML text (`path` names it in errors).
    pub fn from_toml(text: &str, path: &Path) -> Result<Self> {
        let c: Self = toml::from_str(text).map_err(|e| Error::Config {
            path: path.into(),
            message: e.to_string(),
        })?;
        c.validate().map_err(|message| Error::Config {
            path: path.into(),
            message,
        })?;
        Ok(c)
    }

    /// Checks ranges; the message names the key.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let d = &self.data;
        if d.seq_len < 2 {
            return Err(format!("data.seq_len = {} (expected >= 2)", d.seq_len));
        }
        if d.unit_tokens < d.seq_len as u64 {
            return Err(format!(
                "data.unit_tokens = {} (expected >= data.seq_len = {})",
                d.unit_tokens, d.seq_len
            ));
        }
        if !(d.heldout_fraction > 0.0 && d.heldout_fraction < 1.0) {
            return Err(format!(
                "data.heldout_fraction = {} (expected in (0, 1))",
                d.heldout_fraction
            ));
        }
        if d.eval_tokens < 2 {
            return Err(format!(
                "data.eval_tokens = {} (expected >= 2)",
                d.eval_tokens
            ));
        }
        if d.tokenizer.is_none() && d.vocab_size < 260 {
            return Err(format!(
                "data.vocab_size = {} (expected >= 260: 256 bytes + special tokens)",
                d.vocab_size
            ));
        }
        for (name, r) in [
            ("seed_model", &self.seed_model),
            ("continued", &self.continued),
        ] {
            if r.steps == 0 || r.batch_size == 0 {
                return Err(format!(
                    "{name}.steps and {name}.batch_size must be positive"
                ));
            }
            if !(r.lr.is_finite() && r.lr > 0.0) {
                return Err(format!("{name}.lr = {} (expected > 0)", r.lr));
            }
            if r.warmup_steps > r.steps {
                return Err(format!(
                    "{name}.warmup_steps = {} exceeds {name}.steps = {}",
                    r.warmup_steps, r.steps
                ));
            }
        }
        if self.mixtures.count < 2 {
            return Err(format!(
                "mixtures.count = {} (expected >= 2: regression needs several trained mixtures)",
                self.mixtures.count
            ));
        }
        if self.mixtures.test + 3 > self.mixtures.count {
            return Err(format!(
                "mixtures.test = {} with mixtures.count = {} (expected test <= count - 3: \
                 at least 3 training mixtures are needed to fit and cross-validate)",
                self.mixtures.test, self.mixtures.count
            ));
        }
        if (1..3).contains(&self.mixtures.test) {
            return Err(format!(
                "mixtures.test = {} (expected 0 = none, or >= 3: test metrics rank the test \
                 mixtures)",
                self.mixtures.test
            ));
        }
        if let Some(&i) = self
            .replicates
            .mixtures
            .iter()
            .find(|&&i| i >= self.mixtures.count)
        {
            return Err(format!(
                "replicates.mixtures: mixture {i} does not exist (mixtures.count = {}, \
                 indices 0..{})",
                self.mixtures.count, self.mixtures.count
            ));
        }
        if !self.replicates.mixtures.is_empty() && self.replicates.seeds == 0 {
            return Err("replicates.seeds = 0 with replicates.mixtures set (expected >= 1)".into());
        }
        if self.subsets.count > 0 && self.subsets.k < 1 {
            return Err("subsets.k = 0 (expected >= 1)".into());
        }
        if (1..3).contains(&self.subsets.count) {
            return Err(format!(
                "subsets.count = {} (expected 0 = off, or >= 3: proxies are correlated with \
                 the seq models over the subsets)",
                self.subsets.count
            ));
        }
        if self.search.validate && self.search.validate_seeds == 0 {
            return Err("search.validate_seeds = 0 (expected >= 1)".into());
        }
        for (key, weights) in [
            ("objective.weights", &self.objective.weights),
            ("objective.secondary", &self.objective.secondary),
        ] {
            if let Some((name, w)) = weights.iter().find(|(_, w)| !(w.is_finite() && **w >= 0.0)) {
                return Err(format!(
                    "{key}.{name} = {w} (expected a finite weight >= 0)"
                ));
            }
            if !weights.is_empty() && weights.values().sum::<f64>() <= 0.0 {
                return Err(format!("{key} sum to 0 (expected a positive sum)"));
            }
        }
        if !(self.mixtures.alpha.is_finite() && self.mixtures.alpha > 0.0) {
            return Err(format!(
                "mixtures.alpha = {} (expected > 0)",
                self.mixtures.alpha
            ));
        }
        if !["auto", "ridge", "gp", "gbdt"].contains(&self.analysis.family.as_str()) {
            return Err(format!(
                "analysis.family = {:?} (expected auto, ridge, gp or gbdt)",
                self.analysis.family
            ));
        }
        if self.analysis.folds == 1 {
            return Err("analysis.folds = 1 (expected 0 for leave-one-out, or >= 2)".into());
        }
        if self
            .search
            .max_epochs
            .is_some_and(|e| !(e.is_finite() && e > 0.0))
        {
            return Err(format!(
                "search.max_epochs = {:?} (expected > 0)",
                self.search.max_epochs
            ));
        }
        if !(self.search.min_weight >= 0.0 && self.search.min_weight < 1.0) {
            return Err(format!(
                "search.min_weight = {} (expected in [0, 1))",
                self.search.min_weight
            ));
        }
        super::checks::check(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: &str = include_str!("../../configs/study-small.toml");

    #[test]
    fn shipped_config_parses() {
        let c = StudyConfig::from_toml(SMALL, Path::new("study-small.toml")).unwrap();
        assert_eq!(c.backend, BackendKind::Cpu);
        c.model.decoder(c.data.vocab_size, c.data.seq_len).unwrap();
    }

    #[test]
    fn main_job_config_parses() {
        let text = include_str!("../../configs/reproduce.toml");
        let c = StudyConfig::from_toml(text, Path::new("reproduce.toml")).unwrap();
        assert_eq!((c.mixtures.count, c.mixtures.test), (44, 16));
        assert_eq!((c.subsets.count, c.subsets.k), (16, 3));
        assert_eq!(c.objective.weights.len(), 6);
        assert_eq!(c.objective.secondary.len(), 8);
    }

    #[test]
    fn unknown_key_and_bad_value_are_named() {
        let bad = SMALL.replace("[mixtures]", "[mixtures]\ncolour = 1");
        let e = StudyConfig::from_toml(&bad, Path::new("s.toml")).unwrap_err();
        assert!(e.to_string().contains("colour"), "{e}");
        let bad = SMALL.replace("count =", "count = 1 #");
        let e = StudyConfig::from_toml(&bad, Path::new("s.toml")).unwrap_err();
        assert!(e.to_string().contains("mixtures.count"), "{e}");
    }
}
