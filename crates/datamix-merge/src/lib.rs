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
//! - [`MergeMethod`]: how one tensor is merged. A method sees the tensor's
//!   name and shape, the models' slices ([`TensorSlices`]), their weights
//!   for this tensor (the flattened plan's, or a [`WeightOverride`]'s) and
//!   the base model's slice, and returns a typed [`MethodError`]. An
//!   [`Scope::Elementwise`] method is streamed in tiles (constant memory,
//!   the fast path); a [`Scope::WholeTensor`] one gets each floating tensor
//!   entire (needed for norms and top-k). Parameters that may differ by
//!   tensor are [`PerTensor`] (a default and overrides by tensor-name
//!   substring, mergekit's `filter`). The built-in methods follow mergekit's
//!   definitions, computed in `f64`:
//!
//!   | method ([`Method`]) | needs base? | whole-tensor? | parameters |
//!   |---|---|---|---|
//!   | [`Linear`] (`linear`): `Σ wᵢ θᵢ` | no (refused) | no | plan weights |
//!   | [`TaskArithmetic`] (`task_arithmetic`): `θ_b + Σ wᵢ (θᵢ − θ_b)` | yes | no | plan weights ([`Weighting::Raw`] for raw scales) |
//!   | [`Ties`] (`ties`): trim `τᵢ = θᵢ − θ_b` to the top `density` magnitudes, elect signs by `Σ wᵢ τᵢ'`, disjoint weighted mean | yes | yes | plan weights; `density` ∈ (0, 1], per tensor; `normalize` (default on) |
//!   | [`Slerp`] (`slerp`): spherical interpolation, linear when `\|cos θ\| > 0.9995` | no: 2 models, or 1 model and a base (the `t = 0` end) | yes | `t` ∈ [0, 1], per tensor; plan weights unused |
//!
//!   Per-tensor model weights ([`WeightOverride`]) apply to every method that
//!   uses weights. [`MethodPlan`] names the method, its parameters, the base
//!   model and the overrides (serde, for configs), and
//!   [`Merger::for_plan`] runs it; bad setups (missing base, SLERP's model
//!   count, density outside (0, 1]) are [`MergeError::MethodSetup`] before
//!   anything is read.
//! - [`Merger`]: streams the flattened plan over memory-mapped safetensors
//!   files, tensor chunk by tensor chunk in parallel, accumulating in `f64` for
//!   any float input dtype, and either returns [`MergedTensors`] in memory (to
//!   evaluate a proxy without writing it) or writes a safetensors file
//!   atomically whose metadata records the method, its parameters, the
//!   flattened plan, the base model and input hashes (BLAKE3, computed while
//!   merging). [`Merger::merge_into`] merges into the
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
mod strategies;

pub use error::MergeError;
pub use exec::{
    BATCH_INPUT_BYTES, CHUNK_ELEMS, HASH_ALGORITHM, InputRecord, METADATA_KEY, MergeRecord,
    MergedTensor, MergedTensors, Merger, OutDtype, TensorData, file_hash,
};
pub use method::{
    FloatDtype, FloatSlice, MergeMethod, MethodError, PerTensor, Scope, TensorOverride,
    TensorSlices, weighted_sum,
};
pub use plan::{
    FlatPlan, FlatTerm, MergePlan, MethodPlan, PathsOnly, Resolver, Source, WeightOverride,
    Weighting,
};
pub use strategies::{Linear, Method, Slerp, TaskArithmetic, Ties};

/// The examples in README.md compile and pass (the crate page on crates.io shows them).
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
