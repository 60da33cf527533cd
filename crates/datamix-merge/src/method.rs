//! The merge-method interface ([`MergeMethod`], [`TensorSlices`],
//! [`MethodError`], [`PerTensor`]) and the float kernels methods build on
//! ([`FloatSlice`], [`weighted_sum`]). The built-in methods live in
//! `strategies`; this module must not know the executor or plans.

use std::ops::Range;

use multiversion::multiversion;
use serde::{Deserialize, Serialize};

/// Floating dtypes that can be merged. Whatever the input dtype, methods
/// accumulate in `f64` (so averaging identical `f32` checkpoints is exact).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FloatDtype {
    /// IEEE half precision.
    F16,
    /// bfloat16.
    BF16,
    /// IEEE single precision.
    F32,
    /// IEEE double precision.
    F64,
}

impl FloatDtype {
    /// The mergeable float dtype for a safetensors dtype, if any.
    pub fn from_safetensors(dtype: safetensors::Dtype) -> Option<Self> {
        use safetensors::Dtype as D;
        match dtype {
            D::F16 => Some(Self::F16),
            D::BF16 => Some(Self::BF16),
            D::F32 => Some(Self::F32),
            D::F64 => Some(Self::F64),
            _ => None,
        }
    }

    /// The matching safetensors dtype.
    pub fn to_safetensors(self) -> safetensors::Dtype {
        use safetensors::Dtype as D;
        match self {
            Self::F16 => D::F16,
            Self::BF16 => D::BF16,
            Self::F32 => D::F32,
            Self::F64 => D::F64,
        }
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Self::F16 | Self::BF16 => 2,
            Self::F32 => 4,
            Self::F64 => 8,
        }
    }
}

/// A read-only run of little-endian floats of one dtype (a range of one
/// tensor in one memory-mapped input; not necessarily aligned).
#[derive(Debug, Clone, Copy)]
pub struct FloatSlice<'a> {
    dtype: FloatDtype,
    bytes: &'a [u8],
}

impl<'a> FloatSlice<'a> {
    /// Wraps raw bytes; `None` if their length is not a whole number of elements.
    pub fn new(dtype: FloatDtype, bytes: &'a [u8]) -> Option<Self> {
        bytes
            .len()
            .is_multiple_of(dtype.size())
            .then_some(Self { dtype, bytes })
    }

    /// The element dtype.
    pub fn dtype(&self) -> FloatDtype {
        self.dtype
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.bytes.len() / self.dtype.size()
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// `out[j] = w * x[j]` (`add = false`) or `out[j] += w * x[j]` (`add = true`)
    /// over `min(len, out.len())` elements.
    ///
    /// Uses AVX-512 or AVX2 where the CPU has them (detected at run time);
    /// every path does the same separate `f64` multiply and add (no fused
    /// multiply-add), so results are bit-identical whatever the CPU.
    pub fn scale_into(&self, w: f64, out: &mut [f64], add: bool) {
        scale_into_simd(self, w, out, add);
    }

    /// Element `i` as `f64` (exact).
    ///
    /// # Panics
    /// If `i >= self.len()`.
    pub fn get(&self, i: usize) -> f64 {
        let n = self.dtype.size();
        let c = &self.bytes[i * n..][..n];
        match self.dtype {
            FloatDtype::F32 => decode_f32(c.try_into().expect("4 bytes")),
            FloatDtype::F64 => f64::from_le_bytes(c.try_into().expect("8 bytes")),
            FloatDtype::BF16 => decode_bf16(c.try_into().expect("2 bytes")),
            FloatDtype::F16 => decode_f16(c.try_into().expect("2 bytes")),
        }
    }

    /// Every element as `f64` (exact: `1.0 * x` through [`scale_into`](Self::scale_into)).
    pub fn to_f64_vec(&self) -> Vec<f64> {
        let mut out = vec![0.0; self.len()];
        self.scale_into(1.0, &mut out, false);
        out
    }
}

/// Elements per prefetching block (a multiple of 32, so that blocks of
/// every dtype are whole 64-byte cache lines: 4 of `f32` input).
const BLOCK: usize = 64;
/// How far ahead of its current position [`FloatSlice::scale_into`]
/// prefetches its input. With the hardware prefetchers alone, one pass per
/// input took ~20% longer (every input's run starts cold); 8 KiB measured
/// best among 0.5-64 KiB (docs/bench-merge.md).
const PREFETCH_BYTES: usize = 8 << 10;
/// How far ahead [`weighted_sum`] prefetches each of the (up to [`GROUP`])
/// inputs it streams at once: 2 KiB each keeps what is in flight within L1.
/// 1-2 KiB measured best; 8 KiB took 15% longer (docs/bench-merge.md).
const GROUP_PREFETCH_BYTES: usize = 2 << 10;

/// Asks the CPU to bring the cache line at `p` into cache. A hint: never
/// faults, so `p` may point past the end of the data (it is only computed
/// with `wrapping_add`, never dereferenced).
#[inline(always)]
fn prefetch(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `_mm_prefetch` (SSE, part of x86-64) does not access memory
    // architecturally; any address is allowed.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// [`prefetch`]es the `bytes` bytes from `p`, a cache line at a time.
#[inline(always)]
fn prefetch_lines(p: *const u8, bytes: usize) {
    for line in 0..bytes / 64 {
        prefetch(p.wrapping_add(line * 64));
    }
}

// The kernels' element decoders (little-endian bytes to `f64`).
#[inline(always)]
fn decode_f32(c: [u8; 4]) -> f64 {
    f32::from_le_bytes(c) as f64
}
/// bfloat16 is the top half of an `f32`.
#[inline(always)]
fn decode_bf16(c: [u8; 2]) -> f64 {
    f32::from_bits(u32::from(u16::from_le_bytes(c)) << 16) as f64
}
#[inline(always)]
fn decode_f16(c: [u8; 2]) -> f64 {
    half::f16::from_bits(u16::from_le_bytes(c)).to_f64()
}

/// [`scale_into_generic`] compiled by `multiversion` once per instruction set
/// (AVX-512F, AVX2, baseline) and dispatched at run time (the style of the
/// decoder's kernels), so that LLVM vectorises it for each.
#[multiversion(targets("x86_64+avx512f", "x86_64+avx2"))]
fn scale_into_simd<'a>(x: &FloatSlice<'a>, w: f64, out: &mut [f64], add: bool) {
    scale_into_generic(x, w, out, add);
}

/// The portable kernel; inlined into each of [`scale_into_simd`]'s clones.
#[inline(always)]
fn scale_into_generic(x: &FloatSlice<'_>, w: f64, out: &mut [f64], add: bool) {
    /// `out = w x` or `out += w x` elementwise over `xs`.
    #[inline(always)]
    fn run<const N: usize>(
        out: &mut [f64],
        xs: &[[u8; N]],
        w: f64,
        add: bool,
        f: &impl Fn([u8; N]) -> f64,
    ) {
        if add {
            out.iter_mut().zip(xs).for_each(|(o, &c)| *o += w * f(c));
        } else {
            out.iter_mut().zip(xs).for_each(|(o, &c)| *o = w * f(c));
        }
    }
    /// Blocks of [`BLOCK`] elements, each first prefetching the input
    /// [`PREFETCH_BYTES`] ahead (a cache line at a time).
    #[inline(always)]
    fn go<const N: usize>(
        bytes: &[u8],
        out: &mut [f64],
        w: f64,
        add: bool,
        f: impl Fn([u8; N]) -> f64,
    ) {
        let (xs, _) = bytes.as_chunks::<N>();
        // Slices of run-time length (not arrays), so LLVM vectorises `run`.
        for (i, (o, x)) in out.chunks_mut(BLOCK).zip(xs.chunks(BLOCK)).enumerate() {
            let ahead = bytes.as_ptr().wrapping_add(i * BLOCK * N + PREFETCH_BYTES);
            prefetch_lines(ahead, BLOCK * N);
            run(o, x, w, add, &f);
        }
    }
    match x.dtype {
        FloatDtype::F32 => go(x.bytes, out, w, add, decode_f32),
        FloatDtype::F64 => go(x.bytes, out, w, add, f64::from_le_bytes),
        FloatDtype::BF16 => go(x.bytes, out, w, add, decode_bf16),
        FloatDtype::F16 => go(x.bytes, out, w, add, decode_f16),
    }
}

/// `out[j] = Σ_i weights[i] · inputs[i][j]` over `out.len()` elements (every
/// input must hold at least that many), summed in input order in `f64`:
/// bit-identical to `inputs[0].scale_into(w0, out, false)` followed by
/// `scale_into(wi, out, true)` for each further input, but faster.
///
/// Streams up to 8 inputs of one dtype at once through a block of 32
/// outputs that stays in L1, instead of one pass per input
/// over all of `out` (which moves `out` through L2 once per input): with it
/// (and the executor's tiles) a reused in-memory merge of 8 inputs took
/// 29-36% less time (docs/bench-merge.md).
///
/// # Panics
/// If `inputs` and `weights` differ in length or an input is shorter than
/// `out`.
pub fn weighted_sum(inputs: &[FloatSlice<'_>], weights: &[f64], out: &mut [f64]) {
    assert_eq!(inputs.len(), weights.len(), "one weight per input");
    assert!(
        inputs.iter().all(|x| x.len() >= out.len()),
        "every input covers the output"
    );
    weighted_sum_simd(inputs, weights, out);
}

/// Most inputs [`weighted_sum`] streams at once; more are taken in groups,
/// each adding to what the groups before wrote (so the per-element order of
/// operations, and the result, do not depend on the grouping).
const GROUP: usize = 8;
/// Elements of `out` that [`weighted_sum`] takes through all of a group's
/// inputs at a time (a whole number of cache lines of every dtype). 32
/// measured 5% faster than 64, and 256 10% slower (docs/bench-merge.md).
const GROUP_BLOCK: usize = 32;

/// [`weighted_sum_generic`], multiversioned like [`scale_into_simd`].
#[multiversion(targets("x86_64+avx512f", "x86_64+avx2"))]
fn weighted_sum_simd<'a>(inputs: &[FloatSlice<'a>], weights: &[f64], out: &mut [f64]) {
    weighted_sum_generic(inputs, weights, out);
}

/// The portable multi-input kernel, inlined into [`weighted_sum_simd`]'s clones.
#[inline(always)]
fn weighted_sum_generic(inputs: &[FloatSlice<'_>], weights: &[f64], out: &mut [f64]) {
    /// One group of same-dtype inputs: block by block, the first input sets
    /// (unless `add`) and the others add, each input prefetched
    /// [`GROUP_PREFETCH_BYTES`] ahead.
    #[inline(always)]
    fn group<const N: usize>(
        xs: &[FloatSlice<'_>],
        ws: &[f64],
        out: &mut [f64],
        add: bool,
        f: impl Fn([u8; N]) -> f64,
    ) {
        let mut streams: [&[[u8; N]]; GROUP] = [&[]; GROUP];
        for (s, x) in streams.iter_mut().zip(xs) {
            *s = &x.bytes.as_chunks::<N>().0[..out.len()];
        }
        let streams = &streams[..xs.len()];
        for (b, o) in out.chunks_mut(GROUP_BLOCK).enumerate() {
            let at = b * GROUP_BLOCK;
            for (k, (s, &w)) in streams.iter().zip(ws).enumerate() {
                let ahead = s.as_ptr().cast::<u8>();
                prefetch_lines(
                    ahead.wrapping_add(at * N + GROUP_PREFETCH_BYTES),
                    GROUP_BLOCK * N,
                );
                let x = &s[at..at + o.len()];
                if k == 0 && !add {
                    o.iter_mut().zip(x).for_each(|(o, &c)| *o = w * f(c));
                } else {
                    o.iter_mut().zip(x).for_each(|(o, &c)| *o += w * f(c));
                }
            }
        }
    }
    if inputs.is_empty() {
        out.fill(0.0);
    }
    let mut start = 0;
    while start < inputs.len() {
        let dtype = inputs[start].dtype;
        let n = inputs[start..]
            .iter()
            .take(GROUP)
            .take_while(|x| x.dtype == dtype)
            .count();
        let (xs, ws, add) = (&inputs[start..][..n], &weights[start..][..n], start > 0);
        match dtype {
            FloatDtype::F32 => group(xs, ws, out, add, decode_f32),
            FloatDtype::F64 => group(xs, ws, out, add, f64::from_le_bytes),
            FloatDtype::BF16 => group(xs, ws, out, add, decode_bf16),
            FloatDtype::F16 => group(xs, ws, out, add, decode_f16),
        }
        start += n;
    }
}

/// What a merge method is given: one tensor's name and shape, the element
/// range it covers, the models' slices of that range, their weights for this
/// tensor, and the base model's slice when the merge has one.
///
/// For an [`Scope::Elementwise`] method `elems` is any sub-range of the
/// tensor (the executor streams tiles of a few thousand elements); for a
/// [`Scope::WholeTensor`] method it is always `0..numel`.
#[derive(Debug, Clone)]
pub struct TensorSlices<'a> {
    /// The tensor's name (as in the safetensors files).
    pub name: &'a str,
    /// Its shape.
    pub shape: &'a [usize],
    /// The element range of the tensor (flattened, row-major) that the
    /// slices hold and the output covers.
    pub elems: Range<usize>,
    /// Each model's slice of `elems`, in flattened-plan order (models with a
    /// zero weight for this tensor are left out when the method
    /// [skips them](MergeMethod::skips_zero_weights)).
    pub models: &'a [FloatSlice<'a>],
    /// One weight per model: its flattened-plan weight, or a per-tensor
    /// override's.
    pub weights: &'a [f64],
    /// The base model's slice of `elems`, when the merge names a base.
    pub base: Option<FloatSlice<'a>>,
}

impl TensorSlices<'_> {
    /// Number of elements of the whole tensor.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Checks that there is one weight per model and that every slice
    /// (models and base) covers `out_len` elements.
    pub fn check_lengths(&self, out_len: usize) -> Result<(), MethodError> {
        if self.models.len() != self.weights.len() {
            return Err(MethodError::WeightCount {
                models: self.models.len(),
                weights: self.weights.len(),
            });
        }
        match self
            .models
            .iter()
            .chain(&self.base)
            .find(|x| x.len() < out_len)
        {
            Some(x) => Err(MethodError::ShortInput {
                found: x.len(),
                expected: out_len,
            }),
            None => Ok(()),
        }
    }

    /// The base model's slice, or [`MethodError::MissingBase`].
    pub fn require_base(&self) -> Result<FloatSlice<'_>, MethodError> {
        self.base.ok_or(MethodError::MissingBase)
    }
}

/// How much of a tensor a method needs at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Element `j` of the output depends only on element `j` of the inputs:
    /// the executor streams tiles of each tensor in parallel, through a
    /// small reused accumulator (constant memory, the fast path).
    Elementwise,
    /// The output depends on the whole tensor (norms, top-k): the executor
    /// hands over each floating tensor entire, as one unit of parallel work,
    /// and a `numel`-element `f64` output (plus what the method allocates).
    WholeTensor,
}

/// Why a merge method refused its parameters or inputs.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MethodError {
    /// The method needs a base model and the merge names none.
    #[error("needs a base model")]
    MissingBase,
    /// The method takes no base model and the merge names one.
    #[error("takes no base model")]
    UnexpectedBase,
    /// The method takes a fixed number of models.
    #[error("needs {expected}, got {found} model(s)")]
    ModelCount {
        /// What it needs, in words.
        expected: &'static str,
        /// How many the flattened plan has.
        found: usize,
    },
    /// A parameter is out of its range (for some tensor when it is set per
    /// tensor).
    #[error("parameter `{name}` = {value} is not {expected}")]
    Parameter {
        /// The parameter.
        name: &'static str,
        /// The offending value.
        value: f64,
        /// Its allowed range, in words.
        expected: &'static str,
    },
    /// Trimming to a density keeps no element of this tensor
    /// (`floor(density * numel) = 0`); raise the density for it with a
    /// per-tensor override.
    #[error("density {density} keeps no element of a tensor of {numel} element(s)")]
    NothingKept {
        /// The density for this tensor.
        density: f64,
        /// Its number of elements.
        numel: usize,
    },
    /// The number of weights differs from the number of models.
    #[error("{models} model(s) for {weights} weight(s)")]
    WeightCount {
        /// Models given.
        models: usize,
        /// Weights given.
        weights: usize,
    },
    /// An input slice is shorter than the output.
    #[error("an input of {found} elements for an output of {expected}")]
    ShortInput {
        /// Its length.
        found: usize,
        /// The output's length.
        expected: usize,
    },
    /// Anything else (for methods defined outside this crate).
    #[error("{0}")]
    Other(String),
}

/// A way of combining checkpoints tensor by tensor (mergekit style): linear,
/// task arithmetic, TIES and SLERP are built in ([`Method`](crate::Method)
/// names them in a plan); other crates may add their own.
///
/// The executor calls [`check`](Self::check) once before reading anything,
/// then [`merge`](Self::merge) on every floating tensor, in parallel: on
/// tiles of it for an [`Scope::Elementwise`] method, on the whole tensor
/// for a [`Scope::WholeTensor`] one. Non-float tensors are copied from the
/// first model.
pub trait MergeMethod: Send + Sync {
    /// Short name, recorded in output metadata.
    fn name(&self) -> &str;

    /// How much of a tensor [`merge`](Self::merge) needs at once (default
    /// elementwise).
    fn scope(&self) -> Scope {
        Scope::Elementwise
    }

    /// Whether models whose weight for a tensor is zero are left out of
    /// [`TensorSlices::models`] (never read) for that tensor. Default yes;
    /// a method that ignores weights (SLERP) says no.
    fn skips_zero_weights(&self) -> bool {
        true
    }

    /// Checks the method's parameters against a merge of `models` models
    /// (after flattening the plan), with or without a base model, before
    /// anything is read. The default accepts any number of models and
    /// refuses a base model (a method that uses one overrides this).
    fn check(&self, models: usize, base: bool) -> Result<(), MethodError> {
        let _ = models;
        if base {
            return Err(MethodError::UnexpectedBase);
        }
        Ok(())
    }

    /// The method's parameters, recorded in output metadata (default none).
    fn parameters(&self) -> Option<serde_json::Value> {
        None
    }

    /// Merges `t` into `out` (`t.elems.len()` elements, `f64`), writing every
    /// element.
    fn merge(&self, t: &TensorSlices<'_>, out: &mut [f64]) -> Result<(), MethodError>;
}

impl<M: MergeMethod + ?Sized> MergeMethod for Box<M> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn scope(&self) -> Scope {
        (**self).scope()
    }
    fn skips_zero_weights(&self) -> bool {
        (**self).skips_zero_weights()
    }
    fn check(&self, models: usize, base: bool) -> Result<(), MethodError> {
        (**self).check(models, base)
    }
    fn parameters(&self) -> Option<serde_json::Value> {
        (**self).parameters()
    }
    fn merge(&self, t: &TensorSlices<'_>, out: &mut [f64]) -> Result<(), MethodError> {
        (**self).merge(t, out)
    }
}

/// A parameter that may differ by tensor: a default and overrides chosen by
/// tensor name (mergekit's `filter`: the first override whose filter is a
/// substring of the name wins). Deserialises from a bare value too.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "PerTensorRepr<T>")]
#[serde(bound(deserialize = "T: Deserialize<'de>"))]
pub struct PerTensor<T> {
    /// The value for tensors no override matches.
    pub default: T,
    /// Overrides, first match wins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overrides: Vec<TensorOverride<T>>,
}

/// A value for the tensors whose name contains `filter`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TensorOverride<T> {
    /// A substring of the tensor names it applies to.
    pub filter: String,
    /// The value.
    pub value: T,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum PerTensorRepr<T> {
    Value(T),
    Full {
        default: T,
        #[serde(default = "Vec::new")]
        overrides: Vec<TensorOverride<T>>,
    },
}

impl<T> From<PerTensorRepr<T>> for PerTensor<T> {
    fn from(r: PerTensorRepr<T>) -> Self {
        match r {
            PerTensorRepr::Value(default) => Self::new(default),
            PerTensorRepr::Full { default, overrides } => Self { default, overrides },
        }
    }
}

impl<T> PerTensor<T> {
    /// The same value for every tensor.
    pub fn new(default: T) -> Self {
        Self {
            default,
            overrides: Vec::new(),
        }
    }

    /// Adds an override (after the existing ones, so they take precedence).
    pub fn with(mut self, filter: impl Into<String>, value: T) -> Self {
        self.overrides.push(TensorOverride {
            filter: filter.into(),
            value,
        });
        self
    }

    /// The value for the tensor `name`.
    pub fn get(&self, name: &str) -> &T {
        self.overrides
            .iter()
            .find(|o| name.contains(&o.filter))
            .map_or(&self.default, |o| &o.value)
    }

    /// The default and every override's value.
    pub fn values(&self) -> impl Iterator<Item = &T> {
        std::iter::once(&self.default).chain(self.overrides.iter().map(|o| &o.value))
    }
}

impl<T> From<T> for PerTensor<T> {
    fn from(value: T) -> Self {
        Self::new(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `vals` encoded little-endian in every float dtype.
    fn encode_all(vals: &[f32]) -> [(FloatDtype, Vec<u8>); 4] {
        let enc = |f: &dyn Fn(f32) -> Vec<u8>| vals.iter().flat_map(|&x| f(x)).collect();
        [
            (FloatDtype::F32, enc(&|x| x.to_le_bytes().to_vec())),
            (FloatDtype::F64, enc(&|x| (x as f64).to_le_bytes().to_vec())),
            (
                FloatDtype::BF16,
                enc(&|x| half::bf16::from_f32(x).to_le_bytes().to_vec()),
            ),
            (
                FloatDtype::F16,
                enc(&|x| half::f16::from_f32(x).to_le_bytes().to_vec()),
            ),
        ]
    }

    /// One element, decoded with `half`'s conversions (not the kernels').
    fn decode(d: FloatDtype, c: &[u8]) -> f64 {
        match d {
            FloatDtype::F32 => f32::from_le_bytes(c.try_into().unwrap()) as f64,
            FloatDtype::F64 => f64::from_le_bytes(c.try_into().unwrap()),
            FloatDtype::BF16 => half::bf16::from_le_bytes(c.try_into().unwrap()).to_f64(),
            FloatDtype::F16 => half::f16::from_le_bytes(c.try_into().unwrap()).to_f64(),
        }
    }

    fn same_bits(a: &[f64], b: &[f64]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
    }

    #[test]
    fn float_slices_decode_every_dtype() {
        for (d, b) in encode_all(&[1.5f32, -2.25, 0.0]) {
            let s = FloatSlice::new(d, &b).unwrap();
            assert_eq!(s.len(), 3);
            let mut out = [0.0; 3];
            s.scale_into(2.0, &mut out, false);
            assert_eq!(out, [3.0, -4.5, 0.0], "{d:?}");
            s.scale_into(1.0, &mut out, true);
            assert_eq!(out, [4.5, -6.75, 0.0], "{d:?}");
        }
        assert!(FloatSlice::new(FloatDtype::F32, &[0u8; 3]).is_none());
    }

    #[test]
    fn simd_paths_match_the_portable_kernel_bit_for_bit() {
        // Odd lengths and an unaligned start exercise vector tails and
        // unaligned loads.
        let vals: Vec<f32> = (0..1001)
            .map(|i| ((i * 7919) % 2003) as f32 * 1e-3 - 1.0)
            .collect();
        for (d, b) in encode_all(&vals) {
            let x = FloatSlice::new(d, &b[d.size()..]).unwrap();
            for add in [false, true] {
                let start: Vec<f64> = (0..x.len()).map(|i| i as f64 / 3.0).collect();
                let (mut fast, mut slow) = (start.clone(), start);
                x.scale_into(1.0 / 3.0, &mut fast, add);
                scale_into_generic(&x, 1.0 / 3.0, &mut slow, add);
                assert!(same_bits(&fast, &slow), "{d:?} add={add}");
            }
        }
    }

    #[test]
    fn blocked_kernel_matches_an_element_by_element_loop() {
        // Lengths around the prefetching block, and outputs longer and
        // shorter than the input (the kernel covers the shorter of the two).
        let vals: Vec<f32> = (0..3 * BLOCK as i32 + 5)
            .map(|i| (i * 37 % 101) as f32 * 0.01 - 0.5)
            .collect();
        for (d, b) in encode_all(&vals) {
            for len in [0, 1, BLOCK - 1, BLOCK, BLOCK + 1, 2 * BLOCK + 3, vals.len()] {
                let x = FloatSlice::new(d, &b[..len * d.size()]).unwrap();
                for out_len in [len.saturating_sub(2), len, len + 3] {
                    for add in [false, true] {
                        let start: Vec<f64> = (0..out_len).map(|i| i as f64 - 7.0).collect();
                        let mut got = start.clone();
                        x.scale_into(0.3, &mut got, add);
                        let want: Vec<f64> = (0..out_len)
                            .map(|i| {
                                if i >= len {
                                    return start[i];
                                }
                                let wx = 0.3 * decode(d, &b[i * d.size()..][..d.size()]);
                                if add { start[i] + wx } else { wx }
                            })
                            .collect();
                        assert!(
                            same_bits(&got, &want),
                            "{d:?} len={len} out_len={out_len} add={add}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn weighted_sum_is_the_element_by_element_sum_in_input_order() {
        // Every dtype, alone (the fast path) and with every fifth input of
        // the next dtype (mixed groups); input counts around the group size
        // (later groups add to earlier ones); lengths around the block;
        // unaligned starts; inputs longer than the output; weights that are
        // negative or (signed) zero.
        let dtypes = [
            FloatDtype::F32,
            FloatDtype::BF16,
            FloatDtype::F16,
            FloatDtype::F64,
        ];
        let encoded: Vec<[(FloatDtype, Vec<u8>); 4]> = (0..2 * GROUP + 1)
            .map(|i| {
                let vals: Vec<f32> = (0..4 * GROUP_BLOCK + 9)
                    .map(|j| ((i * 131 + j * 7919) % 2003) as f32 * 1e-3 - 1.0)
                    .collect();
                encode_all(&vals)
            })
            .collect();
        for (main, mixed) in (0..dtypes.len()).flat_map(|d| [(d, false), (d, true)]) {
            let input = |i: usize| {
                let d = dtypes[(main + usize::from(mixed && i % 5 == 4)) % dtypes.len()];
                let (_, b) = encoded[i].iter().find(|(e, _)| *e == d).unwrap();
                (d, b.as_slice())
            };
            for n in [1, 2, 3, GROUP, GROUP + 1, 2 * GROUP + 1] {
                let weights: Vec<f64> = (0..n)
                    .map(|i| [0.3, -1.25, 0.0, -0.0, 1e-3][i % 5])
                    .collect();
                let lens = [
                    0,
                    1,
                    GROUP_BLOCK - 1,
                    GROUP_BLOCK,
                    GROUP_BLOCK + 1,
                    3 * GROUP_BLOCK + 5,
                ];
                for (len, skip) in lens.into_iter().flat_map(|l| [(l, 0), (l, 1)]) {
                    let xs: Vec<FloatSlice<'_>> = (0..n)
                        .map(|i| {
                            let (d, b) = input(i);
                            FloatSlice::new(d, &b[skip * d.size()..]).unwrap()
                        })
                        .collect();
                    let mut got = vec![f64::NAN; len];
                    weighted_sum(&xs, &weights, &mut got);
                    let term = |i: usize, j: usize| {
                        let (d, b) = input(i);
                        weights[i] * decode(d, &b[(skip + j) * d.size()..][..d.size()])
                    };
                    let want: Vec<f64> = (0..len)
                        .map(|j| (1..n).fold(term(0, j), |acc, i| acc + term(i, j)))
                        .collect();
                    let case = format!(
                        "{:?} mixed={mixed} n={n} len={len} skip={skip}",
                        dtypes[main]
                    );
                    assert!(same_bits(&got, &want), "{case}");
                    // The same as one `scale_into` pass per input.
                    let mut passes = vec![f64::NAN; len];
                    for (i, x) in xs.iter().enumerate() {
                        x.scale_into(weights[i], &mut passes, i > 0);
                    }
                    assert!(same_bits(&got, &passes), "{case}");
                }
            }
        }
    }

    #[test]
    fn weighted_sum_of_no_inputs_is_zero() {
        let mut out = [f64::NAN; 5];
        weighted_sum(&[], &[], &mut out);
        assert_eq!(out, [0.0; 5]);
    }

    #[test]
    #[should_panic(expected = "every input covers the output")]
    fn weighted_sum_rejects_a_short_input() {
        let b = [0u8; 8];
        let x = FloatSlice::new(FloatDtype::F32, &b).unwrap();
        weighted_sum(&[x], &[1.0], &mut [0.0; 3]);
    }
}
