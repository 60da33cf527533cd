//! Subcommands, one module each.

pub mod study;
