//! The mixture sampler: a deterministic, resumable stream of training sequences drawn from
//! domains (weights λ) or base units (a 0/1 inclusion vector) in given proportions.
//!
//! For a budget of `N = budget_tokens / seq_len` sequences, stream `i` with weight `w_i`
//! gets `n_i` sequences (largest-remainder rounding of `w_i N`). Step `t` serves the stream
//! furthest behind its share `n_i (t+1) / N`, so every prefix of the stream is within one
//! sequence per stream of the exact proportions. Inside a stream, sequences are visited in
//! a seeded random order that is reshuffled every epoch; streams smaller than their share
//! repeat (upsampling), which [`MixtureSampler::plan`] reports as epochs.

use std::collections::BTreeMap;
use std::sync::Arc;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::corpus::PackedCorpus;
use crate::error::{PartitionError, Result};
use crate::shard::Seq;

/// What to train on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mixture {
    /// Non-negative weights per domain name (normalised; missing domains get 0).
    Domains(BTreeMap<String, f64>),
    /// 0/1 inclusion over the manifest's units (manifest order): included units share the
    /// budget equally (they have equal sizes, so this is training on their union).
    Units(Vec<bool>),
}

impl Mixture {
    /// Weights aligned with the manifest's domains.
    pub fn from_weights(corpus: &PackedCorpus, weights: &[f64]) -> Result<Self> {
        let domains = &corpus.manifest().domains;
        if weights.len() != domains.len() {
            return Err(PartitionError::Mixture(format!(
                "{} weights for {} domains",
                weights.len(),
                domains.len()
            )));
        }
        Ok(Self::Domains(
            domains
                .iter()
                .map(|d| d.name.clone())
                .zip(weights.iter().copied())
                .collect(),
        ))
    }

    /// Inclusion of the units with the given ids (`"<domain>/<index>"`).
    pub fn from_unit_ids(corpus: &PackedCorpus, ids: &[&str]) -> Result<Self> {
        let units = &corpus.manifest().units;
        for id in ids {
            if !units.iter().any(|u| u.id == *id) {
                return Err(PartitionError::Mixture(format!("unknown unit `{id}`")));
            }
        }
        Ok(Self::Units(
            units.iter().map(|u| ids.contains(&u.id.as_str())).collect(),
        ))
    }
}

/// The plan for one stream (a domain or a unit).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StreamPlan {
    /// Domain name or unit id.
    pub name: String,
    /// Normalised weight.
    pub weight: f64,
    /// Distinct sequences available.
    pub available_sequences: u64,
    /// Sequences drawn over the whole budget.
    pub target_sequences: u64,
    /// `target / available`: how many times the stream is repeated (> 1 = upsampled).
    pub epochs: f64,
    #[serde(skip)]
    domain: usize,
    #[serde(skip)]
    first: u64,
}

/// One stream of a sampler by content ([`MixtureSampler::content_key`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StreamContent {
    /// Domain name or unit id.
    pub name: String,
    /// Normalised weight.
    pub weight: f64,
    /// Sequences drawn over the budget.
    pub target_sequences: u64,
    /// Distinct sequences it draws from.
    pub available_sequences: u64,
    /// xxh3-128 (hex) of those sequences' tokens (each token as little-endian `u32`).
    pub content: String,
}

/// Position in a sampler's stream; serialisable, for checkpoints.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SamplerCursor {
    /// Identifies the corpus, mixture, budget and seed the cursor belongs to.
    pub fingerprint: String,
    /// Sequences served so far.
    pub step: u64,
    /// Sequences served per stream.
    pub emitted: Vec<u64>,
}

/// A deterministic, resumable iterator of fixed-length training sequences.
#[derive(Debug)]
pub struct MixtureSampler {
    corpus: Arc<PackedCorpus>,
    plan: Vec<StreamPlan>,
    total: u64,
    seed: u64,
    shuffle: bool,
    fingerprint: String,
    step: u64,
    emitted: Vec<u64>,
    perms: Vec<Option<(u64, Vec<u32>)>>,
}

impl MixtureSampler {
    /// A sampler serving `budget_tokens / seq_len` sequences of `mixture`, shuffled with `seed`.
    pub fn new(
        corpus: Arc<PackedCorpus>,
        mixture: &Mixture,
        budget_tokens: u64,
        seed: u64,
    ) -> Result<Self> {
        let m = corpus.manifest();
        let total = budget_tokens / m.seq_len as u64;
        if total == 0 {
            return Err(PartitionError::Mixture(format!(
                "budget {budget_tokens} is less than one sequence of {}",
                m.seq_len
            )));
        }
        let mut streams: Vec<(String, f64, usize, u64, u64)> = Vec::new();
        match mixture {
            Mixture::Domains(w) => {
                for name in w.keys() {
                    if m.domain_index(name).is_none() {
                        return Err(PartitionError::Mixture(format!("unknown domain `{name}`")));
                    }
                }
                for (i, d) in m.domains.iter().enumerate() {
                    let wi = w.get(&d.name).copied().unwrap_or(0.0);
                    if !(wi >= 0.0 && wi.is_finite()) {
                        return Err(PartitionError::Mixture(format!(
                            "weight of `{}` is {wi}",
                            d.name
                        )));
                    }
                    if wi > 0.0 {
                        streams.push((d.name.clone(), wi, i, 0, d.train_sequences));
                    }
                }
            }
            Mixture::Units(mask) => {
                if mask.len() != m.units.len() {
                    return Err(PartitionError::Mixture(format!(
                        "{} entries for {} units",
                        mask.len(),
                        m.units.len()
                    )));
                }
                for (u, _) in m.units.iter().zip(mask).filter(|(_, on)| **on) {
                    let d = m
                        .domain_index(&u.domain)
                        .expect("checked when the corpus was opened");
                    streams.push((u.id.clone(), 1.0, d, u.first_sequence, u.sequences));
                }
            }
        }
        let sum: f64 = streams.iter().map(|s| s.1).sum();
        if streams.is_empty() || sum <= 0.0 {
            return Err(PartitionError::Mixture(
                "no domain or unit has positive weight".into(),
            ));
        }
        if let Some(s) = streams.iter().find(|s| s.4 == 0) {
            return Err(PartitionError::Mixture(format!(
                "`{}` has no training sequences",
                s.0
            )));
        }
        // Largest-remainder apportionment of `total` sequences.
        let exact: Vec<f64> = streams.iter().map(|s| s.1 / sum * total as f64).collect();
        let mut target: Vec<u64> = exact.iter().map(|x| x.floor() as u64).collect();
        let mut order: Vec<usize> = (0..streams.len()).collect();
        order.sort_by(|&a, &b| {
            (exact[b] - exact[b].floor())
                .total_cmp(&(exact[a] - exact[a].floor()))
                .then(a.cmp(&b))
        });
        let short = total - target.iter().sum::<u64>();
        for &i in order.iter().take(short as usize) {
            target[i] += 1;
        }
        let plan: Vec<StreamPlan> = streams
            .into_iter()
            .zip(target)
            .map(|((name, w, domain, first, avail), t)| StreamPlan {
                name,
                weight: w / sum,
                available_sequences: avail,
                target_sequences: t,
                epochs: t as f64 / avail as f64,
                domain,
                first,
            })
            .collect();
        let shuffle = true;
        let fp_src = serde_json::json!({
            "tokenizer": m.tokenizer_hash, "seq_len": m.seq_len, "seed": seed, "shuffle": shuffle, "total": total,
            "plan": plan.iter().map(|p| (&p.name, p.domain, p.first, p.available_sequences, p.target_sequences)).collect::<Vec<_>>(),
        });
        let fingerprint = format!(
            "{:032x}",
            xxhash_rust::xxh3::xxh3_128(fp_src.to_string().as_bytes())
        );
        let n = plan.len();
        Ok(Self {
            corpus,
            plan,
            total,
            seed,
            shuffle,
            fingerprint,
            step: 0,
            emitted: vec![0; n],
            perms: vec![None; n],
        })
    }

    /// Every stream by content, in the order the sampler serves and seeds them. With the
    /// budget, the seed, the sequence length and the tokenizer, this decides the stream of
    /// sequences exactly, without naming the corpus, its other domains or any position in
    /// it: a model keyed by it keeps its key when other domains are added to the corpus.
    pub fn content_key(&self) -> Vec<StreamContent> {
        self.plan
            .iter()
            .map(|p| StreamContent {
                name: p.name.clone(),
                weight: p.weight,
                target_sequences: p.target_sequences,
                available_sequences: p.available_sequences,
                content: self
                    .corpus
                    .train_range_hash(p.domain, p.first, p.available_sequences),
            })
            .collect()
    }

    /// Per-stream plan: weights, sequences and epochs.
    pub fn plan(&self) -> &[StreamPlan] {
        &self.plan
    }

    /// Total sequences over the budget.
    pub fn total_sequences(&self) -> u64 {
        self.total
    }

    /// Sequences still to come.
    pub fn remaining(&self) -> u64 {
        self.total - self.step
    }

    /// The current position.
    pub fn cursor(&self) -> SamplerCursor {
        SamplerCursor {
            fingerprint: self.fingerprint.clone(),
            step: self.step,
            emitted: self.emitted.clone(),
        }
    }

    /// Continues from a cursor taken from a sampler with the same corpus, mixture, budget
    /// and seed.
    pub fn resume(&mut self, cursor: &SamplerCursor) -> Result<()> {
        if cursor.fingerprint != self.fingerprint {
            return Err(PartitionError::Cursor(format!(
                "fingerprint {} != {}",
                cursor.fingerprint, self.fingerprint
            )));
        }
        let consistent = cursor.emitted.len() == self.plan.len()
            && cursor.emitted.iter().sum::<u64>() == cursor.step
            && cursor
                .emitted
                .iter()
                .zip(&self.plan)
                .all(|(e, p)| *e <= p.target_sequences);
        if !consistent {
            return Err(PartitionError::Cursor(
                "per-stream counts do not add up".into(),
            ));
        }
        self.step = cursor.step;
        self.emitted = cursor.emitted.clone();
        Ok(())
    }

    /// Which stream serves the next step.
    fn pick(&self) -> Option<usize> {
        if self.step >= self.total {
            return None;
        }
        let t1 = i128::from(self.step + 1);
        let total = i128::from(self.total);
        (0..self.plan.len())
            .filter(|&i| self.emitted[i] < self.plan[i].target_sequences)
            .max_by(|&a, &b| {
                let lag = |i: usize| {
                    i128::from(self.plan[i].target_sequences) * t1
                        - i128::from(self.emitted[i]) * total
                };
                lag(a).cmp(&lag(b)).then(b.cmp(&a))
            })
    }

    fn index_in_stream(&mut self, i: usize, k: u64) -> u64 {
        let avail = self.plan[i].available_sequences;
        let (epoch, pos) = (k / avail, k % avail);
        if !self.shuffle {
            return pos;
        }
        let fresh = !matches!(&self.perms[i], Some((e, _)) if *e == epoch);
        if fresh {
            let mut perm: Vec<u32> = (0..avail as u32).collect();
            let mix = self.seed
                ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
                ^ epoch.wrapping_mul(0xD1B5_4A32_D192_ED03);
            perm.shuffle(&mut ChaCha8Rng::seed_from_u64(mix));
            self.perms[i] = Some((epoch, perm));
        }
        u64::from(self.perms[i].as_ref().expect("just set").1[pos as usize])
    }

    /// The next sequence, borrowed from the memory-mapped shard.
    pub fn next_seq(&mut self) -> Option<(usize, Seq<'_>)> {
        let i = self.pick()?;
        let k = self.emitted[i];
        let idx = self.index_in_stream(i, k);
        self.emitted[i] += 1;
        self.step += 1;
        let p = &self.plan[i];
        Some((
            i,
            self.corpus
                .train_shard(p.domain)
                .get((p.first + idx) as usize),
        ))
    }
}

impl Iterator for MixtureSampler {
    type Item = Vec<u32>;

    fn next(&mut self) -> Option<Vec<u32>> {
        self.next_seq().map(|(_, s)| s.to_vec())
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let r = self.remaining() as usize;
        (r, Some(r))
    }
}
