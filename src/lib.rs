//! # datamix
//!
//! Find good pre-training data mixtures for language models without training a
//! model for every candidate mixture.
//!
//! This facade re-exports the workspace crates, in the order data flows through
//! them: partition -> decoder (train/eval) -> pool -> merge / mde -> regression
//! -> optimizer.

pub use datamix_decoder as decoder;
