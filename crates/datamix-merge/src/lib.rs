//! # datamix-merge
//!
//! The weight-averaging half of modular training (Na et al. 2024): merge
//! expert checkpoints into a proxy model for a candidate data mixture.
//!
//! - [`MergePlan`]: a tree whose leaves are checkpoints (files, or model-pool
//!   keys turned into files by a caller-supplied [`Resolver`]) and whose nodes
//!   are weighted averages; [`MergePlan::micro`] and [`MergePlan::macro_`]
//!   build the paper's micro and macro merges. [`MergePlan::flatten`] validates
//!   the weights and multiplies them down the tree into one weighted sum.
//! - [`MergeMethod`]: a small strategy applied chunk by chunk; [`Linear`] is
//!   the weighted average (task arithmetic with [`Weighting::Raw`]).
//! - [`Merger`]: streams the flattened plan over memory-mapped safetensors
//!   files, tensor chunk by tensor chunk in parallel, accumulating in `f64` for
//!   any float input dtype, and either returns [`MergedTensors`] in memory (to
//!   evaluate a proxy without writing it) or writes a safetensors file
//!   atomically whose metadata records the flattened plan and input hashes
//!   (BLAKE3, computed while merging). [`Merger::merge_into`] merges into the
//!   buffers of a previous result, so scoring many mixtures in one process
//!   does not allocate, fault in and zero a fresh model each time.
//!
//! ```no_run
//! use datamix_merge::{MergePlan, Merger, OutDtype, PathsOnly};
//! use std::path::Path;
//!
//! // Domain A has three base-unit experts, domain B one.
//! let plan = MergePlan::macro_([
//!     vec![Path::new("a1.safetensors"), Path::new("a2.safetensors"), Path::new("a3.safetensors")],
//!     vec![Path::new("b1.safetensors")],
//! ]);
//! let merger = Merger::linear().out_dtype(OutDtype::BF16);
//! merger.merge_to_file(&plan, &PathsOnly, Path::new("proxy.safetensors"))?;
//! # Ok::<(), datamix_merge::MergeError>(())
//! ```
//!
//! This crate knows safetensors files only: it must not depend on Burn, the
//! decoder crate or the model pool. Typed in-memory averaging of Burn modules
//! lives in the decoder crate; callers load [`MergedTensors`] into their model.

mod error;
mod exec;
mod method;
mod plan;

pub use error::MergeError;
pub use exec::{
    BATCH_INPUT_BYTES, CHUNK_ELEMS, HASH_ALGORITHM, InputRecord, METADATA_KEY, MergeRecord,
    MergedTensor, MergedTensors, Merger, OutDtype, TensorData, file_hash,
};
pub use method::{FloatDtype, FloatSlice, Linear, MergeMethod, weighted_sum};
pub use plan::{FlatPlan, FlatTerm, MergePlan, PathsOnly, Resolver, Source, Weighting};

/// The examples in README.md compile and pass (the crate page on crates.io shows them).
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
