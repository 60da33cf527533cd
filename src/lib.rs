//! # datamix
//!
//! Find good pre-training data mixtures for language models without training a
//! model for every candidate mixture: modular training + merging (Na et al.,
//! 2024) and Mixture of Data Experts (Belenki et al., 2025).
//!
//! This facade re-exports the workspace crates in the order data flows through
//! them (partition -> decoder (train/eval) -> pool -> merge / mde -> regression
//! -> optimizer) and adds the glue between them: [`pool`] (content-addressed models), [`proxy`]
//! (merge-then-evaluate), [`single`] (one model trained or scored outside a study) and
//! [`study`] (the end-to-end pipeline the CLI runs), [`plot`]
//! (SVG/PNG scatter plots), and a [`prelude`] of the common types.

//!
//! ## Features
//!
//! Each workspace crate is an optional dependency behind a feature of the same name, so a
//! user who only needs some of them does not compile Burn, the tokenizers (onig, a C
//! build), parquet/arrow or plotters:
//!
//! | feature | enables | heavy dependencies |
//! |---|---|---|
//! | `regression` | `datamix::regression` | — |
//! | `optimizer` | `datamix::optimizer` (it depends on the MDE and regression crates) | — |
//! | `mde` | `datamix::mde` | — |
//! | `merge` | `datamix::merge` | — |
//! | `partition` | `datamix::partition` | tokenizers (onig) |
//! | `parquet` | `partition` + Parquet input | parquet, arrow |
//! | `decoder` | `datamix::decoder` (add a backend: `cpu`, `wgpu`, `cuda`, `ndarray`, `tch`) | Burn |
//! | `study` | everything above, `datamix::{pool, proxy, single, study, plot, lock}` | all of them, plotters |
//!
//! `default = ["study", "cpu"]`: the full pipeline on the CPU backend. The slim set:
//!
//! ```toml
//! datamix = { version = "0.1", default-features = false, features = ["regression", "optimizer", "mde"] }
//! ```

// The overview above links the pipeline modules, which exist only with `study`.
#![cfg_attr(not(feature = "study"), allow(rustdoc::broken_intra_doc_links))]

pub mod error;
#[cfg(feature = "study")]
pub mod lock;
#[cfg(feature = "study")]
pub mod plot;
#[cfg(feature = "study")]
pub mod pool;
pub mod prelude;
#[cfg(all(feature = "decoder", feature = "merge"))]
pub mod proxy;
#[cfg(feature = "study")]
pub mod single;
#[cfg(feature = "study")]
pub mod study;

#[cfg(feature = "decoder")]
pub use datamix_decoder as decoder;
/// Durable, atomic file output (always on: it is light).
pub use datamix_io as io;
#[cfg(feature = "mde")]
pub use datamix_mde as mde;
#[cfg(feature = "merge")]
pub use datamix_merge as merge;
#[cfg(feature = "optimizer")]
pub use datamix_optimizer as optimizer;
#[cfg(feature = "partition")]
pub use datamix_partition as partition;
#[cfg(feature = "regression")]
pub use datamix_regression as regression;
pub use error::{Error, Result};
