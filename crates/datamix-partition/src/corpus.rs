//! A packed corpus opened for reading: the manifest plus memory-mapped shards.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use sha2::{Digest, Sha256};

use crate::error::{PartitionError, Result};
use crate::manifest::{MANIFEST_FILE, Manifest, TOKENIZER_FILE, UnitEntry};
use crate::shard::{Seq, TokenShard};
use crate::tokenize::TextTokenizer;

/// A partitioner output directory, opened read-only.
#[derive(Debug)]
pub struct PackedCorpus {
    dir: PathBuf,
    manifest: Manifest,
    train: Vec<TokenShard>,
    heldout: Vec<TokenShard>,
    /// [`PackedCorpus::train_range_hash`] results by `(domain, first, count)`: a study asks
    /// for the same domain or unit once per model that samples it.
    range_hashes: Mutex<HashMap<(usize, u64, u64), String>>,
}

impl PackedCorpus {
    /// Opens `dir` (its `manifest.json` and every shard it lists).
    pub fn open(dir: &Path) -> Result<Self> {
        let manifest = Manifest::load(dir)?;
        let open = |file: &str| TokenShard::open(&dir.join(file), manifest.dtype, manifest.seq_len);
        let train = manifest
            .domains
            .iter()
            .map(|d| open(&d.train_file))
            .collect::<Result<Vec<_>>>()?;
        let heldout = manifest
            .domains
            .iter()
            .map(|d| open(&d.heldout_file))
            .collect::<Result<Vec<_>>>()?;
        for (d, s) in manifest.domains.iter().zip(&train) {
            if s.len() as u64 != d.train_sequences {
                return Err(PartitionError::BadShard {
                    path: s.path().into(),
                    message: format!("{} sequences, manifest says {}", s.len(), d.train_sequences),
                });
            }
        }
        for u in &manifest.units {
            let d = manifest
                .domain_index(&u.domain)
                .ok_or_else(|| PartitionError::BadShard {
                    path: dir.join(MANIFEST_FILE),
                    message: format!("unit `{}` names unknown domain `{}`", u.id, u.domain),
                })?;
            if u.first_sequence + u.sequences > train[d].len() as u64 {
                return Err(PartitionError::BadShard {
                    path: dir.join(MANIFEST_FILE),
                    message: format!("unit `{}` runs past the end of its shard", u.id),
                });
            }
        }
        Ok(Self {
            dir: dir.into(),
            manifest,
            train,
            heldout,
            range_hashes: Mutex::default(),
        })
    }

    /// xxh3-128 (hex) of `count` training sequences of domain `domain` (manifest order)
    /// from `first`, each token as a little-endian `u32`: the content a sampler stream draws
    /// from. Computed once per range and remembered.
    pub fn train_range_hash(&self, domain: usize, first: u64, count: u64) -> String {
        let key = (domain, first, count);
        if let Some(h) = self
            .range_hashes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return h.clone();
        }
        let shard = &self.train[domain];
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        let mut tokens = Vec::new();
        let mut bytes = Vec::new();
        for i in first..first + count {
            tokens.clear();
            shard.get(i as usize).extend_into(&mut tokens);
            bytes.clear();
            bytes.extend(tokens.iter().flat_map(|t| t.to_le_bytes()));
            h.update(&bytes);
        }
        let hex = format!("{:032x}", h.digest128());
        self.range_hashes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, hex.clone());
        hex
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Tokens per sequence.
    pub fn seq_len(&self) -> usize {
        self.manifest.seq_len
    }

    /// Training shard of domain `i` (manifest order).
    pub fn train_shard(&self, i: usize) -> &TokenShard {
        &self.train[i]
    }

    /// Held-out shard of domain `i` (manifest order).
    pub fn heldout_shard(&self, i: usize) -> &TokenShard {
        &self.heldout[i]
    }

    /// Held-out sequences of a domain, by name.
    pub fn heldout(&self, domain: &str) -> Option<impl ExactSizeIterator<Item = Seq<'_>> + '_> {
        self.manifest
            .domain_index(domain)
            .map(|i| self.heldout[i].iter())
    }

    /// The sequences of one base unit.
    pub fn unit_sequences<'a>(
        &'a self,
        unit: &UnitEntry,
    ) -> Result<impl ExactSizeIterator<Item = Seq<'a>> + 'a> {
        let d = self
            .manifest
            .domain_index(&unit.domain)
            .ok_or_else(|| PartitionError::Mixture(format!("unknown domain `{}`", unit.domain)))?;
        let shard = &self.train[d];
        let first = unit.first_sequence as usize;
        Ok((first..first + unit.sequences as usize).map(move |i| shard.get(i)))
    }

    /// Loads the tokenizer stored beside the manifest, checking its hash.
    pub fn tokenizer(&self) -> Result<TextTokenizer> {
        let path = self.dir.join(TOKENIZER_FILE);
        let json = std::fs::read_to_string(&path).map_err(|e| PartitionError::io(&path, e))?;
        if hex::encode(Sha256::digest(json.as_bytes())) != self.manifest.tokenizer_hash {
            return Err(PartitionError::Tokenizer {
                path,
                message: "hash differs from the manifest's".into(),
            });
        }
        let t = TextTokenizer::from_json(json, &self.manifest.config.eot_token, &path)?;
        Ok(t)
    }
}
