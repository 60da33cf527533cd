//! # datamix
//!
//! Find good pre-training data mixtures for language models without training a
//! model for every candidate mixture: modular training + merging (Na et al.,
//! 2024) and Mixture of Data Experts (Belenki et al., 2025).
//!
//! This facade re-exports the workspace crates in the order data flows through
//! them (partition -> decoder (train/eval) -> pool -> merge / mde -> regression
//! -> optimizer) and adds the glue between them: [`proxy`] (merge-then-evaluate).

pub mod error;
pub mod proxy;

pub use datamix_decoder as decoder;
pub use datamix_merge as merge;
pub use error::{Error, Result};
