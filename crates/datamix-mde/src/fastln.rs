//! A fast natural logarithm for positive normal f32: scalar, vectorised for AVX2+FMA and
//! AVX-512F (x86_64 intrinsics, run only after feature detection), and in safe portable
//! SIMD (`wide`'s `f32x8`: SSE2 or AVX on x86_64 as compiled, NEON on aarch64, scalar
//! elsewhere) for every other CPU. All paths share one algorithm and its coefficients.
//!
//! `x = 2^e · m` with `m ∈ [√½, √2)` (found by integer arithmetic on the bits), then
//! `ln x = e·ln 2 + f·Q(f)`, `f = m − 1`, where `Q` is a degree-8 polynomial fitted
//! (iteratively reweighted least squares, minimax on relative error) to `ln(1+f)/f`.
//! Relative error is about 1.5e-7 (measured in tests); inputs must be positive normal
//! numbers (no zeros, denormals, infinities or NaN), which callers guarantee.

/// Coefficients of `Q(f) ≈ ln(1+f)/f`, constant term first.
const Q: [f32; 9] = [
    1.0,
    -0.499_999_9,
    0.333_339_5,
    -0.250_017_55,
    0.199_620_72,
    -0.165_705_08,
    0.149_179_74,
    -0.143_075_23,
    0.087_348_45,
];
/// `ln 2` split so that `e · LN2_HI` is exact for |e| < 2^9.
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// Bits of √½: `bits - SQRT_HALF_BITS` has the exponent of the reduced argument.
const SQRT_HALF_BITS: i32 = 0x3F35_04F3;

/// Scalar `ln x` with the same algorithm as the SIMD path (for tails and tests).
#[inline]
pub fn ln(x: f32) -> f32 {
    let bits = x.to_bits() as i32;
    let e = bits.wrapping_sub(SQRT_HALF_BITS) >> 23;
    let f = f32::from_bits(bits.wrapping_sub(e << 23) as u32) - 1.0;
    let mut p = Q[8];
    for &c in Q[..8].iter().rev() {
        p = p * f + c;
    }
    let e = e as f32;
    (f * p + e * LN2_LO) + e * LN2_HI
}

/// `Σ ln x_i` in f64 using the fastest path available (the `ln` throughput bound used
/// by the benchmark): AVX-512F, else AVX2+FMA, else portable SIMD. Inputs must be
/// positive normal f32.
pub fn sum_ln(xs: &[f32]) -> f64 {
    #[cfg(target_arch = "x86_64")]
    if avx512::available() {
        // SAFETY: the CPU supports AVX-512F (checked above).
        return unsafe { avx512::sum_ln(xs) };
    }
    sum_ln_avx2(xs)
}

/// `Σ ln x_i` like [`sum_ln`] but never with AVX-512 (AVX2+FMA, else portable SIMD):
/// the bound of the AVX2 path, for comparison.
pub fn sum_ln_avx2(xs: &[f32]) -> f64 {
    #[cfg(target_arch = "x86_64")]
    if avx2::available() {
        // SAFETY: the CPU supports AVX2 and FMA (checked above).
        return unsafe { avx2::sum_ln(xs) };
    }
    portable::sum_ln(xs)
}

/// `Σ ln x_i` with the portable SIMD path on every CPU (the bound of the `portable`
/// MDE kernel). Inputs must be positive normal f32.
pub fn sum_ln_portable(xs: &[f32]) -> f64 {
    portable::sum_ln(xs)
}

/// The same `ln` in safe portable SIMD (`wide::f32x8`), for any CPU: what `wide`
/// compiles it to is fixed at compile time by the target's features (two SSE2 halves
/// on baseline x86_64, AVX with `-C target-cpu` that has it, two NEON halves on
/// aarch64, plain scalar code elsewhere). No `unsafe`, no intrinsics, nothing
/// arch-specific here: the code that runs on aarch64 is the code tested on x86_64.
/// `mul_add` is fused where the target has FMA (aarch64; x86_64 with `fma` enabled at
/// compile time) and a multiply then an add elsewhere, like the scalar [`ln`].
pub(crate) mod portable {
    use super::*;
    use wide::{f32x8, i32x8};

    /// Eight `ln` at once (the algorithm of [`super::ln`]).
    #[inline]
    pub(crate) fn ln8(x: f32x8) -> f32x8 {
        let bits = x.to_bits().cast_signed();
        let e = (bits - i32x8::splat(SQRT_HALF_BITS)) >> 23u32;
        let m = f32x8::from_bits((bits - (e << 23u32)).cast_unsigned());
        let f = m - f32x8::ONE;
        let mut p = f32x8::splat(Q[8]);
        for &c in Q[..8].iter().rev() {
            p = p.mul_add(f, f32x8::splat(c));
        }
        let ef = e.round_float();
        let r = ef.mul_add(f32x8::splat(LN2_LO), f * p);
        ef.mul_add(f32x8::splat(LN2_HI), r)
    }

    /// Sum of the eight lanes in f64.
    #[inline]
    pub(crate) fn hsum_f64(v: f32x8) -> f64 {
        v.to_array().iter().map(|&x| x as f64).sum()
    }

    /// `Σ ln x_i`: two independent vectors per step, f32 partial sums flushed to f64
    /// every 512 values (as the AVX2 path).
    pub(crate) fn sum_ln(xs: &[f32]) -> f64 {
        let mut total = 0.0f64;
        let mut blocks = xs.chunks_exact(512);
        for block in &mut blocks {
            let (mut a, mut b) = (f32x8::ZERO, f32x8::ZERO);
            let (pairs, _) = block.as_chunks::<16>();
            for pair in pairs {
                let (x, y) = pair.split_at(8);
                a += ln8(f32x8::new(x.try_into().expect("8 values")));
                b += ln8(f32x8::new(y.try_into().expect("8 values")));
            }
            total += hsum_f64(a + b);
        }
        total
            + blocks
                .remainder()
                .iter()
                .map(|&x| ln(x) as f64)
                .sum::<f64>()
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    use super::*;
    use std::arch::x86_64::*;

    /// Whether this CPU has AVX2 and FMA.
    pub(crate) fn available() -> bool {
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
    }

    /// Eight `ln` at once (see the module docs).
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(crate) fn ln8(x: __m256) -> __m256 {
        let bits = _mm256_castps_si256(x);
        let e = _mm256_srai_epi32::<23>(_mm256_sub_epi32(bits, _mm256_set1_epi32(SQRT_HALF_BITS)));
        let m = _mm256_castsi256_ps(_mm256_sub_epi32(bits, _mm256_slli_epi32::<23>(e)));
        let f = _mm256_sub_ps(m, _mm256_set1_ps(1.0));
        let mut p = _mm256_set1_ps(Q[8]);
        p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(Q[7]));
        p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(Q[6]));
        p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(Q[5]));
        p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(Q[4]));
        p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(Q[3]));
        p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(Q[2]));
        p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(Q[1]));
        p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(Q[0]));
        let ef = _mm256_cvtepi32_ps(e);
        let r = _mm256_fmadd_ps(ef, _mm256_set1_ps(LN2_LO), _mm256_mul_ps(f, p));
        _mm256_fmadd_ps(ef, _mm256_set1_ps(LN2_HI), r)
    }

    /// Sum of the eight lanes in f64.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(crate) fn hsum_f64(v: __m256) -> f64 {
        let lo = _mm256_cvtps_pd(_mm256_castps256_ps128(v));
        let hi = _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(v));
        let s = _mm256_add_pd(lo, hi);
        let s2 = _mm_add_pd(_mm256_castpd256_pd128(s), _mm256_extractf128_pd::<1>(s));
        _mm_cvtsd_f64(_mm_add_sd(s2, _mm_unpackhi_pd(s2, s2)))
    }

    /// `Σ ln x_i`: two independent vectors per step, f32 partial sums flushed to f64
    /// every 512 values.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(crate) unsafe fn sum_ln(xs: &[f32]) -> f64 {
        let mut total = 0.0f64;
        let mut blocks = xs.chunks_exact(512);
        for block in &mut blocks {
            let (mut a, mut b) = (_mm256_setzero_ps(), _mm256_setzero_ps());
            for pair in block.chunks_exact(16) {
                // SAFETY: `pair` has 16 elements.
                let (x, y) = unsafe {
                    (
                        _mm256_loadu_ps(pair.as_ptr()),
                        _mm256_loadu_ps(pair.as_ptr().add(8)),
                    )
                };
                a = _mm256_add_ps(a, ln8(x));
                b = _mm256_add_ps(b, ln8(y));
            }
            total += hsum_f64(_mm256_add_ps(a, b));
        }
        total
            + blocks
                .remainder()
                .iter()
                .map(|&x| ln(x) as f64)
                .sum::<f64>()
    }
}

/// The SIMD path [`sum_ln`] takes on this CPU: `"avx512"`, `"avx2"` or `"portable"`.
pub fn sum_ln_path() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if avx512::available() {
            return "avx512";
        }
        if avx2::available() {
            return "avx2";
        }
    }
    "portable"
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512 {
    use super::*;
    use std::arch::x86_64::*;

    /// Whether this CPU has AVX-512F (and AVX2+FMA, which the AVX-512 kernels also use).
    pub(crate) fn available() -> bool {
        is_x86_feature_detected!("avx512f") && super::avx2::available()
    }

    /// Sixteen `ln` at once (the algorithm of [`super::ln`]).
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(crate) fn ln16(x: __m512) -> __m512 {
        let bits = _mm512_castps_si512(x);
        let e = _mm512_srai_epi32::<23>(_mm512_sub_epi32(bits, _mm512_set1_epi32(SQRT_HALF_BITS)));
        let m = _mm512_castsi512_ps(_mm512_sub_epi32(bits, _mm512_slli_epi32::<23>(e)));
        let f = _mm512_sub_ps(m, _mm512_set1_ps(1.0));
        let mut p = _mm512_set1_ps(Q[8]);
        p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(Q[7]));
        p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(Q[6]));
        p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(Q[5]));
        p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(Q[4]));
        p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(Q[3]));
        p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(Q[2]));
        p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(Q[1]));
        p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(Q[0]));
        let ef = _mm512_cvtepi32_ps(e);
        let r = _mm512_fmadd_ps(ef, _mm512_set1_ps(LN2_LO), _mm512_mul_ps(f, p));
        _mm512_fmadd_ps(ef, _mm512_set1_ps(LN2_HI), r)
    }

    /// Sum of the sixteen lanes in f64.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(crate) fn hsum_f64(v: __m512) -> f64 {
        let lo = _mm512_cvtps_pd(_mm512_castps512_ps256(v));
        let hi = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(
            _mm512_castps_pd(v),
        )));
        _mm512_reduce_add_pd(_mm512_add_pd(lo, hi))
    }

    /// `Σ ln x_i`: two independent vectors per step, f32 partial sums flushed to f64
    /// every 512 values.
    ///
    /// # Safety
    /// The CPU must support AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(crate) unsafe fn sum_ln(xs: &[f32]) -> f64 {
        let mut total = 0.0f64;
        let mut blocks = xs.chunks_exact(512);
        for block in &mut blocks {
            let (mut a, mut b) = (_mm512_setzero_ps(), _mm512_setzero_ps());
            for pair in block.chunks_exact(32) {
                // SAFETY: `pair` has 32 elements.
                let (x, y) = unsafe {
                    (
                        _mm512_loadu_ps(pair.as_ptr()),
                        _mm512_loadu_ps(pair.as_ptr().add(16)),
                    )
                };
                a = _mm512_add_ps(a, ln16(x));
                b = _mm512_add_ps(b, ln16(y));
            }
            total += hsum_f64(_mm512_add_ps(a, b));
        }
        total
            + blocks
                .remainder()
                .iter()
                .map(|&x| ln(x) as f64)
                .sum::<f64>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn max_rel_err(xs: &[f32], f: impl Fn(f32) -> f32) -> f64 {
        xs.iter()
            .map(|&x| {
                let want = (x as f64).ln();
                let got = f(x) as f64;
                (got - want).abs() / want.abs().max(1e-3)
            })
            .fold(0.0, f64::max)
    }

    fn samples() -> Vec<f32> {
        // Every binade from 1e-37 to 1e37, densely, plus the neighbourhood of 1.
        let mut xs: Vec<f32> = (0..200_000)
            .map(|i| 10f32.powf(-37.0 + 74.0 * i as f32 / 200_000.0))
            .collect();
        xs.extend((1..20_000).map(|i| 0.9 + 0.2 * i as f32 / 20_000.0));
        xs.extend([
            1.0,
            f32::MIN_POSITIVE,
            f32::MAX,
            0.5,
            2.0,
            std::f32::consts::SQRT_2,
        ]);
        xs
    }

    #[test]
    fn scalar_ln_is_accurate_to_f32_precision() {
        let err = max_rel_err(&samples(), ln);
        assert!(err < 3e-7, "max relative error {err}");
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn simd_ln_matches_std_and_scalar() {
        if !avx2::available() {
            return;
        }
        let xs = samples();
        let simd = |x: f32| {
            use std::arch::x86_64::*;
            // SAFETY: AVX2+FMA checked above.
            unsafe { _mm256_cvtss_f32(avx2::ln8(_mm256_set1_ps(x))) }
        };
        let err = max_rel_err(&xs, simd);
        assert!(err < 3e-7, "max relative error {err}");
        // f32 partial sums over 512 values: error relative to Σ|ln x|, not to the
        // (nearly cancelling) total.
        let want: f64 = xs.iter().map(|&x| (x as f64).ln()).sum();
        let scale: f64 = xs.iter().map(|&x| (x as f64).ln().abs()).sum();
        for got in [sum_ln(&xs), sum_ln_avx2(&xs)] {
            assert!(
                (got - want).abs() <= 1e-6 * scale,
                "{got} vs {want} (scale {scale})"
            );
        }
    }

    #[test]
    fn portable_ln_matches_std_and_scalar() {
        let xs = samples();
        let simd = |x: f32| portable::ln8(wide::f32x8::splat(x)).to_array()[0];
        let err = max_rel_err(&xs, simd);
        assert!(err < 3e-7, "max relative error {err}");
        // Every lane computes the same function (no lane-dependent code).
        let lanes: [f32; 8] = std::array::from_fn(|i| xs[i * 20_000 + 7]);
        let got = portable::ln8(wide::f32x8::new(lanes)).to_array();
        for (x, g) in lanes.iter().zip(got) {
            assert_eq!(g, portable::ln8(wide::f32x8::splat(*x)).to_array()[0]);
        }
        let want: f64 = xs.iter().map(|&x| (x as f64).ln()).sum();
        let scale: f64 = xs.iter().map(|&x| (x as f64).ln().abs()).sum();
        for got in [sum_ln_portable(&xs), sum_ln(&xs), sum_ln_avx2(&xs)] {
            assert!(
                (got - want).abs() <= 1e-6 * scale,
                "{got} vs {want} (scale {scale})"
            );
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx512_ln_matches_std_and_scalar() {
        if !avx512::available() {
            return;
        }
        let xs = samples();
        let simd = |x: f32| {
            use std::arch::x86_64::*;
            // SAFETY: AVX-512F checked above.
            unsafe { _mm512_cvtss_f32(avx512::ln16(_mm512_set1_ps(x))) }
        };
        let err = max_rel_err(&xs, simd);
        assert!(err < 3e-7, "max relative error {err}");
        let want: f64 = xs.iter().map(|&x| (x as f64).ln()).sum();
        let scale: f64 = xs.iter().map(|&x| (x as f64).ln().abs()).sum();
        // SAFETY: AVX-512F checked above.
        let got = unsafe { avx512::sum_ln(&xs) };
        assert!(
            (got - want).abs() <= 1e-6 * scale,
            "{got} vs {want} (scale {scale})"
        );
    }
}
