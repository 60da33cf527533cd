//! The record of a merge written into every output's metadata: the method
//! and its parameters, the weighting, and the flattened plan (and base
//! model) with resolved files and hashes.
//! Knows serde only: not how inputs are read, merged or hashed.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::plan::{Source, WeightOverride, Weighting};

/// Metadata key under which outputs record their [`MergeRecord`] (JSON).
pub const METADATA_KEY: &str = "datamix.merge";

/// What a merge did: recorded as JSON in the output's metadata under
/// [`METADATA_KEY`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MergeRecord {
    /// The merge method's name.
    pub method: String,
    /// How plan weights were treated.
    pub weighting: Weighting,
    /// The flattened plan with resolved files and their hashes.
    pub inputs: Vec<InputRecord>,
    /// The method's parameters, for methods that have any
    /// ([`MergeMethod::parameters`](crate::MergeMethod::parameters)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<serde_json::Value>,
    /// The base model (its weight recorded as 0), for methods that take one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<InputRecord>,
    /// Per-tensor weight overrides.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub weight_overrides: Vec<WeightOverride>,
}

/// One input of a merge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "InputRecordRepr")]
pub struct InputRecord {
    /// The plan leaf.
    pub source: Source,
    /// The file it resolved to.
    pub path: PathBuf,
    /// Its weight in the flattened plan.
    pub weight: f64,
    /// Hash of the whole file as `"<algorithm>:<hex>"` when hashing is on:
    /// `"blake3:..."` ([`HASH_ALGORITHM`](super::HASH_ALGORITHM), the same as [`file_hash`](super::file_hash)).
    /// Records written by older versions, which stored a bare SHA-256 under
    /// `sha256`, read back as `"sha256:<hex>"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
}

/// What [`InputRecord`] deserialises from (accepts the old `sha256` field).
#[derive(Deserialize)]
struct InputRecordRepr {
    source: Source,
    path: PathBuf,
    weight: f64,
    #[serde(default)]
    hash: Option<String>,
    #[serde(default)]
    sha256: Option<String>,
}

impl From<InputRecordRepr> for InputRecord {
    fn from(r: InputRecordRepr) -> Self {
        Self {
            source: r.source,
            path: r.path,
            weight: r.weight,
            hash: r.hash.or(r.sha256.map(|h| format!("sha256:{h}"))),
        }
    }
}
