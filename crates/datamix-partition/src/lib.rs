//! # datamix-partition
//!
//! Turns raw documents into what the decoder trains on:
//!
//! 1. **Readers** ([`CorpusSource`]): Dolma-style JSONL (plain, `.gz`, `.zst`), plain text,
//!    folder-per-domain, Parquet (feature `parquet`, on by default); streaming.
//! 2. **Domain rules** ([`DomainRules`], TOML): a metadata field with renames/merges, year
//!    ranges, first-of-several tags, buckets for missing values.
//! 3. **Tokenization** ([`TextTokenizer`]): a HF `tokenizer.json`, or a byte-level BPE trained
//!    on the corpus; parallel (rayon), cached by content hash.
//! 4. **Held-out splits** per domain by document hash, **decontamination** against
//!    evaluation sets (Bloom filter over 13-token windows), **base units** of equal token
//!    count, packed into memory-mapped `u16`/`u32` shards with a [`Manifest`]
//!    ([`Partitioner`]).
//! 5. **Sampling** ([`MixtureSampler`]): fixed-length sequences for a mixture over domains
//!    or a 0/1 inclusion vector over units, deterministic and resumable ([`SamplerCursor`]).
//!
//! Speed: tokenization allocates a few small buffers per token inside `tokenizers`; with
//! glibc's allocator that was ~38% of the pipeline's time in docs/bench-partition.md. A
//! binary that tokenizes large corpora should install a fast global allocator such as
//! `mimalloc`, as the `datamix` CLI does.
//!
//! This crate knows nothing about models, training, merging or mixture search: it depends
//! on no higher datamix crate (and not on Burn). The decoder consumes [`MixtureSampler`]
//! (an `Iterator<Item = Vec<u32>>`, or borrowed [`Seq`] slices) and held-out shards.
//!
//! ```no_run
//! use std::{path::Path, sync::Arc};
//! use datamix_partition::*;
//! # fn main() -> Result<(), PartitionError> {
//! let sources = CorpusSource::discover(Path::new("data/corpus"))?;
//! let tok = TextTokenizer::from_file(Path::new("data/tokenizer.json"), DEFAULT_EOT)?;
//! let cfg = PartitionConfig { seq_len: 512, unit_tokens: 1 << 20, ..Default::default() };
//! let manifest = Partitioner::new(cfg, tok)?.with_cache_dir("cache").run(&sources, Path::new("out"))?;
//! println!("{}", manifest.report());
//! let corpus = Arc::new(PackedCorpus::open(Path::new("out"))?);
//! let mix = Mixture::from_weights(&corpus, &vec![1.0; manifest.domains.len()])?;
//! for seq in MixtureSampler::new(corpus, &mix, 1 << 22, 0)? {
//!     assert_eq!(seq.len(), 512);
//! }
//! # Ok(()) }
//! ```

mod atomic;
pub mod bloom;
mod corpus;
mod error;
pub mod leftovers;
pub mod manifest;
#[cfg(feature = "parquet")]
mod parquet_reader;
mod pipeline;
pub mod reader;
pub mod rules;
mod sampler;
pub mod shard;
mod tokenize;

pub use corpus::PackedCorpus;
pub use error::{PartitionError, Result};
pub use manifest::{DomainEntry, DropReport, Manifest, SourceEntry, UnitEntry};
pub use pipeline::{PartitionConfig, Partitioner, UnitOrder, train_tokenizer};
pub use reader::{
    BadRecordPolicy, CorpusSource, Document, ReaderOptions, SourceFormat, SourceReader,
};
pub use rules::{Assignment, DomainRules, RangeRule};
pub use sampler::{Mixture, MixtureSampler, SamplerCursor, StreamContent, StreamPlan};
pub use shard::{Seq, TokenDtype, TokenShard};
pub use tokenize::{DEFAULT_EOT, TextTokenizer};

/// The examples in README.md compile and pass (the crate page on crates.io shows them).
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
