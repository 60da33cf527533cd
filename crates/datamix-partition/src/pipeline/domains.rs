//! What this file owns: the middle of the partitioning pipeline, between tokenizing and
//! packing. Every training document is assigned to its domain by the rules (or counted as
//! dropped), with the checks that the rules' metadata keys occur at all; and the n-gram
//! filter of the eval sets is built, which packing uses to drop contaminated documents.

use std::collections::BTreeMap;

use super::{DocRef, PartitionConfig, Tokenized, UnitOrder};
use crate::bloom::NgramBloom;
use crate::error::{PartitionError, Result};
use crate::manifest::DropReport;
use crate::reader::CorpusSource;
use crate::rules::{Assignment, lookup_path};

/// The training documents of each domain (every domain of `rules.include` present, maybe
/// empty), and the documents dropped so far (skipped records, missing field, unmatched,
/// excluded). Errors if the rules' field or the `order_by` key occurs in no document, or
/// no domain is left.
pub(super) fn assign_domains(
    cfg: &PartitionConfig,
    sources: &[CorpusSource],
    train: &[Tokenized],
) -> Result<(BTreeMap<String, Vec<DocRef>>, DropReport)> {
    let source_names = || {
        sources
            .iter()
            .map(|s| s.path.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let total_docs: usize = train.iter().map(|t| t.docs.len()).sum();

    // Domains.
    let mut dropped = DropReport {
        skipped_records: train.iter().map(|t| t.entry.skipped_records).sum(),
        ..Default::default()
    };
    let mut domains: BTreeMap<String, Vec<DocRef>> = BTreeMap::new();
    let mut has_field = 0u64;
    let mut has_order_key = 0u64;
    for (si, t) in train.iter().enumerate() {
        for (di, d) in t.docs.iter().enumerate() {
            if cfg.rules.lookup(&d.m).is_some() {
                has_field += 1;
            }
            if let UnitOrder::Key(k) = &cfg.order_by
                && lookup_path(&d.m, k).is_some()
            {
                has_order_key += 1;
            }
            match cfg.rules.assign(&d.m) {
                Assignment::Domain(name) => domains.entry(name).or_default().push(DocRef {
                    src: si as u32,
                    doc: di as u32,
                }),
                Assignment::MissingField => dropped.missing_field += 1,
                Assignment::Unmatched => dropped.unmatched += 1,
                Assignment::Excluded => dropped.excluded += 1,
            }
        }
    }
    if total_docs > 0 && has_field == 0 {
        return Err(PartitionError::UnknownMetadataKey {
            key: cfg.rules.field.clone(),
            sources: source_names(),
        });
    }
    if let UnitOrder::Key(k) = &cfg.order_by
        && total_docs > 0
        && has_order_key == 0
    {
        return Err(PartitionError::UnknownMetadataKey {
            key: k.clone(),
            sources: source_names(),
        });
    }
    for name in &cfg.rules.include {
        domains.entry(name.clone()).or_default();
    }
    if domains.is_empty() {
        return Err(PartitionError::EmptyDomain {
            domain: "<any>".into(),
            tokens: 0,
            seq_len: cfg.seq_len,
        });
    }
    Ok((domains, dropped))
}

/// The Bloom filter of every `ngram`-token window of the eval sets (`None` when they have
/// none), and the number of those windows.
pub(super) fn eval_filter(cfg: &PartitionConfig, eval: &[Tokenized]) -> (Option<NgramBloom>, u64) {
    let n = cfg.ngram;
    let windows = |t: &[u32]| t.len().saturating_sub(n - 1) as u64;
    let eval_windows: u64 = eval
        .iter()
        .flat_map(|t| t.docs.iter().map(|d| windows(t.doc_tokens(d))))
        .sum();
    let bloom = (eval_windows > 0).then(|| {
        let mut b = NgramBloom::new(eval_windows, cfg.bloom_fp_rate);
        for t in eval {
            for d in &t.docs {
                for w in t.doc_tokens(d).windows(n) {
                    b.insert(w);
                }
            }
        }
        b
    });
    (bloom, eval_windows)
}
