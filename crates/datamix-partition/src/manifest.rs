//! The manifest of a packed corpus (`manifest.json`): domains, base units, token counts,
//! tokenizer and source hashes, and the configuration that produced it.

use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{PartitionError, Result};
use crate::pipeline::PartitionConfig;
use crate::reader::SourceFormat;
use crate::shard::TokenDtype;

/// File name of the manifest inside an output directory.
pub const MANIFEST_FILE: &str = "manifest.json";
/// File name of the tokenizer copy inside an output directory.
pub const TOKENIZER_FILE: &str = "tokenizer.json";
/// Version of the on-disk layout.
pub const FORMAT_VERSION: u32 = 1;

/// One input source as read.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SourceEntry {
    /// Path as given.
    pub path: String,
    /// Format it was read as.
    pub format: SourceFormat,
    /// xxh3-128 of its bytes.
    pub content_hash: String,
    /// Documents read.
    pub documents: u64,
    /// Malformed records skipped (policy `skip`).
    pub skipped_records: u64,
}

/// One domain: its shards and counts. Token counts include one end-of-text per document.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DomainEntry {
    /// Domain name.
    pub name: String,
    /// Training documents (after held-out split and decontamination).
    pub documents: u64,
    /// Training tokens before packing.
    pub tokens: u64,
    /// Training shard file (relative to the manifest).
    pub train_file: String,
    /// Packed training sequences.
    pub train_sequences: u64,
    /// Training sequences after the last full unit (in no unit; used by domain mixtures).
    pub tail_sequences: u64,
    /// Held-out documents.
    pub heldout_documents: u64,
    /// Held-out tokens before packing.
    pub heldout_tokens: u64,
    /// Held-out shard file.
    pub heldout_file: String,
    /// Packed held-out sequences.
    pub heldout_sequences: u64,
    /// Training documents dropped by decontamination.
    pub contaminated_documents: u64,
    /// Epochs over this domain's training sequences needed to reach `budget_tokens`.
    pub epochs_for_budget: Option<f64>,
}

/// One base unit: a contiguous run of a domain's training sequences.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UnitEntry {
    /// `"<domain>/<index>"`.
    pub id: String,
    /// Domain name.
    pub domain: String,
    /// Index within the domain.
    pub index: u32,
    /// First sequence in the domain's training shard.
    pub first_sequence: u64,
    /// Number of sequences.
    pub sequences: u64,
    /// Tokens (`sequences * seq_len`).
    pub tokens: u64,
    /// Epochs needed to reach `budget_tokens` (upsampling factor when > 1).
    pub epochs_for_budget: Option<f64>,
}

/// Documents that did not make it into any domain.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DropReport {
    /// Malformed records skipped by the readers.
    pub skipped_records: u64,
    /// Documents without the rule's field (and no `missing` bucket).
    pub missing_field: u64,
    /// Documents whose value matched no range / priority entry (and no `other` bucket).
    pub unmatched: u64,
    /// Documents in domains not listed in `include`.
    pub excluded: u64,
    /// Documents removed by decontamination (all domains).
    pub contaminated: u64,
    /// Windows (n-grams) inserted into the decontamination Bloom filter.
    pub eval_ngrams: u64,
}

/// Everything needed to read a packed corpus back.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Layout version.
    pub format_version: u32,
    /// Tokens per packed sequence.
    pub seq_len: usize,
    /// Shard element type.
    pub dtype: TokenDtype,
    /// Tokenizer vocabulary size.
    pub vocab_size: usize,
    /// End-of-text id joining documents.
    pub eot_id: u32,
    /// SHA-256 of the tokenizer JSON (a copy is stored as `tokenizer.json`).
    pub tokenizer_hash: String,
    /// Target size of a base unit in tokens (a multiple of `seq_len`).
    pub unit_tokens: u64,
    /// The training budget the `epochs_for_budget` figures refer to.
    pub budget_tokens: Option<u64>,
    /// Inputs.
    pub sources: Vec<SourceEntry>,
    /// Evaluation sets used for decontamination.
    pub eval_sources: Vec<SourceEntry>,
    /// Domains, sorted by name.
    pub domains: Vec<DomainEntry>,
    /// Base units, by domain then index.
    pub units: Vec<UnitEntry>,
    /// What was dropped and why.
    pub dropped: DropReport,
    /// The configuration used.
    pub config: PartitionConfig,
}

impl Manifest {
    /// Reads `dir/manifest.json`.
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join(MANIFEST_FILE);
        let bytes = std::fs::read(&path).map_err(|e| PartitionError::io(&path, e))?;
        let m: Self = serde_json::from_slice(&bytes).map_err(|e| PartitionError::BadShard {
            path: path.clone(),
            message: format!("invalid manifest: {e}"),
        })?;
        if m.format_version != FORMAT_VERSION {
            return Err(PartitionError::BadShard {
                path,
                message: format!(
                    "format version {} (this library reads {FORMAT_VERSION})",
                    m.format_version
                ),
            });
        }
        Ok(m)
    }

    /// Index of a domain by name.
    pub fn domain_index(&self, name: &str) -> Option<usize> {
        self.domains.iter().position(|d| d.name == name)
    }

    /// A plain-text table of documents and tokens per domain, and what was dropped.
    pub fn report(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{:<24} {:>9} {:>12} {:>6} {:>9} {:>10} {:>8}",
            "domain", "docs", "tokens", "units", "heldout", "ho_tokens", "contam"
        );
        for d in &self.domains {
            let units = self.units.iter().filter(|u| u.domain == d.name).count();
            let _ = writeln!(
                s,
                "{:<24} {:>9} {:>12} {:>6} {:>9} {:>10} {:>8}",
                d.name,
                d.documents,
                d.tokens,
                units,
                d.heldout_documents,
                d.heldout_tokens,
                d.contaminated_documents
            );
        }
        let r = &self.dropped;
        let _ = writeln!(
            s,
            "dropped: {} malformed, {} without field, {} unmatched, {} excluded, {} contaminated",
            r.skipped_records, r.missing_field, r.unmatched, r.excluded, r.contaminated
        );
        s
    }
}
