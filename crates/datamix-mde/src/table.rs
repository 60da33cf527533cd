//! Expert probability tables: k experts x T tokens of log p(true next token) for one eval domain.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use rayon::prelude::*;
use safetensors::{Dtype, SafeTensors, tensor::TensorView};

use crate::error::{MdeError, Result};

/// File format version written into the safetensors header.
const FORMAT: &str = "datamix-mde-table/1";
/// Name of the single tensor in a table file.
const TENSOR: &str = "logp";

/// Who produced a table: everything except the numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableMeta {
    /// Name of the eval domain whose tokens the table covers.
    pub eval_domain: String,
    /// Hash of the tokenizer that produced the token stream.
    pub tokenizer_hash: String,
    /// Expert ids, one per row, in row order.
    pub expert_ids: Vec<String>,
    /// Checkpoint hash of each expert, in row order.
    pub checkpoint_hashes: Vec<String>,
    /// Number of scored tokens T.
    pub n_tokens: usize,
}

/// The log-probabilities each of k experts assigns to the true next token at each of T
/// positions of one eval domain, plus the per-token rescaled probabilities MDE needs.
///
/// Rows are experts (expert-major, `logp[i * T + t]`). On construction the table also
/// stores `shift[t] = max_i logp_i(t)` and `scaled_i(t) = exp(logp_i(t) - shift[t])`,
/// so a mixture costs k multiply-adds and one `ln` per token (fewer `ln` in the batched
/// SIMD kernels of [`ExpertTable::losses`]):
/// `ln Σ_i λ_i p_i(t) = shift[t] + ln Σ_i λ_i scaled_i(t)`.
#[derive(Debug, Clone)]
pub struct ExpertTable {
    meta: TableMeta,
    logp: Vec<f32>,
    scaled: Vec<f32>,
    shift: Vec<f32>,
    shift_sum: f64,
}

impl ExpertTable {
    /// Assemble a table from metadata and an expert-major `k x T` buffer, validating both.
    pub fn from_parts(meta: TableMeta, logp: Vec<f32>) -> Result<Self> {
        let domain = &meta.eval_domain;
        let k = meta.expert_ids.len();
        let t = meta.n_tokens;
        if k == 0 {
            return Err(MdeError::EmptyTable {
                domain: domain.clone(),
                reason: "no experts",
            });
        }
        if t == 0 {
            return Err(MdeError::EmptyTable {
                domain: domain.clone(),
                reason: "no tokens",
            });
        }
        if meta.checkpoint_hashes.len() != k {
            return Err(MdeError::InvalidParam {
                name: format!("checkpoint_hashes of eval domain '{domain}'"),
                reason: format!("{} hashes for {k} experts", meta.checkpoint_hashes.len()),
            });
        }
        let mut seen = HashSet::new();
        for id in &meta.expert_ids {
            if !seen.insert(id) {
                return Err(MdeError::DuplicateExpert {
                    domain: domain.clone(),
                    expert: id.clone(),
                });
            }
        }
        for (i, row) in logp.chunks(t).enumerate() {
            if row.len() != t {
                break;
            }
            check_row(domain, &meta.expert_ids[i], row)?;
        }
        if logp.len() != k * t {
            let got = logp.len().saturating_sub((k - 1) * t);
            return Err(MdeError::TokenCountMismatch {
                domain: domain.clone(),
                expert: meta.expert_ids[k - 1].clone(),
                expected: t,
                got,
            });
        }
        let mut shift = vec![f32::NEG_INFINITY; t];
        for row in logp.chunks_exact(t) {
            shift.iter_mut().zip(row).for_each(|(s, &x)| *s = s.max(x));
        }
        let mut scaled = vec![0.0f32; k * t];
        scaled
            .par_chunks_mut(t)
            .zip(logp.par_chunks(t))
            .for_each(|(out, row)| {
                for ((o, &x), &s) in out.iter_mut().zip(row).zip(&shift) {
                    *o = (x - s).exp();
                }
            });
        let shift_sum = shift.iter().map(|&s| s as f64).sum();
        Ok(Self {
            meta,
            logp,
            scaled,
            shift,
            shift_sum,
        })
    }

    /// Metadata (eval domain, tokenizer, experts, checkpoints, token count).
    pub fn meta(&self) -> &TableMeta {
        &self.meta
    }
    /// Number of experts k.
    pub fn n_experts(&self) -> usize {
        self.meta.expert_ids.len()
    }
    /// Number of tokens T.
    pub fn n_tokens(&self) -> usize {
        self.meta.n_tokens
    }
    /// Expert ids in row order.
    pub fn expert_ids(&self) -> &[String] {
        &self.meta.expert_ids
    }
    /// Eval domain name.
    pub fn eval_domain(&self) -> &str {
        &self.meta.eval_domain
    }
    /// Log-probabilities of expert `i` (row `i`), one per token.
    pub fn logp_row(&self, i: usize) -> &[f32] {
        let t = self.n_tokens();
        &self.logp[i * t..(i + 1) * t]
    }
    /// The whole expert-major `k x T` log-probability buffer.
    pub fn logp(&self) -> &[f32] {
        &self.logp
    }
    /// Per-token shift `max_i logp_i(t)`.
    pub(crate) fn shift(&self) -> &[f32] {
        &self.shift
    }
    /// `Σ_t shift[t]` in f64.
    pub(crate) fn shift_sum(&self) -> f64 {
        self.shift_sum
    }
    /// Expert-major `exp(logp - shift)`.
    pub(crate) fn scaled(&self) -> &[f32] {
        &self.scaled
    }

    /// Cross-entropy (nats per token) of expert `i` alone: `-(1/T) Σ_t logp_i(t)`.
    pub fn expert_cross_entropy(&self, i: usize) -> f64 {
        -self.logp_row(i).iter().map(|&x| x as f64).sum::<f64>() / self.n_tokens() as f64
    }

    /// A table with only the given experts, in the given order (to align tables of
    /// several eval domains). Errors with [`MdeError::MissingExpert`] for an unknown id.
    pub fn select<S: AsRef<str>>(&self, ids: &[S]) -> Result<Self> {
        let index: HashMap<&str, usize> = self
            .meta
            .expert_ids
            .iter()
            .enumerate()
            .map(|(i, id)| (id.as_str(), i))
            .collect();
        let mut meta = TableMeta {
            expert_ids: Vec::with_capacity(ids.len()),
            checkpoint_hashes: Vec::with_capacity(ids.len()),
            ..self.meta.clone()
        };
        let mut logp = Vec::with_capacity(ids.len() * self.n_tokens());
        for id in ids {
            let id = id.as_ref();
            let &i = index.get(id).ok_or_else(|| MdeError::MissingExpert {
                domain: self.meta.eval_domain.clone(),
                expert: id.to_string(),
                available: self.meta.expert_ids.clone(),
            })?;
            meta.expert_ids.push(id.to_string());
            meta.checkpoint_hashes
                .push(self.meta.checkpoint_hashes[i].clone());
            logp.extend_from_slice(self.logp_row(i));
        }
        Self::from_parts(meta, logp)
    }

    /// Append the experts of `other` (same eval domain, tokenizer and tokens, e.g. experts
    /// trained later) to this table.
    pub fn merge_experts(&self, other: &ExpertTable) -> Result<Self> {
        check_same_tokens(self, other)?;
        let mut meta = self.meta.clone();
        meta.expert_ids
            .extend(other.meta.expert_ids.iter().cloned());
        meta.checkpoint_hashes
            .extend(other.meta.checkpoint_hashes.iter().cloned());
        let mut logp = self.logp.clone();
        logp.extend_from_slice(&other.logp);
        Self::from_parts(meta, logp)
    }

    /// Write the table atomically as safetensors: one F32 tensor `logp` of shape `[k, T]`
    /// and the metadata as JSON strings in the header, written durably by
    /// [`datamix_io::write_file`] (mode `0644` under the umask; nothing is left behind on
    /// error).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let fmt = |e: &dyn std::fmt::Display| MdeError::Format {
            path: path.to_path_buf(),
            reason: e.to_string(),
        };
        let m = &self.meta;
        let info: HashMap<String, String> = [
            ("format", FORMAT.to_string()),
            ("eval_domain", m.eval_domain.clone()),
            ("tokenizer_hash", m.tokenizer_hash.clone()),
            ("n_tokens", m.n_tokens.to_string()),
            (
                "expert_ids",
                serde_json::to_string(&m.expert_ids).map_err(|e| fmt(&e))?,
            ),
            (
                "checkpoint_hashes",
                serde_json::to_string(&m.checkpoint_hashes).map_err(|e| fmt(&e))?,
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let view = TensorView::new(
            Dtype::F32,
            vec![self.n_experts(), self.n_tokens()],
            bytemuck::cast_slice(&self.logp),
        )
        .map_err(|e| fmt(&e))?;
        let bytes = safetensors::serialize([(TENSOR, view)], Some(info)).map_err(|e| fmt(&e))?;
        let bytes = datamix_io::sorted_header(bytes).map_err(|e| fmt(&e))?;
        Ok(datamix_io::write_file(path, &bytes)?)
    }

    /// Read a table written by [`ExpertTable::save`] (memory-mapped, validated).
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bad = |reason: String| MdeError::Format {
            path: path.to_path_buf(),
            reason,
        };
        let file = std::fs::File::open(path).map_err(|source| MdeError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let io = |source| MdeError::Io {
            path: path.to_path_buf(),
            source,
        };
        // Too short to hold a safetensors header: refused before mapping anything.
        let len = file.metadata().map_err(io)?.len();
        if len < 8 {
            return Err(bad(format!(
                "{len} bytes, shorter than a safetensors header"
            )));
        }
        // SAFETY: the map is read-only and lives only until the values are copied out
        // below; everything read through it is validated (header, offsets, shape, every
        // value). What validation cannot cover is the file shrinking underneath the map:
        // if another process truncates it while it is mapped, touching a page past the
        // new end raises SIGBUS and kills this process (it does not read garbage).
        // datamix never truncates a table in place: `save` writes a new file and renames
        // it over the old one, so a mapped old file stays whole; only a truncation from
        // outside (e.g. `truncate`, or a copy onto the same path) can cause it.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        if map.len() as u64 != len {
            return Err(bad(format!(
                "changed while being opened ({len} bytes, then {})",
                map.len()
            )));
        }
        let (_, header) = SafeTensors::read_metadata(&map).map_err(|e| bad(e.to_string()))?;
        let info = header
            .metadata()
            .clone()
            .ok_or_else(|| bad("no metadata in the safetensors header".into()))?;
        let field = |name: &str| {
            info.get(name)
                .cloned()
                .ok_or_else(|| bad(format!("header metadata lacks '{name}'")))
        };
        let format = field("format")?;
        if format != FORMAT {
            return Err(bad(format!("format '{format}', expected '{FORMAT}'")));
        }
        let list = |name: &str| -> Result<Vec<String>> {
            serde_json::from_str(&field(name)?).map_err(|e| {
                bad(format!(
                    "metadata '{name}' is not a JSON list of strings: {e}"
                ))
            })
        };
        let n_tokens: usize = field("n_tokens")?
            .parse()
            .map_err(|e| bad(format!("metadata 'n_tokens': {e}")))?;
        let meta = TableMeta {
            eval_domain: field("eval_domain")?,
            tokenizer_hash: field("tokenizer_hash")?,
            expert_ids: list("expert_ids")?,
            checkpoint_hashes: list("checkpoint_hashes")?,
            n_tokens,
        };
        let st = SafeTensors::deserialize(&map).map_err(|e| bad(e.to_string()))?;
        let view = st
            .tensor(TENSOR)
            .map_err(|e| bad(format!("tensor '{TENSOR}': {e}")))?;
        let want = [meta.expert_ids.len(), n_tokens];
        if view.dtype() != Dtype::F32 || view.shape() != want {
            return Err(bad(format!(
                "tensor '{TENSOR}' is {:?} {:?}, expected F32 {want:?}",
                view.dtype(),
                view.shape()
            )));
        }
        let logp: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        Self::from_parts(meta, logp).map_err(|e| match e {
            MdeError::Io { .. } | MdeError::Format { .. } => e,
            other => bad(other.to_string()),
        })
    }
}

/// Validate one expert row.
fn check_row(domain: &str, expert: &str, row: &[f32]) -> Result<()> {
    match row.iter().position(|x| !(x.is_finite() && *x <= 0.0)) {
        None => Ok(()),
        Some(position) => Err(MdeError::InvalidLogProb {
            domain: domain.to_string(),
            expert: expert.to_string(),
            position,
            value: row[position],
        }),
    }
}

/// Two tables describe the same tokens (domain, tokenizer, count).
fn check_same_tokens(a: &ExpertTable, b: &ExpertTable) -> Result<()> {
    if a.meta.eval_domain != b.meta.eval_domain {
        return Err(MdeError::DomainMismatch {
            expected: a.meta.eval_domain.clone(),
            got: b.meta.eval_domain.clone(),
        });
    }
    check_tokenizer(a, b)?;
    if a.n_tokens() != b.n_tokens() {
        return Err(MdeError::TokenCountMismatch {
            domain: b.meta.eval_domain.clone(),
            expert: b.meta.expert_ids[0].clone(),
            expected: a.n_tokens(),
            got: b.n_tokens(),
        });
    }
    Ok(())
}

/// Two tables come from the same tokenizer.
pub(crate) fn check_tokenizer(a: &ExpertTable, b: &ExpertTable) -> Result<()> {
    if a.meta.tokenizer_hash != b.meta.tokenizer_hash {
        return Err(MdeError::TokenizerMismatch {
            domain: b.meta.eval_domain.clone(),
            expected: a.meta.tokenizer_hash.clone(),
            got: b.meta.tokenizer_hash.clone(),
        });
    }
    Ok(())
}

/// Builds an [`ExpertTable`] one expert at a time, as the decoder evaluates each expert
/// over the eval domain's token stream.
#[derive(Debug, Clone)]
pub struct ExpertTableBuilder {
    meta: TableMeta,
    logp: Vec<f32>,
}

impl ExpertTableBuilder {
    /// Start a table for `eval_domain` tokenized by the tokenizer with hash `tokenizer_hash`.
    /// The token count is fixed by the first expert added.
    pub fn new(eval_domain: impl Into<String>, tokenizer_hash: impl Into<String>) -> Self {
        Self {
            meta: TableMeta {
                eval_domain: eval_domain.into(),
                tokenizer_hash: tokenizer_hash.into(),
                expert_ids: Vec::new(),
                checkpoint_hashes: Vec::new(),
                n_tokens: 0,
            },
            logp: Vec::new(),
        }
    }

    /// Add one expert's per-token log-probabilities of the true next token.
    /// Errors on a duplicate id, a token count different from the first expert's, or a
    /// log-probability that is not finite and <= 0.
    pub fn add_expert(
        &mut self,
        expert_id: impl Into<String>,
        checkpoint_hash: impl Into<String>,
        logp: &[f32],
    ) -> Result<&mut Self> {
        let id = expert_id.into();
        let domain = &self.meta.eval_domain;
        if self.meta.expert_ids.contains(&id) {
            return Err(MdeError::DuplicateExpert {
                domain: domain.clone(),
                expert: id,
            });
        }
        if self.meta.expert_ids.is_empty() {
            if logp.is_empty() {
                return Err(MdeError::EmptyTable {
                    domain: domain.clone(),
                    reason: "no tokens",
                });
            }
            self.meta.n_tokens = logp.len();
        } else if logp.len() != self.meta.n_tokens {
            return Err(MdeError::TokenCountMismatch {
                domain: domain.clone(),
                expert: id,
                expected: self.meta.n_tokens,
                got: logp.len(),
            });
        }
        check_row(domain, &id, logp)?;
        self.logp.extend_from_slice(logp);
        self.meta.expert_ids.push(id);
        self.meta.checkpoint_hashes.push(checkpoint_hash.into());
        Ok(self)
    }

    /// Finish the table (at least one expert).
    pub fn build(self) -> Result<ExpertTable> {
        ExpertTable::from_parts(self.meta, self.logp)
    }
}
