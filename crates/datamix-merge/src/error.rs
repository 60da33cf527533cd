//! The crate's error type.

use std::path::PathBuf;

use crate::method::MethodError;
use crate::plan::Source;

/// Everything that can go wrong while validating a plan or merging checkpoints.
///
/// Messages name the plan node, file and tensor involved and what was expected.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    /// The plan has no checkpoint at all.
    #[error("merge plan has no inputs")]
    NoInputs,
    /// A nested average node has no children.
    #[error("merge plan node `{node}` has no children")]
    EmptyNode {
        /// Path of the node in the plan tree (`root/1/0`).
        node: String,
    },
    /// A weight is NaN or infinite.
    #[error("merge plan node `{node}`: weight {weight} is not finite")]
    NonFiniteWeight {
        /// Path of the weighted child in the plan tree.
        node: String,
        /// The offending weight.
        weight: f64,
    },
    /// A weight is negative while the plan is normalised (negative weights need
    /// [`Weighting::Raw`](crate::Weighting::Raw)).
    #[error(
        "merge plan node `{node}`: weight {weight} is negative (use Weighting::Raw for task arithmetic)"
    )]
    NegativeWeight {
        /// Path of the weighted child in the plan tree.
        node: String,
        /// The offending weight.
        weight: f64,
    },
    /// The weights of a node (or of the whole flattened plan) are all zero.
    #[error("merge plan node `{node}`: weights are all zero")]
    ZeroWeights {
        /// Path of the node in the plan tree (`flattened` for the whole plan).
        node: String,
    },
    /// A pool key could not be turned into a file path by the resolver.
    #[error("pool key `{key}` could not be resolved to a checkpoint file")]
    UnresolvedKey {
        /// The key.
        key: String,
    },
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A file is not a valid safetensors file (truncated, bad header JSON,
    /// offsets outside the file...).
    #[error("{}: not a valid safetensors file: {reason}", path.display())]
    InvalidFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A tensor of the first input is missing from another input.
    #[error("{}: tensor `{tensor}` is missing (present in {})", path.display(), reference.display())]
    MissingTensor {
        /// The input lacking the tensor.
        path: PathBuf,
        /// The tensor name.
        tensor: String,
        /// The first input, which has it.
        reference: PathBuf,
    },
    /// An input has a tensor the first input lacks.
    #[error("{}: tensor `{tensor}` is not in {}", path.display(), reference.display())]
    UnexpectedTensor {
        /// The input with the extra tensor.
        path: PathBuf,
        /// The tensor name.
        tensor: String,
        /// The first input, which lacks it.
        reference: PathBuf,
    },
    /// Shapes differ between inputs.
    #[error("{}: tensor `{tensor}` has shape {found:?}, expected {expected:?}", path.display())]
    ShapeMismatch {
        /// The input that differs from the first.
        path: PathBuf,
        /// The tensor name.
        tensor: String,
        /// The first input's shape.
        expected: Vec<usize>,
        /// This input's shape.
        found: Vec<usize>,
    },
    /// Dtypes differ between inputs.
    #[error("{}: tensor `{tensor}` has dtype {found}, expected {expected}", path.display())]
    DtypeMismatch {
        /// The input that differs from the first.
        path: PathBuf,
        /// The tensor name.
        tensor: String,
        /// The first input's dtype.
        expected: String,
        /// This input's dtype.
        found: String,
    },
    /// A non-float tensor (integers, booleans) differs between inputs; such
    /// tensors are copied, never averaged.
    #[error(
        "{}: non-float tensor `{tensor}` differs from the first input (non-float tensors must be identical)",
        path.display()
    )]
    NonFloatMismatch {
        /// The input that differs from the first.
        path: PathBuf,
        /// The tensor name.
        tensor: String,
    },
    /// A floating dtype this crate cannot average (8-bit, 6-bit, 4-bit floats, complex).
    #[error("{}: tensor `{tensor}` has dtype {dtype}, which cannot be merged", path.display())]
    UnsupportedDtype {
        /// The file.
        path: PathBuf,
        /// The tensor name.
        tensor: String,
        /// The dtype.
        dtype: String,
    },
    /// A merge method refused a tensor. Tensors are merged in parallel, so
    /// when several fail, the one named is any of them.
    #[error("merge method `{method}` failed on tensor `{tensor}`: {source}")]
    Method {
        /// The method's name.
        method: String,
        /// The tensor being merged.
        tensor: String,
        /// Why.
        #[source]
        source: MethodError,
    },
    /// A merge method refused its parameters, the number of models or the
    /// presence or absence of a base model, before anything was read.
    #[error("merge method `{method}`: {source}")]
    MethodSetup {
        /// The method's name.
        method: String,
        /// Why.
        #[source]
        source: MethodError,
    },
    /// A per-tensor weight override names a checkpoint that is not in the
    /// flattened plan.
    #[error("weight override `{filter}` names {checkpoint}, which is not in the plan")]
    UnknownOverrideSource {
        /// The override's tensor-name filter.
        filter: String,
        /// The checkpoint it names.
        checkpoint: Source,
    },
    /// The merge record could not be written into the output header.
    #[error("merge record: {reason}")]
    Record {
        /// What went wrong.
        reason: String,
    },
}

impl MergeError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}

impl From<datamix_io::Error> for MergeError {
    fn from(e: datamix_io::Error) -> Self {
        let (path, source) = e.into_parts();
        Self::Io { path, source }
    }
}
