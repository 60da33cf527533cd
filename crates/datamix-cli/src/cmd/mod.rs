//! Subcommands other than `study`, one module each.

pub mod common;
pub mod fit;
pub mod mde;
pub mod merge;
pub mod search;
