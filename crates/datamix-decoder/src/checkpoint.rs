//! Safetensors checkpoints with stable, HF-like tensor names.
//!
//! Names follow the module tree: `embed.weight`, `layers.3.norm.weight`,
//! `layers.3.attn.{q,k,v,o}_proj.weight`, `layers.3.mlp.{gate,up,down}_proj.weight`,
//! `norm.weight`, `lm_head.weight` (untied only). Linear weights are stored as
//! `[out, in]` like PyTorch/HF; Burn keeps `[in, out]` in memory and the
//! transpose happens here. Every file is written atomically (temp file, fsync,
//! rename).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::config::DecoderConfig;
use crate::error::{DecoderError, Result, io_err};
use crate::model::Decoder;
use crate::optim::PathTracker;

/// Maps a Burn module path to its stable checkpoint name.
pub(crate) fn hf_name(burn_path: &str) -> String {
    let s = burn_path
        .replace(".swiglu.linear_inner.", ".gate_proj.")
        .replace(".swiglu.linear_outer.", ".up_proj.");
    match s.strip_suffix(".gamma") {
        Some(base) => format!("{base}.weight"),
        None => s,
    }
}

/// Linear weights are stored transposed (`[out, in]`).
pub(crate) fn is_linear(name: &str) -> bool {
    name.ends_with("_proj.weight") || name == "lm_head.weight"
}

/// A host-side f32 tensor in checkpoint layout.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    /// Shape in checkpoint layout (`[out, in]` for linear weights).
    pub shape: Vec<usize>,
    /// Row-major values.
    pub data: Vec<f32>,
}

/// Named host tensors: what a checkpoint file holds, in memory. Used to move
/// weights between the model, files and other crates (e.g. an in-memory merge).
pub type TensorMap = BTreeMap<String, HostTensor>;

struct Exporter {
    path: PathTracker,
    out: TensorMap,
}

impl<B: Backend> ModuleVisitor<B> for Exporter {
    fn enter_module(&mut self, name: &str, container: &str) {
        self.path.enter(name, container);
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.exit();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let name = self.path.name();
        let t = param.val();
        let t = if D == 2 && is_linear(&name) {
            t.transpose()
        } else {
            t
        };
        self.out.insert(name, host(t));
    }
}

pub(crate) fn host<B: Backend, const D: usize>(t: Tensor<B, D>) -> HostTensor {
    let shape = t.dims().to_vec();
    let data = t
        .into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .expect("converted to f32");
    HostTensor { shape, data }
}

/// Copies every parameter of `model` to the host, in checkpoint layout.
pub fn to_host<B: Backend>(model: &Decoder<B>) -> TensorMap {
    let mut e = Exporter {
        path: PathTracker::default(),
        out: TensorMap::new(),
    };
    model.visit(&mut e);
    e.out
}

struct Importer<'a, B: Backend> {
    path: PathTracker,
    tensors: &'a TensorMap,
    device: B::Device,
    origin: &'a Path,
    error: Option<DecoderError>,
    seen: usize,
}

impl<B: Backend> ModuleMapper<B> for Importer<'_, B> {
    fn enter_module(&mut self, name: &str, container: &str) {
        self.path.enter(name, container);
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.exit();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let name = self.path.name();
        let (id, tensor, mapper) = param.consume();
        if self.error.is_some() {
            return Param::from_mapped_value(id, tensor, mapper);
        }
        let linear = D == 2 && is_linear(&name);
        let mut expected = tensor.dims().to_vec();
        if linear {
            expected.reverse();
        }
        let Some(src) = self.tensors.get(&name) else {
            self.error = Some(DecoderError::MissingTensor {
                path: self.origin.to_path_buf(),
                name,
            });
            return Param::from_mapped_value(id, tensor, mapper);
        };
        if src.shape != expected || src.data.len() != expected.iter().product::<usize>() {
            self.error = Some(DecoderError::TensorMismatch {
                path: self.origin.to_path_buf(),
                name,
                found: format!("shape {:?}", src.shape),
                expected: format!("shape {expected:?}"),
            });
            return Param::from_mapped_value(id, tensor, mapper);
        }
        self.seen += 1;
        let require_grad = tensor.is_require_grad();
        let mut t = Tensor::<B, D>::from_data(
            TensorData::new(src.data.clone(), src.shape.clone()),
            &self.device,
        );
        if linear {
            t = t.transpose();
        }
        if require_grad {
            t = t.require_grad();
        }
        Param::from_mapped_value(id, t, mapper)
    }
}

impl DecoderConfig {
    /// Builds a decoder whose parameters come from `tensors` (checkpoint layout).
    /// `origin` names the source in errors. Missing, extra or misshapen tensors
    /// are errors.
    pub fn init_from_host<B: Backend>(
        &self,
        tensors: &TensorMap,
        origin: &Path,
        device: &B::Device,
    ) -> Result<Decoder<B>> {
        let model = self.init::<B>(device)?;
        let mut imp = Importer::<B> {
            path: PathTracker::default(),
            tensors,
            device: device.clone(),
            origin,
            error: None,
            seen: 0,
        };
        let model = model.map(&mut imp);
        if let Some(e) = imp.error {
            return Err(e);
        }
        if imp.seen != tensors.len() {
            let expected = to_host(&model);
            let extra = tensors.keys().find(|k| !expected.contains_key(*k));
            return Err(DecoderError::UnexpectedTensor {
                path: origin.to_path_buf(),
                name: extra.cloned().unwrap_or_default(),
            });
        }
        Ok(model)
    }

    /// Builds a decoder initialised from `seed` on the host (ChaCha8 + normal
    /// draws in checkpoint-name order), so the same seed gives bit-identical
    /// weights on every backend and no matter what else runs in the process
    /// (Burn's backend RNGs are process-global). Norm weights are ones; weight
    /// matrices are `N(0, init_std)`, output projections (`o_proj`,
    /// `down_proj`) `N(0, init_std / sqrt(2 n_layers))`.
    pub fn init_seeded<B: Backend>(&self, seed: u64, device: &B::Device) -> Result<Decoder<B>> {
        use rand::SeedableRng;
        use rand_distr::Distribution;
        let template = to_host(&self.init::<B>(device)?);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let out_std = self.init_std / (2.0 * self.n_layers as f64).sqrt();
        let mut tensors = TensorMap::new();
        for (name, t) in template {
            let data = if t.shape.len() == 1 {
                vec![1.0; t.data.len()]
            } else {
                let std = if name.ends_with("o_proj.weight") || name.ends_with("down_proj.weight") {
                    out_std
                } else {
                    self.init_std
                };
                let normal = rand_distr::Normal::new(0.0f32, std as f32).expect("std > 0");
                (0..t.data.len()).map(|_| normal.sample(&mut rng)).collect()
            };
            tensors.insert(
                name,
                HostTensor {
                    shape: t.shape,
                    data,
                },
            );
        }
        self.init_from_host(&tensors, Path::new("<seeded init>"), device)
    }

    /// Loads weights saved by [`save_weights`] (or any safetensors file with
    /// the same names; f32, bf16 and f16 are accepted).
    pub fn load_weights<B: Backend>(&self, path: &Path, device: &B::Device) -> Result<Decoder<B>> {
        let (tensors, _) = read_safetensors(path)?;
        self.init_from_host(&tensors, path, device)
    }
}

/// Writes `bytes` to `path` atomically and durably, creating its directory first (see
/// [`datamix_io`]: temporary file beside it, fsync, rename, directory fsync, `0644`).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    Ok(datamix_io::write_file(path, bytes)?)
}

/// Serialises named host tensors (f32) with string metadata to a safetensors file.
pub fn write_safetensors(
    path: &Path,
    tensors: &TensorMap,
    metadata: HashMap<String, String>,
) -> Result<()> {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(name, t)| {
            let view = TensorView::new(Dtype::F32, t.shape.clone(), bytemuck::cast_slice(&t.data))
                .expect("shape matches data length");
            (name.clone(), view)
        })
        .collect();
    let corrupt = |reason: String| DecoderError::CorruptCheckpoint {
        path: path.to_path_buf(),
        reason,
    };
    let bytes =
        safetensors::serialize(views, Some(metadata)).map_err(|e| corrupt(e.to_string()))?;
    write_atomic(
        path,
        &datamix_io::sorted_header(bytes).map_err(|e| corrupt(e.to_string()))?,
    )
}

/// Reads every tensor of a safetensors file as f32 (from f32, bf16 or f16),
/// with the file's metadata.
pub fn read_safetensors(path: &Path) -> Result<(TensorMap, HashMap<String, String>)> {
    let bytes = std::fs::read(path).map_err(io_err(path))?;
    let corrupt = |reason: String| DecoderError::CorruptCheckpoint {
        path: path.to_path_buf(),
        reason,
    };
    let (_, meta) = SafeTensors::read_metadata(&bytes).map_err(|e| corrupt(e.to_string()))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| corrupt(e.to_string()))?;
    let mut out = TensorMap::new();
    for (name, view) in st.tensors() {
        let raw = view.data();
        let data: Vec<f32> = match view.dtype() {
            Dtype::F32 => raw
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Dtype::BF16 => raw
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Dtype::F16 => raw
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            other => {
                return Err(DecoderError::TensorMismatch {
                    path: path.to_path_buf(),
                    name,
                    found: format!("dtype {other:?}"),
                    expected: "a float dtype (F32, BF16, F16)".into(),
                });
            }
        };
        out.insert(
            name,
            HostTensor {
                shape: view.shape().to_vec(),
                data,
            },
        );
    }
    let meta = meta.metadata().clone().unwrap_or_default();
    Ok((out, meta))
}

/// Saves the weights of `model` to `path` (safetensors, f32, HF-like names),
/// with the config as JSON in the metadata under `config`.
pub fn save_weights<B: Backend>(
    model: &Decoder<B>,
    config: &DecoderConfig,
    path: &Path,
) -> Result<()> {
    let meta = HashMap::from([
        ("format".to_string(), "datamix-decoder".to_string()),
        (
            "config".to_string(),
            serde_json::to_string(config).expect("config serialises"),
        ),
    ]);
    write_safetensors(path, &to_host(model), meta)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_tensors_and_metadata_give_identical_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut tensors = TensorMap::new();
        for (i, name) in ["b.weight", "a.weight", "z", "m.bias"].iter().enumerate() {
            tensors.insert(
                name.to_string(),
                HostTensor {
                    shape: vec![2, i + 1],
                    data: (0..2 * (i + 1)).map(|x| x as f32 * 0.5 - 1.0).collect(),
                },
            );
        }
        let meta = || -> HashMap<String, String> {
            (0..16)
                .map(|i| (format!("key{i}"), format!("value {i}")))
                .collect()
        };
        let mut files = Vec::new();
        for i in 0..6 {
            let p = dir.path().join(format!("m{i}.safetensors"));
            write_safetensors(&p, &tensors, meta()).unwrap();
            files.push(std::fs::read(&p).unwrap());
            let (back, m) = read_safetensors(&p).unwrap();
            assert_eq!(back, tensors);
            assert_eq!(m, meta());
        }
        assert!(files.windows(2).all(|w| w[0] == w[1]), "files differ");
        // The safetensors crate's own parser accepts it.
        let st = SafeTensors::deserialize(&files[0]).unwrap();
        assert_eq!(st.len(), 4);
        let n = u64::from_le_bytes(files[0][..8].try_into().unwrap()) as usize;
        assert_eq!(n % 8, 0);
    }
}
