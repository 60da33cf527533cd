//! Merge results: [`MergedTensors`] in memory, their safetensors
//! serialisation, and the atomic file write shared with merges to a file.
//! Must not know how results are merged or scheduled.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::Path;

use safetensors::Dtype;
use safetensors::tensor::TensorInfo;
use serde::{Deserialize, Serialize};

use crate::MergeError;
use crate::method::FloatDtype;

use super::CHUNK_ELEMS;
use super::encode::encode;
use super::record::{METADATA_KEY, MergeRecord};

/// Dtype of the floating tensors written by
/// [`Merger::merge_to_file`](super::Merger::merge_to_file) and
/// [`MergedTensors::save`]. Non-float tensors keep their dtype.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum OutDtype {
    /// IEEE single precision.
    #[default]
    F32,
    /// bfloat16 (round to nearest even).
    BF16,
    /// IEEE half precision (round to nearest even).
    F16,
}

impl OutDtype {
    pub(super) fn float(self) -> FloatDtype {
        match self {
            OutDtype::F32 => FloatDtype::F32,
            OutDtype::BF16 => FloatDtype::BF16,
            OutDtype::F16 => FloatDtype::F16,
        }
    }
}

/// Contents of one merged tensor.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    /// A floating tensor, merged, as `f32`.
    F32(Vec<f32>),
    /// A non-float tensor, copied from the inputs (little-endian bytes).
    Raw {
        /// Its dtype.
        dtype: Dtype,
        /// Its bytes.
        bytes: Vec<u8>,
    },
}

/// One merged tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct MergedTensor {
    pub(super) name: String,
    pub(super) shape: Vec<usize>,
    pub(super) data: TensorData,
}

impl MergedTensor {
    /// The tensor's name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Its shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    /// Its contents.
    pub fn data(&self) -> &TensorData {
        &self.data
    }
    /// Its values if it is a floating tensor.
    pub fn as_f32(&self) -> Option<&[f32]> {
        match &self.data {
            TensorData::F32(v) => Some(v),
            TensorData::Raw { .. } => None,
        }
    }
    /// Its dtype in memory.
    pub fn dtype(&self) -> Dtype {
        match &self.data {
            TensorData::F32(_) => Dtype::F32,
            TensorData::Raw { dtype, .. } => *dtype,
        }
    }
    pub(super) fn bytes(&self) -> &[u8] {
        match &self.data {
            TensorData::F32(v) => bytemuck::cast_slice(v),
            TensorData::Raw { bytes, .. } => bytes,
        }
    }
}

impl safetensors::View for &MergedTensor {
    fn dtype(&self) -> Dtype {
        MergedTensor::dtype(self)
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(self.bytes())
    }
    fn data_len(&self) -> usize {
        self.bytes().len()
    }
}

/// A merged model held in memory: tensors in output order, ready to load into
/// a model without touching disk (or to [`save`](Self::save)).
#[derive(Debug, Clone)]
pub struct MergedTensors {
    pub(super) tensors: Vec<MergedTensor>,
    index: HashMap<String, usize>,
    pub(super) record: MergeRecord,
}

impl MergedTensors {
    pub(super) fn new(tensors: Vec<MergedTensor>, record: MergeRecord) -> Self {
        let index = tensors
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        Self {
            tensors,
            index,
            record,
        }
    }

    /// The tensors, in output order.
    pub fn tensors(&self) -> &[MergedTensor] {
        &self.tensors
    }

    /// Takes the tensors out.
    pub fn into_tensors(self) -> Vec<MergedTensor> {
        self.tensors
    }

    /// A tensor by name.
    pub fn get(&self, name: &str) -> Option<&MergedTensor> {
        self.index.get(name).map(|&i| &self.tensors[i])
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    /// Whether there are no tensors.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// What the merge did.
    pub fn record(&self) -> &MergeRecord {
        &self.record
    }

    /// The merged model as safetensors bytes (`f32` floats), e.g. for a
    /// loader that reads from a buffer: the same bytes as [`save`](Self::save)
    /// with [`OutDtype::F32`] (sorted header, so equal models give equal bytes).
    pub fn to_safetensors_bytes(&self) -> Result<Vec<u8>, MergeError> {
        let mut order: Vec<&MergedTensor> = self.tensors.iter().collect();
        order.sort_by_key(|t| std::cmp::Reverse(t.dtype().bitsize()));
        let entries: Vec<_> = order
            .iter()
            .map(|t| {
                (
                    t.name.as_str(),
                    t.dtype(),
                    t.shape.as_slice(),
                    t.bytes().len(),
                )
            })
            .collect();
        let mut out = header_bytes(&entries, &self.record)?;
        for t in order {
            out.extend_from_slice(t.bytes());
        }
        Ok(out)
    }

    /// Writes the model to a safetensors file atomically, floats as `dtype`.
    pub fn save(&self, path: &Path, dtype: OutDtype) -> Result<(), MergeError> {
        let out = dtype.float().to_safetensors();
        let mut order: Vec<&MergedTensor> = self.tensors.iter().collect();
        let out_dtype = |t: &MergedTensor| match t.data {
            TensorData::F32(_) => out,
            TensorData::Raw { dtype, .. } => dtype,
        };
        order.sort_by_key(|t| std::cmp::Reverse(out_dtype(t).bitsize()));
        let entries: Vec<_> = order
            .iter()
            .map(|t| {
                let d = out_dtype(t);
                let numel: usize = t.shape.iter().product();
                (
                    t.name.as_str(),
                    d,
                    t.shape.as_slice(),
                    numel * d.bitsize() / 8,
                )
            })
            .collect();
        let header = header_bytes(&entries, &self.record)?;
        atomic_write(path, |file| {
            file.write_all(&header)?;
            let mut buf = Vec::new();
            let mut acc = Vec::new();
            for t in order {
                match &t.data {
                    TensorData::F32(v) if out != Dtype::F32 => {
                        for c in v.chunks(CHUNK_ELEMS) {
                            acc.clear();
                            acc.extend(c.iter().map(|&x| f64::from(x)));
                            buf.resize(c.len() * out.bitsize() / 8, 0);
                            encode(&acc, out, &mut buf);
                            file.write_all(&buf)?;
                        }
                    }
                    _ => file.write_all(t.bytes())?,
                }
            }
            Ok(())
        })
    }
}

fn metadata(record: &MergeRecord) -> Result<HashMap<String, String>, MergeError> {
    let json = serde_json::to_string(record).map_err(|e| MergeError::Record {
        reason: format!("cannot serialise the merge record: {e}"),
    })?;
    Ok(HashMap::from([
        ("format".to_string(), "pt".to_string()),
        (METADATA_KEY.to_string(), json),
    ]))
}

/// The safetensors header (length prefix + JSON padded to 8 bytes) for tensors
/// laid out back to back in the given order.
pub(super) fn header_bytes(
    entries: &[(&str, Dtype, &[usize], usize)],
    record: &MergeRecord,
) -> Result<Vec<u8>, MergeError> {
    let mut map = serde_json::Map::new();
    map.insert(
        "__metadata__".into(),
        serde_json::to_value(metadata(record)?).expect("string map"),
    );
    let mut offset = 0;
    for &(name, dtype, shape, bytes) in entries {
        let info = TensorInfo {
            dtype,
            shape: shape.to_vec(),
            data_offsets: (offset, offset + bytes),
        };
        offset += bytes;
        map.insert(
            name.to_string(),
            serde_json::to_value(info).expect("tensor info serialises"),
        );
    }
    let mut json = serde_json::to_vec(&map).expect("JSON map serialises");
    json.resize(json.len().next_multiple_of(8), b' ');
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend(json);
    Ok(out)
}

pub(super) enum WriteError {
    Io(std::io::Error),
    Merge(MergeError),
}

impl From<std::io::Error> for WriteError {
    fn from(e: std::io::Error) -> Self {
        WriteError::Io(e)
    }
}

/// Writes `path` durably through [`datamix_io::AtomicFile`] (temporary file beside it,
/// fsync, rename, directory fsync, `0644` under the umask); on any error the temporary
/// file is removed.
pub(super) fn atomic_write(
    path: &Path,
    write: impl FnOnce(&mut File) -> Result<(), WriteError>,
) -> Result<(), MergeError> {
    let mut tmp = datamix_io::AtomicFile::create(path).map_err(MergeError::from)?;
    match write(tmp.file_mut()) {
        Ok(()) => {}
        Err(WriteError::Io(e)) => return Err(MergeError::io(path, e)),
        Err(WriteError::Merge(e)) => return Err(e),
    }
    tmp.commit().map_err(MergeError::from)
}
