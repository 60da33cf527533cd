//! # datamix
//!
//! Find good pre-training data mixtures for language models without training a
//! model for every candidate mixture: modular training + merging (Na et al.,
//! 2024) and Mixture of Data Experts (Belenki et al., 2025).
//!
//! This facade re-exports the workspace crates in the order data flows through
//! them (partition -> decoder (train/eval) -> pool -> merge / mde -> regression
//! -> optimizer) and adds the glue between them: [`pool`] (content-addressed models), [`proxy`]
//! (merge-then-evaluate) and [`study`] (the end-to-end pipeline the CLI runs), [`plot`]
//! (SVG/PNG scatter plots), and a [`prelude`] of the common types.

pub mod error;
pub mod lock;
pub mod plot;
pub mod pool;
pub mod prelude;
pub mod proxy;
pub mod study;

pub use datamix_decoder as decoder;
pub use datamix_mde as mde;
pub use datamix_merge as merge;
pub use datamix_optimizer as optimizer;
pub use datamix_partition as partition;
pub use datamix_regression as regression;
pub use error::{Error, Result};
