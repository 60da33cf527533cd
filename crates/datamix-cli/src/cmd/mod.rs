//! Subcommands, one module each.

pub mod common;
pub mod fit;
pub mod mde;
pub mod merge;
pub mod search;
pub mod study;
