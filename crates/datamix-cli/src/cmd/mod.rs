//! Subcommands, one module each.

pub mod common;
pub mod eval;
pub mod fit;
pub mod mde;
pub mod merge;
pub mod search;
pub mod study;
pub mod train;
