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
//!
//! ```rust,no_run
//! use datamix_decoder::backend::Cpu;
//! use datamix_decoder::{DecoderConfig, EvalConfig, Packer, TrainConfig, Trainer, evaluate};
//!
//! type B = burn::backend::Autodiff<Cpu>;
//! # fn main() -> Result<(), datamix_decoder::DecoderError> {
//! let device = Default::default();
//! let vocab = 256;
//! // Any iterator of token sequences of `seq_len` tokens feeds training.
//! let data = (0..10_000u32).map(|i| (0..64).map(|t| (i + t) % vocab as u32).collect::<Vec<u32>>());
//! let train = TrainConfig { batch_size: 8, seq_len: 64, total_steps: 100, ..Default::default() };
//! let mut trainer = Trainer::<B>::new(DecoderConfig::preset("tiny", vocab)?, train, &device)?;
//! trainer.fit(&mut Packer::new(data, 8, 64), 100, |s| println!("{} {:.3}", s.step, s.loss))?;
//! let tokens: Vec<u32> = (0..1024).map(|t| t % vocab as u32).collect();
//! let result = evaluate(&trainer.inference_model(), &tokens, &EvalConfig::new(64), &device)?;
//! println!("held-out cross-entropy {:.3}", result.mean_ce);
//! # Ok(()) }
//! ```

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

/// The examples in README.md compile and pass (the crate page on crates.io shows them).
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
