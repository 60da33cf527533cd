//! Study stage 1: tokenizer, packed corpus (domains, base units, held-out splits) and the
//! evaluation streams.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use datamix_partition::{
    CorpusSource, DEFAULT_EOT, Mixture, PackedCorpus, PartitionConfig, Partitioner, ReaderOptions,
    TextTokenizer, train_tokenizer,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::config::StudyConfig;
use crate::error::{Error, Result};

/// An evaluation stream: one eval domain's tokens.
#[derive(Debug, Clone, Serialize)]
pub struct EvalStream {
    /// Eval domain name (a training domain's held-out set, or an out-of-domain set).
    pub name: String,
    /// Whether it is a training domain's held-out split.
    pub in_domain: bool,
    /// Whether it is an end-task set (scored on its answer tokens only).
    pub task: bool,
    /// The tokens (documents joined by the end-of-text token).
    #[serde(skip)]
    pub tokens: Vec<u32>,
    /// Which targets count (`scored[t - 1]` for target `t`); `None` = all of them.
    #[serde(skip)]
    pub scored: Option<Vec<bool>>,
}

/// What the training stages need from the data.
#[derive(Debug)]
pub struct Prepared {
    /// The tokenized, partitioned corpus.
    pub corpus: Arc<PackedCorpus>,
    /// SHA-256 of the manifest: identifies the data in pool keys.
    pub corpus_id: String,
    /// Training domains, in manifest (name) order: the axes of every mixture.
    pub domains: Vec<String>,
    /// Eval streams: in-domain held-out sets first, then out-of-domain sets.
    pub eval: Vec<EvalStream>,
    /// `data.seed_corpus`, packed (`None`: the seed trains on the training domains).
    pub seed_corpus: Option<SeedCorpus>,
}

impl Prepared {
    /// The corpus a model trains on and its id (in the model's pool key): `data.seed_corpus`
    /// for the seed model when the study has one, the training corpus otherwise.
    pub fn corpus_for(&self, seed_model: bool) -> (&Arc<PackedCorpus>, &str) {
        match (&self.seed_corpus, seed_model) {
            (Some(s), true) => (&s.corpus, &s.corpus_id),
            _ => (&self.corpus, &self.corpus_id),
        }
    }

    /// The seed model's data: the uniform mixture over its corpus' domains.
    pub fn seed_mixture(&self) -> Result<Mixture> {
        let (corpus, _) = self.corpus_for(true);
        let k = corpus.manifest().domains.len();
        Ok(Mixture::from_weights(corpus, &vec![1.0; k])?)
    }
}

/// The seed model's own corpus (`data.seed_corpus`).
#[derive(Debug)]
pub struct SeedCorpus {
    /// Tokenized with the study's tokenizer; nothing held out.
    pub corpus: Arc<PackedCorpus>,
    /// SHA-256 of its manifest (in the seed's pool key).
    pub corpus_id: String,
}

/// Builds (or reuses) the tokenizer and the packed corpus under `out_dir` and cuts the
/// eval streams.
///
/// Both derived artefacts are keyed by what they derive from: every source's path and
/// content hash (xxh3-128 of its bytes, [`CorpusSource::content_hash`], computed once here and
/// handed to the partitioner), the settings and the tokenizer. The packed corpus is reused
/// only when its manifest records the same partition config, tokenizer hash and the same
/// training and eval sources (paths, in order, with the same content hashes); the trained
/// tokenizer only when its key file ([`TOKENIZER_KEY_SUFFIX`]) records the same sources,
/// vocabulary and training parameters, and the tokenizer's own hash. The log says why
/// each was reused or rebuilt.
pub fn prepare(cfg: &StudyConfig) -> Result<Prepared> {
    let out = &cfg.out_dir;
    let sources = CorpusSource::discover(&cfg.data.corpus)?;
    if sources.is_empty() {
        return Err(Error::Invalid(format!(
            "data.corpus = {}: no readable corpus files found",
            cfg.data.corpus.display()
        )));
    }
    let mut eval_sources = Vec::new();
    for p in &cfg.data.eval_sets {
        eval_sources.extend(CorpusSource::discover(p)?);
    }
    let train_keys = source_keys(&sources)?;
    let eval_keys = source_keys(&eval_sources)?;
    let reader = ReaderOptions::default();
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    // One process at a time builds the tokenizer and the packed corpus (workers started
    // together on a fresh `out_dir`); the others then find them ready and reuse them.
    let _prepare = crate::lock::FileLock::exclusive(&out.join(".prepare.lock"))?;
    let tokenizer = tokenizer(cfg, &sources, &train_keys, &reader)?;
    if cfg.data.tokenizer.is_some() {
        // Checked with data.vocab_size before; now that the real vocabulary is known:
        super::checks::memory(cfg, tokenizer.vocab_size()).map_err(Error::Invalid)?;
    }

    let pcfg = PartitionConfig {
        seq_len: cfg.data.seq_len,
        unit_tokens: cfg.data.unit_tokens,
        heldout_fraction: cfg.data.heldout_fraction,
        heldout_seed: cfg.seed,
        budget_tokens: Some(cfg.continued.tokens(cfg.data.seq_len)),
        reader: reader.clone(),
        rules: cfg.data.rules.clone(),
        progress: true,
        ..PartitionConfig::default()
    };
    let (corpus, corpus_id) = pack(
        out,
        "corpus",
        pcfg.clone(),
        &tokenizer,
        (&sources, &train_keys),
        (&eval_sources, &eval_keys),
    )?;
    let m = corpus.manifest();
    tracing::info!("\n{}", m.report());
    let domains: Vec<String> = m.domains.iter().map(|d| d.name.clone()).collect();
    if domains.len() < 2 {
        return Err(Error::Invalid(format!(
            "data.corpus = {}: {} domain(s) found, a mixture needs at least 2",
            cfg.data.corpus.display(),
            domains.len()
        )));
    }
    for s in m.sources.iter().chain(&m.eval_sources) {
        if s.documents == 0 {
            tracing::warn!(source = %s.path, "holds no documents: it contributes nothing");
        }
    }
    for d in &m.domains {
        if d.tokens < cfg.data.unit_tokens {
            tracing::warn!(
                domain = %d.name,
                "{} training tokens, fewer than data.unit_tokens = {}: its only base unit is \
                 smaller than the others (lower data.unit_tokens for equal units)",
                d.tokens,
                cfg.data.unit_tokens
            );
        }
    }
    let domain_tokens: Vec<u64> = m.domains.iter().map(|d| d.tokens).collect();
    super::checks::search_bounds(cfg, &domains, &domain_tokens).map_err(Error::Invalid)?;
    let seed_corpus = match &cfg.data.seed_corpus {
        None => None,
        Some(p) => Some(seed_corpus(
            cfg,
            p,
            pcfg,
            &tokenizer,
            &train_keys,
            &eval_keys,
        )?),
    };

    let mut eval = Vec::new();
    for d in &domains {
        let tokens = heldout_tokens(&corpus, d, cfg.data.eval_tokens);
        if tokens.len() < 2 {
            tracing::warn!(
                domain = %d,
                "no held-out sequence (too few documents for data.heldout_fraction): not an eval domain"
            );
            continue;
        }
        eval.push(EvalStream {
            name: d.clone(),
            in_domain: true,
            task: false,
            tokens,
            scored: None,
        });
    }
    for s in &eval_sources {
        let name = stem(&s.path);
        let tokens = tokenize_capped(s, &reader, &tokenizer, cfg.data.eval_tokens)?;
        if tokens.len() < 2 {
            return Err(Error::Invalid(format!(
                "data.eval_sets: {} holds no text",
                s.path.display()
            )));
        }
        if eval.iter().any(|e| e.name == name) {
            return Err(Error::Invalid(format!(
                "data.eval_sets: eval domain `{name}` ({}) clashes with another eval domain",
                s.path.display()
            )));
        }
        eval.push(EvalStream {
            name,
            in_domain: false,
            task: false,
            tokens,
            scored: None,
        });
    }
    for p in &cfg.data.task_sets {
        for s in CorpusSource::discover(p)? {
            let name = format!("task_{}", stem(&s.path));
            let t =
                super::tasks::load(&s.path, &tokenizer, cfg.data.seq_len, cfg.data.task_tokens)?;
            tracing::info!(
                task = %name,
                items = t.items,
                answer_tokens = t.scored.iter().filter(|x| **x).count(),
                truncated = t.truncated,
                "end-task set"
            );
            if eval.iter().any(|e| e.name == name) {
                return Err(Error::Invalid(format!(
                    "data.task_sets: eval domain `{name}` ({}) clashes with another eval domain",
                    s.path.display()
                )));
            }
            eval.push(EvalStream {
                name,
                in_domain: false,
                task: true,
                tokens: t.tokens,
                scored: Some(t.scored),
            });
        }
    }
    if eval.is_empty() {
        return Err(Error::Invalid(
            "no eval domain: raise data.heldout_fraction or add data.eval_sets".into(),
        ));
    }
    Ok(Prepared {
        corpus,
        corpus_id,
        domains,
        eval,
        seed_corpus,
    })
}

/// Partitions `sources` (with `eval` as out-of-domain sets) into `out/<name>`, or reuses
/// what is there when it was packed from the same sources, settings and tokenizer; returns
/// the corpus and the SHA-256 of its manifest.
fn pack(
    out: &Path,
    name: &str,
    pcfg: PartitionConfig,
    tokenizer: &TextTokenizer,
    (sources, keys): (&[CorpusSource], &[SourceKey]),
    (eval, eval_keys): (&[CorpusSource], &[SourceKey]),
) -> Result<(Arc<PackedCorpus>, String)> {
    let dir = out.join(name);
    match corpus_stale(&dir, &pcfg, tokenizer.hash(), keys, eval_keys) {
        None => tracing::info!(
            dir = %dir.display(),
            "reusing the packed {name}: same partition settings, tokenizer and {} source(s) \
             (paths and content hashes)",
            keys.len() + eval_keys.len()
        ),
        Some(why) => {
            tracing::info!(dir = %dir.display(), "partitioning the {name}: {why}");
            let hashes = sources
                .iter()
                .zip(keys)
                .chain(eval.iter().zip(eval_keys))
                .map(|(s, k)| (s.path.clone(), k.content_hash.clone()))
                .collect();
            Partitioner::new(pcfg, tokenizer.clone())?
                .with_cache_dir(out.join("cache"))
                .with_eval_sets(eval.to_vec())
                .with_content_hashes(hashes)
                .run(sources, &dir)?;
        }
    }
    let corpus = Arc::new(PackedCorpus::open(&dir)?);
    let manifest_path = dir.join("manifest.json");
    let bytes = std::fs::read(&manifest_path).map_err(|e| Error::io(&manifest_path, e))?;
    Ok((corpus, hex::encode(Sha256::digest(&bytes))))
}

/// `data.seed_corpus`, tokenized with the study's tokenizer and packed under
/// `out_dir/seed_corpus` with nothing held out. A source with the same content as an eval
/// set is refused (the seed would have trained on it); one shared with the training
/// corpus is allowed (a seed that has seen the training domains) and logged.
fn seed_corpus(
    cfg: &StudyConfig,
    path: &Path,
    pcfg: PartitionConfig,
    tokenizer: &TextTokenizer,
    train_keys: &[SourceKey],
    eval_keys: &[SourceKey],
) -> Result<SeedCorpus> {
    let sources = CorpusSource::discover(path)?;
    if sources.is_empty() {
        return Err(Error::Invalid(format!(
            "data.seed_corpus = {}: no readable corpus files found",
            path.display()
        )));
    }
    let keys = source_keys(&sources)?;
    for k in &keys {
        if let Some(e) = eval_keys.iter().find(|e| e.content_hash == k.content_hash) {
            return Err(Error::Invalid(format!(
                "data.seed_corpus: {} has the same content as eval set {}: the seed model \
                 would be trained on an eval set (contamination)",
                k.path, e.path
            )));
        }
        if let Some(t) = train_keys.iter().find(|t| t.content_hash == k.content_hash) {
            tracing::warn!(
                seed_source = %k.path,
                train_source = %t.path,
                "data.seed_corpus shares this file's content with the training corpus"
            );
        }
    }
    let pcfg = PartitionConfig {
        heldout_fraction: 0.0,
        budget_tokens: Some(cfg.seed_model.tokens(cfg.data.seq_len)),
        ..pcfg
    };
    let (corpus, corpus_id) = pack(
        &cfg.out_dir,
        "seed_corpus",
        pcfg,
        tokenizer,
        (&sources, &keys),
        (&[], &[]),
    )?;
    let m = corpus.manifest();
    let tokens: u64 = m.domains.iter().map(|d| d.tokens).sum();
    if tokens < cfg.data.seq_len as u64 + 1 {
        return Err(Error::Invalid(format!(
            "data.seed_corpus = {}: {tokens} tokens, fewer than one training sequence \
             (data.seq_len + 1 = {})",
            path.display(),
            cfg.data.seq_len + 1
        )));
    }
    tracing::info!(
        dir = %path.display(),
        domains = m.domains.len(),
        tokens,
        "seed corpus: the seed model trains on the uniform mixture of its domains"
    );
    Ok(SeedCorpus { corpus, corpus_id })
}

/// Suffix of the file beside a trained tokenizer recording what it was trained from.
pub const TOKENIZER_KEY_SUFFIX: &str = ".key.json";

/// A source as a derived artefact is keyed by it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceKey {
    /// The path as discovered (as the manifest records it).
    pub path: String,
    /// xxh3-128 of its bytes ([`CorpusSource::content_hash`]).
    pub content_hash: String,
}

/// Hashes every source once.
fn source_keys(sources: &[CorpusSource]) -> Result<Vec<SourceKey>> {
    sources
        .iter()
        .map(|s| {
            Ok(SourceKey {
                path: s.path.display().to_string(),
                content_hash: s.content_hash()?,
            })
        })
        .collect()
}

/// What a trained tokenizer derives from (the key file beside it), plus its own hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct TokenizerKey {
    format: String,
    vocab_size: usize,
    eot: String,
    max_bytes: u64,
    reader: ReaderOptions,
    sources: Vec<SourceKey>,
    /// [`TextTokenizer::hash`] of the file it describes (guards against a tokenizer
    /// replaced without its key, e.g. by a run killed between the two writes).
    tokenizer_hash: String,
}

const TOKENIZER_KEY_FORMAT: &str = "datamix-tokenizer-key-v1";

/// Why `old` sources differ from `new` ones (`what` names them in the message); `None`
/// when they are the same paths, in the same order, with the same content hashes.
fn sources_changed(what: &str, old: &[SourceKey], new: &[SourceKey]) -> Option<String> {
    let mut why = Vec::new();
    for n in new {
        match old.iter().find(|o| o.path == n.path) {
            None => why.push(format!("{} added", n.path)),
            Some(o) if o.content_hash != n.content_hash => why.push(format!("{} changed", n.path)),
            Some(_) => {}
        }
    }
    for o in old {
        if !new.iter().any(|n| n.path == o.path) {
            why.push(format!("{} removed", o.path));
        }
    }
    if old.len() != new.len() {
        why.insert(
            0,
            format!("number of {what} changed ({} -> {})", old.len(), new.len()),
        );
    }
    if why.is_empty() && old != new {
        why.push(format!("order of {what} changed"));
    }
    if why.is_empty() {
        return None;
    }
    let more = why.len().saturating_sub(4);
    why.truncate(4);
    if more > 0 {
        why.push(format!("{more} more"));
    }
    Some(why.join(", "))
}

/// Why the packed corpus in `dir` cannot be reused (`None`: it can).
fn corpus_stale(
    dir: &Path,
    pcfg: &PartitionConfig,
    tokenizer_hash: &str,
    train: &[SourceKey],
    eval: &[SourceKey],
) -> Option<String> {
    if !dir
        .join(datamix_partition::manifest::MANIFEST_FILE)
        .exists()
    {
        return Some("no packed corpus yet".into());
    }
    let m = match datamix_partition::Manifest::load(dir) {
        Ok(m) => m,
        Err(e) => return Some(format!("its manifest cannot be read ({e})")),
    };
    if m.config != *pcfg {
        let (old, new) = (
            serde_json::to_value(&m.config).unwrap_or_default(),
            serde_json::to_value(pcfg).unwrap_or_default(),
        );
        let fields: Vec<&str> = match (old.as_object(), new.as_object()) {
            (Some(o), Some(n)) => n
                .iter()
                .filter(|(k, v)| o.get(*k) != Some(*v))
                .map(|(k, _)| k.as_str())
                .collect(),
            _ => Vec::new(),
        };
        return Some(format!(
            "partition settings changed ({})",
            if fields.is_empty() {
                "format".to_string()
            } else {
                fields.join(", ")
            }
        ));
    }
    let keys = |entries: &[datamix_partition::SourceEntry]| -> Vec<SourceKey> {
        entries
            .iter()
            .map(|e| SourceKey {
                path: e.path.clone(),
                content_hash: e.content_hash.clone(),
            })
            .collect()
    };
    sources_changed("sources", &keys(&m.sources), train)
        .or_else(|| sources_changed("eval sets", &keys(&m.eval_sources), eval))
        .or_else(|| (m.tokenizer_hash != tokenizer_hash).then(|| "the tokenizer changed".into()))
}

/// A file's name up to its first dot (`sotu.jsonl.gz` -> `sotu`).
/// The first `cap` tokens of a domain's held-out sequences (none for an unknown domain).
pub(crate) fn heldout_tokens(corpus: &PackedCorpus, domain: &str, cap: usize) -> Vec<u32> {
    let mut tokens = Vec::new();
    for seq in corpus.heldout(domain).into_iter().flatten() {
        if tokens.len() >= cap {
            break;
        }
        seq.extend_into(&mut tokens);
    }
    tokens.truncate(cap);
    tokens
}

/// The log-probabilities that count: all of them, or those whose target `mask` keeps (an
/// end-task set's answer tokens).
pub(crate) fn scored(logprobs: Vec<f32>, mask: Option<&[bool]>) -> Vec<f32> {
    match mask {
        None => logprobs,
        Some(m) => logprobs
            .into_iter()
            .zip(m)
            .filter(|(_, keep)| **keep)
            .map(|(l, _)| l)
            .collect(),
    }
}

pub(crate) fn stem(path: &std::path::Path) -> String {
    path.file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.split('.').next())
        .unwrap_or("eval")
        .to_string()
}

fn tokenizer(
    cfg: &StudyConfig,
    sources: &[CorpusSource],
    keys: &[SourceKey],
    reader: &ReaderOptions,
) -> Result<TextTokenizer> {
    if let Some(path) = &cfg.data.tokenizer {
        return Ok(TextTokenizer::from_file(path, DEFAULT_EOT)?);
    }
    let path = cfg
        .out_dir
        .join(format!("tokenizer-bpe{}.json", cfg.data.vocab_size));
    let mut key_name = path.as_os_str().to_os_string();
    key_name.push(TOKENIZER_KEY_SUFFIX);
    let key_path = PathBuf::from(key_name);
    let mut want = TokenizerKey {
        format: TOKENIZER_KEY_FORMAT.into(),
        vocab_size: cfg.data.vocab_size,
        eot: DEFAULT_EOT.into(),
        max_bytes: u64::MAX,
        reader: reader.clone(),
        sources: keys.to_vec(),
        tokenizer_hash: String::new(),
    };
    let why = if !path.is_file() {
        "no trained tokenizer yet".to_string()
    } else {
        let recorded = std::fs::read(&key_path)
            .ok()
            .and_then(|b| serde_json::from_slice::<TokenizerKey>(&b).ok());
        match recorded {
            None => format!(
                "{} records nothing usable about its training data",
                key_path.display()
            ),
            Some(old) => {
                let tok = TextTokenizer::from_file(&path, DEFAULT_EOT)?;
                let why = if old.tokenizer_hash != tok.hash() {
                    Some("the tokenizer file does not match its key file".to_string())
                } else if old.format != want.format
                    || old.vocab_size != want.vocab_size
                    || old.eot != want.eot
                    || old.max_bytes != want.max_bytes
                    || old.reader != want.reader
                {
                    Some("training parameters changed".to_string())
                } else {
                    sources_changed("sources", &old.sources, &want.sources)
                };
                match why {
                    None => {
                        tracing::info!(
                            path = %path.display(),
                            "reusing the trained tokenizer: same training parameters and {} \
                             source(s) (paths and content hashes)",
                            keys.len()
                        );
                        return Ok(tok);
                    }
                    Some(w) => w,
                }
            }
        }
    };
    tracing::info!(
        vocab = cfg.data.vocab_size,
        "training a byte-level BPE on the corpus: {why}"
    );
    let tok = train_tokenizer(sources, reader, cfg.data.vocab_size, DEFAULT_EOT, u64::MAX)?;
    tok.save(&path)?;
    want.tokenizer_hash = tok.hash().to_string();
    let json = serde_json::to_vec_pretty(&want).expect("tokenizer key serialises");
    datamix_io::write_file(&key_path, &json)?;
    Ok(tok)
}

/// Tokens of a source's documents joined by end-of-text, stopping after `cap` tokens.
pub(crate) fn tokenize_capped(
    source: &CorpusSource,
    reader: &ReaderOptions,
    tok: &TextTokenizer,
    cap: usize,
) -> Result<Vec<u32>> {
    let mut tokens = Vec::new();
    for doc in source.open(reader)? {
        if tokens.len() >= cap {
            break;
        }
        tokens.extend(tok.encode(&doc?.text)?);
        tokens.push(tok.eot_id());
    }
    tokens.truncate(cap);
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(v: &[(&str, &str)]) -> Vec<SourceKey> {
        v.iter()
            .map(|(p, h)| SourceKey {
                path: p.to_string(),
                content_hash: h.to_string(),
            })
            .collect()
    }

    #[test]
    fn source_changes_are_explained() {
        let a = keys(&[("corpus/books.jsonl", "1"), ("corpus/code.jsonl", "2")]);
        assert_eq!(sources_changed("sources", &a, &a), None);
        let edited = keys(&[("corpus/books.jsonl", "9"), ("corpus/code.jsonl", "2")]);
        assert_eq!(
            sources_changed("sources", &a, &edited).unwrap(),
            "corpus/books.jsonl changed"
        );
        let more = keys(&[
            ("corpus/books.jsonl", "1"),
            ("corpus/code.jsonl", "2"),
            ("corpus/web.jsonl", "3"),
        ]);
        assert_eq!(
            sources_changed("sources", &a, &more).unwrap(),
            "number of sources changed (2 -> 3), corpus/web.jsonl added"
        );
        let moved = keys(&[("other/books.jsonl", "1"), ("other/code.jsonl", "2")]);
        let why = sources_changed("sources", &a, &moved).unwrap();
        assert!(
            why.contains("other/books.jsonl added") && why.contains("corpus/books.jsonl removed"),
            "{why}"
        );
        let swapped = keys(&[("corpus/code.jsonl", "2"), ("corpus/books.jsonl", "1")]);
        assert_eq!(
            sources_changed("sources", &a, &swapped).unwrap(),
            "order of sources changed"
        );
        let many: Vec<SourceKey> = (0..10)
            .map(|i| SourceKey {
                path: format!("x{i}"),
                content_hash: "0".into(),
            })
            .collect();
        let why = sources_changed("sources", &[], &many).unwrap();
        assert!(why.ends_with("7 more"), "{why}");
    }
}
