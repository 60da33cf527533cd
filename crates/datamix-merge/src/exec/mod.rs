//! Streaming execution of a merge plan over memory-mapped safetensors files.
//!
//! Inputs are mapped, checked against the first input (names, shapes, dtypes,
//! identical non-float tensors), and every output tensor is cut into chunks of
//! [`CHUNK_ELEMS`] elements. Chunks are processed in file order by the rayon
//! pool, in batches of at most [`BATCH_INPUT_BYTES`] input bytes: once a
//! batch is merged its input pages are released from this process's mapping
//! (the page cache keeps them) while the next ones are merged, so resident
//! memory stays about one output model (in memory) or a few batches (to
//! file). In memory, threads never wait for each other at batch ends; to a
//! file, each batch is handed to a writer thread. With hashing on,
//! each batch's input bytes are also fed to one BLAKE3 hasher per input (in
//! file order) while the batch is merged, so inputs are read only once.
//!
//! The executor is split by concern; each module says what it owns and what
//! it must not know:
//!
//! - `merger`: the public [`Merger`] (configuration and the entry points);
//! - `job`: opening and validating inputs, and the output layout (tensors,
//!   chunks, batches);
//! - `schedule`: the two schedulers (batch by batch to a file, a shared
//!   queue in memory), the per-chunk merge, and when input pages are
//!   released;
//! - `pages`: page-table management of mappings (releasing ranges, huge
//!   pages);
//! - `hash`: BLAKE3 of inputs;
//! - `encode`: `f64` accumulators to output dtypes;
//! - `record`: the [`MergeRecord`] written into outputs;
//! - `output`: merged models in memory and safetensors output.

mod encode;
mod hash;
mod job;
mod merger;
mod output;
mod pages;
mod record;
mod schedule;

pub use hash::{HASH_ALGORITHM, file_hash};
pub use merger::Merger;
pub use output::{MergedTensor, MergedTensors, OutDtype, TensorData};
pub use record::{InputRecord, METADATA_KEY, MergeRecord};

/// Elements per chunk, the unit of parallel work (and of a method's error
/// report): 512 KiB of each `f32` input.
pub const CHUNK_ELEMS: usize = 128 * 1024;
/// Elements a chunk is merged and encoded in at a time, so that its `f64`
/// accumulator (64 KiB) stays in L2 between the method writing it and the
/// encode reading it. With the whole chunk's 1 MiB accumulator instead, the
/// reused merge took 10% longer; 2-32 Ki elements measured the same
/// (docs/bench-merge.md).
pub(crate) const TILE_ELEMS: usize = 8 * 1024;
/// Default input bytes (over all inputs) per batch: the unit in which input
/// pages are released, so at most about three batches of inputs are mapped.
/// 32 MiB measured no faster and peaked at 1.17-1.20x a model in memory,
/// against 1.12x (docs/bench-merge.md).
pub const BATCH_INPUT_BYTES: usize = 16 << 20;
/// Output bytes written between `fdatasync` calls, so flushing to disk
/// overlaps merging instead of all happening at the end.
pub(crate) const SYNC_EVERY_BYTES: usize = 128 << 20;
