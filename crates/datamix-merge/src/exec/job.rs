//! A validated merge job: the memory-mapped inputs checked against the
//! first (names, shapes, dtypes, identical non-float tensors), the output
//! tensors, their chunks (segments) and the batches that bound what is
//! mapped. Pure layout: must not know how segments are scheduled, merged,
//! hashed or released.

use std::collections::HashMap;
use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use safetensors::tensor::TensorInfo;
use safetensors::{Dtype, SafeTensors};

use crate::MergeError;
use crate::method::FloatDtype;

use super::CHUNK_ELEMS;
use super::output::OutDtype;

/// One memory-mapped, header-validated input.
pub(super) struct Input {
    pub(super) path: PathBuf,
    pub(super) map: Mmap,
    pub(super) data_start: usize,
    pub(super) order: Vec<String>,
    pub(super) infos: HashMap<String, TensorInfo>,
}

impl Input {
    pub(super) fn open(path: &Path) -> Result<Self, MergeError> {
        let file = File::open(path).map_err(|e| MergeError::io(path, e))?;
        // SAFETY: the mapping is read-only; like every mmap-based reader we
        // require that checkpoints are not modified while being merged.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| MergeError::io(path, e))?;
        let (n, meta) = SafeTensors::read_metadata(&map).map_err(|e| MergeError::InvalidFile {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let infos = meta
            .tensors()
            .into_iter()
            .map(|(k, v)| (k, v.clone()))
            .collect();
        Ok(Self {
            path: path.to_path_buf(),
            map,
            data_start: 8 + n,
            order: meta.offset_keys(),
            infos,
        })
    }
}

#[derive(Debug, Clone, Copy)]
pub(super) enum Kind {
    Float(FloatDtype),
    Raw,
}

/// One output tensor and where it lives in every input.
pub(super) struct Spec {
    pub(super) name: String,
    pub(super) shape: Vec<usize>,
    pub(super) numel: usize,
    pub(super) dtype: Dtype,
    pub(super) kind: Kind,
    pub(super) out_dtype: Dtype,
    /// Absolute byte offset of the tensor in each input's mapping.
    pub(super) offsets: Vec<usize>,
    /// Its [`WeightSet`] in [`Layout::sets`].
    pub(super) set: usize,
}

impl Spec {
    pub(super) fn in_size(&self) -> usize {
        self.dtype.bitsize() / 8
    }
    pub(super) fn out_size(&self) -> usize {
        self.out_dtype.bitsize() / 8
    }
    pub(super) fn out_bytes(&self) -> usize {
        self.numel * self.out_size()
    }
}

/// An element range of one tensor.
#[derive(Debug, Clone)]
pub(super) struct Segment {
    pub(super) tensor: usize,
    pub(super) elems: Range<usize>,
}

impl Segment {
    pub(super) fn len(&self) -> usize {
        self.elems.len()
    }
}

/// The models a floating tensor is merged from, and their weights for it.
pub(super) struct WeightSet {
    /// Indices of the models in [`Job::inputs`] (those with a non-zero
    /// weight when the method skips the others).
    pub(super) active: Vec<usize>,
    /// Their weights.
    pub(super) weights: Vec<f64>,
}

/// What a job merges, besides the inputs: who weighs what, the base model,
/// and how much of a tensor the method needs at once.
pub(super) struct Layout {
    /// Weight sets: the plan's first, then one per override.
    pub(super) sets: Vec<WeightSet>,
    /// Each override's tensor-name filter (set `k + 1` is override `k`'s).
    pub(super) filters: Vec<String>,
    /// The base model's index in the inputs (the last one), if any.
    pub(super) base: Option<usize>,
    /// Whether the method takes whole tensors (one segment per tensor).
    pub(super) whole_tensors: bool,
}

/// A validated merge: inputs, output layout, chunks and batches.
pub(super) struct Job {
    /// The flattened plan's models, in order, then the base model if any.
    pub(super) inputs: Vec<Input>,
    pub(super) layout: Layout,
    pub(super) specs: Vec<Spec>,
    pub(super) segments: Vec<Segment>,
    /// First segment of each tensor (plus one past the end).
    pub(super) tensor_starts: Vec<usize>,
    pub(super) batches: Vec<Range<usize>>,
}

pub(super) fn is_unmergeable_float(d: Dtype) -> bool {
    matches!(
        d,
        Dtype::F4
            | Dtype::F6_E2M3
            | Dtype::F6_E3M2
            | Dtype::F8_E5M2
            | Dtype::F8_E4M3
            | Dtype::F8_E8M0
            | Dtype::F8_E4M3FNUZ
            | Dtype::F8_E5M2FNUZ
            | Dtype::C64
    )
}

impl Job {
    pub(super) fn new(
        inputs: Vec<Input>,
        layout: Layout,
        out_dtype: OutDtype,
        batch_bytes: usize,
    ) -> Result<Self, MergeError> {
        let first = &inputs[0];
        let mut specs = Vec::with_capacity(first.order.len());
        for name in &first.order {
            let info = &first.infos[name];
            let kind = match FloatDtype::from_safetensors(info.dtype) {
                Some(f) => Kind::Float(f),
                None if is_unmergeable_float(info.dtype) => {
                    return Err(MergeError::UnsupportedDtype {
                        path: first.path.clone(),
                        tensor: name.clone(),
                        dtype: format!("{:?}", info.dtype),
                    });
                }
                None => Kind::Raw,
            };
            let mut offsets = Vec::with_capacity(inputs.len());
            for input in &inputs {
                let other = input
                    .infos
                    .get(name)
                    .ok_or_else(|| MergeError::MissingTensor {
                        path: input.path.clone(),
                        tensor: name.clone(),
                        reference: first.path.clone(),
                    })?;
                if other.dtype != info.dtype {
                    return Err(MergeError::DtypeMismatch {
                        path: input.path.clone(),
                        tensor: name.clone(),
                        expected: format!("{:?}", info.dtype),
                        found: format!("{:?}", other.dtype),
                    });
                }
                if other.shape != info.shape {
                    return Err(MergeError::ShapeMismatch {
                        path: input.path.clone(),
                        tensor: name.clone(),
                        expected: info.shape.clone(),
                        found: other.shape.clone(),
                    });
                }
                offsets.push(input.data_start + other.data_offsets.0);
            }
            let numel = info.shape.iter().product();
            let spec = Spec {
                name: name.clone(),
                shape: info.shape.clone(),
                numel,
                dtype: info.dtype,
                kind,
                out_dtype: match kind {
                    Kind::Float(_) => out_dtype.float().to_safetensors(),
                    Kind::Raw => info.dtype,
                },
                offsets,
                set: layout
                    .filters
                    .iter()
                    .position(|f| name.contains(f.as_str()))
                    .map_or(0, |k| k + 1),
            };
            if let Kind::Raw = kind {
                let len = spec.numel * spec.in_size();
                let reference = &first.map[spec.offsets[0]..][..len];
                for (input, &off) in inputs.iter().zip(&spec.offsets).skip(1) {
                    if &input.map[off..][..len] != reference {
                        return Err(MergeError::NonFloatMismatch {
                            path: input.path.clone(),
                            tensor: name.clone(),
                        });
                    }
                }
            }
            specs.push(spec);
        }
        for input in &inputs[1..] {
            if let Some(extra) = input.order.iter().find(|n| !first.infos.contains_key(*n)) {
                return Err(MergeError::UnexpectedTensor {
                    path: input.path.clone(),
                    tensor: extra.clone(),
                    reference: first.path.clone(),
                });
            }
        }
        // Widest dtypes first keeps every output tensor aligned.
        specs.sort_by_key(|s| std::cmp::Reverse(s.out_size()));

        let mut segments = Vec::new();
        let mut tensor_starts = Vec::with_capacity(specs.len() + 1);
        for (t, s) in specs.iter().enumerate() {
            tensor_starts.push(segments.len());
            let step = match s.kind {
                Kind::Float(_) if !layout.whole_tensors => CHUNK_ELEMS,
                Kind::Float(_) | Kind::Raw => s.numel.max(1),
            };
            let mut start = 0;
            while start < s.numel {
                let end = (start + step).min(s.numel);
                segments.push(Segment {
                    tensor: t,
                    elems: start..end,
                });
                start = end;
            }
        }
        tensor_starts.push(segments.len());

        let mut batches = Vec::new();
        let (mut start, mut bytes) = (0, 0);
        for (i, seg) in segments.iter().enumerate() {
            let spec = &specs[seg.tensor];
            let n = match spec.kind {
                Kind::Float(_) => {
                    layout.sets[spec.set].active.len() + usize::from(layout.base.is_some())
                }
                Kind::Raw => 1,
            } * seg.len()
                * spec.in_size();
            if bytes > 0 && bytes + n > batch_bytes {
                batches.push(start..i);
                (start, bytes) = (i, 0);
            }
            bytes += n;
        }
        if start < segments.len() {
            batches.push(start..segments.len());
        }
        Ok(Self {
            inputs,
            layout,
            specs,
            segments,
            tensor_starts,
            batches,
        })
    }

    pub(super) fn segments_of(&self, tensor: usize) -> impl Iterator<Item = &Segment> + '_ {
        self.segments[self.tensor_starts[tensor]..self.tensor_starts[tensor + 1]].iter()
    }

    pub(super) fn in_range(&self, seg: &Segment, input: usize) -> Range<usize> {
        let spec = &self.specs[seg.tensor];
        let base = spec.offsets[input];
        base + seg.elems.start * spec.in_size()..base + seg.elems.end * spec.in_size()
    }
}
