//! Exact projections onto the capped simplex `{x : Σ x = 1, l ≤ x ≤ u}`, which every
//! method goes through: Euclidean ([`project_euclidean`]) and Kullback–Leibler
//! ([`project_kl`], the step of exponentiated gradient).
//!
//! They are implemented once, in [`datamix_mde::simplex`] (this crate depends on
//! datamix-mde, whose exact MDE optimum needs the same projection), and re-exported
//! here; a validated [`crate::SearchSpace`] meets their preconditions.

pub use datamix_mde::simplex::{project_euclidean, project_kl};
