//! Study stage 1: tokenizer, packed corpus (domains, base units, held-out splits) and the
//! evaluation streams.

use std::sync::Arc;

use datamix_partition::{
    DEFAULT_EOT, PackedCorpus, PartitionConfig, Partitioner, ReaderOptions, Source, TextTokenizer,
    train_tokenizer,
};
use serde::Serialize;
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
}

/// Builds (or reuses) the tokenizer and the packed corpus under `out_dir` and cuts the
/// eval streams.
pub fn prepare(cfg: &StudyConfig) -> Result<Prepared> {
    let out = &cfg.out_dir;
    let sources = Source::discover(&cfg.data.corpus)?;
    if sources.is_empty() {
        return Err(Error::Invalid(format!(
            "data.corpus = {}: no readable corpus files found",
            cfg.data.corpus.display()
        )));
    }
    let mut eval_sources = Vec::new();
    for p in &cfg.data.eval_sets {
        eval_sources.extend(Source::discover(p)?);
    }
    let reader = ReaderOptions::default();
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let tokenizer = tokenizer(cfg, &sources, &reader)?;

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
    let corpus_dir = out.join("corpus");
    let reuse = datamix_partition::Manifest::load(&corpus_dir).is_ok_and(|m| {
        m.config == pcfg
            && m.tokenizer_hash == tokenizer.hash()
            && m.sources.len() == sources.len()
            && m.eval_sources.len() == eval_sources.len()
    });
    if reuse {
        tracing::info!(dir = %corpus_dir.display(), "reusing the packed corpus");
    } else {
        tracing::info!(dir = %corpus_dir.display(), "partitioning the corpus");
        Partitioner::new(pcfg, tokenizer.clone())?
            .with_cache_dir(out.join("cache"))
            .with_eval_sets(eval_sources.clone())
            .run(&sources, &corpus_dir)?;
    }
    let corpus = Arc::new(PackedCorpus::open(&corpus_dir)?);
    let manifest_path = corpus_dir.join("manifest.json");
    let bytes = std::fs::read(&manifest_path).map_err(|e| Error::io(&manifest_path, e))?;
    let corpus_id = hex::encode(Sha256::digest(&bytes));
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

    let mut eval = Vec::new();
    for d in &domains {
        let mut tokens = Vec::new();
        for seq in corpus.heldout(d).into_iter().flatten() {
            if tokens.len() >= cfg.data.eval_tokens {
                break;
            }
            seq.extend_into(&mut tokens);
        }
        tokens.truncate(cfg.data.eval_tokens);
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
        for s in Source::discover(p)? {
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
    })
}

/// A file's name up to its first dot (`sotu.jsonl.gz` -> `sotu`).
fn stem(path: &std::path::Path) -> String {
    path.file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.split('.').next())
        .unwrap_or("eval")
        .to_string()
}

fn tokenizer(
    cfg: &StudyConfig,
    sources: &[Source],
    reader: &ReaderOptions,
) -> Result<TextTokenizer> {
    if let Some(path) = &cfg.data.tokenizer {
        return Ok(TextTokenizer::from_file(path, DEFAULT_EOT)?);
    }
    let path = cfg
        .out_dir
        .join(format!("tokenizer-bpe{}.json", cfg.data.vocab_size));
    if path.is_file() {
        tracing::info!(path = %path.display(), "reusing the trained tokenizer");
        return Ok(TextTokenizer::from_file(&path, DEFAULT_EOT)?);
    }
    tracing::info!(
        vocab = cfg.data.vocab_size,
        "training a byte-level BPE on the corpus"
    );
    let tok = train_tokenizer(sources, reader, cfg.data.vocab_size, DEFAULT_EOT, u64::MAX)?;
    tok.save(&path)?;
    Ok(tok)
}

/// Tokens of a source's documents joined by end-of-text, stopping after `cap` tokens.
fn tokenize_capped(
    source: &Source,
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
