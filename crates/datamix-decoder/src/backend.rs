//! Backends behind cargo features, and a run-time choice among the compiled ones.

use std::fmt;
use std::str::FromStr;

use burn::tensor::backend::AutodiffBackend;

use crate::error::{DecoderError, Result};

/// Burn's `flex` CPU backend (feature `cpu`, the default).
#[cfg(feature = "cpu")]
pub type Cpu = burn::backend::Flex;
/// Burn's `ndarray` CPU backend (feature `ndarray`).
#[cfg(feature = "ndarray")]
pub type Ndarray = burn::backend::NdArray;
/// Burn's WGPU backend (feature `wgpu`; WGSL shaders, also runs on Mesa's lavapipe).
#[cfg(feature = "wgpu")]
pub type Wgpu = burn::backend::Wgpu;
/// Burn's CUDA backend (feature `cuda`).
#[cfg(feature = "cuda")]
pub type Cuda = burn::backend::Cuda;
/// Burn's LibTorch backend on the CPU (feature `tch`): PyTorch's own kernels (MKL sgemm,
/// vectorised element-wise ops) under Burn's autodiff. Needs libtorch at build and run
/// time (`LIBTORCH_USE_PYTORCH=1` with a pip `torch`; see docs/backends.md).
#[cfg(feature = "tch")]
pub type Tch = burn::backend::LibTorch<f32>;

/// A backend chosen at run time (CLI flag, config file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// Burn `flex` on the CPU.
    Cpu,
    /// Burn `ndarray` on the CPU.
    Ndarray,
    /// WGPU (Vulkan/Metal/DX12 or a software Vulkan driver).
    Wgpu,
    /// NVIDIA CUDA.
    Cuda,
    /// LibTorch (PyTorch's C++ library) on the CPU.
    Tch,
}

/// Work that runs on whichever backend the user picked: implement `run`
/// generically and hand the task to [`BackendKind::run`].
pub trait BackendTask {
    /// What the task returns.
    type Output;
    /// Runs the task on backend `B` (an autodiff backend; use
    /// `B::InnerBackend` for inference-only work).
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output;
}

impl BackendKind {
    /// Every kind, compiled in or not.
    pub const ALL: [BackendKind; 5] = [Self::Cpu, Self::Tch, Self::Ndarray, Self::Wgpu, Self::Cuda];

    /// Whether this build includes the backend.
    pub fn is_available(self) -> bool {
        match self {
            Self::Cpu => cfg!(feature = "cpu"),
            Self::Ndarray => cfg!(feature = "ndarray"),
            Self::Wgpu => cfg!(feature = "wgpu"),
            Self::Cuda => cfg!(feature = "cuda"),
            Self::Tch => cfg!(feature = "tch"),
        }
    }

    /// The compiled-in backends, fastest CPU backend first.
    pub fn available() -> Vec<Self> {
        Self::ALL.into_iter().filter(|k| k.is_available()).collect()
    }

    /// Runs `task` on this backend's default device.
    pub fn run<T: BackendTask>(self, task: T) -> Result<T::Output> {
        #[allow(unreachable_patterns)]
        match self {
            #[cfg(feature = "cpu")]
            Self::Cpu => Ok(task.run::<burn::backend::Autodiff<Cpu>>(Default::default())),
            #[cfg(feature = "ndarray")]
            Self::Ndarray => Ok(task.run::<burn::backend::Autodiff<Ndarray>>(Default::default())),
            #[cfg(feature = "wgpu")]
            Self::Wgpu => Ok(task.run::<burn::backend::Autodiff<Wgpu>>(Default::default())),
            #[cfg(feature = "cuda")]
            Self::Cuda => Ok(task.run::<burn::backend::Autodiff<Cuda>>(Default::default())),
            #[cfg(feature = "tch")]
            Self::Tch => Ok(task.run::<burn::backend::Autodiff<Tch>>(Default::default())),
            other => Err(DecoderError::BackendUnavailable(other.to_string())),
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Cpu => "cpu",
            Self::Ndarray => "ndarray",
            Self::Wgpu => "wgpu",
            Self::Cuda => "cuda",
            Self::Tch => "tch",
        })
    }
}

impl FromStr for BackendKind {
    type Err = DecoderError;
    fn from_str(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|k| k.to_string() == s.to_ascii_lowercase())
            .ok_or_else(|| {
                DecoderError::BackendUnavailable(format!(
                    "{s} (expected one of: cpu, tch, ndarray, wgpu, cuda)"
                ))
            })
    }
}
