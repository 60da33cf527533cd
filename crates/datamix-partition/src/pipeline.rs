//! The partitioning pipeline: read sources, tokenize (cached), assign domains, split
//! held-out documents, decontaminate, order, pack into shards, cut base units, write the
//! manifest. The whole output directory appears atomically.
//!
//! This file owns the configuration, the driver ([`Partitioner::run`]: directories, the
//! stages in order, the manifest, publishing) and the tokenization cache; domain
//! assignment and the eval sets' n-gram filter are in `pipeline/domains.rs`, packing one
//! domain into shards and units in `pipeline/pack.rs`.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::sync_channel;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use memmap2::Mmap;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{PartitionError, Result};
use crate::manifest::{FORMAT_VERSION, MANIFEST_FILE, Manifest, SourceEntry, TOKENIZER_FILE};
use crate::reader::{CorpusSource, Document, ReaderOptions, SourceFormat, text_hash};
use crate::rules::DomainRules;
use crate::shard::TokenDtype;
use crate::tokenize::{DEFAULT_EOT, TextTokenizer};

mod domains;
mod pack;

/// How documents are ordered inside a domain before it is cut into base units.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnitOrder {
    /// By document hash (a deterministic shuffle).
    Hash,
    /// By a metadata key (numbers numerically, then strings, then missing), ties by hash.
    Key(String),
}

/// Settings of a partitioning run (TOML/JSON; unknown keys are rejected by name).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PartitionConfig {
    /// Tokens per packed sequence.
    pub seq_len: usize,
    /// Tokens per base unit (rounded down to a multiple of `seq_len`).
    pub unit_tokens: u64,
    /// Document order inside a domain (decides which documents share a unit).
    pub order_by: UnitOrder,
    /// Fraction of each domain's documents held out for evaluation, chosen by hash.
    pub heldout_fraction: f64,
    /// Salt of the held-out choice.
    pub heldout_seed: u64,
    /// Training budget per model; units and domains record the epochs it needs.
    pub budget_tokens: Option<u64>,
    /// Decontamination window in tokens.
    pub ngram: usize,
    /// Bloom filter false-positive rate per window lookup.
    pub bloom_fp_rate: f64,
    /// End-of-text token joining documents.
    pub eot_token: String,
    /// How records are read.
    pub reader: ReaderOptions,
    /// How domains are assigned.
    pub rules: DomainRules,
    /// Worker threads (default: rayon's global pool).
    pub threads: Option<usize>,
    /// Show progress bars (on a terminal only).
    pub progress: bool,
}

impl Default for PartitionConfig {
    fn default() -> Self {
        Self {
            seq_len: 1024,
            unit_tokens: 4 << 20,
            order_by: UnitOrder::Hash,
            heldout_fraction: 0.05,
            heldout_seed: 0,
            budget_tokens: None,
            ngram: 13,
            bloom_fp_rate: 1e-9,
            eot_token: DEFAULT_EOT.into(),
            reader: ReaderOptions::default(),
            rules: DomainRules::default(),
            threads: None,
            progress: true,
        }
    }
}

impl PartitionConfig {
    /// Parses a TOML configuration; unknown keys are errors naming them.
    pub fn from_toml_str(s: &str, what: &str) -> Result<Self> {
        let c: Self = toml::from_str(s).map_err(|e| PartitionError::Config {
            what: what.into(),
            message: e.to_string(),
        })?;
        c.validate()?;
        Ok(c)
    }

    /// Checks ranges.
    pub fn validate(&self) -> Result<()> {
        let bad = |name, message: String| Err(PartitionError::InvalidParam { name, message });
        if self.seq_len < 2 {
            return bad("seq_len", format!("{} < 2", self.seq_len));
        }
        if self.unit_tokens < self.seq_len as u64 {
            return bad(
                "unit_tokens",
                format!("{} < seq_len {}", self.unit_tokens, self.seq_len),
            );
        }
        if !(0.0..1.0).contains(&self.heldout_fraction) {
            return bad(
                "heldout_fraction",
                format!("{} not in [0, 1)", self.heldout_fraction),
            );
        }
        if self.ngram == 0 {
            return bad("ngram", "must be at least 1".into());
        }
        if !(self.bloom_fp_rate > 0.0 && self.bloom_fp_rate < 1.0) {
            return bad(
                "bloom_fp_rate",
                format!("{} not in (0, 1)", self.bloom_fp_rate),
            );
        }
        if self.budget_tokens == Some(0) {
            return bad("budget_tokens", "must be positive".into());
        }
        self.rules.validate("rules")
    }

    /// Whether a document (by its hash) is held out.
    pub fn is_heldout(&self, doc_hash: u64) -> bool {
        heldout(doc_hash, self.heldout_seed, self.heldout_fraction)
    }
}

fn heldout(doc_hash: u64, seed: u64, fraction: f64) -> bool {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&doc_hash.to_le_bytes());
    b[8..].copy_from_slice(&seed.to_le_bytes());
    let u = (xxhash_rust::xxh3::xxh3_64(&b) >> 11) as f64 / (1u64 << 53) as f64;
    u < fraction
}

/// Runs the pipeline. Build with [`Partitioner::new`], then [`Partitioner::run`].
#[derive(Debug)]
pub struct Partitioner {
    config: PartitionConfig,
    tokenizer: TextTokenizer,
    cache_dir: Option<PathBuf>,
    eval_sources: Vec<CorpusSource>,
    known_hashes: HashMap<PathBuf, String>,
}

/// One document as cached after tokenization (its text is not kept).
#[derive(Clone, Debug, Serialize, Deserialize)]
struct DocRecord {
    /// Hash of the text.
    h: u64,
    /// First token in the source's token file.
    s: u64,
    /// Token count (without end-of-text).
    n: u64,
    /// Metadata.
    m: Map<String, Value>,
}

#[derive(Serialize, Deserialize)]
struct CacheInfo {
    documents: u64,
    tokens: u64,
    skipped: u64,
}

/// A source's tokens (memory-mapped `u32`) and document records.
struct Tokenized {
    entry: SourceEntry,
    docs: Vec<DocRecord>,
    tokens: Option<Mmap>,
}

impl Tokenized {
    fn doc_tokens(&self, d: &DocRecord) -> &[u32] {
        match &self.tokens {
            Some(m) => &bytemuck::cast_slice::<u8, u32>(&m[..])[d.s as usize..(d.s + d.n) as usize],
            None => &[],
        }
    }
}

#[derive(Clone, Copy)]
struct DocRef {
    src: u32,
    doc: u32,
}

impl Partitioner {
    /// A partitioner with a validated configuration and a tokenizer.
    pub fn new(config: PartitionConfig, tokenizer: TextTokenizer) -> Result<Self> {
        config.validate()?;
        Ok(Self {
            config,
            tokenizer,
            cache_dir: None,
            eval_sources: Vec::new(),
            known_hashes: HashMap::new(),
        })
    }

    /// Caches tokenized sources under `dir` (keyed by content, reader options and
    /// tokenizer hashes) and reuses them on later runs.
    pub fn with_cache_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cache_dir = Some(dir.into());
        self
    }

    /// Evaluation sets: training documents sharing any `ngram`-token window with them are
    /// dropped.
    pub fn with_eval_sets(mut self, sources: Vec<CorpusSource>) -> Self {
        self.eval_sources = sources;
        self
    }

    /// Content hashes ([`CorpusSource::content_hash`]) the caller has already computed, by source
    /// path: used instead of reading those sources once more to hash them. They must be
    /// fresh (computed from the bytes about to be read).
    pub fn with_content_hashes(mut self, hashes: HashMap<PathBuf, String>) -> Self {
        self.known_hashes = hashes;
        self
    }

    /// The configuration.
    pub fn config(&self) -> &PartitionConfig {
        &self.config
    }

    /// Partitions `sources` into `out_dir` (created or replaced as a whole; on error nothing
    /// is left there) and returns the manifest.
    pub fn run(&self, sources: &[CorpusSource], out_dir: &Path) -> Result<Manifest> {
        let pool = {
            let mut b = rayon::ThreadPoolBuilder::new();
            if let Some(n) = self.config.threads {
                b = b.num_threads(n);
            }
            b.build().map_err(|e| PartitionError::InvalidParam {
                name: "threads",
                message: e.to_string(),
            })?
        };
        pool.install(|| self.run_in_pool(sources, out_dir))
    }

    fn run_in_pool(&self, sources: &[CorpusSource], out_dir: &Path) -> Result<Manifest> {
        let cfg = &self.config;
        let parent = out_dir
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent).map_err(|e| PartitionError::io(parent, e))?;
        // Kept until the end: a scratch cache is removed when it drops.
        let (cache_dir, _scratch) = self.prepare_cache(parent)?;

        let train: Vec<Tokenized> = sources
            .iter()
            .map(|s| self.tokenized(s, &cache_dir))
            .collect::<Result<_>>()?;
        let eval: Vec<Tokenized> = self
            .eval_sources
            .iter()
            .map(|s| self.tokenized(s, &cache_dir))
            .collect::<Result<_>>()?;
        for (s, t) in sources.iter().zip(&train) {
            if let (SourceFormat::Folder | SourceFormat::Text, Some(domain), true) =
                (&s.format, &s.domain, t.docs.is_empty())
            {
                return Err(PartitionError::EmptyDomain {
                    domain: domain.clone(),
                    tokens: 0,
                    seq_len: cfg.seq_len,
                });
            }
        }
        // Domains.
        let (domains, mut dropped) = domains::assign_domains(cfg, sources, &train)?;

        // Decontamination filter.
        let (bloom, eval_windows) = domains::eval_filter(cfg, &eval);
        dropped.eval_ngrams = eval_windows;

        // Staging directory: published as a whole at the end.
        let staging = tempfile::Builder::new()
            .prefix(&crate::leftovers::temp_prefix(".datamix-partition-"))
            .tempdir_in(parent)
            .map_err(|e| PartitionError::io(parent, e))?;
        let dtype = TokenDtype::for_vocab(self.tokenizer.vocab_size());
        let eot = self.tokenizer.eot_id();
        let seqs_per_unit = cfg.unit_tokens / cfg.seq_len as u64;
        let unit_tokens = seqs_per_unit * cfg.seq_len as u64;
        let mut domain_entries = Vec::new();
        let mut units = Vec::new();
        let bar = self.bar(domains.len() as u64, "packing domains");
        let packing = pack::Packing {
            cfg,
            train: &train,
            bloom: bloom.as_ref(),
            eval_sources: &self.eval_sources,
            staging: staging.path(),
            dtype,
            eot,
            seqs_per_unit,
        };
        for (di, (name, refs)) in domains.iter().enumerate() {
            let packed = packing.domain(di, name, refs)?;
            dropped.contaminated += packed.contaminated;
            units.extend(packed.units);
            domain_entries.push(packed.entry);
            bar.inc(1);
        }
        bar.finish_and_clear();

        let manifest = Manifest {
            format_version: FORMAT_VERSION,
            seq_len: cfg.seq_len,
            dtype,
            vocab_size: self.tokenizer.vocab_size(),
            eot_id: eot,
            tokenizer_hash: self.tokenizer.hash().to_string(),
            unit_tokens,
            budget_tokens: cfg.budget_tokens,
            sources: train.into_iter().map(|t| t.entry).collect(),
            eval_sources: eval.into_iter().map(|t| t.entry).collect(),
            domains: domain_entries,
            units,
            dropped,
            config: cfg.clone(),
        };
        self.tokenizer.save(&staging.path().join(TOKENIZER_FILE))?;
        let json = serde_json::to_vec_pretty(&manifest).expect("manifest serialises");
        crate::atomic::write_file(&staging.path().join(MANIFEST_FILE), &json)?;
        publish(staging, out_dir)?;
        tracing::info!(
            "partitioned into {}:\n{}",
            out_dir.display(),
            manifest.report()
        );
        Ok(manifest)
    }

    /// The tokenization cache: the configured one, or a scratch directory beside the
    /// output (returned too, so that it lives as long as the caller keeps it). Removes the
    /// leftovers of interrupted runs first: scratch caches and staging directories beside
    /// the output, half-tokenized sources in the cache.
    fn prepare_cache(&self, parent: &Path) -> Result<(PathBuf, Option<tempfile::TempDir>)> {
        let mut scratch = None;
        let cache_dir = match &self.cache_dir {
            Some(d) => d.clone(),
            None => {
                crate::leftovers::clean(
                    parent,
                    ".datamix-tok-",
                    crate::leftovers::DEFAULT_MAX_AGE,
                )?;
                let dir = tempfile::Builder::new()
                    .prefix(&crate::leftovers::temp_prefix(".datamix-tok-"))
                    .tempdir_in(parent)
                    .map_err(|e| PartitionError::io(parent, e))?;
                let path = dir.path().to_path_buf();
                scratch = Some(dir);
                path
            }
        };
        std::fs::create_dir_all(&cache_dir).map_err(|e| PartitionError::io(&cache_dir, e))?;
        // Interrupted runs' half-tokenized sources and staging directories.
        crate::leftovers::clean(&cache_dir, ".tmp-tok-", crate::leftovers::DEFAULT_MAX_AGE)?;
        crate::leftovers::clean(
            parent,
            ".datamix-partition-",
            crate::leftovers::DEFAULT_MAX_AGE,
        )?;
        Ok((cache_dir, scratch))
    }

    fn bar(&self, len: u64, msg: &'static str) -> ProgressBar {
        if !self.config.progress {
            return ProgressBar::hidden();
        }
        let b = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
        b.set_style(
            ProgressStyle::with_template("{msg} {wide_bar} {pos}/{len} [{elapsed}]")
                .expect("valid template"),
        );
        b.set_message(msg);
        b
    }

    /// Tokenizes one source, or loads it from the cache.
    fn tokenized(&self, source: &CorpusSource, cache_dir: &Path) -> Result<Tokenized> {
        let content_hash = match self.known_hashes.get(&source.path) {
            Some(h) => h.clone(),
            None => source.content_hash()?,
        };
        let key_json = serde_json::json!({
            "v": 1, "content": content_hash, "format": source.format, "domain": source.domain,
            "reader": self.config.reader, "tokenizer": self.tokenizer.hash(), "eot": self.config.eot_token,
        });
        let key = format!(
            "{:032x}",
            xxhash_rust::xxh3::xxh3_128(key_json.to_string().as_bytes())
        );
        let dir = cache_dir.join(format!("tok-{key}"));
        if !dir.join("info.json").exists() {
            self.tokenize_into_cache(source, cache_dir, &dir)?;
        } else {
            tracing::debug!(
                "cache hit for {} ({})",
                source.path.display(),
                dir.display()
            );
        }
        let info_path = dir.join("info.json");
        let info: CacheInfo = serde_json::from_slice(
            &std::fs::read(&info_path).map_err(|e| PartitionError::io(&info_path, e))?,
        )
        .map_err(|e| PartitionError::BadShard {
            path: info_path.clone(),
            message: e.to_string(),
        })?;
        let docs_path = dir.join("docs.jsonl");
        let f = File::open(&docs_path).map_err(|e| PartitionError::io(&docs_path, e))?;
        let mut docs = Vec::with_capacity(info.documents as usize);
        for line in BufReader::new(f).lines() {
            let line = line.map_err(|e| PartitionError::io(&docs_path, e))?;
            docs.push(serde_json::from_str::<DocRecord>(&line).map_err(|e| {
                PartitionError::BadShard {
                    path: docs_path.clone(),
                    message: e.to_string(),
                }
            })?);
        }
        let tok_path = dir.join("tokens.bin");
        let tf = File::open(&tok_path).map_err(|e| PartitionError::io(&tok_path, e))?;
        let len = tf
            .metadata()
            .map_err(|e| PartitionError::io(&tok_path, e))?
            .len();
        if docs.len() as u64 != info.documents || len != info.tokens * 4 {
            return Err(PartitionError::BadShard {
                path: dir,
                message: "cache entry is inconsistent; delete it".into(),
            });
        }
        let tokens = if len == 0 {
            None
        } else {
            // SAFETY: cache entries are written once into a fresh directory and renamed into place.
            Some(unsafe { Mmap::map(&tf) }.map_err(|e| PartitionError::io(&tok_path, e))?)
        };
        let entry = SourceEntry {
            path: source.path.display().to_string(),
            format: source.format.clone(),
            content_hash,
            documents: info.documents,
            skipped_records: info.skipped,
        };
        Ok(Tokenized {
            entry,
            docs,
            tokens,
        })
    }

    fn tokenize_into_cache(
        &self,
        source: &CorpusSource,
        cache_dir: &Path,
        dir: &Path,
    ) -> Result<()> {
        let tmp = tempfile::Builder::new()
            .prefix(&crate::leftovers::temp_prefix(".tmp-tok-"))
            .tempdir_in(cache_dir)
            .map_err(|e| PartitionError::io(cache_dir, e))?;
        let tok_path = tmp.path().join("tokens.bin");
        let docs_path = tmp.path().join("docs.jsonl");
        let mut tok_out = BufWriter::with_capacity(
            1 << 20,
            File::create(&tok_path).map_err(|e| PartitionError::io(&tok_path, e))?,
        );
        let mut doc_out = BufWriter::new(
            File::create(&docs_path).map_err(|e| PartitionError::io(&docs_path, e))?,
        );
        let reader = source.open(&self.config.reader)?;
        let bar = if self.config.progress {
            let b = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            b.set_style(
                ProgressStyle::with_template(
                    "{spinner} tokenizing {msg}: {bytes} ({bytes_per_sec}) [{elapsed}]",
                )
                .expect("valid template"),
            );
            b.set_message(source.path.display().to_string());
            b
        } else {
            ProgressBar::hidden()
        };
        let (tx, rx) = sync_channel::<Result<Vec<Document>>>(2);
        let (mut ndocs, mut ntokens) = (0u64, 0u64);
        let skipped = std::thread::scope(|scope| -> Result<u64> {
            let producer = scope.spawn(move || {
                let mut reader = reader;
                let mut batch = Vec::new();
                let mut bytes = 0usize;
                for doc in reader.by_ref() {
                    match doc {
                        Ok(d) => {
                            bytes += d.text.len();
                            batch.push(d);
                            if bytes >= 4 << 20 {
                                if tx.send(Ok(std::mem::take(&mut batch))).is_err() {
                                    return reader.skipped();
                                }
                                bytes = 0;
                            }
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e));
                            return reader.skipped();
                        }
                    }
                }
                if !batch.is_empty() {
                    let _ = tx.send(Ok(batch));
                }
                reader.skipped()
            });
            for batch in rx {
                let batch = batch?;
                let encoded: Vec<Vec<u32>> = batch
                    .par_iter()
                    .map(|d| self.tokenizer.encode(&d.text))
                    .collect::<Result<_>>()?;
                for (d, ids) in batch.into_iter().zip(encoded) {
                    tok_out
                        .write_all(bytemuck::cast_slice(&ids))
                        .map_err(|e| PartitionError::io(&tok_path, e))?;
                    let mut m = d.metadata;
                    m.entry("id").or_insert(Value::String(d.id));
                    let rec = DocRecord {
                        h: text_hash(&d.text),
                        s: ntokens,
                        n: ids.len() as u64,
                        m,
                    };
                    serde_json::to_writer(&mut doc_out, &rec).expect("record serialises");
                    doc_out
                        .write_all(b"\n")
                        .map_err(|e| PartitionError::io(&docs_path, e))?;
                    ndocs += 1;
                    ntokens += ids.len() as u64;
                    bar.inc(d.text.len() as u64);
                }
            }
            Ok(producer.join().expect("reader thread does not panic"))
        })?;
        bar.finish_and_clear();
        for (w, p) in [(tok_out, &tok_path), (doc_out, &docs_path)] {
            let f = w
                .into_inner()
                .map_err(|e| PartitionError::io(p, e.into_error()))?;
            f.sync_all().map_err(|e| PartitionError::io(p, e))?;
        }
        let info = CacheInfo {
            documents: ndocs,
            tokens: ntokens,
            skipped,
        };
        crate::atomic::write_file(
            &tmp.path().join("info.json"),
            &serde_json::to_vec(&info).expect("info serialises"),
        )?;
        let kept = tmp.keep();
        if std::fs::rename(&kept, dir).is_err() {
            // Another run cached the same source meanwhile; keep theirs.
            let _ = std::fs::remove_dir_all(&kept);
        }
        Ok(())
    }
}

/// Replaces `out_dir` by the staged directory.
fn publish(staging: tempfile::TempDir, out_dir: &Path) -> Result<()> {
    let mut old = None;
    if out_dir.exists() {
        let is_ours = out_dir.join(MANIFEST_FILE).exists()
            || std::fs::read_dir(out_dir)
                .map_err(|e| PartitionError::io(out_dir, e))?
                .next()
                .is_none();
        if !is_ours {
            return Err(PartitionError::InvalidParam {
                name: "out_dir",
                message: format!(
                    "{} exists and is not a datamix-partition output; refusing to replace it",
                    out_dir.display()
                ),
            });
        }
        let mut name = out_dir.file_name().unwrap_or_default().to_os_string();
        name.push(format!(".old-{}", std::process::id()));
        let backup = out_dir.with_file_name(name);
        std::fs::rename(out_dir, &backup).map_err(|e| PartitionError::io(out_dir, e))?;
        old = Some(backup);
    }
    let kept = staging.keep();
    // Temporary directories start private (0700); the output is an ordinary folder.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&kept, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| PartitionError::io(&kept, e))?;
    }
    if let Err(e) = std::fs::rename(&kept, out_dir) {
        let _ = std::fs::remove_dir_all(&kept);
        if let Some(b) = &old {
            let _ = std::fs::rename(b, out_dir);
        }
        return Err(PartitionError::io(out_dir, e));
    }
    if let Some(b) = old {
        let _ = std::fs::remove_dir_all(b);
    }
    Ok(())
}

/// Sort key for metadata-ordered units: numbers, then strings, then missing.
#[derive(Debug, PartialEq)]
enum SortKey {
    Num(f64),
    Str(String),
    Missing,
}

impl SortKey {
    fn of(v: Option<&Value>) -> Self {
        match v {
            Some(Value::Number(n)) => n.as_f64().map_or(Self::Missing, Self::Num),
            Some(Value::String(s)) => Self::Str(s.clone()),
            Some(Value::Null) | None => Self::Missing,
            Some(other) => Self::Str(other.to_string()),
        }
    }

    fn rank(&self) -> u8 {
        match self {
            Self::Num(_) => 0,
            Self::Str(_) => 1,
            Self::Missing => 2,
        }
    }

    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Self::Num(a), Self::Num(b)) => a.total_cmp(b),
            (Self::Str(a), Self::Str(b)) => a.cmp(b),
            _ => self.rank().cmp(&other.rank()),
        }
    }
}

/// Trains a byte-level BPE on the text of `sources` (at most `max_bytes` of it, read in order).
pub fn train_tokenizer(
    sources: &[CorpusSource],
    reader: &ReaderOptions,
    vocab_size: usize,
    eot: &str,
    max_bytes: u64,
) -> Result<TextTokenizer> {
    let mut readers = Vec::new();
    for s in sources {
        readers.push(s.open(reader)?);
    }
    let error: std::sync::Mutex<Option<PartitionError>> = std::sync::Mutex::new(None);
    let mut seen = 0u64;
    let texts = readers.into_iter().flatten().map_while(|d| match d {
        Ok(d) if seen < max_bytes => {
            seen += d.text.len() as u64;
            Some(d.text)
        }
        Ok(_) => None,
        Err(e) => {
            *error.lock().expect("not poisoned") = Some(e);
            None
        }
    });
    let tok = TextTokenizer::train_bpe(texts, vocab_size, eot);
    if let Some(e) = error.into_inner().expect("not poisoned") {
        return Err(e);
    }
    tok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_from_toml_with_nested_rules() {
        let c = PartitionConfig::from_toml_str(
            r#"
            seq_len = 256
            unit_tokens = 65536
            order_by = { key = "year" }
            heldout_fraction = 0.1
            budget_tokens = 1000000
            [reader]
            text_field = "body"
            bad_records = "skip"
            [rules]
            field = "field_of_study"
            missing = "unknown"
            [rules.rename]
            Geography = "Environmental Science"
            "#,
            "partition.toml",
        )
        .unwrap();
        assert_eq!(c.order_by, UnitOrder::Key("year".into()));
        assert_eq!(c.reader.bad_records, crate::BadRecordPolicy::Skip);
        assert_eq!(c.rules.rename["Geography"], "Environmental Science");
        assert_eq!(c.ngram, 13);
        let e = PartitionConfig::from_toml_str("[rules]\nfeld = \"x\"\n", "p.toml").unwrap_err();
        assert!(e.to_string().contains("feld"), "{e}");
    }

    #[test]
    fn heldout_choice_is_deterministic_and_near_the_fraction() {
        let n = 20_000u64;
        let held = (0..n)
            .filter(|&h| heldout(h.wrapping_mul(0x9E37_79B9_7F4A_7C15), 0, 0.1))
            .count() as f64;
        assert!((held / n as f64 - 0.1).abs() < 0.01, "{held}");
        assert!((0..100).all(|h| heldout(h, 3, 0.5) == heldout(h, 3, 0.5)));
        assert_ne!(
            (0..100).map(|h| heldout(h, 1, 0.5)).collect::<Vec<_>>(),
            (0..100).map(|h| heldout(h, 2, 0.5)).collect::<Vec<_>>(),
            "the seed changes the split"
        );
    }
}
