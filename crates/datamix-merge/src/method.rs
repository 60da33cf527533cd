//! Merge methods: small interchangeable strategies that combine the same
//! element range of every input tensor (mergekit style).

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
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                // SAFETY: the CPU supports AVX-512F (checked just above).
                return unsafe { scale_into_avx512(self, w, out, add) };
            }
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU supports AVX2 (checked just above).
                return unsafe { scale_into_avx2(self, w, out, add) };
            }
        }
        scale_into_generic(self, w, out, add);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn scale_into_avx512(x: &FloatSlice<'_>, w: f64, out: &mut [f64], add: bool) {
    scale_into_generic(x, w, out, add);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn scale_into_avx2(x: &FloatSlice<'_>, w: f64, out: &mut [f64], add: bool) {
    scale_into_generic(x, w, out, add);
}

/// Elements per prefetching block (a multiple of 32, so that blocks of
/// every dtype are whole 64-byte cache lines: 4 of `f32` input).
const BLOCK: usize = 64;
/// How far ahead of its current position the kernel prefetches each input.
/// With the hardware prefetchers alone a merge took ~20% longer (a chunk
/// streams each input in turn, so every input's run starts cold); 8 KiB
/// measured best among 0.5-64 KiB (docs/bench-merge.md).
const PREFETCH_BYTES: usize = 8 << 10;

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

/// The portable kernel; inlined into the `target_feature` wrappers above so
/// that LLVM vectorises it for their instruction sets.
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
            for line in 0..BLOCK * N / 64 {
                prefetch(ahead.wrapping_add(line * 64));
            }
            run(o, x, w, add, &f);
        }
    }
    match x.dtype {
        FloatDtype::F32 => go(x.bytes, out, w, add, |c| f32::from_le_bytes(c) as f64),
        FloatDtype::F64 => go(x.bytes, out, w, add, f64::from_le_bytes),
        FloatDtype::BF16 => go(x.bytes, out, w, add, |c| {
            f32::from_bits(u32::from(u16::from_le_bytes(c)) << 16) as f64
        }),
        FloatDtype::F16 => go(x.bytes, out, w, add, |c| {
            half::f16::from_bits(u16::from_le_bytes(c)).to_f64()
        }),
    }
}

/// A way of combining checkpoints, applied independently to each element range
/// ("chunk") of each floating tensor, so the executor can stream and
/// parallelise freely. Methods must be elementwise: the result for element `j`
/// may depend only on element `j` of the inputs.
pub trait MergeMethod: Send + Sync {
    /// Short name, recorded in output metadata.
    fn name(&self) -> &str;

    /// Combines one chunk: `inputs[i]` holds the chunk of input `i` (all of
    /// length `out.len()`), `weights[i]` its flattened plan weight. Writes
    /// every element of `out`. An `Err` names what is wrong (the executor
    /// adds the tensor name).
    fn merge_chunk(
        &self,
        inputs: &[FloatSlice<'_>],
        weights: &[f64],
        out: &mut [f64],
    ) -> Result<(), String>;
}

/// Linear merge: `θ = Σ_i w_i θ_i` (weight averaging; task arithmetic with
/// raw weights).
#[derive(Debug, Clone, Copy, Default)]
pub struct Linear;

impl MergeMethod for Linear {
    fn name(&self) -> &str {
        "linear"
    }

    fn merge_chunk(
        &self,
        inputs: &[FloatSlice<'_>],
        weights: &[f64],
        out: &mut [f64],
    ) -> Result<(), String> {
        if inputs.len() != weights.len() || inputs.is_empty() {
            return Err(format!(
                "{} inputs for {} weights",
                inputs.len(),
                weights.len()
            ));
        }
        for (i, (x, &w)) in inputs.iter().zip(weights).enumerate() {
            x.scale_into(w, out, i > 0);
        }
        Ok(())
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
                assert!(
                    fast.iter()
                        .zip(&slow)
                        .all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{d:?} add={add}"
                );
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
        let decode = |d: FloatDtype, c: &[u8]| -> f64 {
            match d {
                FloatDtype::F32 => f32::from_le_bytes(c.try_into().unwrap()) as f64,
                FloatDtype::F64 => f64::from_le_bytes(c.try_into().unwrap()),
                FloatDtype::BF16 => half::bf16::from_le_bytes(c.try_into().unwrap()).to_f64(),
                FloatDtype::F16 => half::f16::from_le_bytes(c.try_into().unwrap()).to_f64(),
            }
        };
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
                            got.iter()
                                .zip(&want)
                                .all(|(g, w)| g.to_bits() == w.to_bits()),
                            "{d:?} len={len} out_len={out_len} add={add}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn linear_is_the_weighted_sum() {
        let a: Vec<u8> = [1.0f32, 2.0].iter().flat_map(|x| x.to_le_bytes()).collect();
        let b: Vec<u8> = [3.0f32, -4.0]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let xs = [
            FloatSlice::new(FloatDtype::F32, &a).unwrap(),
            FloatSlice::new(FloatDtype::F32, &b).unwrap(),
        ];
        let mut out = [f64::NAN; 2];
        Linear.merge_chunk(&xs, &[0.25, 0.75], &mut out).unwrap();
        assert_eq!(out, [2.5, -2.5]);
        assert!(Linear.merge_chunk(&xs, &[1.0], &mut out).is_err());
    }
}
