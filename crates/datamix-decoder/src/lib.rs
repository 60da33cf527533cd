//! # datamix-decoder
//!
//! A PaLM-like decoder-only transformer on [Burn](https://burn.dev): parallel
//! attention + SwiGLU blocks from one shared pre-norm, RoPE, multi-query
//! attention, no biases. It owns the model ([`DecoderConfig`] -> [`Decoder`]),
//! training ([`Trainer`]: AdamW, warm-up + cosine, re-warm, clipping,
//! accumulation, packed batches), checkpoints (safetensors with HF-like names +
//! optimizer state) and evaluation ([`evaluate`]: per-token log-probabilities).
//!
//! It knows nothing about corpora, domains, mixtures, merging or regression:
//! callers hand it token sequences and get models and per-token numbers back.
//!
//! Backends are cargo features: `cpu` (default, Burn's `flex`), `tch` (LibTorch), `ndarray`,
//! `wgpu`, `cuda`; [`BackendKind`] picks one of the compiled ones at run time. On `flex`
//! and `tch` the model's small ops run as fused autodiff ops ([`fused`]); elsewhere, and
//! inside [`without_fused_ops`], as Burn's portable composites.

pub mod average;
pub mod backend;
pub mod checkpoint;
pub mod config;
pub mod error;
pub mod eval;
pub mod fused;
pub mod model;
pub mod optim;
pub mod train;

pub use average::average_modules;
pub use backend::{BackendKind, BackendTask};
pub use config::{DecoderConfig, NormKind, PRESETS};
pub use error::{DecoderError, Result};
pub use eval::{EvalConfig, EvalResult, evaluate};
pub use fused::without_fused_ops;
pub use model::Decoder;
pub use train::{Batch, DataCursor, Packer, StepStats, TrainConfig, Trainer};
