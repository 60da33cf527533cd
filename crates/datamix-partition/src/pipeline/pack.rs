//! What this file owns: packing one domain into its shards. Its documents are split into
//! training and held-out ones, contaminated training documents dropped, the rest ordered
//! (`order_by`), written as fixed-length sequences, and cut into equal base units; the
//! result is the domain's manifest entry and units.

use std::path::Path;

use rayon::prelude::*;

use super::{DocRef, PartitionConfig, SortKey, Tokenized, UnitOrder};
use crate::bloom::NgramBloom;
use crate::error::{PartitionError, Result};
use crate::manifest::{DomainEntry, UnitEntry};
use crate::reader::CorpusSource;
use crate::rules::lookup_path;
use crate::shard::{ShardWriter, TokenDtype};

/// What every domain is packed with.
#[derive(Clone, Copy)]
pub(super) struct Packing<'a> {
    pub(super) cfg: &'a PartitionConfig,
    /// The tokenized training sources ([`DocRef`]s point into them).
    pub(super) train: &'a [Tokenized],
    /// The eval sets' n-gram filter, if they have any windows.
    pub(super) bloom: Option<&'a NgramBloom>,
    /// The eval sets, named in errors.
    pub(super) eval_sources: &'a [CorpusSource],
    /// Where the shards are written.
    pub(super) staging: &'a Path,
    pub(super) dtype: TokenDtype,
    pub(super) eot: u32,
    pub(super) seqs_per_unit: u64,
}

/// One packed domain.
pub(super) struct PackedDomain {
    pub(super) entry: DomainEntry,
    pub(super) units: Vec<UnitEntry>,
    /// Training documents dropped as contaminated.
    pub(super) contaminated: u64,
}

impl Packing<'_> {
    /// Packs domain number `di`, called `name`, from its documents `refs`.
    pub(super) fn domain(&self, di: usize, name: &str, refs: &[DocRef]) -> Result<PackedDomain> {
        let Packing {
            cfg,
            train,
            bloom,
            eval_sources,
            staging,
            dtype,
            eot,
            seqs_per_unit,
        } = *self;
        let n = cfg.ngram;
        let mut units = Vec::new();
        let doc = |r: &DocRef| &train[r.src as usize].docs[r.doc as usize];
        let (held, mut training): (Vec<DocRef>, Vec<DocRef>) =
            refs.iter().partition(|r| cfg.is_heldout(doc(r).h));
        let before = training.len();
        if let Some(b) = bloom {
            training = training
                .into_par_iter()
                .filter(|r| {
                    let t = &train[r.src as usize];
                    !t.doc_tokens(doc(r)).windows(n).any(|w| b.contains(w))
                })
                .collect();
        }
        let contaminated = (before - training.len()) as u64;
        match &cfg.order_by {
            UnitOrder::Hash => training.sort_by_key(|r| (doc(r).h, r.src, r.doc)),
            UnitOrder::Key(k) => {
                let mut keyed: Vec<(SortKey, DocRef)> = training
                    .iter()
                    .map(|r| (SortKey::of(lookup_path(&doc(r).m, k)), *r))
                    .collect();
                keyed.sort_by(|a, b| a.0.cmp(&b.0).then(doc(&a.1).h.cmp(&doc(&b.1).h)));
                training = keyed.into_iter().map(|(_, r)| r).collect();
            }
        }
        let mut held = held;
        held.sort_by_key(|r| (doc(r).h, r.src, r.doc));

        let slug: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let train_file = format!("d{di:03}-{slug}.train.bin");
        let heldout_file = format!("d{di:03}-{slug}.heldout.bin");
        let pack = |refs: &[DocRef], file: &str| -> Result<(u64, u64)> {
            let mut w = ShardWriter::create(&staging.join(file), dtype, cfg.seq_len)?;
            let mut tokens = 0u64;
            for r in refs {
                let toks = train[r.src as usize].doc_tokens(doc(r));
                w.push(toks)?;
                w.push(&[eot])?;
                tokens += toks.len() as u64 + 1;
            }
            let (seqs, _) = w.finish()?;
            Ok((tokens, seqs))
        };
        let (tokens, train_sequences) = pack(&training, &train_file)?;
        let (heldout_tokens, heldout_sequences) = pack(&held, &heldout_file)?;
        if heldout_sequences == 0 && !held.is_empty() {
            tracing::warn!(
                "domain `{name}`: {} held-out documents ({heldout_tokens} tokens) fill no {}-token sequence",
                held.len(),
                cfg.seq_len
            );
        }
        if train_sequences == 0 && contaminated > 0 {
            return Err(PartitionError::Contaminated {
                domain: name.to_string(),
                eval_sets: eval_sources
                    .iter()
                    .map(|s| format!("`{}`", s.path.display()))
                    .collect::<Vec<_>>()
                    .join(", "),
                contaminated,
                documents: before as u64,
                ngram: n,
                seq_len: cfg.seq_len,
            });
        }
        if train_sequences == 0 {
            return Err(PartitionError::EmptyDomain {
                domain: name.to_string(),
                tokens,
                seq_len: cfg.seq_len,
            });
        }
        let (n_units, per_unit) = if train_sequences >= seqs_per_unit {
            (train_sequences / seqs_per_unit, seqs_per_unit)
        } else {
            (1, train_sequences)
        };
        for u in 0..n_units {
            let utoks = per_unit * cfg.seq_len as u64;
            units.push(UnitEntry {
                id: format!("{name}/{u}"),
                domain: name.to_string(),
                index: u as u32,
                first_sequence: u * per_unit,
                sequences: per_unit,
                tokens: utoks,
                epochs_for_budget: cfg.budget_tokens.map(|b| b as f64 / utoks as f64),
            });
        }
        let train_tokens_packed = train_sequences * cfg.seq_len as u64;
        let entry = DomainEntry {
            name: name.to_string(),
            documents: training.len() as u64,
            tokens,
            train_file,
            train_sequences,
            tail_sequences: train_sequences - n_units * per_unit,
            heldout_documents: held.len() as u64,
            heldout_tokens,
            heldout_file,
            heldout_sequences,
            contaminated_documents: contaminated,
            epochs_for_budget: cfg
                .budget_tokens
                .map(|b| b as f64 / train_tokens_packed as f64),
        };
        Ok(PackedDomain {
            entry,
            units,
            contaminated,
        })
    }
}
